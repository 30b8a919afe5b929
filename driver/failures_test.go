package driver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/storage/memory"
)

// The driver's failure paths, one backend call failing at a time. After
// every failure: the error names the volume, no record lacks its backend
// object and no plugin object lacks its record (consistent), and the
// request can be repeated once the backend works again.

var errInjected = errors.New("injected failure")

// consistent checks that every recorded attachment exists in the backend
// and every plugin clone is recorded, with no intent left behind unless
// want says so.
func consistent(t *testing.T, d *Driver, b *memory.Backend, st *store.Store) {
	t.Helper()
	ctx := context.Background()
	owned, err := b.Owned(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exists := map[string]bool{}
	for _, o := range owned {
		exists[o.ID] = true
	}
	recorded := map[string]bool{}
	st.Each(func(r *store.Record) {
		if r.Intent != nil {
			t.Errorf("volume %q: intent %s left after a failed request", r.Name, r.Intent.Op)
		}
		for k, a := range r.Attachments {
			recorded[a.Object] = true
			if r.IsClone() && !exists[a.Object] {
				t.Errorf("volume %q: attachment %q records clone %s the backend does not have", r.Name, k, a.Object)
			}
		}
	})
	for _, o := range owned {
		if o.Kind == storage.KindClone && !recorded[o.ID] {
			t.Errorf("clone %s (volume %q) has no record", o.ID, o.Labels[storage.LabelVolume])
		}
	}
}

func mustErrNaming(t *testing.T, err error, name string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error with the backend failing")
	}
	if !strings.Contains(err.Error(), name) {
		t.Errorf("error %q does not name volume %q", err, name)
	}
}

// Each backend call a Mount of a new clone makes, failing: the Mount fails
// naming the volume, no clone is left, nothing is counted, and the Mount
// works once the backend does.
func TestMountOfNewCloneFailsCleanly(t *testing.T) {
	for _, tc := range []struct {
		method, name string
	}{
		{"Volume", "app-production@latest+v"},
		{"Snapshots", "app-production@latest+s"},
		{"Snapshot", "app-production@now+n"},
		{"Clone", "app-production@latest+c"},
		{"Mount", "app-production@latest+m"},
		{"Mount", "app-production@latest+each"},
	} {
		t.Run(tc.method+"/"+tc.name, func(t *testing.T) {
			d, b, st := newTestDriver(t)
			b.FailNext(tc.method, fmt.Errorf("%w: %w", errInjected, storage.ErrUnavailable))
			_, err := d.Mount(&volume.MountRequest{Name: tc.name, ID: "1"})
			mustErrNaming(t, err, tc.name)
			if n := b.Count(storage.KindClone); n != 0 {
				t.Errorf("%d clones left by the failed Mount", n)
			}
			if r, ok := st.Get(tc.name); ok {
				t.Errorf("a claimed name whose first Mount failed is recorded: %+v", r)
			}
			consistent(t, d, b, st)
			if _, err := d.Mount(&volume.MountRequest{Name: tc.name, ID: "1"}); err != nil {
				t.Fatalf("Mount once the backend works: %v", err)
			}
			consistent(t, d, b, st)
		})
	}
}

// A Mount whose clone cannot be mounted, nor its undo deleted, leaves a
// labelled orphan that the next sweep destroys.
func TestUndoneCloneTheBackendKeptIsSwept(t *testing.T) {
	d, b, st := newTestDriver(t)
	b.FailNext("Mount", errInjected)
	b.FailNext("Delete", errInjected)
	_, err := d.Mount(&volume.MountRequest{Name: "app-production@latest+o", ID: "1"})
	mustErrNaming(t, err, "app-production@latest+o")
	if n := b.Count(storage.KindClone); n != 1 {
		t.Fatalf("%d clones, want the one the undo could not delete", n)
	}
	if err := d.sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := b.Count(storage.KindClone); n != 0 {
		t.Fatalf("%d clones after the sweep", n)
	}
	consistent(t, d, b, st)
}

// A re-mount of a plain volume or an existing clone whose backend Mount
// fails counts nothing.
func TestMountOfExistingAttachmentFailsWithoutCounting(t *testing.T) {
	for _, name := range []string{"app-production", "app-production@latest+x"} {
		t.Run(name, func(t *testing.T) {
			d, b, st := newTestDriver(t)
			if _, err := d.Mount(&volume.MountRequest{Name: name, ID: "1"}); err != nil {
				t.Fatal(err)
			}
			if err := d.Unmount(&volume.UnmountRequest{Name: name, ID: "1"}); err != nil {
				t.Fatal(err)
			}
			b.FailNext("Mount", errInjected)
			_, err := d.Mount(&volume.MountRequest{Name: name, ID: "2"})
			mustErrNaming(t, err, name)
			if r, _ := st.Get(name); r.TotalMounts() != 0 {
				t.Errorf("%d mounts counted after a failed Mount", r.TotalMounts())
			}
			consistent(t, d, b, st)
		})
	}
}

// The unmount failure policy, the same for every attachment: when the
// backend cannot unmount, the count still goes down and is saved (Docker
// treats the mount as ended whatever the answer), so the volume can be
// removed, and the mount left behind is dropped by the next sweep. Before
// attachments, a plain or single-clone volume kept its count at 1 and
// could never be reaped or removed.
func TestUnmountFailureStillReleasesTheCount(t *testing.T) {
	for _, name := range []string{"app-production", "app-production@latest+x", "ci-1"} {
		t.Run(name, func(t *testing.T) {
			d, b, st := newTestDriver(t)
			if name == "ci-1" {
				if err := d.Create(&volume.CreateRequest{Name: name, Options: map[string]string{"from": "app-production"}}); err != nil {
					t.Fatal(err)
				}
			}
			resp, err := d.Mount(&volume.MountRequest{Name: name, ID: "1"})
			if err != nil {
				t.Fatal(err)
			}
			b.FailNext("Unmount", errInjected)
			err = d.Unmount(&volume.UnmountRequest{Name: name, ID: "1"})
			mustErrNaming(t, err, name)
			r, _ := st.Get(name)
			if r.TotalMounts() != 0 {
				t.Fatalf("count after a failed backend unmount = %d, want 0", r.TotalMounts())
			}
			if !b.Mounted(resp.Mountpoint) {
				t.Fatal("the failed unmount unmounted anyway; the test proves nothing")
			}
			// A repeated Unmount never goes below zero.
			if err := d.Unmount(&volume.UnmountRequest{Name: name, ID: "1"}); err != nil {
				t.Fatal(err)
			}
			d.dropStaleMounts()
			if b.Mounted(resp.Mountpoint) {
				t.Fatal("the sweep left the mount no count holds")
			}
			if err := d.Remove(&volume.RemoveRequest{Name: name}); err != nil {
				t.Fatalf("Remove after a failed unmount: %v", err)
			}
		})
	}
}

// A clone volume whose Unmount failed is reaped once idle, like any other.
func TestCloneWhoseUnmountFailedIsReaped(t *testing.T) {
	d, b, st := newTestDriver(t)
	const name = "app-production@latest+idle"
	if _, err := d.Mount(&volume.MountRequest{Name: name, ID: "1"}); err != nil {
		t.Fatal(err)
	}
	b.FailNext("Unmount", errInjected)
	_ = d.Unmount(&volume.UnmountRequest{Name: name, ID: "1"})
	now := time.Now().Add(2 * time.Hour)
	d.cfg.Now = func() time.Time { return now }
	d.Reap()
	if r, _ := st.Get(name); len(r.Attachments) != 0 {
		t.Fatalf("clone not reaped: %+v", r.Attachments)
	}
	consistent(t, d, b, st)
}

// A Remove whose backend fails part-way keeps the record of what is left,
// with no intent (Docker and the user see a whole volume), and succeeds
// when tried again.
func TestRemoveFailureKeepsAWholeVolume(t *testing.T) {
	for _, tc := range []struct{ method, name string }{
		{"Unmount", "app-production@latest+u"},
		{"Delete", "app-production@latest+d"},
		{"Unmount", "plain"},
		{"RemoveVolume", "plain"},
	} {
		t.Run(tc.method+"/"+tc.name, func(t *testing.T) {
			d, b, st := newTestDriver(t)
			if tc.name == "plain" {
				if err := d.Create(&volume.CreateRequest{Name: tc.name}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := d.Mount(&volume.MountRequest{Name: tc.name, ID: "1"}); err != nil {
				t.Fatal(err)
			}
			if err := d.Unmount(&volume.UnmountRequest{Name: tc.name, ID: "1"}); err != nil {
				t.Fatal(err)
			}
			b.FailNext(tc.method, errInjected)
			err := d.Remove(&volume.RemoveRequest{Name: tc.name})
			mustErrNaming(t, err, tc.name)
			r, ok := st.Get(tc.name)
			if !ok || len(r.Attachments) != 1 || r.Intent != nil {
				t.Fatalf("after the failed Remove: %+v %v; want the record, its object, no intent", r, ok)
			}
			consistent(t, d, b, st)
			if err := d.Remove(&volume.RemoveRequest{Name: tc.name}); err != nil {
				t.Fatalf("Remove once the backend works: %v", err)
			}
			if _, ok := st.Get(tc.name); ok {
				t.Fatal("record left after the Remove succeeded")
			}
			consistent(t, d, b, st)
		})
	}
}

// A Create whose backend fails leaves no record; one whose backend cannot
// say (unavailable) keeps its intent for reconcile, invisible to Docker.
func TestCreateFailureLeavesNoVolume(t *testing.T) {
	d, b, st := newTestDriver(t)
	b.FailNext("CreateVolume", errInjected)
	mustErrNaming(t, d.Create(&volume.CreateRequest{Name: "plain"}), "plain")
	if _, ok := st.Get("plain"); ok {
		t.Fatal("record left by a failed Create")
	}
	b.FailNext("CreateVolume", storage.ErrUnavailable)
	mustErrNaming(t, d.Create(&volume.CreateRequest{Name: "plain"}), "plain")
	if r, ok := st.Get("plain"); !ok || !creating(r) {
		t.Fatalf("a Create the backend could not answer: %+v %v; want its intent kept", r, ok)
	}
	if _, err := d.Get(&volume.GetRequest{Name: "plain"}); err == nil {
		t.Fatal("Get shows a volume whose create is in doubt")
	}
	if err := d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := st.Get("plain"); ok {
		t.Fatal("reconcile kept the record of a create that made nothing")
	}
}

// Reconcile finishing a +each clone's destruction keeps its intent while
// the backend fails and finishes it when the backend works.
func TestReconcileRetriesAFailedRelease(t *testing.T) {
	d, b, st := newTestDriver(t)
	const name = "app-production@latest+each"
	if _, err := d.Mount(&volume.MountRequest{Name: name, ID: "1"}); err != nil {
		t.Fatal(err)
	}
	r, _ := st.Get(name)
	r.Intent = &store.Intent{Op: store.OpRelease, Key: "1"}
	r.Attachment("1").Mounts = 0
	if err := st.Put(r); err != nil {
		t.Fatal(err)
	}
	b.FailAlways("Delete", errInjected)
	_ = d.Reconcile(context.Background())
	if r, _ := st.Get(name); r.Intent == nil || r.Attachment("1") == nil {
		t.Fatalf("reconcile dropped the intent of a destruction that failed: %+v", r)
	}
	if _, err := d.Mount(&volume.MountRequest{Name: name, ID: "2"}); !errors.Is(err, ErrInUse) {
		t.Fatalf("Mount of a volume with an unfinished intent: %v", err)
	}
	b.FailAlways("Delete", nil)
	d.retryReconcile(context.Background())
	if r, _ := st.Get(name); r.Intent != nil || len(r.Attachments) != 0 {
		t.Fatalf("retry did not finish the destruction: %+v", r)
	}
	consistent(t, d, b, st)
}

// A sweep whose listing fails says so; one whose delete fails leaves the
// orphan for the next sweep, which destroys it.
func TestSweepFailures(t *testing.T) {
	d, b, st := newTestDriver(t)
	ctx := context.Background()
	src, err := b.Volume(ctx, "app-production")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := b.Snapshot(ctx, src, storage.SnapshotLabels("app-production"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Clone(ctx, snap, storage.CloneLabels("gone@latest", "app-production"), nil); err != nil {
		t.Fatal(err)
	}
	b.FailNext("Owned", errInjected)
	if err := d.sweep(ctx); !errors.Is(err, errInjected) {
		t.Fatalf("sweep with the listing failing: %v", err)
	}
	b.FailNext("Delete", errInjected)
	if err := d.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n := b.Count(storage.KindClone); n != 1 {
		t.Fatalf("%d clones after a sweep whose delete failed, want the orphan kept", n)
	}
	if err := d.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n := b.Count(storage.KindClone); n != 0 {
		t.Fatalf("%d clones after the next sweep", n)
	}
	consistent(t, d, b, st)
}

// sick is a backend whose storage reports itself unhealthy (a pool btrfs
// forced read-only) while health is set.
type sick struct {
	*memory.Backend
	health error
}

func (s *sick) Health(context.Context) error { return s.health }

// On unhealthy storage new clones are refused, naming the storage's
// reason; Get and List keep answering and Status says so; once healthy,
// clones are made again.
func TestUnhealthyStorageRefusesNewClones(t *testing.T) {
	d, b, _ := newTestDriver(t)
	s := &sick{Backend: b, health: fmt.Errorf("%w: pool /var/lib/snapvol/pool is read-only: btrfs forced it read-only after an I/O error", storage.ErrUnhealthy)}
	d.b = s
	const name = "app-production@latest+x"
	if err := d.Create(&volume.CreateRequest{Name: name}); err != nil {
		t.Fatal(err)
	}
	_, err := d.Mount(&volume.MountRequest{Name: name, ID: "1"})
	if !errors.Is(err, storage.ErrUnhealthy) || !strings.Contains(err.Error(), "read-only") || !strings.Contains(err.Error(), name) {
		t.Fatalf("Mount on unhealthy storage: %v", err)
	}
	g, err := d.Get(&volume.GetRequest{Name: name})
	if err != nil {
		t.Fatalf("Get on unhealthy storage: %v", err)
	}
	if h, _ := g.Volume.Status["pool"].(string); !strings.HasPrefix(h, "unhealthy: ") {
		t.Fatalf("Status pool = %q", h)
	}
	if l, err := d.List(); err != nil || len(l.Volumes) != 2 {
		t.Fatalf("List on unhealthy storage: %v %v", l, err)
	}
	s.health = nil
	if _, err := d.Mount(&volume.MountRequest{Name: name, ID: "1"}); err != nil {
		t.Fatalf("Mount once healthy: %v", err)
	}
	if g, _ := d.Get(&volume.GetRequest{Name: name}); g.Volume.Status["pool"] != "healthy" {
		t.Fatalf("Status pool after recovery = %v", g.Volume.Status["pool"])
	}
}
