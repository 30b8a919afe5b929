package local

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/mountpoint"
	"github.com/snapvol/snapvol/storage"
)

// cloneOf makes a volume, a snapshot of it and a clone of that.
func cloneOf(t *testing.T, b *Backend, name string) (src, snap, clone storage.Object) {
	t.Helper()
	ctx := context.Background()
	src, err := b.CreateVolume(ctx, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, err = b.Snapshot(ctx, src, storage.SnapshotLabels(name))
	if err != nil {
		t.Fatal(err)
	}
	clone, err = b.Clone(ctx, snap, storage.CloneLabels(name+"@latest", name), nil)
	if err != nil {
		t.Fatal(err)
	}
	return src, snap, clone
}

// openTo makes the test's temp directories above target traversable, so
// an unprivileged user can reach what is mounted there (they are the
// test's own, 0700 otherwise).
func openTo(t *testing.T, target string) {
	t.Helper()
	for d := filepath.Dir(target); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// What CI writes into a clone cannot act on the host: the clone's mount
// is nosuid,nodev, so a setuid-root binary planted there runs with the
// caller's rights and a device node opens nothing, while the same files
// in the test's own temporary directory (no such flags) do. A regular
// volume's mount has the flags too: it inherits them from the pool's
// mount, as every bind of it does.
func TestCloneMountsAreNosuidNodev(t *testing.T) {
	_, b := testBackend(t)
	src, _, clone := cloneOf(t, b, "app")
	ctx := context.Background()
	base := t.TempDir()
	tc, tv := filepath.Join(base, "clone"), filepath.Join(base, "volume")
	if err := b.Mount(ctx, clone.ID, tc); err != nil {
		t.Fatal(err)
	}
	defer b.Unmount(ctx, clone.ID, tc)
	if err := b.Mount(ctx, src.ID, tv); err != nil {
		t.Fatal(err)
	}
	defer b.Unmount(ctx, src.ID, tv)
	openTo(t, tc)

	var st unix.Statfs_t
	if err := unix.Statfs(tc, &st); err != nil {
		t.Fatal(err)
	}
	if st.Flags&unix.ST_NOSUID == 0 || st.Flags&unix.ST_NODEV == 0 {
		t.Fatalf("clone mount flags %#x lack nosuid,nodev", st.Flags)
	}
	m, ok := mountOf(tc)
	if !ok || m.point != tc || !hasOpt(m.opts, "nosuid") || !hasOpt(m.opts, "nodev") {
		t.Fatalf("mountinfo for %s: %+v; want nosuid,nodev", tc, m)
	}
	// Mounting again (a restart finding the mount) keeps them.
	if err := b.Mount(ctx, clone.ID, tc); err != nil {
		t.Fatal(err)
	}

	ctl := filepath.Join(base, "control")
	if err := os.Mkdir(ctl, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{tc, tv, ctl} {
		if dir == "" || (dir != ctl && !mountpoint.IsMountPoint(dir)) {
			t.Fatalf("%q is not mounted", dir)
		}
		plantSetuid(t, filepath.Join(dir, "id"))
		if err := unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
			t.Fatal(err)
		}
	}
	euid := func(dir string) string {
		out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", filepath.Join(dir, "id"), "-u").CombinedOutput()
		if err != nil {
			t.Fatalf("running %s/id as nobody: %v: %s", dir, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := euid(ctl); got != "0" {
		t.Fatalf("control: a setuid-root id in %s runs with euid %s; want 0 (the test cannot tell otherwise)", ctl, got)
	}
	if f, err := os.Open(filepath.Join(ctl, "null")); err != nil {
		t.Fatalf("control: the device node in %s does not open: %v", ctl, err)
	} else {
		f.Close()
	}
	for _, dir := range []string{tc, tv} {
		if got := euid(dir); got != "65534" {
			t.Errorf("a setuid-root binary in %s ran with euid %s; want the caller's, 65534", dir, got)
		}
		if f, err := os.Open(filepath.Join(dir, "null")); err == nil {
			f.Close()
			t.Errorf("a device node in %s opened", dir)
		} else if !errors.Is(err, unix.EACCES) {
			t.Errorf("opening a device node in %s: %v; want EACCES", dir, err)
		}
	}
}

// plantSetuid copies id(1) to p as a setuid-root binary.
func plantSetuid(t *testing.T, p string) {
	t.Helper()
	bin, err := exec.LookPath("id")
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o4755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
}

// The pool's directories are closed to other host users.
func TestPoolIsClosed(t *testing.T) {
	root := testPool(t)
	if _, err := OpenDir(root); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dirVolumes, dirSnapshots, dirClones, dirLabels, dirStaging} {
		st, err := os.Stat(filepath.Join(root, d))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is %v; want no access for others", d, st.Mode().Perm())
		}
	}
	img, mnt := testPoolFile(t)
	got, err := openPool("", filepath.Dir(img), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(got, unix.MNT_DETACH) })
	if st, err := os.Stat(got); err != nil || got != mnt || st.Mode().Perm() != 0o700 {
		t.Fatalf("pool mounted at %s (%v), mode %v; want %s, 0700", got, err, st.Mode().Perm(), mnt)
	}
}

// A container may make subvolumes inside its clone (the ioctl needs no
// capability), nested and read-only too: Delete destroys them with the
// clone, bottom-up, and RemoveVolume likewise for a volume.
func TestDeleteCloneWithNestedSubvolumes(t *testing.T) {
	root, b := testBackend(t)
	ctx := context.Background()
	src, snap, clone := cloneOf(t, b, "app")
	target := filepath.Join(t.TempDir(), "clone")
	if err := b.Mount(ctx, clone.ID, target); err != nil {
		t.Fatal(err)
	}
	if !mountpoint.IsMountPoint(target) {
		t.Fatal("clone not mounted")
	}
	// As a container would, through the mount.
	for _, p := range []string{"sub", "sub/deeper", "dir/a/b"} {
		if strings.Contains(p, "/") {
			if err := os.MkdirAll(filepath.Join(target, filepath.Dir(p)), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := subvolCreate(filepath.Join(target, p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(target, "sub", "deeper", "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := snapCreate(filepath.Join(target, "sub"), filepath.Join(target, "sub", "ro-snap"), true); err != nil {
		t.Fatal(err)
	}
	nested, err := nestedSubvols(filepath.Join(root, clone.ID))
	if err != nil || strings.Join(nested, " ") != "sub sub/deeper sub/ro-snap dir/a/b" && strings.Join(nested, " ") != "dir/a/b sub sub/deeper sub/ro-snap" {
		t.Fatalf("nested subvolumes: %q, %v", nested, err)
	}
	if err := b.Unmount(ctx, clone.ID, target); err != nil {
		t.Fatal(err)
	}
	if err := subvolDelete(filepath.Join(root, clone.ID)); !errors.Is(err, unix.ENOTEMPTY) {
		t.Fatalf("control: plain subvolume delete of the clone = %v; want ENOTEMPTY", err)
	}
	if err := b.Delete(ctx, clone.ID); err != nil {
		t.Fatalf("Delete of a clone holding nested subvolumes: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, clone.ID)); !os.IsNotExist(err) {
		t.Fatalf("the clone is still there: %v", err)
	}
	if err := b.Delete(ctx, snap.ID); err != nil {
		t.Fatal(err)
	}
	// A regular volume snapvol made, with a subvolume inside.
	if err := subvolCreate(filepath.Join(root, src.ID, "inner")); err != nil {
		t.Fatal(err)
	}
	if err := b.RemoveVolume(ctx, src); err != nil {
		t.Fatalf("RemoveVolume of a volume holding a nested subvolume: %v", err)
	}
}

// A source holding a nested subvolume is never snapshotted into a
// silently incomplete clone: Snapshot refuses, naming the nested path;
// so does SnapshotOf for a clone holding one.
func TestSnapshotRefusesNestedSubvolumes(t *testing.T) {
	root, b := testBackend(t)
	ctx := context.Background()
	src, _, clone := cloneOf(t, b, "app")
	if err := os.MkdirAll(filepath.Join(root, src.ID, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := subvolCreate(filepath.Join(root, src.ID, "data", "tablespace")); err != nil {
		t.Fatal(err)
	}
	_, err := b.Snapshot(ctx, src, storage.SnapshotLabels("app"))
	if err == nil || !strings.Contains(err.Error(), "data/tablespace") {
		t.Fatalf("Snapshot of a volume holding data/tablespace = %v; want a refusal naming it", err)
	}
	if err := subvolCreate(filepath.Join(root, clone.ID, "made-by-ci")); err != nil {
		t.Fatal(err)
	}
	_, err = b.SnapshotOf(ctx, clone, src, storage.TakenSnapshotLabels("app", storage.TakenNamed, "app@latest"))
	if err == nil || !strings.Contains(err.Error(), "made-by-ci") {
		t.Fatalf("SnapshotOf a clone holding made-by-ci = %v; want a refusal naming it", err)
	}
	// Gone, snapshots work again.
	if err := subvolDelete(filepath.Join(root, src.ID, "data", "tablespace")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Snapshot(ctx, src, storage.SnapshotLabels("app")); err != nil {
		t.Fatal(err)
	}
}
