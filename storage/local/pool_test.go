package local

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/storage"
)

// A pool file already bound to a loop device (its filesystem still alive
// after a managed plugin restart) is mounted from that device, never bound
// to a second one.
func TestLoopMountReusesBoundDevice(t *testing.T) {
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Fatal("losetup not found: apt-get install -y mount")
	}
	img, mnt := testPoolFile(t)
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		_ = unix.Unmount(mnt, unix.MNT_DETACH)
		_ = exec.Command("losetup", "-d", dev).Run()
	})

	if err := loopMount(img, mnt); err != nil {
		t.Fatal(err)
	}
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var source string
	for _, line := range strings.Split(string(mountinfo), "\n") {
		f := strings.Fields(line)
		if len(f) > 9 && f[4] == mnt {
			source = f[len(f)-2]
		}
	}
	if source != dev {
		t.Fatalf("pool mounted from %q, want the device already bound to it, %s", source, dev)
	}
	out, err = exec.Command("losetup", "--associated", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(strings.Split(strings.TrimSpace(string(out)), "\n")); n != 1 {
		t.Fatalf("pool file bound to %d loop devices, want 1:\n%s", n, out)
	}
}

// openOnSmallHost opens a pool file of poolSize bytes in STATE_DIR on a
// tmpfs of hostSize (the host filesystem), and unmounts it at the end.
func openOnSmallHost(t *testing.T, hostSize string, poolSize int64) (*Backend, string) {
	t.Helper()
	needRoot(t)
	host := smallHost(t, hostSize)
	b, err := Open(Config{StateDir: host, PoolSize: poolSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Close()
		_ = unix.Unmount(filepath.Join(host, "pool"), unix.MNT_DETACH)
	})
	return b, host
}

// allocated is how many bytes of file img the filesystem under it holds.
func allocated(t *testing.T, img string) (have, size int64) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(img, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512, st.Size
}

// The pool is mounted nosuid,nodev (so is every bind of a volume or clone
// made from it, and every copy of those binds a managed plugin propagates
// to the host) and, being a file on a loop device, nodiscard. A pool an
// earlier version mounted with discard and without those flags is
// remounted with them at the next start.
func TestPoolMountOptions(t *testing.T) {
	b, host := openOnSmallHost(t, "320m", 256<<20)
	mnt := filepath.Join(host, "pool")
	check := func(when string) {
		t.Helper()
		m, ok := mountOf(mnt)
		if !ok || m.point != mnt {
			t.Fatalf("%s: pool %s not mounted", when, mnt)
		}
		if hasDiscard(m.superOpts) {
			t.Errorf("%s: pool file mounted with discard (%s): deleting clones punches holes in it", when, m.superOpts)
		}
		if !hasOpt(m.opts, "nosuid") || !hasOpt(m.opts, "nodev") {
			t.Errorf("%s: pool mounted %s, want nosuid,nodev", when, m.opts)
		}
		// A volume's bind inherits them.
		v, err := b.CreateVolume(context.Background(), "prod-"+strings.Fields(when)[0], nil)
		if err != nil {
			t.Fatal(err)
		}
		target := mountAt(t, b, v.ID)
		if bm, ok := mountOf(target); !ok || !hasOpt(bm.opts, "nosuid") || !hasOpt(bm.opts, "nodev") {
			t.Errorf("%s: a volume's bind mount %s has options %q, want nosuid,nodev", when, target, bm.opts)
		}
	}
	check("first start")

	// What 65aeefa left: no per-mount flags, btrfs's own discard=async.
	if err := unix.Mount("", mnt, "", unix.MS_REMOUNT, "discard=async"); err != nil {
		t.Fatal(err)
	}
	if m, _ := mountOf(mnt); !hasDiscard(m.superOpts) || hasOpt(m.opts, "nosuid") {
		t.Fatalf("could not remount the pool as an old version had it: %s %s", m.opts, m.superOpts)
	}
	if _, err := openPool("", host, 256<<20); err != nil {
		t.Fatal(err)
	}
	check("restart")
}

// Deleting clones gives nothing back to the host filesystem: the pool
// file stays allocated in full. With btrfs's default discard=async on the
// loop device (65aeefa), the deleted clones' block groups were discarded
// and punched out of the file within about 40 s.
func TestPoolFileStaysAllocatedAsClonesGo(t *testing.T) {
	const poolSize = 300 << 20
	b, host := openOnSmallHost(t, "400m", poolSize)
	img := filepath.Join(host, "pool.img")
	if have, size := allocated(t, img); have < size {
		t.Fatalf("fresh pool file: %d of %d bytes allocated", have, size)
	}
	ctx := context.Background()
	src, err := b.CreateVolume(ctx, "prod", nil)
	if err != nil {
		t.Fatal(err)
	}
	prod := mountAt(t, b, src.ID)
	if _, err := fill(t, prod, "data", 48<<20); err != nil {
		t.Fatal(err)
	}
	var gone []string
	for i := 0; i < 2; i++ {
		snap, err := b.Snapshot(ctx, src, storage.SnapshotLabels("prod"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := b.Clone(ctx, snap, storage.CloneLabels(fmt.Sprintf("prod@now+%d", i), "prod"), nil)
		if err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(t.TempDir(), "clone")
		if err := b.Mount(ctx, c.ID, target); err != nil {
			t.Fatal(err)
		}
		if _, err := fill(t, target, "ci", 24<<20); err != nil {
			t.Fatal(err)
		}
		if err := b.Unmount(ctx, c.ID, target); err != nil {
			t.Fatal(err)
		}
		gone = append(gone, c.ID, snap.ID)
	}
	// Production rewrites its data: the old extents go with the snapshots.
	if _, err := fill(t, prod, "data", 48<<20); err != nil {
		t.Fatal(err)
	}
	for _, id := range gone {
		if err := b.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(filepath.Join(prod, "data")); err != nil {
		t.Fatal(err)
	}
	// Commit often, so the cleaner drops the deleted subvolumes and the
	// emptied block groups as soon as it can; watch the file meanwhile.
	root, err := os.Open(b.Root())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	deadline := time.Now().Add(75 * time.Second)
	for time.Now().Before(deadline) {
		_ = unix.Syncfs(int(root.Fd()))
		if have, size := allocated(t, img); have < size {
			t.Fatalf("after deleting clones the pool file has %s of its %s allocated: the pool punched holes in it", human(have), human(size))
		}
		time.Sleep(time.Second)
	}
	have, size := allocated(t, img)
	t.Logf("75 s after deleting 2 clones and 2 snapshots (48M+24M each, production rewriting 48M): %d of %d bytes allocated", have, size)
	if err := b.Health(ctx); err != nil {
		t.Fatalf("Health: %v", err)
	}
}
