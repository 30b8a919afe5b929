package local

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/internal/roottest"
	"github.com/snapvol/snapvol/storage"
)

// testPoolFile makes a fresh 256M btrfs pool file and an empty mount
// point for it, failing (never skipping) without root or mkfs.btrfs.
func testPoolFile(t testing.TB) (img, mnt string) {
	t.Helper()
	return testPoolFileSize(t, 256<<20)
}

func testPoolFileSize(t testing.TB, size int64) (img, mnt string) {
	t.Helper()
	roottest.Require(t, "loop devices, mounts", roottest.Btrfs)
	dir := t.TempDir()
	img, mnt = filepath.Join(dir, "pool.img"), filepath.Join(dir, "pool")
	if err := makePoolFile(img, size); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	return img, mnt
}

// testPool is a fresh loop-mounted btrfs pool, gone at the end of the test.
func testPool(t testing.TB) string {
	t.Helper()
	return testPoolSize(t, 256<<20)
}

// testBackend is a Backend on a fresh testPool, and the pool.
func testBackend(t testing.TB) (string, *Backend) {
	t.Helper()
	root := testPool(t)
	b, err := OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	return root, b
}

// testPoolSize is testPool of size bytes.
func testPoolSize(t testing.TB, size int64) string {
	t.Helper()
	img, mnt := testPoolFileSize(t, size)
	if err := loopMount(img, mnt); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	return mnt
}

// Clones made at once all land in clones/, labelled, with nothing left in
// staging/; a clone a crash left in staging/ is deleted at the next Open,
// with its label.
func TestClonesAreStagedAndCrashLeftoversDropped(t *testing.T) {
	root, b := testBackend(t)
	ctx := context.Background()
	src, err := b.CreateVolume(ctx, "app", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, src.ID, "data"), []byte("production"), 0o644); err != nil {
		t.Fatal(err)
	}
	snap, err := b.Snapshot(ctx, src, map[string]string{storage.LabelOwner: "1", storage.LabelSource: "app"})
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	clones := make([]storage.Object, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range clones {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			clones[i], errs[i] = b.Clone(ctx, snap, map[string]string{storage.LabelOwner: "1", storage.LabelVolume: "v"}, nil)
		}(i)
	}
	wg.Wait()
	for i, c := range clones {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !strings.HasPrefix(c.ID, "clones/") || c.Labels[storage.LabelVolume] != "v" {
			t.Fatalf("clone %+v", c)
		}
		got, err := os.ReadFile(filepath.Join(root, c.ID, "data"))
		if err != nil || string(got) != "production" {
			t.Fatalf("clone %s: %q, %v", c.ID, got, err)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(root, dirStaging)); len(ents) != 0 {
		t.Fatalf("staging/ not empty after the clones: %v", ents)
	}
	owned, err := b.Owned(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if kinds := countKinds(owned); kinds[storage.KindClone] != n || kinds[storage.KindSnapshot] != 1 {
		t.Fatalf("owned: %v", kinds)
	}

	// A crash after the snapshot ioctl, before the rename.
	id := dirClones + "/c-crashed"
	if err := b.writeLabels(id, map[string]string{storage.LabelOwner: "1"}); err != nil {
		t.Fatal(err)
	}
	stage := filepath.Join(root, dirStaging, "c-crashed")
	if err := os.Mkdir(stage, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := snapCreate(filepath.Join(root, snap.ID), filepath.Join(stage, "c-crashed"), false); err != nil {
		t.Fatal(err)
	}
	if b, err = OpenDir(root); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, dirStaging)); len(ents) != 0 {
		t.Fatalf("staging/ not emptied at Open: %v", ents)
	}
	if _, err := os.Stat(labelFile(root, id)); !os.IsNotExist(err) {
		t.Fatalf("label of the crashed clone kept: %v", err)
	}
	for _, c := range clones {
		if err := b.Delete(ctx, c.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Delete(ctx, snap.ID); err != nil {
		t.Fatal(err)
	}
}

func countKinds(objs []storage.Object) map[storage.Kind]int {
	m := map[storage.Kind]int{}
	for _, o := range objs {
		m[o.Kind]++
	}
	return m
}
