package local

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
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
