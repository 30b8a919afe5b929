package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/internal/roottest"
	"github.com/snapvol/snapvol/storage"
)

// smallHost mounts a tmpfs of size bytes in the test's temp dir: a host
// filesystem too small for the pool.
func smallHost(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "host")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// The pool file is allocated, not sparse: the host filesystem cannot run
// out under it.
func TestPoolFileIsAllocated(t *testing.T) {
	img, _ := testPoolFile(t)
	var st unix.Stat_t
	if err := unix.Stat(img, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 < st.Size || st.Size != 256<<20 {
		t.Fatalf("pool file of %d bytes has %d allocated", st.Size, st.Blocks*512)
	}
}

// A pool that would not fit on the filesystem under STATE_DIR is refused
// at start, naming both sizes; so is a sparse pool file an earlier
// version made there, which could not be allocated now.
func TestPoolRefusedWhereItCannotFit(t *testing.T) {
	needRoot(t)
	host := smallHost(t, "64m")
	_, err := openPool("", host, 256<<20)
	if err == nil || !strings.Contains(err.Error(), "256M") || !strings.Contains(err.Error(), "64M") {
		t.Fatalf("openPool on a 64M filesystem with POOL_SIZE 256M = %v; want a refusal naming both", err)
	}
	if _, err := os.Stat(filepath.Join(host, "pool.img")); !os.IsNotExist(err) {
		t.Fatalf("a refused pool left a file: %v", err)
	}
	// An old sparse pool file.
	f, err := os.Create(filepath.Join(host, "pool.img"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(256 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = openPool("", host, 256<<20)
	if err == nil || !strings.Contains(err.Error(), "256M") {
		t.Fatalf("openPool of a sparse 256M pool file on a 64M filesystem = %v; want a refusal", err)
	}
	if mounted := isBtrfs(filepath.Join(host, "pool")); mounted {
		t.Fatal("the refused pool was mounted")
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	roottest.Require(t, "loop devices, mounts", roottest.Btrfs)
}

// A pool remounted read-only is reported unhealthy, naming the pool and
// the reason; back read-write it is healthy again.
func TestHealthReadOnlyPool(t *testing.T) {
	root, b := testBackend(t)
	ctx := context.Background()
	if err := b.Health(ctx); err != nil {
		t.Fatalf("Health of a fresh pool: %v", err)
	}
	if err := unix.Mount("", root, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	err := b.Health(ctx)
	if !errors.Is(err, storage.ErrUnhealthy) || !strings.Contains(err.Error(), root) || !strings.Contains(err.Error(), "mounted read-only") {
		t.Fatalf("Health of a read-only pool = %v; want ErrUnhealthy naming %s and the read-only mount", err, root)
	}
	t.Logf("read-only: %v", err)
	if err := unix.Mount("", root, "", unix.MS_REMOUNT, ""); err != nil {
		t.Fatal(err)
	}
	if err := b.Health(ctx); err != nil {
		t.Fatalf("Health after remounting read-write: %v", err)
	}
}

// A sparse pool on a host filesystem that fills up is what the issue saw
// happen: the loop device's writes fail, btrfs forces the pool read-only.
// Health says so, with the kernel's reason, and a backend call that hits
// it is remembered.
func TestHealthForcedReadOnly(t *testing.T) {
	needRoot(t)
	host := smallHost(t, "96m")
	img, mnt := filepath.Join(host, "pool.img"), filepath.Join(host, "pool")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(256 << 20); err != nil { // sparse, as earlier versions made it
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command("mkfs.btrfs", "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.btrfs: %v: %s", err, out)
	}
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := loopMount(img, mnt); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	b, err := OpenDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := b.Health(ctx); err != nil {
		t.Fatalf("Health before: %v", err)
	}
	v, err := b.CreateVolume(ctx, "prod", nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := fill(t, filepath.Join(mnt, v.ID), "big", 200<<20)
	t.Logf("wrote %dM into a pool on a 96M host filesystem: %v", n>>20, err)
	unix.Sync()
	err = b.Health(ctx)
	if !errors.Is(err, storage.ErrUnhealthy) || !strings.Contains(err.Error(), mnt) || !strings.Contains(err.Error(), "forced the filesystem read-only") {
		t.Fatalf("Health of a pool the kernel forced read-only = %v", err)
	}
	t.Logf("forced read-only: %v", err)
	// A backend call that fails there is an error too, and says why.
	if _, err := b.CreateVolume(ctx, "other", nil); err == nil {
		t.Fatal("CreateVolume on a read-only pool succeeded")
	}
}

// A hole punched in the pool file (what a discard or fstrim reaching the
// loop device does) makes the pool unhealthy: Health names the file, how
// much of it is allocated and the fallocate command that repairs it; once
// that command has run, the pool is healthy again.
func TestHealthSparsePoolFile(t *testing.T) {
	b, host := openOnSmallHost(t, "320m", 256<<20)
	img := filepath.Join(host, "pool.img")
	ctx := context.Background()
	if err := b.Health(ctx); err != nil {
		t.Fatalf("Health of a fresh pool: %v", err)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The last 32M: past anything btrfs has written in a fresh pool.
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 224<<20, 32<<20); err != nil {
		t.Fatal(err)
	}
	err = b.Health(ctx)
	if !errors.Is(err, storage.ErrUnhealthy) || !strings.Contains(err.Error(), img) || !strings.Contains(err.Error(), "sparse") ||
		!strings.Contains(err.Error(), fmt.Sprintf("fallocate -l %d %s", 256<<20, img)) {
		t.Fatalf("Health with a hole in the pool file = %v; want ErrUnhealthy naming %s and the fallocate that repairs it", err, img)
	}
	t.Logf("sparse: %v", err)
	out, err := exec.Command("fallocate", "-l", fmt.Sprint(256<<20), img).CombinedOutput()
	if err != nil {
		t.Fatalf("fallocate: %v: %s", err, out)
	}
	if err := b.Health(ctx); err != nil {
		t.Fatalf("Health after fallocate: %v", err)
	}
}
