package local

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/snapshot"
)

// openPool returns the directory of a mounted btrfs pool, mounting (and on
// first start creating) it as the settings say:
//   - pool is a btrfs directory: used as it is;
//   - pool is a block device: mounted at stateDir/pool;
//   - pool is empty: stateDir/pool.img, a sparse file of size bytes
//     formatted btrfs on first start and loop-mounted at stateDir/pool.
func openPool(pool, stateDir string, size int64) (string, error) {
	mnt := filepath.Join(stateDir, "pool")
	if pool != "" {
		st, err := os.Stat(pool)
		if err != nil {
			return "", fmt.Errorf("POOL %s: %w", pool, err)
		}
		if st.IsDir() {
			if !isBtrfs(pool) {
				return "", fmt.Errorf("POOL %s is not on a btrfs filesystem; give a btrfs directory or block device, or leave POOL empty for a pool file in STATE_DIR", pool)
			}
			return pool, nil
		}
		if st.Mode()&os.ModeDevice == 0 {
			return "", fmt.Errorf("POOL %s is neither a directory nor a block device", pool)
		}
		if snapshot.IsMountPoint(mnt) && isBtrfs(mnt) {
			return mnt, nil
		}
		if err := os.MkdirAll(mnt, 0o700); err != nil {
			return "", err
		}
		if err := unix.Mount(pool, mnt, "btrfs", 0, ""); err != nil {
			return "", fmt.Errorf("mounting POOL %s as btrfs at %s (is it formatted btrfs?): %w", pool, mnt, err)
		}
		return mnt, nil
	}
	if snapshot.IsMountPoint(mnt) && isBtrfs(mnt) {
		return mnt, nil
	}
	img := filepath.Join(stateDir, "pool.img")
	if err := os.MkdirAll(mnt, 0o700); err != nil {
		return "", err
	}
	if _, err := os.Stat(img); errors.Is(err, os.ErrNotExist) {
		if err := makePoolFile(img, size); err != nil {
			return "", err
		}
	}
	if err := loopMount(img, mnt); err != nil {
		return "", err
	}
	return mnt, nil
}

// makePoolFile creates and formats the pool file under a temporary name, so
// a crash half-way leaves no file that looks like a pool.
func makePoolFile(img string, size int64) error {
	tmp := img + ".new"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_RDWR|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("creating pool file %s of %d bytes: %w", tmp, size, err)
	}
	out, err := exec.Command("mkfs.btrfs", "-q", "-L", "snapvol", tmp).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("mkfs.btrfs %s (is btrfs-progs installed?): %v: %s", tmp, err, out)
	}
	return os.Rename(tmp, img)
}

// loopMount attaches img to a free loop device and mounts it. The loop
// device is set to autoclear, so it goes away with the last unmount.
func loopMount(img, mnt string) error {
	back, err := os.OpenFile(img, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer back.Close()
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
		info := unix.LoopInfo64{Flags: unix.LO_FLAGS_AUTOCLEAR}
		copy(info.File_name[:], img)
		if err := unix.IoctlLoopSetStatus64(int(lf.Fd()), &info); err != nil {
			_ = unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0)
			lf.Close()
			return fmt.Errorf("configuring %s: %w", dev, err)
		}
		err = unix.Mount(dev, mnt, "btrfs", 0, "")
		if err != nil {
			_ = unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0)
		}
		lf.Close()
		if err != nil {
			return fmt.Errorf("mounting pool %s (%s) at %s: %w", img, dev, mnt, err)
		}
		return nil
	}
	return fmt.Errorf("no free loop device for %s: %w", img, lastErr)
}
