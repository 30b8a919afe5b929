package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snapvol/snapvol/test/dockerd"
)

// mountProbeSrc is a static program a container runs from a clone:
// "euid" prints its effective uid (a setuid-root copy of it run by uid
// 1000 prints 0 where setuid works); "open PATH" opens PATH read-write and
// says whether it could.
const mountProbeSrc = `package main

import (
	"fmt"
	"os"
)

func main() {
	switch {
	case len(os.Args) == 2 && os.Args[1] == "euid":
		fmt.Printf("uid=%d euid=%d\n", os.Getuid(), os.Geteuid())
	case len(os.Args) == 3 && os.Args[1] == "open":
		f, err := os.OpenFile(os.Args[2], os.O_RDWR, 0)
		if err != nil {
			fmt.Printf("open %s: refused: %v\n", os.Args[2], err)
			return
		}
		f.Close()
		fmt.Printf("open %s: opened\n", os.Args[2])
	default:
		fmt.Println("usage: probe euid | open PATH")
		os.Exit(2)
	}
}
`

// buildMountProbe builds mountProbeSrc static into a directory of its own
// that containers can bind read-only.
func buildMountProbe(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "probe.go")
	if err := os.WriteFile(src, []byte(mountProbeSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "probe"), src)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GO111MODULE=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the probe: %v\n%s", err, out)
	}
	return dir
}

// mountOptsAt returns the per-mount options of the mount at point in a
// mountinfo text ("" if there is none).
func mountOptsAt(mountinfo, point string) string {
	opts := ""
	for _, line := range strings.Split(mountinfo, "\n") {
		if f := strings.Fields(line); len(f) > 5 && f[4] == point {
			opts = f[5] // the last mount at point is the one seen there
		}
	}
	return opts
}

func hasMountOpt(opts, o string) bool {
	for _, x := range strings.Split(opts, ",") {
		if x == o {
			return true
		}
	}
	return false
}

// Issue 20, item 6: in the managed plugin, nosuid,nodev never reached
// containers. The plugin bound a clone under its propagated mount and then
// remounted its own copy of the bind with the flags; a remount is per
// mount and does not propagate, so the copy on the host that Docker binds
// into containers stayed rw,relatime. A setuid-root program a root CI
// container planted in its clone gave euid 0 to a uid-1000 user of another
// container, and a device node made there opened. Here a root container
// (Docker's default capabilities, as a CI job has) plants a setuid-root
// copy of a probe and a node with /dev/null's numbers (1:3, which every
// container's device cgroup allows, so only nodev can refuse it) in a
// clone; uid 1000 in other containers, on that clone and on a clone of a
// snapshot taken (the masking flow) of an operator's clone planted the
// same way, must not get euid 0 nor open the node, and every
// container must see its volume mounted nosuid,nodev (as must the host, at
// the mounts Docker binds from). Both pool layouts: the pool file (the
// default) and POOL, a btrfs directory in STATE_DIR.
func TestAttackSetuidAndDeviceInClone(t *testing.T) {
	probe := buildMountProbe(t)
	dockerd.ForEachEngine(t, func(t *testing.T, eng dockerd.Engine) {
		t.Run("pool file", func(t *testing.T) {
			a := newAttackBed(t, eng, "POOL_SIZE=1G", "LOG_LEVEL=debug")
			setuidAndDevice(t, a, eng, probe)
		})
		t.Run("POOL directory", func(t *testing.T) {
			// STATE_DIR on the host is a btrfs filesystem of its own, and
			// POOL a directory on it, as the plugin sees it.
			d := dockerd.Start(t, dockerd.Options{Engine: &eng})
			state := filepath.Join(d.Dir, "state-snapvol") // where InstallPlugin puts it
			img := filepath.Join(t.TempDir(), "state.img")
			if err := os.MkdirAll(state, 0o700); err != nil {
				t.Fatal(err)
			}
			for _, c := range [][]string{{"truncate", "-s", "1G", img}, {"mkfs.btrfs", "-q", img}, {"mount", "-o", "loop", img, state}, {"mkdir", filepath.Join(state, "pool-dir")}} {
				if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
					t.Fatalf("%s: %v\n%s", strings.Join(c, " "), err, out)
				}
			}
			// Registered after dockerd's cleanup, so it runs first; dockerd's
			// cleanup detaches whatever is left under its directory.
			t.Cleanup(func() { _ = exec.Command("umount", "-l", state).Run() })
			p := d.InstallPlugin(dockerd.Bundle(t, Binary(t)), "snapvol", "POOL=/var/lib/snapvol/pool-dir", "POOL_RESERVE=0", "LOG_LEVEL=debug")
			if p.StateDir != state {
				t.Fatalf("the plugin's state is in %s, not in the btrfs at %s", p.StateDir, state)
			}
			a := &attackBed{t: t, d: d, p: p}
			setuidAndDevice(t, a, eng, probe)
		})
	})
}

func setuidAndDevice(t *testing.T, a *attackBed, eng dockerd.Engine, probe string) {
	const prod = "app-production"
	a.d.MustDocker("volume", "create", "-d", "snapvol", prod)
	a.d.MustDocker("run", "--rm", "--network", "none", "-v", prod+":/data", dockerd.Image, "sh", "-c", "echo rows > /data/rows && sync")
	a.admin("snapshot", "create", prod, "base")
	plant := prod + "@base+plant"
	docker := func(args ...string) string {
		t.Helper()
		all := append([]string{"run", "--rm", "--network", "none", "--volume-driver", "snapvol"}, args...)
		out, err := a.d.Docker(all...)
		if err != nil {
			t.Fatalf("docker %s: %v\n%s\ndockerd log:\n%s", strings.Join(all, " "), err, out, a.d.LogTail(30))
		}
		return out
	}
	checkOpts := func(who, mountinfo string) {
		t.Helper()
		opts := mountOptsAt(mountinfo, "/data")
		if opts == "" {
			t.Fatalf("%s: no mount at /data in the container's mountinfo:\n%s", who, mountinfo)
		}
		if !hasMountOpt(opts, "nosuid") || !hasMountOpt(opts, "nodev") {
			t.Errorf("%s: the volume is mounted %s in the container, want nosuid,nodev", who, opts)
		}
	}

	// The planting container: root with Docker's default capabilities.
	plantIn := func(vol string) {
		t.Helper()
		out := docker("-v", probe+":/probe:ro", "-v", vol+":/data", dockerd.Image, "sh", "-c",
			"cat /data/rows >&2 && cp /probe/probe /data/euid && chmod 4755 /data/euid && mknod /data/null c 1 3 && chmod 666 /data/null && "+
				"ls -ln /data/euid /data/null >&2 && cat /proc/self/mountinfo")
		checkOpts("the container planting in "+vol, out)
	}
	plantIn(plant)

	// The host's mounts of the clone, which Docker binds from, while a
	// container holds it.
	holder := "holder-" + strings.ReplaceAll(eng.Name, ".", "-")
	a.d.MustDocker("run", "-d", "--name", holder, "--network", "none", "--volume-driver", "snapvol", "-v", plant+":/data", dockerd.Image, "sleep", "600")
	t.Cleanup(func() { _, _ = a.d.Docker("rm", "-f", holder) })
	hostInfo, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, line := range strings.Split(string(hostInfo), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && strings.HasPrefix(f[4], a.d.Dir+"/") && strings.Contains(f[3], "/clones/") {
			seen++
			if !hasMountOpt(f[5], "nosuid") || !hasMountOpt(f[5], "nodev") {
				t.Errorf("the host sees a clone mounted %s at %s, want nosuid,nodev", f[5], f[4])
			}
		}
	}
	if seen == 0 {
		t.Errorf("no mount of a clone on the host under %s while container %s holds one", a.d.Dir, holder)
	}
	t.Logf("%d clone mounts of this engine on the host", seen)
	a.d.MustDocker("rm", "-f", holder)

	victim := func(who, vol string) {
		t.Helper()
		out := docker("--user", "1000", "-v", vol+":/data", dockerd.Image, "sh", "-c",
			"/data/euid euid; /data/euid open /data/null; cat /proc/self/mountinfo")
		checkOpts(who, out)
		if !strings.Contains(out, "uid=1000 euid=1000") {
			t.Errorf("%s: uid 1000 ran the planted setuid-root program and got: %s", who, firstLines(out, 2))
		}
		if !strings.Contains(out, "open /data/null: refused") {
			t.Errorf("%s: the planted device node 1:3 opened: %s", who, firstLines(out, 2))
		}
		t.Logf("%s: %s", who, firstLines(out, 2))
	}
	victim("uid 1000 on the same clone", plant)

	// The masking flow: a root container works in an operator's clone,
	// the operator snapshots it, CI clones the snapshot.
	a.admin("volume", "create", "mask-work", "--from", prod+"@base", "--docker")
	plantIn("mask-work")
	a.admin("snapshot", "create", prod, "planted", "--from", "mask-work")
	victim("uid 1000 on a clone of a snapshot of a planted clone", prod+"@planted+ci")
}

// firstLines is the first n lines of s, joined by " | ".
func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, " | ")
}
