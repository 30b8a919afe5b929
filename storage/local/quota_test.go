package local

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/storage"
)

// fill writes 1M blocks into dir/name until a write fails, and returns
// how much was written and the error (nil if max was reached first).
func fill(t *testing.T, dir, name string, max int64) (int64, error) {
	t.Helper()
	if dir == "" || !filepath.IsAbs(dir) || filepath.Clean(dir) == "/" {
		t.Fatalf("refusing to write below %q", dir)
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*7 + 1) // not all zero, so nothing can skip it
	}
	var n int64
	for n < max {
		w, err := f.Write(buf)
		n += int64(w)
		if err != nil {
			return n, err
		}
	}
	return n, f.Sync()
}

func isQuotaErr(err error) bool { return errors.Is(err, unix.EDQUOT) || errors.Is(err, unix.ENOSPC) }

// mountAt mounts object id of b at a fresh directory of the test.
func mountAt(t *testing.T, b *Backend, id string) string {
	t.Helper()
	target := filepath.Join(t.TempDir(), "mnt")
	if err := b.Mount(context.Background(), id, target); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Unmount(context.Background(), id, target) })
	return target
}

// A clone that writes until it can write no more stops at its limit
// (-o size=) and, with no limit of its own, at what the reserve leaves;
// production keeps writing in both cases, and ObjectUsage says what each
// clone holds and may hold.
func TestClonesCannotTakeProductionsSpace(t *testing.T) {
	const size = 768 << 20
	root := testPoolSize(t, size)
	b, err := Open(Config{Pool: root, Reserve: Reserve{Percent: 25}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if b.quota.mode != quotaSimple {
		t.Fatalf("quota mode %s; this kernel has simple quotas", b.quota.mode)
	}
	ctx := context.Background()
	src, err := b.CreateVolume(ctx, "prod", nil)
	if err != nil {
		t.Fatal(err)
	}
	prod := mountAt(t, b, src.ID)
	if n, err := fill(t, prod, "data", 32<<20); err != nil {
		t.Fatalf("production wrote %d bytes: %v", n, err)
	}
	snap, err := b.Snapshot(ctx, src, storage.SnapshotLabels("prod"))
	if err != nil {
		t.Fatal(err)
	}

	// A clone limited to 48M.
	small, err := b.Clone(ctx, snap, storage.CloneLabels("prod@latest+small", "prod"), map[string]string{"size": "48M"})
	if err != nil {
		t.Fatal(err)
	}
	sm := mountAt(t, b, small.ID)
	n, err := fill(t, sm, "fill", size)
	if !isQuotaErr(err) {
		t.Fatalf("a clone limited to 48M wrote %d bytes: %v; want EDQUOT", n, err)
	}
	if n < 32<<20 || n > 48<<20 {
		t.Errorf("a clone limited to 48M wrote %d bytes before %v", n, err)
	}
	t.Logf("clone limited to 48M: wrote %dM, then %v", n>>20, err)

	// A clone with no limit of its own, up to the reserve.
	big, err := b.Clone(ctx, snap, storage.CloneLabels("prod@latest+big", "prod"), nil)
	if err != nil {
		t.Fatal(err)
	}
	bm := mountAt(t, b, big.ID)
	n, err = fill(t, bm, "fill", size)
	if !isQuotaErr(err) {
		t.Fatalf("an unlimited clone wrote %d bytes: %v; want EDQUOT at the reserve", n, err)
	}
	t.Logf("unlimited clone: wrote %dM, then %v", n>>20, err)
	u, err := b.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pool: size %dM used %dM free %dM reserve %dM", u.Size>>20, u.Used>>20, u.Free>>20, u.Reserve>>20)
	if u.Reserve != u.Size/4 || u.Free < u.Reserve*3/4 {
		t.Errorf("clones left %dM free; the reserve is %dM", u.Free>>20, u.Reserve>>20)
	}

	// Production writes what the reserve kept for it.
	if n, err := fill(t, prod, "more", u.Reserve/2); err != nil {
		t.Fatalf("production could write only %dM after the clones filled their share: %v", n>>20, err)
	}

	usage, err := b.ObjectUsage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := usage[small.ID]; got.Limit != 48<<20 || got.Bytes < 32<<20 || got.Bytes > 48<<20 {
		t.Errorf("ObjectUsage of the limited clone = %+v", got)
	}
	if got := usage[big.ID]; got.Limit != 0 || got.Bytes < 100<<20 {
		t.Errorf("ObjectUsage of the unlimited clone = %+v", got)
	}
	if _, ok := usage[snap.ID]; !ok {
		t.Errorf("ObjectUsage lacks the snapshot %s: %v", snap.ID, usage)
	}
	if got := usage[src.ID]; got.Bytes < 32<<20 {
		t.Errorf("ObjectUsage of production = %+v", got)
	}
}

// CLONE_SIZE limits every clone that names no size; size=0 lifts it.
func TestCloneSizeDefault(t *testing.T) {
	root := testPoolSize(t, 512<<20)
	b, err := Open(Config{Pool: root, CloneSize: 24 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ctx := context.Background()
	src, err := b.CreateVolume(ctx, "prod", nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := b.Snapshot(ctx, src, storage.SnapshotLabels("prod"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.Clone(ctx, snap, storage.CloneLabels("a", "prod"), nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := fill(t, mountAt(t, b, c.ID), "fill", 256<<20)
	if !isQuotaErr(err) || n > 24<<20 {
		t.Fatalf("a clone under CLONE_SIZE=24M wrote %dM: %v", n>>20, err)
	}
	free, err := b.Clone(ctx, snap, storage.CloneLabels("b", "prod"), map[string]string{"size": "0"})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := fill(t, mountAt(t, b, free.ID), "fill", 64<<20); err != nil {
		t.Fatalf("a clone with size=0 wrote %dM: %v", n>>20, err)
	}
	if err := b.CheckOptions(storage.KindVolume, map[string]string{"size": "1G"}); err == nil {
		t.Error("size= accepted on a regular volume")
	}
	for _, bad := range []string{"lots", "-1G", "512K", "1.5G"} {
		if err := b.CheckOptions(storage.KindClone, map[string]string{"size": bad}); err == nil {
			t.Errorf("size=%s accepted", bad)
		}
	}
	if err := b.CheckOptions(storage.KindClone, map[string]string{"size": "10G"}); err != nil {
		t.Error(err)
	}
}

func TestParseReserveAndSizes(t *testing.T) {
	for in, want := range map[string]Reserve{"10%": {Percent: 10}, "2G": {Bytes: 2 << 30}, "0": {}, "512M": {Bytes: 512 << 20}, "0.5%": {Percent: 0.5}} {
		got, err := ParseReserve(in)
		if err != nil || got != want {
			t.Errorf("ParseReserve(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "100%", "-1%", "x%", "ten"} {
		if _, err := ParseReserve(bad); err == nil {
			t.Errorf("ParseReserve(%q) accepted", bad)
		}
	}
	if r := (Reserve{Percent: 10}); r.Of(1000) != 100 {
		t.Errorf("10%% of 1000 = %d", r.Of(1000))
	}
	for in, want := range map[string]int64{"10G": 10 << 30, "0": 0, "1M": 1 << 20, "3GiB": 3 << 30, "2t": 2 << 40} {
		if got, err := ParseCloneSize(in); err != nil || got != want {
			t.Errorf("ParseCloneSize(%q) = %d, %v", in, got, err)
		}
	}
}

// Where the pool has full qgroups (kernels before 6.7, or an operator's
// choice), clone limits still hold, set right after the clone is made;
// a reserve, which full qgroups cannot keep, is refused at Open.
func TestFullQgroupsFallback(t *testing.T) {
	root := testPoolSize(t, 512<<20)
	f, err := openDir(root)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := ioctl(f.Fd(), iocQuotaCtl, unsafe.Pointer(&quotaCtlArgs{cmd: quotaCtlEnable})); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Config{Pool: root, Reserve: Reserve{Percent: 10}}); err == nil || !strings.Contains(err.Error(), "simple quotas") {
		t.Fatalf("Open with a reserve on full qgroups = %v; want a refusal naming simple quotas", err)
	}
	b, err := Open(Config{Pool: root, CloneSize: 24 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.quota.mode != quotaFull {
		t.Fatalf("mode %s; want full qgroups", b.quota.mode)
	}
	ctx := context.Background()
	src, err := b.CreateVolume(ctx, "prod", nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := fill(t, mountAt(t, b, src.ID), "data", 16<<20); err != nil {
		t.Fatalf("production wrote %dM: %v", n>>20, err)
	}
	snap, err := b.Snapshot(ctx, src, storage.SnapshotLabels("prod"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.Clone(ctx, snap, storage.CloneLabels("a", "prod"), nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := fill(t, mountAt(t, b, c.ID), "fill", 256<<20)
	if !isQuotaErr(err) || n > 24<<20 {
		t.Fatalf("a clone limited to 24M on full qgroups wrote %dM: %v", n>>20, err)
	}
	u, err := b.ObjectUsage(ctx)
	if err != nil || u[c.ID].Limit != 24<<20 {
		t.Fatalf("ObjectUsage of the clone = %+v, %v", u[c.ID], err)
	}
}

// Quotas on a filesystem POOL is only a directory of are the operator's:
// limits there are refused, saying how to turn quotas on.
func TestQuotasNotTurnedOnForAForeignFilesystem(t *testing.T) {
	root := testPool(t)
	dir := filepath.Join(root, "snapvol")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Config{Pool: dir, CloneSize: 1 << 30})
	if err == nil || !strings.Contains(err.Error(), "turn them on yourself") {
		t.Fatalf("Open with limits in a directory of a filesystem = %v; want a refusal", err)
	}
	f, err := openDir(root)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if mode, _, err := quotaStatus(f); err != nil || mode != quotaOff {
		t.Fatalf("quotas on the filesystem: %s, %v; want them left off", mode, err)
	}
	b, err := Open(Config{Pool: dir})
	if err != nil {
		t.Fatalf("Open without limits: %v", err)
	}
	b.Close()
}

// Clones made before a reserve was set (an upgrade) join the clones'
// group at the next Open and are held to the reserve like new ones.
func TestReserveCoversEarlierClones(t *testing.T) {
	root := testPoolSize(t, 512<<20)
	old, err := OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	_, _, clone := cloneOf(t, old, "prod")
	old.Close()
	b, err := Open(Config{Pool: root, Reserve: Reserve{Percent: 40}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	n, err := fill(t, mountAt(t, b, clone.ID), "fill", 512<<20)
	if !isQuotaErr(err) {
		t.Fatalf("a clone made before the reserve wrote %dM: %v", n>>20, err)
	}
	u, err := b.Usage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if u.Free < u.Reserve*3/4 {
		t.Fatalf("the earlier clone left %dM free; the reserve is %dM", u.Free>>20, u.Reserve>>20)
	}
}
