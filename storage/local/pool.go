package local

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/mountpoint"
)

// ErrSetting marks a pool the settings ask for that this host cannot
// give (POOL not btrfs, no room or no fallocate for POOL_SIZE, a reserve
// without simple quotas): restarting cannot help, so the plugin refuses
// to start (exit 78) instead of failing (exit 1, restarted in a loop).
var ErrSetting = errors.New("pool setting cannot be met")

// openPool returns the directory of a mounted btrfs pool, mounting (and on
// first start creating) it as the settings say:
//   - pool is a btrfs directory: used as it is;
//   - pool is a block device: mounted at stateDir/pool;
//   - pool is empty: stateDir/pool.img, a file of size bytes, allocated
//     (see allocate), formatted btrfs on first start and loop-mounted at
//     stateDir/pool.
//
// A pool snapvol mounts is closed to other host users (its root 0700),
// and mounted nosuid,nodev (see poolFlags); a pool file is also mounted
// nodiscard (see poolFileOptions).
func openPool(pool, stateDir string, size int64) (string, error) {
	mnt, err := mountPool(pool, stateDir, size)
	if err != nil {
		return "", err
	}
	if mnt != pool {
		if err := os.Chmod(mnt, 0o700); err != nil {
			return "", fmt.Errorf("closing pool %s to other users: %w", mnt, err)
		}
	}
	return mnt, nil
}

func mountPool(pool, stateDir string, size int64) (string, error) {
	mnt := filepath.Join(stateDir, "pool")
	if pool != "" {
		st, err := os.Stat(pool)
		if err != nil {
			return "", fmt.Errorf("POOL %s: %w", pool, err)
		}
		if st.IsDir() {
			if !isBtrfs(pool) {
				return "", fmt.Errorf("POOL %s is not on a btrfs filesystem; give a btrfs directory or block device, or leave POOL empty for a pool file in STATE_DIR: %w", pool, ErrSetting)
			}
			return pool, nil
		}
		if st.Mode()&os.ModeDevice == 0 {
			return "", fmt.Errorf("POOL %s is neither a directory nor a block device: %w", pool, ErrSetting)
		}
		if mountpoint.IsMountPoint(mnt) && isBtrfs(mnt) {
			return mnt, fixPoolMount(mnt, false)
		}
		if err := os.MkdirAll(mnt, 0o700); err != nil {
			return "", err
		}
		if err := unix.Mount(pool, mnt, "btrfs", poolFlags, ""); err != nil {
			return "", fmt.Errorf("mounting POOL %s as btrfs at %s (is it formatted btrfs?): %w", pool, mnt, err)
		}
		return mnt, nil
	}
	img := filepath.Join(stateDir, "pool.img")
	if mountpoint.IsMountPoint(mnt) && isBtrfs(mnt) {
		// Mounted by an earlier run (host mode), perhaps by a version that
		// let discards punch holes in the file: allocate what is missing
		// now. Failing that (no room on the host) is not a reason to stop
		// serving the volumes the pool holds; Health reports the sparse
		// file and refuses new clones until it is allocated.
		if _, err := os.Stat(img); err == nil {
			_ = allocateExisting(img)
		}
		return mnt, fixPoolMount(mnt, true)
	}
	if err := os.MkdirAll(mnt, 0o700); err != nil {
		return "", err
	}
	if _, err := os.Stat(img); errors.Is(err, os.ErrNotExist) {
		if err := makePoolFile(img, size); err != nil {
			return "", err
		}
	} else if err := allocateExisting(img); err != nil {
		return "", err
	}
	if err := loopMount(img, mnt); err != nil {
		return "", err
	}
	return mnt, nil
}

// makePoolFile creates, allocates and formats the pool file under a
// temporary name, so a crash half-way leaves no file that looks like a
// pool.
func makePoolFile(img string, size int64) error {
	tmp := img + ".new"
	_ = os.Remove(tmp)
	if err := checkRoom(filepath.Dir(img), size, 0); err != nil {
		return err
	}
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_RDWR|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = allocate(f, size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("creating pool file %s of %d bytes: %w", tmp, size, err)
	}
	out, err := exec.Command("mkfs.btrfs", "-q", "-L", "snapvol", tmp).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("mkfs.btrfs %s (is btrfs-progs installed?): %w: %s", tmp, err, out)
	}
	return os.Rename(tmp, img)
}

// poolFlags are the per-mount flags of a pool snapvol mounts. Every
// volume and clone is a bind mount of a directory in it, and a bind mount
// starts with the flags of the mount it is made from; so do the copies of
// it that propagate out of a managed plugin's namespace (through its
// propagatedMount) to the host, where Docker binds them into containers.
// A remount that adds flags to a bind changes that one mount only, not
// its propagated copies: so the flags are set here, on the pool, where
// every bind inherits them. A setuid program or a device node written
// into a clone then gives nothing, wherever the clone is seen.
const poolFlags = unix.MS_NOSUID | unix.MS_NODEV

// poolFileOptions are the btrfs options of a loop-mounted pool file. A
// loop device takes discards by punching holes in its backing file, and
// btrfs turns on discard=async by itself on a device that takes them
// (Linux 6.2+): every deleted clone would give its space back to the host
// filesystem, the "allocated" pool file would go sparse, and once that
// filesystem filled up, writes the pool had acknowledged would be lost.
// snapvol never trims the pool either (no FITRIM); a trim from outside
// (fstrim on the host) is what Health's allocation check is for.
const poolFileOptions = "nodiscard"

// fixPoolMount gives a pool mount found already mounted (or mounted on
// a filesystem an earlier run mounted) poolFlags and, for a pool file
// (file), nodiscard, by remounting it when it lacks them. The remount
// keeps the mount's other per-mount flags.
func fixPoolMount(mnt string, file bool) error {
	m, ok := mountOf(mnt)
	if !ok || m.point != mnt {
		return fmt.Errorf("pool %s: not found in /proc/self/mountinfo", mnt)
	}
	discard := file && hasDiscard(m.superOpts)
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil {
		return fmt.Errorf("pool %s: %w", mnt, err)
	}
	const keep = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC |
		unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_RELATIME
	have := uintptr(st.Flags) & keep
	if !discard && have&poolFlags == poolFlags {
		return nil
	}
	data := ""
	if discard {
		data = poolFileOptions
	}
	if err := unix.Mount("", mnt, "", unix.MS_REMOUNT|have|poolFlags, data); err != nil {
		return fmt.Errorf("remounting pool %s with %s %s: %w", mnt, mountpoint.FlagNames(poolFlags), data, err)
	}
	if m, ok := mountOf(mnt); ok && file && hasDiscard(m.superOpts) {
		return fmt.Errorf("pool %s: still mounted with discard after a remount with nodiscard (options %s): deleting clones would punch holes in the pool file", mnt, m.superOpts)
	}
	return nil
}

// hasDiscard reports whether btrfs mount options turn discard on
// ("discard", "discard=sync", "discard=async").
func hasDiscard(opts string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == "discard" || strings.HasPrefix(o, "discard=") {
			return true
		}
	}
	return false
}

// loopMount attaches img to a free loop device and mounts it. The loop
// device is set to autoclear, so it goes away with the last unmount.
//
// If a loop device is already bound to img, that device is mounted instead:
// a managed plugin restarted while containers still hold clones (docker
// plugin disable -f, dockerd restart with live-restore) finds the pool's
// filesystem still alive in the host's mount namespace. Binding the same
// file to a second loop device would present one btrfs on two devices with
// one fsid, which kernels refuse (or worse, mount twice).
func loopMount(img, mnt string) error {
	back, err := os.OpenFile(img, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer back.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(back.Fd()), &st); err != nil {
		return err
	}
	if bound, err := mountBoundLoop(img, mnt, st); bound {
		return err
	}
	return attachLoopAndMount(img, mnt, back)
}

// mountBoundLoop mounts the loop device already bound to the image st is,
// if there is one (bound true; err says how the mount went). A device
// going away meanwhile is looked for again, 20 times.
func mountBoundLoop(img, mnt string, st unix.Stat_t) (bound bool, err error) {
	for attempt := 0; attempt < 20; attempt++ {
		dev, ok := boundLoop(st)
		if !ok {
			break
		}
		err := unix.Mount(dev, mnt, "btrfs", poolFlags, poolFileOptions)
		if err == nil {
			// The filesystem's options are its superblock's, set by
			// whoever mounted it first (perhaps an earlier version, with
			// discard on): make them ours.
			return true, fixPoolMount(mnt, true)
		}
		// The device may be going away (autoclear after the last unmount);
		// look again, and attach a new one once it is gone.
		lastErr := fmt.Errorf("mounting pool %s from %s, which is already bound to it, at %s: %w", img, dev, mnt, err)
		if attempt == 19 {
			return true, lastErr
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false, nil
}

// attachLoopAndMount binds back (the image img) to a free loop device,
// set to autoclear, and mounts it at mnt; a device another process takes
// first is passed over, 20 times.
func attachLoopAndMount(img, mnt string, back *os.File) error {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening /dev/loop-control (a managed plugin needs the loop devices): %w", err)
	}
	defer ctl.Close()
	var lastErr error
	for attempt := 0; attempt < 20; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return fmt.Errorf("finding a free loop device: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		if _, err := os.Stat(dev); errors.Is(err, os.ErrNotExist) {
			// A container's /dev may lack nodes the host made after it started.
			if err := unix.Mknod(dev, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("creating %s: %w", dev, err)
			}
		}
		lf, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening %s: %w", dev, err)
		}
		err = unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_SET_FD, int(back.Fd()))
		if errors.Is(err, unix.EBUSY) {
			// Another process took this device between GET_FREE and SET_FD.
			lf.Close()
			lastErr = err
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err != nil {
			lf.Close()
			return fmt.Errorf("attaching %s to %s: %w", img, dev, err)
		}
		return mountAttachedLoop(img, mnt, dev, lf)
	}
	return fmt.Errorf("no free loop device for %s: %w", img, lastErr)
}

// mountAttachedLoop sets loop device lf (dev, just bound to img) to
// autoclear and mounts it at mnt; on failure the device is unbound again.
// lf is closed.
func mountAttachedLoop(img, mnt, dev string, lf *os.File) error {
	info := unix.LoopInfo64{Flags: unix.LO_FLAGS_AUTOCLEAR}
	copy(info.File_name[:], img)
	if err := unix.IoctlLoopSetStatus64(int(lf.Fd()), &info); err != nil {
		_ = unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0)
		lf.Close()
		return fmt.Errorf("configuring %s: %w", dev, err)
	}
	err := unix.Mount(dev, mnt, "btrfs", poolFlags, poolFileOptions)
	if err != nil {
		_ = unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0)
	}
	lf.Close()
	if err != nil {
		return fmt.Errorf("mounting pool %s (%s) at %s: %w", img, dev, mnt, err)
	}
	return nil
}

// boundLoop returns a loop device whose backing file is the file st
// describes, if there is one. Loop devices are listed from sysfs, because a
// container's /dev holds only the nodes it was given; a missing node is made.
func boundLoop(st unix.Stat_t) (string, bool) {
	ents, err := os.ReadDir("/sys/block")
	if err != nil {
		return "", false
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "loop") {
			continue
		}
		if _, err := os.Stat(filepath.Join("/sys/block", name, "loop")); err != nil {
			continue // not bound to anything
		}
		n, err := strconv.Atoi(strings.TrimPrefix(name, "loop"))
		if err != nil {
			continue
		}
		dev := "/dev/" + name
		if _, err := os.Stat(dev); errors.Is(err, os.ErrNotExist) {
			if err := unix.Mknod(dev, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, os.ErrExist) {
				continue
			}
		}
		f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
		f.Close()
		if err != nil {
			continue
		}
		if info.Inode == st.Ino && unix.Major(info.Device) == unix.Major(st.Dev) && unix.Minor(info.Device) == unix.Minor(st.Dev) {
			return dev, true
		}
	}
	return "", false
}

// A sparse pool file lets the pool promise space the host filesystem does
// not have: when the host fills up, the loop device's writes fail, btrfs
// aborts its transaction and turns the pool read-only under production.
// So the pool file is allocated in full (fallocate), after checking the
// host filesystem can hold it; on btrfs it is also made NOCOW first, so
// rewriting a block of the pool never needs new space on the host. A
// filesystem that cannot allocate is refused, as is one without room.

// checkRoom refuses a pool file of size bytes, of which have are
// allocated already, in dir when dir's filesystem has less free space
// than the rest needs, naming both numbers.
func checkRoom(dir string, size, have int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return err
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if need := size - have; need > free {
		return fmt.Errorf("the pool file %s needs %s (POOL_SIZE) but the filesystem under it has only %s free (%d bytes needed, %d free): free space there, lower POOL_SIZE, or set POOL to a btrfs filesystem or device: %w",
			filepath.Join(dir, "pool.img"), human(need), human(free), need, free, ErrSetting)
	}
	return nil
}

// allocate gives f size bytes of allocated, zeroed space.
func allocate(f *os.File, size int64) error {
	if isBtrfs(filepath.Dir(f.Name())) {
		setNoCOW(f)
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("the filesystem under %s cannot allocate files (fallocate: %w), and a sparse pool file would fail under production once it fills up; set POOL to a btrfs filesystem or device: %w", f.Name(), err, ErrSetting)
		}
		return fmt.Errorf("allocating %s for the pool file: %w", human(size), err)
	}
	return nil
}

// allocateExisting allocates what is still sparse in a pool file made by
// an earlier version, which made them sparse.
func allocateExisting(img string) error {
	f, err := os.OpenFile(img, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	if have := st.Blocks * 512; have < st.Size {
		if err := checkRoom(filepath.Dir(img), st.Size, have); err != nil {
			return err
		}
		if err := unix.Fallocate(int(f.Fd()), 0, 0, st.Size); err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("allocating the sparse pool file %s (%s): %w", img, human(st.Size), err)
		}
	}
	return nil
}

// setNoCOW sets FS_NOCOW_FL on an empty file on btrfs; it is only an
// optimisation, so failing is fine.
func setNoCOW(f *os.File) {
	const fsNoCOW = 0x00800000
	var flags int
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.FS_IOC_GETFLAGS, uintptr(unsafe.Pointer(&flags))); e != 0 {
		return
	}
	flags |= fsNoCOW
	_, _, _ = unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.FS_IOC_SETFLAGS, uintptr(unsafe.Pointer(&flags)))
}

// human is n bytes for people: 20G, 512M, 1.5G.
func human(n int64) string {
	for _, u := range []struct {
		s string
		v int64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if n >= u.v {
			return strings.TrimSuffix(strconv.FormatFloat(float64(n)/float64(u.v), 'f', 1, 64), ".0") + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}
