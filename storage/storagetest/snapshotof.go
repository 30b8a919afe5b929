package storagetest

// The SnapshotOf check: a snapshot of a clone filed under the source, as
// the masking flow makes one.

import (
	"errors"
	"slices"
	"testing"

	"github.com/snapvol/snapvol/storage"
)

// SnapshotOf files a read-only snapshot of a clone (after a masking job
// wrote to it) as a snapshot of the source: listed and found under the
// source, cloned with what the clone held, clone and source unchanged.
// Where the storage keeps a clone while a snapshot of it exists, Delete
// of the clone is ErrBusy until the snapshot goes; where it does not, the
// snapshot outlives the clone.
func testSnapshotOf(t *testing.T, e *env) {
	src, s, c, ts := maskedClone(t, e)
	labels := storage.TakenSnapshotLabels(src.Name, storage.TakenNamed, "mask-work")
	// The clone as the driver names it: its record's ID and volume name.
	cref := storage.Object{ID: c.ID, Name: "mask-work", Kind: storage.KindClone}
	ms, err := e.b.SnapshotOf(e.ctx, cref, src, labels)
	if err != nil {
		t.Fatalf("SnapshotOf: %v", err)
	}
	checkFiledUnderSource(t, e, src, s, c, ms, labels)
	checkSnapshotOfData(t, e, src, c, ms, ts)
	deleteSnapshottedClone(t, e, src, s, c, ms)
	wantErr(t, "SnapshotOf a deleted clone", errOf(e.b.SnapshotOf(e.ctx, cref, src, labels)), storage.ErrNotFound, "")
	if got := ids(e.snapshots(src)); !slices.Equal(got, []string{s.ID}) {
		t.Errorf("Snapshots after deleting = %v; want only %s", got, s.ID)
	}
}

// maskedClone makes the masking flow's start: a source holding
// "production", a snapshot of it, and a clone of that (the work volume
// mask-work) a job wrote "masked" into. ts is where the source mounts
// (empty on a fake backend, which holds no files).
func maskedClone(t *testing.T, e *env) (src, s, c storage.Object, ts string) {
	src = e.create("mask-src")
	if !e.fake() {
		ts = e.target()
		e.mount(src.ID, ts)
		writeFile(t, ts, "data", "production\n")
		e.unmount(src.ID, ts)
	}
	s = e.snapshot(src)
	c = e.clone(s, "mask-work", src.Name)
	if !e.fake() {
		tc := e.target()
		e.mount(c.ID, tc)
		writeFile(t, tc, "data", "masked\n")
		e.unmount(c.ID, tc)
	}
	return src, s, c, ts
}

// checkFiledUnderSource checks that ms, SnapshotOf's snapshot of clone c,
// is a new named snapshot of src, listed and found beside s under the
// source (with and without its record), owned, and that it changed
// neither the clone nor the source.
func checkFiledUnderSource(t *testing.T, e *env, src, s, c, ms storage.Object, labels map[string]string) {
	if ms.ID == "" || ms.Name == "" || ms.Identity == "" || ms.Kind != storage.KindSnapshot ||
		ms.Identity == c.Identity || ms.Identity == s.Identity {
		t.Fatalf("SnapshotOf = %+v; want a new snapshot", ms)
	}
	if ms.Parent != src.Identity || ms.Labels[storage.LabelSourceID] != src.Identity || !hasLabels(ms.Labels, labels) {
		t.Errorf("SnapshotOf: Parent %q, labels %v; want the source's Identity %q and %v", ms.Parent, ms.Labels, src.Identity, labels)
	}
	if k, ok := storage.KindOf(ms.Labels); !ok || k != storage.KindSnapshot || storage.Taken(ms) != storage.TakenNamed {
		t.Errorf("KindOf = %q, %v, Taken = %q; want a named snapshot", k, ok, storage.Taken(ms))
	}
	bare := storage.Object{ID: src.ID, Name: src.Name, Kind: storage.KindVolume}
	for _, sv := range []storage.Object{src, bare} {
		if got, want := ids(e.snapshots(sv)), ids([]storage.Object{s, ms}); !slices.Equal(got, want) {
			t.Errorf("Snapshots(%+v) = %v; want %v", sv, got, want)
		}
		byName, err := e.b.SnapshotByName(e.ctx, sv, ms.Name)
		if err != nil || byName.ID != ms.ID || byName.Parent != src.Identity || byName.Labels[storage.LabelFrom] != "mask-work" {
			t.Errorf("SnapshotByName(%s) = %+v, %v; want %s, belonging to the source", ms.Name, byName, err, ms.ID)
		}
	}
	owned := e.owned()
	if o := owned[ms.ID]; o.Kind != storage.KindSnapshot {
		t.Errorf("Owned lists the new snapshot as %q", o.Kind)
	}
	if o := owned[c.ID]; o.Kind != storage.KindClone || o.Parent != s.Identity || !hasLabels(o.Labels, storage.CloneLabels("mask-work", src.Name)) {
		t.Errorf("the clone changed: %+v", o)
	}
	if v, err := e.b.Volume(e.ctx, src.Name); err != nil || v.Identity != src.Identity {
		t.Errorf("the source changed: %+v, %v", v, err)
	}
}

// checkSnapshotOfData clones ms and checks the clone reads what clone c
// held, that the source and c still read what they did, and that c stays
// writable; the new clone is deleted again.
func checkSnapshotOfData(t *testing.T, e *env, src, c, ms storage.Object, ts string) {
	c2 := e.clone(ms, "mask-src@masked", src.Name)
	if c2.Parent != ms.Identity {
		t.Errorf("clone of the new snapshot: Parent %q; want %q", c2.Parent, ms.Identity)
	}
	if !e.fake() {
		tc2 := e.target()
		e.mount(c2.ID, tc2)
		if got := readFile(t, tc2, "data"); got != "masked\n" {
			t.Errorf("a clone of the snapshot of the clone reads %q; want what the clone held", got)
		}
		e.unmount(c2.ID, tc2)
		e.mount(src.ID, ts)
		if got := readFile(t, ts, "data"); got != "production\n" {
			t.Errorf("the source reads %q after SnapshotOf", got)
		}
		e.unmount(src.ID, ts)
		tc := e.target()
		e.mount(c.ID, tc)
		if got := readFile(t, tc, "data"); got != "masked\n" {
			t.Errorf("the clone reads %q after SnapshotOf", got)
		}
		writeFile(t, tc, "data", "written after\n")
		e.unmount(c.ID, tc)
	}
	e.delete(c2.ID)
}

// deleteSnapshottedClone removes the work volume c once its snapshot ms
// is made, as the masking flow does: Delete is ErrBusy (then ms goes
// first) or succeeds, and then ms stays listed and clonable without it.
// ms is deleted either way.
func deleteSnapshottedClone(t *testing.T, e *env, src, s, c, ms storage.Object) {
	err := e.b.Delete(e.ctx, c.ID)
	switch {
	case errors.Is(err, storage.ErrBusy):
		e.delete(ms.ID)
		e.delete(c.ID)
	case err != nil:
		t.Fatalf("Delete of the snapshotted clone: %v; want nil or ErrBusy", err)
	default:
		if got := ids(e.snapshots(src)); !slices.Equal(got, ids([]storage.Object{s, ms})) {
			t.Fatalf("Snapshots after the clone went = %v", got)
		}
		c3 := e.clone(ms, "mask-src@masked+2", src.Name)
		if !e.fake() {
			tc3 := e.target()
			e.mount(c3.ID, tc3)
			if got := readFile(t, tc3, "data"); got != "masked\n" {
				t.Errorf("after the clone went, a clone of its snapshot reads %q", got)
			}
			e.unmount(c3.ID, tc3)
		}
		e.delete(c3.ID)
		e.delete(ms.ID)
	}
}
