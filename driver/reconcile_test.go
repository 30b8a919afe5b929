package driver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/storage/memory"
)

// volumeLookupDown is a backend that cannot answer Volume (a Portworx
// server that is down), and passes every other call on.
type volumeLookupDown struct{ *memory.Backend }

func (volumeLookupDown) Volume(context.Context, string) (storage.Object, error) {
	return storage.Object{}, storage.ErrUnavailable
}

// An interrupted create is undone only when the backend says the volume
// was not made; while it cannot say, the intent stays for the next sweep,
// so a volume the backend did make never loses its record, and Remove
// waits for it too.
func TestReconcileKeepsCreateIntentWhileBackendIsDown(t *testing.T) {
	d, b, st := newTestDriver(t)
	ctx := context.Background()
	if _, err := b.CreateVolume(ctx, "scratch", nil); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(&store.Record{Name: "scratch", Intent: &store.Intent{Op: store.OpCreate}}); err != nil {
		t.Fatal(err)
	}
	d.b = volumeLookupDown{b}
	_ = d.Reconcile(ctx)
	if r, ok := st.Get("scratch"); !ok || r.Intent == nil {
		t.Fatalf("record of an interrupted create changed while the backend was down: %+v, %v", r, ok)
	}
	// Removing only the record now would leave the volume without one.
	if err := d.Remove(&volume.RemoveRequest{Name: "scratch"}); !errors.Is(err, ErrInUse) {
		t.Fatalf("remove of a volume with an unfinished create: %v, want ErrInUse", err)
	}
	if r, ok := st.Get("scratch"); !ok || r.Intent == nil || r.Intent.Op != store.OpCreate {
		t.Fatalf("remove changed the record of an unfinished create: %+v, %v", r, ok)
	}
	d.b = b
	if err := d.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if r, ok := st.Get("scratch"); !ok || r.Intent != nil || r.Attachment("") == nil {
		t.Fatalf("interrupted create not rolled forward: %+v, %v", r, ok)
	}
}

// deleteFails is a backend whose Delete fails, and passes every other
// call on.
type deleteFails struct{ *memory.Backend }

func (deleteFails) Delete(context.Context, string) error { return storage.ErrUnavailable }

// A +each clone whose Unmount could not destroy it (its count is zero, so
// no later Unmount will) is destroyed by the next Reap, whatever the ttl.
func TestReapDestroysEachCloneItsUnmountLeft(t *testing.T) {
	d, b, st := newTestDriver(t)
	const name = "app-production@latest+each"
	if _, err := d.Mount(&volume.MountRequest{Name: name, ID: "1"}); err != nil {
		t.Fatal(err)
	}
	d.b = deleteFails{b}
	if err := d.Unmount(&volume.UnmountRequest{Name: name, ID: "1"}); err == nil {
		t.Fatal("Unmount succeeded though the clone could not be deleted")
	}
	if r, ok := st.Get(name); !ok || r.Attachment("1") == nil || r.Attachment("1").Mounts != 0 || r.Intent != nil {
		t.Fatalf("after the failed destruction: %+v, %v; want the clone recorded, unmounted, no intent", r, ok)
	}
	d.b = b
	d.Reap()
	if r, ok := st.Get(name); !ok || len(r.Attachments) != 0 {
		t.Fatalf("after Reap: %+v, %v; want the record kept and its clone gone", r, ok)
	}
	if n := b.Count(storage.KindClone); n != 0 {
		t.Fatalf("%d clones left after Reap", n)
	}
}

// While the backend cannot say whether a source exists, Get still claims
// a grammar name of it: Docker forgets a volume whose Get fails, and may
// already hold this name as snapvol's. Once the backend answers "no such
// source", the name is not claimed.
func TestClaimSurvivesABackendOutage(t *testing.T) {
	d, b, _ := newTestDriver(t)
	const name = "external-db@latest"
	d.b = volumeLookupDown{b}
	if _, err := d.Get(&volume.GetRequest{Name: name}); err != nil {
		t.Fatalf("Get of %s while the backend is down: %v", name, err)
	}
	d.b = b
	d.claimCache = map[string]claimEntry{} // what 10 s would do
	if _, err := d.Get(&volume.GetRequest{Name: name}); !errors.Is(err, ErrNoSuchVolume) {
		t.Fatalf("Get of %s with the backend up and no such source: %v, want ErrNoSuchVolume", name, err)
	}
}

// A create the backend may or may not have done (it timed out) keeps its
// intent: Run rolls it forward if the volume is there, back if not.
func TestCreateThatTimedOutIsFinishedLater(t *testing.T) {
	d, b, st := newTestDriver(t)
	ctx := context.Background()
	for _, made := range []bool{false, true} {
		name := fmt.Sprintf("scratch-%v", made)
		b.SetFail(fmt.Errorf("hung: %w", storage.ErrUnavailable))
		err := d.Create(&volume.CreateRequest{Name: name})
		b.SetFail(nil)
		if !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), name) {
			t.Fatalf("create while the backend hangs: %v", err)
		}
		if r, ok := st.Get(name); !ok || r.Intent == nil || r.Intent.Op != store.OpCreate {
			t.Fatalf("record after the timed-out create: %+v, %v; want the create intent kept", r, ok)
		}
		// Not a volume yet: Docker's Get (before its retried Create) finds
		// nothing, the retry is told to wait, List does not show it.
		if _, err := d.Get(&volume.GetRequest{Name: name}); !errors.Is(err, ErrNoSuchVolume) {
			t.Fatalf("Get of a create in doubt: %v, want ErrNoSuchVolume", err)
		}
		if err := d.Create(&volume.CreateRequest{Name: name}); !errors.Is(err, ErrInUse) {
			t.Fatalf("retried Create of a create in doubt: %v, want ErrInUse (retry later)", err)
		}
		if l, _ := d.List(); len(l.Volumes) != 1 { // app-production only
			t.Fatalf("List shows %d volumes, want only app-production", len(l.Volumes))
		}
		if made { // the server did make it before the answer was lost
			if _, err := b.CreateVolume(ctx, name, nil); err != nil {
				t.Fatal(err)
			}
		}
		d.retryReconcile(ctx)
		r, ok := st.Get(name)
		switch {
		case made && (!ok || r.Intent != nil || r.Attachment("") == nil):
			t.Fatalf("made volume not rolled forward: %+v, %v", r, ok)
		case !made && ok:
			t.Fatalf("record of a create that made nothing kept: %+v", r)
		}
	}
}

// An interrupted create never adopts a volume of that name snapvol did not
// make (production, on a shared Portworx cluster): the record goes, the
// volume stays untouched.
func TestInterruptedCreateNeverAdoptsAForeignVolume(t *testing.T) {
	d, b, st := newTestDriver(t)
	prod, err := b.ForeignVolume(context.Background(), "orders-db")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(&store.Record{Name: "orders-db", Intent: &store.Intent{Op: store.OpCreate}}); err != nil {
		t.Fatal(err)
	}
	if err := d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r, ok := st.Get("orders-db"); ok {
		t.Fatalf("the foreign volume was adopted: %+v", r)
	}
	if _, err := b.Volume(context.Background(), "orders-db"); err != nil {
		t.Fatalf("the foreign volume %s was touched: %v", prod.ID, err)
	}
}
