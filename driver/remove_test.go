package driver

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/storage/memory"
)

// One rule for plain and clone volumes: Remove is refused while a running
// process other than the caller holds a mount (another dockerd on the host,
// or a client of the socket that is not Docker, whose container still uses
// the data); counts the caller holds itself, or that processes now gone
// hold, are Unmounts Docker will never send (dockerd 20.10 sends none for a
// container that exited while it was down with --live-restore), and go
// with the volume. The previous code removed any clone under its running
// users, and refused a plain volume forever.
func TestRemoveWithCountedMountsFollowsOneRule(t *testing.T) {
	d, b, st := newTestDriver(t)
	alive := map[Caller]bool{"100:1": true, "200:1": true, "300:1": false}
	d.cfg.Alive = func(c Caller) bool { return c == CallerUnknown || alive[c] }
	if err := d.Create(&volume.CreateRequest{Name: "plain"}); err != nil {
		t.Fatal(err)
	}
	mount := func(c Caller, name, id string) {
		t.Helper()
		if _, err := d.As(c).Mount(&volume.MountRequest{Name: name, ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"app-production@latest+other", "plain"} {
		mount("100:1", name, "ctr")
		err := d.As("200:1").Remove(&volume.RemoveRequest{Name: name})
		if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "process 100") {
			t.Fatalf("Remove of %s under another running process's mount: %v", name, err)
		}
		if _, ok := st.Get(name); !ok {
			t.Fatalf("%s removed under a running process", name)
		}
		// The same process's own stale count goes with the volume.
		if err := d.As("100:1").Remove(&volume.RemoveRequest{Name: name}); err != nil {
			t.Fatalf("Remove of %s by the process that holds its count: %v", name, err)
		}
	}
	// A process that is gone (dockerd restarted) holds nothing.
	mount("300:1", "app-production@latest+each", "dead-ctr-1")
	mount("300:1", "app-production@latest+each", "dead-ctr-2")
	if err := d.As("200:1").Remove(&volume.RemoveRequest{Name: "app-production@latest+each"}); err != nil {
		t.Fatalf("Remove of mounts a gone process held: %v", err)
	}
	// A managed plugin sees no pids: Docker, its only client, is both.
	mount(CallerUnknown, "app-production@latest+gone", "dead-ctr")
	if err := d.Remove(&volume.RemoveRequest{Name: "app-production@latest+gone"}); err != nil {
		t.Fatalf("Remove in a managed plugin of a count Docker never unmounted: %v", err)
	}
	if n := b.Count(storage.KindClone); n != 0 {
		t.Errorf("%d clones left after Remove", n)
	}
	// An Unmount by a dockerd restarted under a new pid takes its old
	// self's count.
	mount("300:1", "app-production", "prod-ctr")
	if err := d.As("200:1").Unmount(&volume.UnmountRequest{Name: "app-production", ID: "prod-ctr"}); err != nil {
		t.Fatal(err)
	}
	if r, _ := st.Get("app-production"); r.TotalMounts() != 0 || len(r.Attachment("").Holders) != 0 {
		t.Fatalf("after the Unmount: %+v", r.Attachment(""))
	}
}

// snapshotsProbe calls probe whenever the driver lists a source's
// snapshots (mayCollect, before collecting).
type snapshotsProbe struct {
	*memory.Backend
	probe func()
}

func (s snapshotsProbe) Snapshots(ctx context.Context, source storage.Object) ([]storage.Object, error) {
	s.probe()
	return s.Backend.Snapshots(ctx, source)
}

// A +each container's Unmount destroys its clone and collects the
// snapshot nothing uses any more, after letting go of the volume's lock:
// every other container of that name Mounts and Unmounts under it.
func TestEachUnmountCollectsOutsideTheVolumeLock(t *testing.T) {
	d, b, _ := newTestDriver(t)
	const name = "app-production@now+each"
	for _, id := range []string{"1", "2"} {
		if _, err := d.Mount(&volume.MountRequest{Name: name, ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	probed := 0
	d.b = snapshotsProbe{b, func() {
		probed++
		got := make(chan struct{})
		go func() { d.locks.Lock(name)(); close(got) }()
		select {
		case <-got:
		case <-time.After(2 * time.Second):
			t.Errorf("collecting snapshots with the lock of %s held", name)
		}
	}}
	if err := d.Unmount(&volume.UnmountRequest{Name: name, ID: "1"}); err != nil {
		t.Fatal(err)
	}
	if probed == 0 {
		t.Fatal("Unmount of a +each clone did not look for snapshots to collect")
	}
	if n := b.Count(storage.KindClone); n != 1 {
		t.Fatalf("%d clones after one of two +each containers stopped, want 1", n)
	}
	if n := b.Count(storage.KindSnapshot); n != 1 {
		t.Fatalf("%d snapshots, want only the one the other container's clone uses", n)
	}
}

// A snapshot is never collected between being chosen for a clone and the
// clone's record naming it: collection (d.gc for writing) waits until the
// record is written.
func TestCollectionWaitsForTheCloneRecord(t *testing.T) {
	d, _, st := newTestDriver(t)
	const name = "app-production@now+x"
	recorded := make(chan bool, 1)
	d.cfg.Failpoint = func(step string) {
		if step != "materialize:mount" {
			return
		}
		go func() {
			_, done, err := d.refs.collecting(context.Background())
			if err != nil {
				t.Error(err)
				recorded <- false
				return
			}
			r, _ := st.Get(name)
			done()
			recorded <- r != nil && r.Attachment("") != nil
		}()
	}
	if _, err := d.Mount(&volume.MountRequest{Name: name, ID: "1"}); err != nil {
		t.Fatal(err)
	}
	if !<-recorded {
		t.Fatal("collection could run after the clone was made and before it was recorded")
	}
}

// A volume whose ref names a snapshot the plugin took keeps that snapshot
// from collection while it has no clone (before its first Mount, after an
// idle reap): its next Mount needs it.
func TestCollectKeepsSnapshotsNamedByARef(t *testing.T) {
	d, _, st := newTestDriver(t)
	mount := func(name string) {
		t.Helper()
		if _, err := d.Mount(&volume.MountRequest{Name: name, ID: "1"}); err != nil {
			t.Fatalf("mount %s: %v", name, err)
		}
	}
	mount("app-production@now+a")
	r, _ := st.Get("app-production@now+a")
	named := r.Attachment("").SnapshotName
	if err := d.Create(&volume.CreateRequest{Name: "ci-1", Options: map[string]string{"from": "app-production", "ref": named}}); err != nil {
		t.Fatal(err)
	}
	mount("app-production@now+b") // a newer snapshot: the named one is not kept for @latest
	if err := d.Unmount(&volume.UnmountRequest{Name: "app-production@now+a", ID: "1"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(&volume.RemoveRequest{Name: "app-production@now+a"}); err != nil {
		t.Fatal(err)
	}
	if err := d.sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	mount("ci-1")
	if r, _ := st.Get("ci-1"); r.Attachment("") == nil || r.Attachment("").SnapshotName != named {
		t.Fatalf("ci-1 cloned %+v, want snapshot %s", r.Attachment(""), named)
	}
}

// A +each volume holds clones only while containers run: with none it
// does not keep its source from being removed; with one it does.
func TestEachRecordWithoutClonesDoesNotBlockItsSource(t *testing.T) {
	d, _, st := newTestDriver(t)
	const each = "app-production@latest+each"
	if _, err := d.Mount(&volume.MountRequest{Name: each, ID: "1"}); err != nil {
		t.Fatal(err)
	}
	err := d.Remove(&volume.RemoveRequest{Name: "app-production"})
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), each) {
		t.Fatalf("Remove of the source while a +each clone runs: %v", err)
	}
	if err := d.Unmount(&volume.UnmountRequest{Name: each, ID: "1"}); err != nil {
		t.Fatal(err)
	}
	if r, ok := st.Get(each); !ok || len(r.Attachments) != 0 {
		t.Fatalf("+each record after its last unmount: %+v %v", r, ok)
	}
	if err := d.Remove(&volume.RemoveRequest{Name: "app-production"}); err != nil {
		t.Fatalf("Remove of the source with only an idle +each record: %v", err)
	}
}

// docker volume inspect of a mounted +each volume says its clones go with
// their containers, not after a ttl.
func TestEachStatusSaysClonesGoAtUnmount(t *testing.T) {
	d, _, _ := newTestDriver(t)
	const each = "app-production@latest+each"
	if _, err := d.Mount(&volume.MountRequest{Name: each, ID: "1"}); err != nil {
		t.Fatal(err)
	}
	g, err := d.Get(&volume.GetRequest{Name: each})
	if err != nil {
		t.Fatal(err)
	}
	if got := g.Volume.Status["expires"]; got != "each clone is destroyed when its container's mount ends" {
		t.Fatalf("expires = %q", got)
	}
}
