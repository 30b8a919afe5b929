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
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
		}
	}
}
