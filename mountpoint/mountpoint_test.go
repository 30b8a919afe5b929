package mountpoint

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/snapvol/snapvol/internal/roottest"
	"golang.org/x/sys/unix"
)

// IsMountPoint (statx) agrees with /proc/self/mountinfo on directories,
// bind mounts of a directory on the same filesystem, files, missing paths
// and after a lazy unmount.
func TestIsMountPointAgreesWithMountinfo(t *testing.T) {
	roottest.Require(t, "bind mounts")
	dir := t.TempDir()
	src, target := filepath.Join(dir, "src"), filepath.Join(dir, "target")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	check := func(when, p string, want bool) {
		t.Helper()
		if got := IsMountPoint(p); got != want {
			t.Errorf("%s: IsMountPoint(%s) = %v, want %v", when, p, got, want)
		}
		if got := inMountinfo(filepath.Clean(p)); got != want {
			t.Errorf("%s: mountinfo says %s mounted = %v, want %v", when, p, got, want)
		}
	}
	check("plain dir", src, false)
	check("missing", target, false)
	check("below a file", filepath.Join(src, "f", "x"), false)
	if err := BindMount(src, target); err != nil {
		t.Fatal(err)
	}
	check("bind mounted", target, true)
	check("bind mounted, unclean path", target+"/", true)
	check("file in a bind mount", filepath.Join(target, "f"), false)
	check("bind source", src, false)
	check("root", "/", true)
	if err := BindMount(src, target); err != nil {
		t.Fatalf("second BindMount on a mount point: %v", err)
	}
	if err := Unbind(target); err != nil {
		t.Fatal(err)
	}
	check("after Unbind", target, false)
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	check("after a lazy unmount", target, false)
}

// mountinfo escapes space, tab, newline and backslash as three octal
// digits; anything else, a trailing backslash included, is kept as it is.
func TestUnescapeMountPath(t *testing.T) {
	for in, want := range map[string]string{
		`/mnt/plain`:         "/mnt/plain",
		`/mnt/a\040b`:        "/mnt/a b",
		`/mnt/t\011n\012`:    "/mnt/t\tn\n",
		`/mnt/back\134slash`: `/mnt/back\slash`,
		`/mnt/not\9octal`:    `/mnt/not\9octal`,
		`/mnt/trailing\04`:   `/mnt/trailing\04`,
		`/mnt/over\777range`: `/mnt/over\777range`,
	} {
		if got := UnescapePath(in); got != want {
			t.Errorf("UnescapePath(%q) = %q, want %q", in, got, want)
		}
	}
}

// RemoveMountPoint removes an empty directory only: files someone wrote
// where nothing was mounted stay, and a missing target is fine.
func TestRemoveMountPointKeepsFiles(t *testing.T) {
	dir := t.TempDir()
	empty, full, file := filepath.Join(dir, "empty"), filepath.Join(dir, "full"), filepath.Join(dir, "file")
	for _, d := range []string{empty, full} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(full, "stray"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{empty, full, file, filepath.Join(dir, "missing"), filepath.Join(file, "below")} {
		if err := RemoveMountPoint(p); err != nil {
			t.Errorf("RemoveMountPoint(%s) = %v", p, err)
		}
	}
	if _, err := os.Stat(empty); !os.IsNotExist(err) {
		t.Errorf("empty mount point kept: %v", err)
	}
	for _, p := range []string{filepath.Join(full, "stray"), file} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
}

// Unbind succeeds once nothing is mounted: the directory a mount covered
// stays with the files written into it before, and is removed when empty.
func TestUnbindLeavesFilesItDidNotMake(t *testing.T) {
	roottest.Require(t, "bind mounts")
	dir := t.TempDir()
	src, target := filepath.Join(dir, "src"), filepath.Join(dir, "target")
	for _, d := range []string{src, target} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(target, "stray"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Stacked twice over the stray file.
	for i := 0; i < 2; i++ {
		if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := Unbind(target); err != nil {
		t.Fatalf("Unbind over a non-empty directory: %v", err)
	}
	if IsMountPoint(target) {
		t.Fatal("still mounted after Unbind")
	}
	if _, err := os.Stat(filepath.Join(target, "stray")); err != nil {
		t.Fatalf("the file under the mount is gone: %v", err)
	}
	if err := Unbind(target); err != nil {
		t.Fatalf("Unbind of nothing mounted: %v", err)
	}
	if err := os.Remove(filepath.Join(target, "stray")); err != nil {
		t.Fatal(err)
	}
	if err := BindMount(src, target); err != nil {
		t.Fatal(err)
	}
	if err := Unbind(target); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Fatalf("empty mount point kept: %v", err)
	}
}

// BindMountFlags sets nosuid,nodev on the new mount, keeps the flags the
// source's mount has (ro here), adds missing ones to a mount already in
// place, and leaves the source's own mount as it was.
func TestBindMountFlags(t *testing.T) {
	roottest.Require(t, "bind mounts")
	dir := t.TempDir()
	src, ro, target := filepath.Join(dir, "src"), filepath.Join(dir, "ro"), filepath.Join(dir, "target")
	for _, d := range []string{src, ro} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	flags := func(p string) int64 {
		t.Helper()
		var st unix.Statfs_t
		if err := unix.Statfs(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Flags
	}
	if err := BindMountFlags(src, target, unix.MS_NOSUID|unix.MS_NODEV); err != nil {
		t.Fatal(err)
	}
	if f := flags(target); f&unix.ST_NOSUID == 0 || f&unix.ST_NODEV == 0 || f&unix.ST_RDONLY != 0 {
		t.Errorf("flags of the new mount %#x; want nosuid,nodev, rw", f)
	}
	if f := flags(src); f&(unix.ST_NOSUID|unix.ST_NODEV) != 0 && flags(dir)&(unix.ST_NOSUID|unix.ST_NODEV) == 0 {
		t.Errorf("the source's mount changed: %#x", f)
	}
	if err := Unbind(target); err != nil {
		t.Fatal(err)
	}

	// A read-only source mount stays read-only through the remount.
	if err := BindMountFlags(src, ro, unix.MS_RDONLY); err != nil {
		t.Fatal(err)
	}
	defer Unbind(ro)
	if err := BindMountFlags(ro, target, unix.MS_NOSUID|unix.MS_NODEV); err != nil {
		t.Fatal(err)
	}
	if f := flags(target); f&unix.ST_RDONLY == 0 || f&unix.ST_NOSUID == 0 {
		t.Errorf("flags of a bind of a read-only mount %#x; want ro,nosuid,nodev", f)
	}
	if err := Unbind(target); err != nil {
		t.Fatal(err)
	}

	// A plain mount already in place gets the flags it lacks.
	if err := BindMount(src, target); err != nil {
		t.Fatal(err)
	}
	defer Unbind(target)
	if err := BindMountFlags(src, target, unix.MS_NOSUID|unix.MS_NODEV); err != nil {
		t.Fatal(err)
	}
	if f := flags(target); f&unix.ST_NOSUID == 0 || f&unix.ST_NODEV == 0 {
		t.Errorf("flags of the mount in place %#x; want nosuid,nodev added", f)
	}
	if err := BindMountFlags(src, target, unix.MS_NOATIME); err == nil {
		t.Error("BindMountFlags accepted a flag that is not a per-mount flag it sets")
	}
	if FlagNames(unix.MS_NOSUID|unix.MS_NODEV) != "nosuid,nodev" {
		t.Errorf("FlagNames = %q", FlagNames(unix.MS_NOSUID|unix.MS_NODEV))
	}
}

func TestRemoveEmptyTree(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tree")
	if err := os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "c"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "c", "kept"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := RemoveEmptyTree(dir); err == nil {
		t.Fatal("a tree holding a file was removed")
	}
	if _, err := os.Stat(filepath.Join(dir, "c", "kept")); err != nil {
		t.Fatalf("the file went: %v", err)
	}
	if err := os.Remove(filepath.Join(dir, "c", "kept")); err != nil {
		t.Fatal(err)
	}
	if err := RemoveEmptyTree(dir); err != nil {
		t.Fatalf("a tree of empty directories: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the tree is still there: %v", err)
	}
}
