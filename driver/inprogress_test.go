package driver

import (
	"context"
	"fmt"
	"strings"
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
	if v, err := d.Get(&volume.GetRequest{Name: name}); err != nil || !strings.Contains(fmt.Sprint(v.Volume.Status["mount"]), "carries on") {
		t.Errorf("Get while the storage carries on: %+v, %v; want the status to say so", v, err)
	}
	clone := r.Clones()[0].Object
	// The storage finishes in the background; the sweep leaves that mount
	// for the retry instead of taking it for one no count holds.
	a := r.Clones()[0]
	if err := b.Mount(context.Background(), a.Object, a.Target); err != nil {
		t.Fatal(err)
	}
	d.dropStaleMounts()
	if !b.Mounted(a.Target) {
		t.Fatal("the sweep dropped the mount the storage finished for the retry")
	}
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

// TestEachMountStillInProgressIsUndone: a +each clone belongs to its
// mount ID, which Docker's retry does not reuse, so one whose mount is
// still in progress is not kept.
func TestEachMountStillInProgressIsUndone(t *testing.T) {
	d, b, st := newTestDriver(t)
	name := "app-production@latest+each"
	b.FailNext("Mount", fmt.Errorf("attaching: %w", storage.ErrInProgress))
	_, err := d.Mount(&volume.MountRequest{Name: name, ID: "1"})
	mustErrNaming(t, err, name)
	if r, ok := st.Get(name); ok && len(r.Clones()) != 0 {
		t.Fatalf("a +each clone was kept: %+v", r)
	}
	consistent(t, d, b, st)
}
