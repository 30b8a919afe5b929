package driver

import (
	"testing"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/snapvol/snapvol/storage"
)

// noBackend panics on any call: the nil Backend it embeds has no methods.
type noBackend struct{ storage.Backend }

// Get, List and Path answer from the in-memory index alone: Docker calls
// them constantly, probes every plugin with Get, and drops a volume whose
// Get fails, so they must never wait on (or fail with) the storage.
func TestGetListPathNeverCallTheBackend(t *testing.T) {
	d, _, _ := newTestDriver(t)
	if _, err := d.Mount(&volume.MountRequest{Name: "app-production@latest+a", ID: "1"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(&volume.CreateRequest{Name: "app-production@latest+b"}); err != nil {
		t.Fatal(err)
	}
	d.b = noBackend{}
	for _, name := range []string{"app-production", "app-production@latest+a", "app-production@latest+b", "snap:app-production@now+probe"} {
		if _, err := d.Get(&volume.GetRequest{Name: name}); err != nil {
			t.Fatalf("Get %s: %v", name, err)
		}
		if _, err := d.Path(&volume.PathRequest{Name: name}); err != nil && name != "snap:app-production@now+probe" {
			t.Fatalf("Path %s: %v", name, err)
		}
	}
	if _, err := d.Get(&volume.GetRequest{Name: "../../etc@latest"}); err == nil {
		t.Fatal("Get of an invalid name succeeded")
	}
	r, err := d.List()
	if err != nil || len(r.Volumes) != 3 {
		t.Fatalf("List: %d volumes, %v", len(r.Volumes), err)
	}
}
