package local

import (
	"context"
	"testing"
	"time"
)

// A snapshot's creation time is when it was taken, not when its source was
// made: @latest's reuse window and its choice of the newest snapshot rest
// on it.
func TestSnapshotCreatedIsWhenTaken(t *testing.T) {
	mnt := testPool(t)
	b, err := OpenDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	src, err := b.CreateVolume(ctx, "prod", nil)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(src.Created) > time.Minute || src.Created.After(time.Now()) {
		t.Fatalf("source created %v, now %v", src.Created, time.Now())
	}
	time.Sleep(1100 * time.Millisecond)
	before := time.Now()
	snap, err := b.Snapshot(ctx, src, map[string]string{"snapvol": "1"})
	if err != nil {
		t.Fatal(err)
	}
	if snap.Created.Before(before.Add(-50*time.Millisecond)) || snap.Created.After(time.Now()) {
		t.Errorf("snapshot taken at %v reports Created %v (source created %v)", before, snap.Created, src.Created)
	}
	time.Sleep(20 * time.Millisecond)
	clone, err := b.Clone(ctx, snap, map[string]string{"snapvol": "1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !clone.Created.After(snap.Created) {
		t.Errorf("clone Created %v not after its snapshot's %v", clone.Created, snap.Created)
	}
	// The snapshot read back (as @latest lists them) has the same time.
	snaps, err := b.Snapshots(ctx, src)
	if err != nil || len(snaps) != 1 || !snaps[0].Created.Equal(snap.Created) {
		t.Errorf("Snapshots: %v %v, want one created %v", snaps, err, snap.Created)
	}
}
