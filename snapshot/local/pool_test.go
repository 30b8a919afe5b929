package local

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A pool file already bound to a loop device (its filesystem still alive
// after a managed plugin restart) is mounted from that device, never bound
// to a second one.
func TestLoopMountReusesBoundDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (loop devices, mounts); run `make test` as root")
	}
	for _, tool := range []string{"mkfs.btrfs", "losetup"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: apt-get install -y btrfs-progs mount", tool)
		}
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "pool.img"), filepath.Join(dir, "pool")
	if err := makePoolFile(img, 256<<20); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
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
