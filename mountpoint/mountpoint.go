package mountpoint

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// IsMountPoint reports whether path is a mount point in this mount
// namespace. statx's STATX_ATTR_MOUNT_ROOT answers in one syscall (Linux
// 5.8+); older kernels fall back to reading /proc/self/mountinfo, which
// costs a parse of every mount on the host and was most of the CPU time of
// concurrent Mount/Unmount calls. A stat-based device comparison would miss
// bind mounts of a directory on the same filesystem; neither method does.
func IsMountPoint(path string) bool {
	path = filepath.Clean(path)
	var stx unix.Statx_t
	err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT, 0, &stx)
	if err == nil && stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		return stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0
	}
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return false
	}
	return inMountinfo(path)
}

// inMountinfo reports whether path is a mount point listed in
// /proc/thread-self/mountinfo: the calling thread's namespace (a test
// process may hold a thread in another).
func inMountinfo(path string) bool {
	_, ok := MountRoot(path)
	return ok
}

// MountRoot returns the root field of the last mount at target in
// /proc/thread-self/mountinfo (the directory of its filesystem that is mounted
// there), and whether anything is mounted there at all.
func MountRoot(target string) (string, bool) {
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		return "", false
	}
	defer f.Close()
	root, found := "", false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && UnescapePath(fields[4]) == target {
			root, found = UnescapePath(fields[3]), true
		}
	}
	return root, found
}

// UnescapePath undoes /proc/self/mountinfo's octal escapes of space, tab,
// newline and backslash.
func UnescapePath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// BindMount mounts dir at target (created if needed) unless target is
// already a mount point.
func BindMount(dir, target string) error { return BindMountFlags(dir, target, 0) }

// Mount flags BindMountFlags may add to a bind mount: those a remount of
// a bind mount can set per mount.
const bindFlags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

// BindMountFlags is BindMount with the per-mount flags flags (a subset of
// MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_RDONLY) set on the mount, in
// addition to those it inherits from dir's mount. A bind mount cannot
// take them in one call: it is made, then remounted with them, and
// undone if that fails. A mount already at target gets the flags it
// lacks.
func BindMountFlags(dir, target string, flags uintptr) error {
	if flags&^bindFlags != 0 {
		return fmt.Errorf("bind mount %s at %s: flags %#x are not per-mount flags", dir, target, flags)
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	if IsMountPoint(target) {
		return SetFlags(target, flags)
	}
	if err := unix.Mount(dir, target, "", unix.MS_BIND, ""); err != nil {
		os.Remove(target) // no empty mount point left behind
		return fmt.Errorf("bind mount %s at %s: %w", dir, target, err)
	}
	if err := SetFlags(target, flags); err != nil {
		_ = unix.Unmount(target, unix.MNT_DETACH)
		os.Remove(target)
		return err
	}
	return nil
}

// SetFlags adds the per-mount flags flags (MS_NOSUID, MS_NODEV, MS_NOEXEC,
// MS_RDONLY) to the mount at target, keeping those it has, by a bind
// remount; a no-op when it has them all.
func SetFlags(target string, flags uintptr) error {
	if flags == 0 {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		return err
	}
	// ST_* and MS_* share their values for these flags and the atime ones.
	const keep = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC |
		unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_RELATIME
	have := uintptr(st.Flags) & keep
	if have&flags == flags {
		return nil
	}
	if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|have|flags, ""); err != nil {
		return fmt.Errorf("remounting %s with %s: %w", target, FlagNames(flags), err)
	}
	return nil
}

// FlagNames spells per-mount flags as mount(8) does: "nosuid,nodev".
func FlagNames(flags uintptr) string {
	var out []string
	for _, f := range []struct {
		f uintptr
		s string
	}{{unix.MS_RDONLY, "ro"}, {unix.MS_NOSUID, "nosuid"}, {unix.MS_NODEV, "nodev"}, {unix.MS_NOEXEC, "noexec"}} {
		if flags&f.f != 0 {
			out = append(out, f.s)
		}
	}
	return strings.Join(out, ",")
}

// Unbind detaches every mount at target, then removes target with
// RemoveMountPoint: it is what a backend's Unmount does on this host.
// Detaching lazily lets a late reader finish without failing Unmount. It
// loops because mounts may be stacked at target. EINVAL (nothing this
// namespace may unmount there: gone meanwhile, or a locked mount) ends the
// loop instead of retrying it forever with the volume's lock held; a mount
// still in place then fails it.
func Unbind(target string) error {
	for IsMountPoint(target) {
		err := unix.Unmount(target, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) {
			break
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
	return RemoveMountPoint(target)
}

// RemoveMountPoint removes target once nothing is mounted there, if it is
// an empty directory. A directory with files in it stays: they were
// written while nothing was mounted there, and deleting files snapvol did
// not make is never its call (the next mount covers them). Anything
// still mounted at target is an error.
func RemoveMountPoint(target string) error {
	if IsMountPoint(target) {
		return fmt.Errorf("mount point %s: still mounted", target)
	}
	err := unix.Rmdir(target)
	switch {
	case err == nil, errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.ENOTEMPTY), errors.Is(err, unix.EEXIST), errors.Is(err, unix.ENOTDIR):
		// Files, or a file where the directory was: not ours.
		return nil
	}
	return fmt.Errorf("remove mount point %s: %w", target, err)
}

// RemoveEmptyTree removes dir if it holds only empty directories, none of
// them a mount point: a tree of mount points left behind goes, and nothing
// is ever walked into through a mount.
func RemoveEmptyTree(dir string) error {
	if IsMountPoint(dir) {
		return fmt.Errorf("%s is mounted", dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.IsDir() {
			return fmt.Errorf("%s holds %s", dir, e.Name())
		}
		if err := RemoveEmptyTree(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return os.Remove(dir)
}
