package local

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snapvol/snapvol/storage"
)

// showField reads one field of `btrfs subvolume show`.
func showField(t *testing.T, path, field string) string {
	t.Helper()
	out, err := exec.Command("btrfs", "subvolume", "show", path).CombinedOutput()
	if err != nil {
		t.Fatalf("btrfs subvolume show %s: %v: %s", path, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == field {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in:\n%s", field, out)
	return ""
}

// Identities are the UUIDs btrfs-progs shows, and a snapshot's Parent is
// its source's UUID: what `btrfs subvolume show` calls UUID and Parent UUID.
func TestIdentityIsTheSubvolumeUUID(t *testing.T) {
	root, b := testBackend(t)
	ctx := context.Background()
	src, err := b.CreateVolume(ctx, "app", nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := b.Snapshot(ctx, src, storage.SnapshotLabels("app"))
	if err != nil {
		t.Fatal(err)
	}
	clone, err := b.Clone(ctx, snap, storage.CloneLabels("app@latest", "app"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []storage.Object{src, snap, clone} {
		if got := showField(t, filepath.Join(root, o.ID), "UUID"); got != o.Identity {
			t.Errorf("%s: Identity %q, btrfs says UUID %q", o.ID, o.Identity, got)
		}
	}
	if got := showField(t, filepath.Join(root, snap.ID), "Parent UUID"); got != snap.Parent || got != src.Identity {
		t.Errorf("snapshot Parent %q, btrfs says %q, source %q", snap.Parent, got, src.Identity)
	}
	if got := showField(t, filepath.Join(root, clone.ID), "Parent UUID"); got != clone.Parent || got != snap.Identity {
		t.Errorf("clone Parent %q, btrfs says %q, snapshot %q", clone.Parent, got, snap.Identity)
	}
}

// Pools made by earlier versions keep working: snapshots labelled without
// the source's UUID belong to the source they were taken of, and a volume
// made before volumes were labelled is a source, never snapvol's to adopt
// or delete.
func TestObjectsOfEarlierVersions(t *testing.T) {
	root, b := testBackend(t)
	ctx := context.Background()
	// What earlier versions' CreateVolume left: a bare subvolume.
	if err := subvolCreate(filepath.Join(root, dirVolumes, "app")); err != nil {
		t.Fatal(err)
	}
	src, err := b.Volume(ctx, "app")
	if err != nil || src.Owned() {
		t.Fatalf("Volume(app) = %+v, %v", src, err)
	}
	// And their snapshots: labelled with owner and source name only.
	id := dirSnapshots + "/app/snapvol-20240101-000000.000000-abcd"
	if err := os.MkdirAll(filepath.Join(root, dirSnapshots, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := b.writeLabels(id, map[string]string{storage.LabelOwner: "1", storage.LabelSource: "app"}); err != nil {
		t.Fatal(err)
	}
	if err := snapCreate(filepath.Join(root, src.ID), filepath.Join(root, id), true); err != nil {
		t.Fatal(err)
	}
	snaps, err := b.Snapshots(ctx, src)
	if err != nil || len(snaps) != 1 || snaps[0].ID != id || snaps[0].Parent != src.Identity || !snaps[0].Owned() {
		t.Fatalf("Snapshots = %+v, %v; want the old plugin snapshot, belonging to app", snaps, err)
	}
	owned, err := b.Owned(ctx)
	if err != nil || len(owned) != 1 || owned[0].ID != id || owned[0].Kind != storage.KindSnapshot {
		t.Fatalf("Owned = %+v, %v; want only the old snapshot, as a snapshot", owned, err)
	}
	if _, err := b.CreateVolume(ctx, "app", nil); err == nil || !strings.Contains(err.Error(), "not made by snapvol") {
		t.Errorf("CreateVolume over an unlabelled volume = %v; want ErrForeign", err)
	}
	if err := b.RemoveVolume(ctx, src); err == nil {
		t.Errorf("RemoveVolume of an unlabelled volume succeeded")
	}
	if err := b.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	// Gone, label and all: deleting it again is success, not a refusal
	// for want of a label.
	if err := b.Delete(ctx, id); err != nil {
		t.Fatalf("Delete of a deleted snapshot: %v", err)
	}
}
