package driver

import (
	"fmt"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/snapvol/snapvol/storage"
)

// TestMountStillInProgressKeepsTheClone: a backend still mounting a new
// clone when the request's time is up (Portworx attaching a large volume)
// carries on; the clone is recorded, unmounted, so the retry picks the
// mount up instead of making another clone, and nothing is left without a
// record.
func TestMountStillInProgressKeepsTheClone(t *testing.T) {
	d, b, st := newTestDriver(t)
	name := "app-production@latest"
	b.FailNext("Mount", fmt.Errorf("attaching: %w", storage.ErrInProgress))
	_, err := d.Mount(&volume.MountRequest{Name: name, ID: "1"})
	mustErrNaming(t, err, name)
	r, ok := st.Get(name)
	if !ok || len(r.Clones()) != 1 || r.TotalMounts() != 0 {
		t.Fatalf("after a mount still in progress: record %+v, %v; want the clone recorded, unmounted", r, ok)
	}
	consistent(t, d, b, st)
	clone := r.Clones()[0].Object
	resp, err := d.Mount(&volume.MountRequest{Name: name, ID: "1"})
	if err != nil {
		t.Fatalf("the retry: %v", err)
	}
	r, _ = st.Get(name)
	if len(r.Clones()) != 1 || r.Clones()[0].Object != clone || r.TotalMounts() != 1 || !b.Mounted(resp.Mountpoint) {
		t.Fatalf("after the retry: %+v; want the same clone %s mounted once", r, clone)
	}
	consistent(t, d, b, st)
}
