package local

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/storage"
)

// poolSubvols lists every subvolume in the pool at root, as paths, from
// the root tree; its own walk, so that it does not lean on the code
// under test.
func poolSubvols(t *testing.T, root string) []string {
	t.Helper()
	f, err := openDir(root)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	top, _, err := inoLookup(f, 0, btrfsFirstFreeID)
	if err != nil {
		t.Fatal(err)
	}
	type at struct {
		id  uint64
		rel string
	}
	var out []string
	for todo := []at{{top, ""}}; len(todo) > 0; {
		cur := todo[0]
		todo = todo[1:]
		refs, err := childSubvols(f, cur.id)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range refs {
			_, dir, err := inoLookup(f, cur.id, r.dir)
			if err != nil {
				t.Fatal(err)
			}
			rel := cur.rel + dir + r.name
			out = append(out, rel)
			todo = append(todo, at{r.child, rel + "/"})
		}
	}
	sort.Strings(out)
	return out
}

// wantPool fails unless the pool holds exactly the subvolumes want.
func wantPool(t *testing.T, root string, want ...string) {
	t.Helper()
	got := poolSubvols(t, root)
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("the pool holds the subvolumes %q; want %q", got, want)
	}
}

// A container can nest subvolumes as deep as it likes (each ioctl needs
// no capability): 70 levels, some in plain directories between, are
// deleted with the clone, and so are they inside a volume snapvol made.
// (Before, "nest deeper than 64" left the clone undeletable for good.)
func TestDeleteCloneWith70NestedLevels(t *testing.T) {
	root, b := testBackend(t)
	ctx := context.Background()
	src, snap, clone := cloneOf(t, b, "app")
	nest := func(top string) {
		p := top
		for i := 0; i < 70; i++ {
			if i%10 == 5 {
				p = filepath.Join(p, "plain")
				if err := os.Mkdir(p, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			p = filepath.Join(p, "n")
			if err := subvolCreate(p); err != nil {
				t.Fatalf("level %d: %v", i+1, err)
			}
		}
		if err := os.WriteFile(filepath.Join(p, "deepest"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	nest(filepath.Join(root, clone.ID))
	if n := len(poolSubvols(t, root)); n != 3+70 {
		t.Fatalf("control: the pool holds %d subvolumes; want 73", n)
	}
	if err := b.Delete(ctx, clone.ID); err != nil {
		t.Fatalf("Delete of a clone holding 70 nested levels: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, clone.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the clone is still there: %v", err)
	}
	wantPool(t, root, src.ID, snap.ID)
	if err := b.Delete(ctx, snap.ID); err != nil {
		t.Fatal(err)
	}
	nest(filepath.Join(root, src.ID))
	if err := b.RemoveVolume(ctx, src); err != nil {
		t.Fatalf("RemoveVolume of a volume holding 70 nested levels: %v", err)
	}
	wantPool(t, root)
}

// A container may make a subvolume it created read-only while another
// is nested in it (its owner may set the flag): the clone is still
// deleted, its clone-side flag cleared through a descriptor opened below
// the clone's root without following links.
func TestDeleteCloneWithReadonlyNestedParent(t *testing.T) {
	root, b := testBackend(t)
	ctx := context.Background()
	src, snap, clone := cloneOf(t, b, "app")
	c := filepath.Join(root, clone.ID)
	for _, p := range []string{"a", "a/dir", "a/dir/b", "a/dir/b/c"} {
		if p == "a/dir" {
			if err := os.Mkdir(filepath.Join(c, p), 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := subvolCreate(filepath.Join(c, p)); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"a", "a/dir/b", ""} { // the clone's own root too
		setReadonly(t, filepath.Join(c, p))
	}
	if err := b.Delete(ctx, clone.ID); err != nil {
		t.Fatalf("Delete of a clone holding read-only nested subvolumes: %v", err)
	}
	wantPool(t, root, src.ID, snap.ID)
}

func setReadonly(t *testing.T, p string) {
	t.Helper()
	f, err := openDir(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fl := uint64(subvolRdonly)
	if err := ioctl(f.Fd(), iocSubvolSetflag, unsafe.Pointer(&fl)); err != nil {
		t.Fatalf("making %s read-only: %v", p, err)
	}
}

// The attack of issue 20: a container plants a subvolume d/production
// in its clone and a link e to the pool's volumes/, and, while the clone
// is deleted, swaps d and e with renameat2(RENAME_EXCHANGE) as fast as
// it can, through a descriptor of the clone (as a second container that
// got one over a socket would). Deleting nested subvolumes by path made
// the plugin destroy volumes/production; by ID it cannot. Many rounds,
// production checked after each.
func TestDeleteRacingSymlinkSwapSparesProduction(t *testing.T) {
	root, b := testBackend(t)
	ctx := context.Background()
	prod, err := b.CreateVolume(ctx, "production", nil)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("production data\n")
	prodFile := filepath.Join(root, prod.ID, "data")
	if err := os.WriteFile(prodFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	snap, err := b.Snapshot(ctx, prod, storage.SnapshotLabels("production"))
	if err != nil {
		t.Fatal(err)
	}
	const rounds = 150
	deadline := time.Now().Add(60 * time.Second)
	var swaps atomic.Int64
	for round := 1; round <= rounds && time.Now().Before(deadline); round++ {
		clone, err := b.Clone(ctx, snap, storage.CloneLabels("production@x", "production"), nil)
		if err != nil {
			t.Fatal(err)
		}
		c := filepath.Join(root, clone.ID)
		if err := os.Mkdir(filepath.Join(c, "d"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := subvolCreate(filepath.Join(c, "d", "production")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(root, dirVolumes), filepath.Join(c, "e")); err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Open(c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer unix.Close(fd)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if unix.Renameat2(fd, "d", fd, "e", unix.RENAME_EXCHANGE) == nil {
					swaps.Add(1)
				}
			}
		}()
		// Let the swapping run before the delete starts, and through it.
		time.Sleep(time.Millisecond)
		derr := b.Delete(ctx, clone.ID)
		close(stop)
		wg.Wait()
		if got, err := os.ReadFile(prodFile); err != nil || !bytes.Equal(got, data) || !isSubvolume(filepath.Join(root, prod.ID)) {
			t.Fatalf("round %d: production is damaged after deleting a clone raced by a symlink swap (Delete: %v): read %q, %v", round, derr, got, err)
		}
		if derr != nil {
			t.Fatalf("round %d: Delete: %v", round, derr)
		}
		if isSubvolume(c) {
			t.Fatalf("round %d: the clone is still there", round)
		}
	}
	if swaps.Load() == 0 {
		t.Fatal("control: the swapper never swapped d and e")
	}
	t.Logf("%d swaps", swaps.Load())
	wantPool(t, root, prod.ID, snap.ID)
}

// The check right before each destroy: a subvolume ID that is not below
// the subvolume being deleted is never destroyed, whatever listed it.
func TestDestroyBelowRefusesWhatIsOutside(t *testing.T) {
	root, b := testBackend(t)
	src, snap, clone := cloneOf(t, b, "app")
	f, err := openSubvol(filepath.Join(root, clone.ID))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	top, _, err := inoLookup(f, 0, btrfsFirstFreeID)
	if err != nil {
		t.Fatal(err)
	}
	srcID, err := subvolID(filepath.Join(root, src.ID))
	if err != nil {
		t.Fatal(err)
	}
	err = destroyBelow(f, top, srcID, map[uint64]bool{top: true})
	if err == nil || !strings.Contains(err.Error(), "no longer below") {
		t.Fatalf("destroyBelow(the source's ID) = %v; want a refusal", err)
	}
	wantPool(t, root, src.ID, snap.ID, clone.ID)
	// And openBelow follows no link, not even one inside the clone.
	c := filepath.Join(root, clone.ID)
	if err := os.Mkdir(filepath.Join(c, "real"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"up": filepath.Join(root, dirVolumes), "in": "real"} {
		if err := os.Symlink(target, filepath.Join(c, name)); err != nil {
			t.Fatal(err)
		}
		if g, err := openBelow(f, name); err == nil {
			g.Close()
			t.Errorf("openBelow followed the link %s -> %s", name, target)
		}
	}
	if g, err := openBelow(f, "../../"+dirVolumes); err == nil {
		g.Close()
		t.Errorf("openBelow went above the clone")
	}
	g, err := openBelow(f, "real")
	if err != nil {
		t.Fatalf("control: openBelow of a plain directory: %v", err)
	}
	g.Close()
}
