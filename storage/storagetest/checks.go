package storagetest

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/snapvol/snapvol/storage"
)

// CreateVolume makes a labelled volume Volume finds, returns it again to
// finish an interrupted create, and RemoveVolume deletes it, twice.
func testVolume(t *testing.T, e *env) {
	const name = "vol-a"
	wantErr(t, "Volume of a volume not made yet", errOf(e.b.Volume(e.ctx, name)), storage.ErrNotFound, name)
	v := e.create(name)
	if v.ID == "" || v.Identity == "" || v.Name != name || v.Kind != storage.KindVolume || v.Parent != "" {
		t.Fatalf("CreateVolume = %+v; want a volume named %s with an ID and an Identity", v, name)
	}
	if k, ok := storage.KindOf(v.Labels); !ok || k != storage.KindVolume || !hasLabels(v.Labels, storage.VolumeLabels()) {
		t.Errorf("created volume labelled %v; want VolumeLabels()", v.Labels)
	}
	got, err := e.b.Volume(e.ctx, name)
	if err != nil || got.ID != v.ID || got.Identity != v.Identity || got.Kind != storage.KindVolume || !got.Owned() {
		t.Fatalf("Volume(%s) = %+v, %v; want %+v", name, got, err, v)
	}
	again, err := e.b.CreateVolume(e.ctx, name, nil)
	if err != nil || again.ID != v.ID || again.Identity != v.Identity {
		t.Fatalf("CreateVolume of snapvol's own volume = %+v, %v; want it back", again, err)
	}

	if err := e.b.RemoveVolume(e.ctx, v); err != nil {
		t.Fatalf("RemoveVolume: %v", err)
	}
	wantErr(t, "Volume after RemoveVolume", errOf(e.b.Volume(e.ctx, name)), storage.ErrNotFound, name)
	if err := e.b.RemoveVolume(e.ctx, v); err != nil {
		t.Fatalf("RemoveVolume of a removed volume: %v", err)
	}

	// The driver names a volume by its record: ID and name alone.
	w := e.create("vol-b")
	if err := e.b.RemoveVolume(e.ctx, storage.Object{ID: w.ID, Name: w.Name, Kind: storage.KindVolume}); err != nil {
		t.Fatalf("RemoveVolume by ID and name: %v", err)
	}
	if _, err := e.b.Volume(e.ctx, "vol-b"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Volume after RemoveVolume by ID and name: %v", err)
	}
}

// A volume snapvol did not make is found, never adopted, never deleted.
func testForeign(t *testing.T, e *env) {
	o := e.outsider()
	f, err := o.ForeignVolume(e.ctx, "prod")
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.b.Volume(e.ctx, "prod")
	if err != nil || got.ID != f.ID || got.Identity == "" || got.Owned() {
		t.Fatalf("Volume(prod) = %+v, %v; want the foreign volume %s, not owned", got, err, f.ID)
	}
	wantErr(t, "CreateVolume over a foreign volume", errOf(e.b.CreateVolume(e.ctx, "prod", nil)), storage.ErrForeign, "prod")
	wantErr(t, "RemoveVolume of a foreign volume", e.b.RemoveVolume(e.ctx, got), storage.ErrProtected, "")
	wantErr(t, "Delete of a foreign volume", e.b.Delete(e.ctx, got.ID), storage.ErrProtected, "")
	if _, ok := e.owned()[got.ID]; ok {
		t.Errorf("Owned lists the foreign volume")
	}
	if again, err := e.b.Volume(e.ctx, "prod"); err != nil || again.Identity != got.Identity {
		t.Fatalf("the foreign volume changed: %+v, %v", again, err)
	}
}

// A snapshot made by hand belongs to its source: listed, found by name,
// cloned, never deleted.
func testForeignSnapshot(t *testing.T, e *env) {
	o := e.outsider()
	f, err := o.ForeignVolume(e.ctx, "prod")
	if err != nil {
		t.Fatal(err)
	}
	src, err := e.b.Volume(e.ctx, "prod")
	if err != nil {
		t.Fatal(err)
	}
	hs, err := o.ForeignSnapshot(e.ctx, f, "nightly")
	if err != nil {
		t.Fatal(err)
	}
	snaps := e.snapshots(src)
	if len(snaps) != 1 || snaps[0].ID != hs.ID || snaps[0].Owned() || snaps[0].Parent != src.Identity || snaps[0].Kind != storage.KindSnapshot {
		t.Fatalf("Snapshots(prod) = %+v; want the hand-made snapshot %s, not owned, Parent %s", snaps, hs.ID, src.Identity)
	}
	byName, err := e.b.SnapshotByName(e.ctx, src, "nightly")
	if err != nil || byName.ID != hs.ID {
		t.Fatalf("SnapshotByName(nightly) = %+v, %v", byName, err)
	}
	wantErr(t, "Delete of a hand-made snapshot", e.b.Delete(e.ctx, hs.ID), storage.ErrProtected, "")
	c := e.clone(byName, "prod@nightly", "prod")
	if c.Parent != byName.Identity {
		t.Errorf("clone Parent %q; want the snapshot's Identity %q", c.Parent, byName.Identity)
	}
	e.delete(c.ID)
	if snaps := e.snapshots(src); len(snaps) != 1 {
		t.Fatalf("the hand-made snapshot went: %+v", snaps)
	}
}

// Snapshot keeps the driver's labels, adds the source's identity, and
// lists and finds what it took.
func testSnapshot(t *testing.T, e *env) {
	src := e.create("snap-src")
	labels := storage.SnapshotLabels(src.Name)
	before := time.Now()
	s, err := e.b.Snapshot(e.ctx, src, labels)
	after := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	if s.ID == "" || s.Name == "" || s.Identity == "" || s.Identity == src.Identity || s.Kind != storage.KindSnapshot {
		t.Fatalf("Snapshot = %+v", s)
	}
	if s.Parent != src.Identity || s.Labels[storage.LabelSourceID] != src.Identity {
		t.Errorf("snapshot Parent %q, %s=%q; want the source's Identity %q", s.Parent, storage.LabelSourceID, s.Labels[storage.LabelSourceID], src.Identity)
	}
	if !hasLabels(s.Labels, labels) {
		t.Errorf("snapshot labels %v; want %v among them", s.Labels, labels)
	}
	if k, ok := storage.KindOf(s.Labels); !ok || k != storage.KindSnapshot {
		t.Errorf("KindOf(snapshot labels) = %q, %v", k, ok)
	}
	if s.Created.Before(before.Add(-2*time.Second)) || s.Created.After(after.Add(2*time.Second)) {
		t.Errorf("snapshot taken between %v and %v says Created %v", before, after, s.Created)
	}

	snaps := e.snapshots(src)
	if len(snaps) != 1 {
		t.Fatalf("Snapshots = %+v; want the one taken", snaps)
	}
	l := snaps[0]
	if l.ID != s.ID || l.Identity != s.Identity || l.Parent != src.Identity || l.Kind != storage.KindSnapshot || !hasLabels(l.Labels, labels) {
		t.Errorf("listed %+v; want %+v", l, s)
	}
	if d := l.Created.Sub(s.Created); d > 2*time.Second || d < -2*time.Second {
		t.Errorf("listed Created %v, returned %v", l.Created, s.Created)
	}
	byName, err := e.b.SnapshotByName(e.ctx, src, s.Name)
	if err != nil || byName.ID != s.ID || byName.Parent != src.Identity {
		t.Fatalf("SnapshotByName(%s) = %+v, %v", s.Name, byName, err)
	}

	// A source named by ID and name alone, as the driver may.
	bare := storage.Object{ID: src.ID, Name: src.Name, Kind: storage.KindVolume}
	s2, err := e.b.Snapshot(e.ctx, bare, labels)
	if err != nil || s2.Parent != src.Identity {
		t.Fatalf("Snapshot by ID and name = %+v, %v; want Parent %s", s2, err, src.Identity)
	}
	listed := e.snapshots(bare)
	if got, want := ids(listed), ids([]storage.Object{s, s2}); !slices.Equal(got, want) {
		t.Fatalf("Snapshots by ID and name = %v; want %v", got, want)
	}
	var first, second storage.Object
	for _, o := range listed {
		if o.ID == s.ID {
			first = o
		} else {
			second = o
		}
	}
	if second.Created.Before(first.Created) {
		t.Errorf("the later snapshot says Created %v, before the earlier's %v", second.Created, first.Created)
	}
}

// A volume made under a removed volume's name does not inherit its
// snapshots: they are keyed by identity, not name.
func testIdentity(t *testing.T, e *env) {
	const name = "reuse"
	old := e.create(name)
	s := e.snapshot(old)
	if err := e.b.RemoveVolume(e.ctx, old); err != nil {
		t.Fatalf("RemoveVolume of a volume with a plugin snapshot: %v", err)
	}
	if _, ok := e.owned()[s.ID]; ok {
		t.Errorf("the plugin's snapshot %s outlived its source's RemoveVolume", s.ID)
	}
	if err := e.b.Delete(e.ctx, s.ID); err != nil {
		t.Errorf("Delete of the snapshot RemoveVolume took along: %v", err)
	}

	v := e.create(name)
	if v.Identity == old.Identity {
		t.Fatalf("the new %s has the removed one's Identity %s", name, v.Identity)
	}
	if snaps := e.snapshots(v); len(snaps) != 0 {
		t.Fatalf("Snapshots of the new %s = %+v; want none", name, snaps)
	}
	wantErr(t, "SnapshotByName of the removed namesake's snapshot", errOf(e.b.SnapshotByName(e.ctx, v, s.Name)), storage.ErrNotFound, s.Name)
	// The removed volume, as a caller looked it up before, is gone: its
	// name now stands for another volume.
	if _, err := e.b.Snapshot(e.ctx, old, storage.SnapshotLabels(name)); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Snapshot of the removed volume = %v; want ErrNotFound", err)
	}
	s2 := e.snapshot(v)
	if snaps := e.snapshots(v); len(snaps) != 1 || snaps[0].ID != s2.ID {
		t.Errorf("Snapshots of the new %s = %+v; want only %s", name, snaps, s2.ID)
	}
}

// A snapshot someone else took of a volume stays where storage lets the
// volume go without it, and still belongs to the removed volume only.
func testHandSnapshotOutlivesSource(t *testing.T, e *env) {
	o := e.outsider()
	const name = "reuse-hand"
	old := e.create(name)
	hs, err := o.ForeignSnapshot(e.ctx, old, "nightly")
	if err != nil {
		t.Fatal(err)
	}
	err = e.b.RemoveVolume(e.ctx, old)
	if errors.Is(err, storage.ErrBusy) {
		if _, verr := e.b.Volume(e.ctx, name); verr != nil {
			t.Fatalf("RemoveVolume refused (%v) but the volume is gone: %v", err, verr)
		}
		if snaps := e.snapshots(old); len(snaps) != 1 || snaps[0].ID != hs.ID {
			t.Fatalf("RemoveVolume refused (%v); snapshots now %+v", err, snaps)
		}
		t.Skipf("the storage keeps a volume while someone's snapshot of it exists (%v): its name cannot be reused meanwhile", err)
	}
	if err != nil {
		t.Fatalf("RemoveVolume of a volume with a hand-made snapshot: %v; want nil or ErrBusy", err)
	}
	// Still the removed volume's: RemoveVolume deletes no one else's.
	if snaps := e.snapshots(old); len(snaps) != 1 || snaps[0].ID != hs.ID {
		t.Fatalf("Snapshots of the removed volume = %+v; want %s, kept", snaps, hs.ID)
	}
	v := e.create(name)
	if snaps := e.snapshots(v); len(snaps) != 0 {
		t.Fatalf("the new %s is offered the removed one's snapshots: %+v", name, snaps)
	}
	wantErr(t, "SnapshotByName(nightly) of the new namesake", errOf(e.b.SnapshotByName(e.ctx, v, "nightly")), storage.ErrNotFound, "nightly")
}

// Clone keeps the driver's labels and makes an owned clone of the snapshot.
func testClone(t *testing.T, e *env) {
	src := e.create("clone-src")
	s := e.snapshot(src)
	labels := storage.CloneLabels("clone-src@latest", src.Name)
	c, err := e.b.Clone(e.ctx, s, labels, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID == "" || c.Identity == "" || c.Kind != storage.KindClone || c.Parent != s.Identity || !hasLabels(c.Labels, labels) {
		t.Fatalf("Clone = %+v; want a clone of %s (Identity %s) labelled %v", c, s.ID, s.Identity, labels)
	}
	if k, ok := storage.KindOf(c.Labels); !ok || k != storage.KindClone {
		t.Errorf("KindOf(clone labels) = %q, %v", k, ok)
	}
	if snaps := e.snapshots(src); len(snaps) != 1 || snaps[0].ID != s.ID {
		t.Errorf("a clone is listed among the snapshots: %+v", snaps)
	}
	if _, err := e.b.Volume(e.ctx, c.Name); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Volume(%q) of a clone = %v; want ErrNotFound (a clone is no source)", c.Name, err)
	}
}

// A clone is writable and independent: what is written there reaches
// neither the source nor the snapshot, and stays in the clone.
func testCloneData(t *testing.T, e *env) {
	if e.fake() {
		t.Skipf("%T holds no data", e.b)
	}
	src := e.create("data-src")
	ts := e.target()
	e.mount(src.ID, ts)
	writeFile(t, ts, "data", "production\n")
	e.unmount(src.ID, ts)

	s := e.snapshot(src)
	c := e.clone(s, "data-src@latest", src.Name)
	tc := e.target()
	e.mount(c.ID, tc)
	if got := readFile(t, tc, "data"); got != "production\n" {
		t.Fatalf("clone reads %q", got)
	}
	writeFile(t, tc, "data", "changed by a test\n")
	writeFile(t, tc, "new", "x")
	e.unmount(c.ID, tc)

	e.mount(src.ID, ts)
	if got := readFile(t, ts, "data"); got != "production\n" {
		t.Errorf("a write in the clone reached the source: %q", got)
	}
	if exists(t, filepath.Join(ts, "new")) {
		t.Errorf("a file made in the clone appeared in the source")
	}
	e.unmount(src.ID, ts)

	c2 := e.clone(s, "data-src@latest+2", src.Name)
	tc2 := e.target()
	e.mount(c2.ID, tc2)
	if got := readFile(t, tc2, "data"); got != "production\n" || exists(t, filepath.Join(tc2, "new")) {
		t.Errorf("a write in one clone reached the snapshot: a second clone reads %q", got)
	}
	e.unmount(c2.ID, tc2)

	e.mount(c.ID, tc)
	if got := readFile(t, tc, "data"); got != "changed by a test\n" {
		t.Errorf("the clone lost its write: %q", got)
	}
	e.unmount(c.ID, tc)
	for _, id := range []string{c.ID, c2.ID, s.ID} {
		e.delete(id)
	}
}

// Delete destroys plugin snapshots and clones, succeeds when they are
// gone, and refuses regular volumes, the plugin's own included.
func testDelete(t *testing.T, e *env) {
	src := e.create("del-src")
	s := e.snapshot(src)
	c := e.clone(s, "del-src@latest", src.Name)
	for _, id := range []string{c.ID, c.ID, s.ID, s.ID} {
		e.delete(id)
	}
	wantErr(t, "Delete of a volume", e.b.Delete(e.ctx, src.ID), storage.ErrProtected, "")
	if _, err := e.b.Volume(e.ctx, src.Name); err != nil {
		t.Fatalf("the volume went: %v", err)
	}
	owned := e.owned()
	if len(owned) != 1 || owned[src.ID].Kind != storage.KindVolume {
		t.Fatalf("Owned after deleting = %+v; want only the volume", owned)
	}
	if snaps := e.snapshots(src); len(snaps) != 0 {
		t.Fatalf("Snapshots after deleting = %+v", snaps)
	}
}

// Owned lists what the plugin made, of the kind its labels say, and
// nothing else.
func testOwned(t *testing.T, e *env) {
	v := e.create("own")
	s := e.snapshot(v)
	c := e.clone(s, "own@latest", v.Name)
	want := map[string]storage.Kind{v.ID: storage.KindVolume, s.ID: storage.KindSnapshot, c.ID: storage.KindClone}
	var foreign []string
	if o, ok := e.b.(Outsider); ok {
		f, err := o.ForeignVolume(e.ctx, "own-prod")
		if err != nil {
			t.Fatal(err)
		}
		hs, err := o.ForeignSnapshot(e.ctx, f, "nightly")
		if err != nil {
			t.Fatal(err)
		}
		c2 := e.clone(hs, "own-prod@nightly", "own-prod")
		want[c2.ID] = storage.KindClone
		foreign = append(foreign, f.ID, hs.ID)
	}
	owned := e.owned()
	for id, kind := range want {
		o, ok := owned[id]
		if !ok {
			t.Errorf("Owned lacks the %s %s", kind, id)
			continue
		}
		if k, ours := storage.KindOf(o.Labels); o.Kind != kind || !ours || k != kind {
			t.Errorf("Owned: %s is %s, labels %v (KindOf %q, %v); want %s", id, o.Kind, o.Labels, k, ours, kind)
		}
	}
	for id := range owned {
		if _, ok := want[id]; !ok {
			t.Errorf("Owned lists %+v, which the plugin did not make here", owned[id])
		}
	}
	for _, id := range foreign {
		if _, ok := owned[id]; ok {
			t.Errorf("Owned lists the foreign object %s", id)
		}
	}
	if got := owned[c.ID].Labels[storage.LabelVolume]; got != "own@latest" {
		t.Errorf("owned clone's %s = %q", storage.LabelVolume, got)
	}
}

// What is gone is ErrNotFound, saying what, wherever it is named.
func testNotFound(t *testing.T, e *env) {
	wantErr(t, "Volume(no-such-volume)", errOf(e.b.Volume(e.ctx, "no-such-volume")), storage.ErrNotFound, "no-such-volume")
	src := e.create("nf-src")
	wantErr(t, "SnapshotByName(no-such-snap)", errOf(e.b.SnapshotByName(e.ctx, src, "no-such-snap")), storage.ErrNotFound, "no-such-snap")
	s := e.snapshot(src)
	c := e.clone(s, "nf-src@latest", src.Name)
	e.delete(c.ID)
	e.delete(s.ID)
	if _, err := e.b.Clone(e.ctx, s, storage.CloneLabels("nf-src@latest", src.Name), nil); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Clone of a deleted snapshot = %v; want ErrNotFound", err)
	}
	target := e.target()
	if err := e.b.Mount(e.ctx, c.ID, target); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Mount of a deleted clone = %v; want ErrNotFound", err)
	}
	if exists(t, target) || e.b.Mounted(target) {
		t.Errorf("a failed Mount left %s behind", target)
	}
	if err := e.b.RemoveVolume(e.ctx, src); err != nil {
		t.Fatal(err)
	}
	if _, err := e.b.Snapshot(e.ctx, src, storage.SnapshotLabels(src.Name)); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Snapshot of a removed volume = %v; want ErrNotFound", err)
	}
}

// Mount is idempotent; Unmount succeeds once nothing is mounted, removes
// the empty mount point, and works without the object's ID.
func testMount(t *testing.T, e *env) {
	src := e.create("mnt-src")
	s := e.snapshot(src)
	c := e.clone(s, "mnt-src@latest", src.Name)

	for _, id := range []string{src.ID, c.ID} {
		target := e.target()
		e.mount(id, target)
		if err := e.b.Mount(e.ctx, id, target); err != nil {
			t.Fatalf("second Mount at the same target: %v", err)
		}
		if !e.b.Mounted(target) {
			t.Fatalf("Mounted(%s) = false after a second Mount", target)
		}
		e.unmount(id, target)
		if exists(t, target) {
			t.Errorf("Unmount left the empty mount point %s", target)
		}
		e.unmount(id, target)
	}

	// Nothing was ever mounted there.
	e.unmount(c.ID, e.target())

	// A stray mount reconcile found: the object is unknown.
	target := e.target()
	e.mount(c.ID, target)
	e.unmount("", target)
	if exists(t, target) {
		t.Errorf("Unmount of a stray mount left the empty mount point %s", target)
	}
}

// A directory someone wrote into while nothing was mounted there keeps
// its files: Unmount succeeds and leaves it in place.
func testUnmountKeepsFiles(t *testing.T, e *env) {
	src := e.create("keep-src")
	s := e.snapshot(src)
	c := e.clone(s, "keep-src@latest", src.Name)
	target := e.target()
	if err := mkdirAll(target); err != nil {
		t.Fatal(err)
	}
	writeFile(t, target, "stray", "not the clone's\n")

	e.unmount(c.ID, target)
	if !exists(t, filepath.Join(target, "stray")) {
		t.Fatal("Unmount of nothing mounted deleted a file in the mount point")
	}
	e.mount(c.ID, target)
	if !e.fake() && exists(t, filepath.Join(target, "stray")) {
		t.Errorf("the mount does not cover what was in the directory")
	}
	e.unmount(c.ID, target)
	if got := readFile(t, target, "stray"); got != "not the clone's\n" {
		t.Errorf("the file under the mount reads %q", got)
	}
}

// Clones of one snapshot made at once are distinct, owned, and deleted at
// once.
func testConcurrentClones(t *testing.T, e *env) {
	src := e.create("conc-src")
	s := e.snapshot(src)
	const n = 8
	clones := make([]storage.Object, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range clones {
		wg.Add(1)
		go func() {
			defer wg.Done()
			clones[i], errs[i] = e.b.Clone(e.ctx, s, storage.CloneLabels(fmt.Sprintf("conc-src@latest+%d", i), src.Name), nil)
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, c := range clones {
		if errs[i] != nil {
			t.Fatalf("clone %d: %v", i, errs[i])
		}
		if seen[c.ID] || seen[c.Identity] || c.Parent != s.Identity {
			t.Fatalf("clone %d = %+v; want a distinct clone of %s", i, c, s.Identity)
		}
		seen[c.ID], seen[c.Identity] = true, true
	}
	owned := e.owned()
	for _, c := range clones {
		if owned[c.ID].Kind != storage.KindClone {
			t.Errorf("Owned lacks clone %s", c.ID)
		}
	}
	for i, c := range clones {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.b.Delete(e.ctx, c.ID)
		}()
	}
	wg.Wait()
	for i := range clones {
		if errs[i] != nil {
			t.Errorf("concurrent Delete %d: %v", i, errs[i])
		}
	}
	owned = e.owned()
	for _, c := range clones {
		if _, ok := owned[c.ID]; ok {
			t.Errorf("clone %s still owned after Delete", c.ID)
		}
	}
}
