package portworx_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libopenstorage/openstorage/api"
	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/internal/roottest"
	"github.com/snapvol/snapvol/mountpoint"
	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/storage/portworx"
	"github.com/snapvol/snapvol/test/osdserver"
)

// TestMain gives the backends of tests that name no PX_MOUNT_DIR (nor
// take the server's, as newEnv does) a temporary one instead of the
// host's /var/lib/osd/mounts.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pxmounts-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	portworx.SetDefaultMountDir(dir)
	code := m.Run()
	// Only empty directories go: a mount a failed test left is not
	// walked into.
	if err := mountpoint.RemoveEmptyTree(dir); err != nil {
		fmt.Fprintf(os.Stderr, "left %s in place: %v\n", dir, err)
	}
	os.Exit(code)
}

// mountEnv is a backend whose PX_MOUNT_DIR (where its server paths are) is a
// temporary directory of the test's, below the server's MountRoot.
func mountEnv(t *testing.T, cfg osdserver.Config) (*env, string) {
	t.Helper()
	e := newEnv(t, cfg, nil)
	return e, e.mountDir
}

// serverPathIn is where the backend of instance 0123456789abcdef (newEnv's)
// has the server mount the volume for the target named rel.
func serverPathIn(mountDir, rel string) string {
	return filepath.Join(mountDir, "snapvol-0123456789abcdef", rel)
}

// checkGone: nothing mounted at the target or the server path, neither
// directory left, and the server holds no mount and no attachment.
func checkGone(t *testing.T, e *env, name string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if mountpoint.IsMountPoint(p) {
			t.Errorf("%s still mounted", p)
		}
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}
	if v, ok := e.srv.ByName(name); ok && (len(v.AttachPath) > 0 || v.State == api.VolumeState_VOLUME_STATE_ATTACHED) {
		t.Errorf("the server still has %q mounted at %v, state %v", name, v.AttachPath, v.State)
	}
}

// TestServerMountsUnderMountDir: the server is told to mount the clone
// under PX_MOUNT_DIR, where Portworx mounts for its own plugin, and
// snapvol binds that onto the target under DATA_ROOT, nosuid,nodev;
// Unmount leaves no mount and no directory.
func TestServerMountsUnderMountDir(t *testing.T) {
	e, mountDir := mountEnv(t, osdserver.Config{})
	c := ctx(t)
	src := e.production()
	_, clone := e.snapClone(src, "v")
	target := filepath.Join(e.dataRoot, "v-1234")
	sp := serverPathIn(mountDir, "v-1234")
	if err := e.b.Mount(c, clone.ID, target); err != nil {
		t.Fatalf("mount: %v", err)
	}
	cv, _ := e.srv.ByName(clone.Name)
	if len(cv.AttachPath) != 1 || cv.AttachPath[0] != sp {
		t.Fatalf("the server mounted the clone at %v; want %s, under PX_MOUNT_DIR", cv.AttachPath, sp)
	}
	if !mountpoint.IsMountPoint(target) {
		t.Fatalf("nothing mounted at the target %s", target)
	}
	if got := readFile(t, filepath.Join(target, "guestbook/0001.txt")); got != "Alice: lovely site!\n" {
		t.Fatalf("the target reads %q", got)
	}
	writeFile(t, filepath.Join(target, "marker"), "from the target\n")
	if got := readFile(t, filepath.Join(e.srv.DataPath(clone.ID), "marker")); got != "from the target\n" {
		t.Fatalf("a write at the target is not in the clone: %q", got)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil || st.Flags&unix.ST_NOSUID == 0 || st.Flags&unix.ST_NODEV == 0 {
		t.Errorf("the target's mount flags %#x, %v; want nosuid,nodev", st.Flags, err)
	}
	if err := e.b.Mount(c, clone.ID, target); err != nil {
		t.Fatalf("second mount: %v", err)
	}
	if cv, _ := e.srv.ByName(clone.Name); len(cv.AttachPath) != 1 {
		t.Fatalf("a second Mount mounted again: %v", cv.AttachPath)
	}
	if err := e.b.Unmount(c, clone.ID, target); err != nil {
		t.Fatalf("unmount: %v", err)
	}
	checkGone(t, e, clone.Name, target, sp)
	if err := e.b.Unmount(c, clone.ID, target); err != nil {
		t.Fatalf("second unmount: %v", err)
	}
	// A regular volume is mounted the same way, without nosuid,nodev.
	mp := filepath.Join(e.dataRoot, "prod")
	if err := e.b.Mount(c, src.ID, mp); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(mp, "guestbook/0001.txt")); got != "Alice: lovely site!\n" {
		t.Fatalf("the volume reads %q", got)
	}
	if err := e.b.Unmount(c, src.ID, mp); err != nil {
		t.Fatal(err)
	}
	checkGone(t, e, "app-production", mp, serverPathIn(mountDir, "prod"))
}

// TestTwoInstancesMountApart: two snapvols on one host, same PX_MOUNT_DIR
// and target names, never share a server path.
func TestTwoInstancesMountApart(t *testing.T) {
	e, mountDir := mountEnv(t, osdserver.Config{})
	c := ctx(t)
	src := e.production()
	a := filepath.Join(e.dataRoot, "v")
	if err := e.b.Mount(c, src.ID, a); err != nil {
		t.Fatal(err)
	}
	defer e.b.Unmount(c, src.ID, a)
	id, err := e.srv.Create(&api.VolumeLocator{Name: "other"}, nil, &api.VolumeSpec{Size: 1 << 30, HaLevel: 1})
	if err != nil {
		t.Fatal(err)
	}
	// The other instance's DATA_ROOT, with the same target name in it.
	otherRoot := t.TempDir()
	ob, err := portworx.Open(portworx.Config{Endpoint: e.srv.Endpoint(), Driver: "pxd", DataRoot: otherRoot, MountDir: mountDir, Instance: "fedcba9876543210"})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	bt := filepath.Join(otherRoot, "v")
	if err := ob.Mount(c, id, bt); err != nil {
		t.Fatal(err)
	}
	v, _ := e.srv.ByName("other")
	if want := filepath.Join(mountDir, "snapvol-fedcba9876543210", "v"); len(v.AttachPath) != 1 || v.AttachPath[0] != want {
		t.Errorf("the other instance's mount is at %v, want %s", v.AttachPath, want)
	}
	if err := ob.Unmount(c, id, bt); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(a, "guestbook/0001.txt")); got != "Alice: lovely site!\n" {
		t.Fatalf("the first instance's mount reads %q after the other's unmount", got)
	}
}

// serverClone makes a volume p, a snapshot and a clone of it on the
// server directly, and returns the clone, as the backend sees it.
func serverClone(t *testing.T, e *env) storage.Object {
	t.Helper()
	c := ctx(t)
	id, err := e.srv.Create(&api.VolumeLocator{Name: "p"}, nil, &api.VolumeSpec{Size: 1 << 30, HaLevel: 1})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(e.srv.DataPath(id), "hello"), "world\n")
	if _, err := e.srv.Snapshot(id, true, &api.VolumeLocator{Name: "s"}); err != nil {
		t.Fatal(err)
	}
	src, err := e.b.Volume(c, "p")
	if err != nil {
		t.Fatal(err)
	}
	s, err := e.b.SnapshotByName(c, src, "s")
	if err != nil {
		t.Fatal(err)
	}
	clone, err := e.b.Clone(c, s, map[string]string{storage.LabelOwner: "1", storage.LabelVolume: "v", storage.LabelSource: "p"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return clone
}

// TestMountDirNotSharedFailsLoudly: when snapvol does not see the
// server's mounts under PX_MOUNT_DIR (two different directories here, as
// a plugin mount that is not shared, or a PX_MOUNT_DIR Portworx does not
// mount into), Mount fails naming PX_MOUNT_DIR and what to configure,
// and leaves nothing behind: the server unmounted and detached, no mount
// and no directory at the target.
func TestMountDirNotSharedFailsLoudly(t *testing.T) {
	hostDir, localDir := t.TempDir(), t.TempDir()
	e := newEnv(t, osdserver.Config{}, func(c *portworx.Config) { c.MountDir, c.MountDirLocal = hostDir, localDir })
	c := ctx(t)
	clone := serverClone(t, e)
	target := filepath.Join(e.dataRoot, "t")

	// The server path snapvol makes is not on the server's side:
	// the server's refusal is passed on, with the hint.
	err := e.b.Mount(c, clone.ID, target)
	if err == nil || !strings.Contains(err.Error(), "not a directory") || !strings.Contains(err.Error(), "PX_MOUNT_DIR") {
		t.Fatalf("Mount with a server path the server cannot see = %v; want the server's error and a hint naming PX_MOUNT_DIR", err)
	}
	checkGone(t, e, clone.Name, target, serverPathIn(localDir, "t"))

	// The server mounts, but snapvol does not see it.
	hostPath := serverPathIn(hostDir, "t")
	if err := os.MkdirAll(hostPath, 0o755); err != nil {
		t.Fatal(err)
	}
	err = e.b.Mount(c, clone.ID, target)
	for _, want := range []string{"reported", "mounted at host path " + hostPath, "does not see it at " + serverPathIn(localDir, "t"), "PX_MOUNT_DIR", "shared", "pxmounts.source="} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Mount with a PX_MOUNT_DIR snapvol does not see = %v; want an error saying %q", err, want)
		}
	}
	t.Logf("the error: %v", err)
	checkGone(t, e, clone.Name, target, serverPathIn(localDir, "t"))
	if mountpoint.IsMountPoint(hostPath) {
		t.Errorf("the server's mount at %s was not undone", hostPath)
	}
	if err := e.b.Mount(c, clone.ID, "/etc/snapvol-x"); err == nil || !strings.Contains(err.Error(), "DATA_ROOT") {
		t.Fatalf("Mount outside DATA_ROOT = %v", err)
	}
}

// TestManagedPluginLayout plays the managed plugin's mounts in one mount
// namespace: PX_MOUNT_DIR on the host is shared and bound (rbind, as the
// pxmounts mount) at another directory, where snapvol sees it; Docker's
// host directory <root>/plugins/<id>/propagated-mount is shared and bound
// at DATA_ROOT. The server is told the host path; snapvol's bind at the
// target shows up in the host directory Docker hands the container.
func TestManagedPluginLayout(t *testing.T) {
	roottest.Require(t, "bind mounts and mount propagation")
	base := t.TempDir()
	var pxHost string
	e := newEnvWith(t, osdserver.Config{}, func(srv *osdserver.Server, c *portworx.Config) {
		// Where Portworx mounts, shared with the host: below MountRoot.
		pxHost = filepath.Join(srv.MountDir(t), "host-osd-mounts")
	})
	pxLocal := filepath.Join(base, "plugin-rootfs", "var", "lib", "osd", "mounts")
	propagated := filepath.Join(base, "docker", "plugins", strings.Repeat("ab", 32), "propagated-mount")
	dataRoot := filepath.Join(base, "plugin-rootfs", "mnt", "snapvol")
	for _, d := range []string{pxHost, pxLocal, propagated, dataRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range [][2]string{{pxHost, pxLocal}, {propagated, dataRoot}} {
		mustMount(t, m[0], m[0], unix.MS_BIND)
		mustMount(t, "", m[0], unix.MS_SHARED)
		mustMount(t, m[0], m[1], unix.MS_BIND|unix.MS_REC)
		t.Cleanup(func() {
			unix.Unmount(m[1], unix.MNT_DETACH)
			unix.Unmount(m[0], unix.MNT_DETACH)
		})
	}
	e.b.Close()
	b, err := portworx.Open(portworx.Config{
		Endpoint: e.srv.Endpoint(), Driver: "pxd", Instance: "0123456789abcdef", CallTimeout: 5 * time.Second,
		DataRoot: dataRoot, MountDir: pxHost, MountDirLocal: pxLocal,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	e.b, e.dataRoot = b, dataRoot
	c := ctx(t)
	clone := serverClone(t, e)
	target := filepath.Join(dataRoot, "v-1234")
	if err := e.b.Mount(c, clone.ID, target); err != nil {
		t.Fatalf("mount: %v", err)
	}
	cv, _ := e.srv.ByName(clone.Name)
	if want := serverPathIn(pxHost, "v-1234"); len(cv.AttachPath) != 1 || cv.AttachPath[0] != want {
		t.Fatalf("server mounted at %v; want the host path %s", cv.AttachPath, want)
	}
	// What Docker binds into the container (Plugin.ScopedPath).
	hostView := filepath.Join(propagated, "v-1234")
	if got := readFile(t, filepath.Join(hostView, "hello")); got != "world\n" {
		t.Fatalf("the host path Docker hands the container reads %q", got)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(hostView, &st); err != nil || st.Flags&unix.ST_NOSUID == 0 || st.Flags&unix.ST_NODEV == 0 {
		t.Errorf("the clone as Docker sees it: flags %#x, %v; want nosuid,nodev", st.Flags, err)
	}
	if err := e.b.Unmount(c, clone.ID, target); err != nil {
		t.Fatal(err)
	}
	checkGone(t, e, clone.Name, target, serverPathIn(pxLocal, "v-1234"), serverPathIn(pxHost, "v-1234"))
	if mountpoint.IsMountPoint(hostView) {
		t.Errorf("%s still mounted after Unmount", hostView)
	}
}

func mustMount(t *testing.T, src, dst string, flags uintptr) {
	t.Helper()
	if err := unix.Mount(src, dst, "", flags, ""); err != nil {
		t.Fatalf("mount %s at %s (flags %#x): %v", src, dst, flags, err)
	}
}

// TestMountsTheServerLostTrackOf: a mount gone behind the server's back
// (a reboot) is made again, and a mount the server forgot is undone.
func TestMountsTheServerLostTrackOf(t *testing.T) {
	e, mountDir := mountEnv(t, osdserver.Config{})
	c := ctx(t)
	src := e.production()
	mp := filepath.Join(e.dataRoot, "p")
	sp := serverPathIn(mountDir, "p")
	if err := e.b.Mount(c, src.ID, mp); err != nil {
		t.Fatal(err)
	}
	// Both mounts gone, the server still counting its own.
	for _, p := range []string{mp, sp} {
		if err := unix.Unmount(p, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.b.Mount(c, src.ID, mp); err != nil {
		t.Fatalf("mount again after the mounts vanished: %v", err)
	}
	if got := readFile(t, filepath.Join(mp, "guestbook/0001.txt")); got != "Alice: lovely site!\n" {
		t.Fatalf("remounted volume reads %q", got)
	}
	// Only snapvol's bind gone: the server's mount is used again.
	if err := unix.Unmount(mp, 0); err != nil {
		t.Fatal(err)
	}
	if err := e.b.Mount(c, src.ID, mp); err != nil {
		t.Fatalf("mount again after the target's bind vanished: %v", err)
	}
	if v, _ := e.srv.ByName("app-production"); len(v.AttachPath) != 1 {
		t.Fatalf("the server has the volume mounted at %v, want once", v.AttachPath)
	}
	// The server forgets: its record of the mount is cleared, the mount stays.
	if err := unix.Mount(sp, sp, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Unmount(src.ID, sp); err != nil {
		t.Fatal(err)
	}
	if !mountpoint.IsMountPoint(sp) {
		t.Fatal("setup: nothing mounted")
	}
	if err := e.b.Unmount(c, src.ID, mp); err != nil {
		t.Fatalf("unmount of a mount the server forgot: %v", err)
	}
	checkGone(t, e, "app-production", mp, sp)
}

// TestUnmountReleasesAnEarlierVersionsMount: a clone an earlier snapvol
// had the server mount at the target itself (on the host) or at the
// managed plugin's propagated mount is released by Unmount and Delete
// after an upgrade.
func TestUnmountReleasesAnEarlierVersionsMount(t *testing.T) {
	// The earlier layouts worked where the server's mounts at DATA_ROOT
	// (or the plugin's propagated mount) showed on the host: those
	// directories are below the server's MountRoot here.
	var shared string
	e := newEnvWith(t, osdserver.Config{}, func(srv *osdserver.Server, c *portworx.Config) {
		shared = srv.MountDir(t)
		c.DataRoot = filepath.Join(shared, "data-root")
	})
	mountDir := e.mountDir
	c := ctx(t)
	clone := serverClone(t, e)
	target := filepath.Join(e.dataRoot, "old")
	if err := os.MkdirAll(target, 0o755); err != nil {
		t.Fatal(err)
	}
	serverMount(t, e, clone.ID, target)
	// The mount serves on after the upgrade.
	if err := e.b.Mount(c, clone.ID, target); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(target, "hello")); got != "world\n" {
		t.Fatalf("the earlier mount reads %q", got)
	}
	if err := e.b.Unmount(c, clone.ID, target); err != nil {
		t.Fatalf("unmount of an earlier version's mount: %v", err)
	}
	checkGone(t, e, clone.Name, target, serverPathIn(mountDir, "old"))

	// Delete after a crash: the server still has the earlier mount.
	propagated := filepath.Join(shared, "plugins", strings.Repeat("cd", 32), "propagated-mount", "old")
	if err := os.MkdirAll(propagated, 0o755); err != nil {
		t.Fatal(err)
	}
	serverMount(t, e, clone.ID, propagated)
	if err := e.b.Unmount(c, clone.ID, target); err != nil {
		t.Fatalf("unmount of an earlier managed plugin's mount: %v", err)
	}
	if mountpoint.IsMountPoint(propagated) {
		t.Errorf("the earlier managed plugin's mount at %s was not released", propagated)
	}
	checkGone(t, e, clone.Name)
	if err := os.MkdirAll(target, 0o755); err != nil {
		t.Fatal(err)
	}
	serverMount(t, e, clone.ID, target)
	if err := e.b.Delete(c, clone.ID); err != nil {
		t.Fatalf("delete of a clone an earlier version left mounted: %v", err)
	}
	if mountpoint.IsMountPoint(target) {
		t.Errorf("%s still mounted after Delete", target)
	}
	os.Remove(target)
}

// serverMount has the server attach and mount volume id at path itself,
// as an earlier snapvol had it do.
func serverMount(t *testing.T, e *env, id, path string) {
	t.Helper()
	if err := e.srv.Attach(id); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Mount(id, path); err != nil {
		t.Fatal(err)
	}
}
