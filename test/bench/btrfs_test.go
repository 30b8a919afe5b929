//go:build bench

package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The bare btrfs ioctls the benchmark times as the physical limit. They are
// written out here rather than borrowed from storage/local, so the
// baseline does not share code (or mistakes) with what it measures.
const (
	iocSubvolCreate = 0x5000940e // _IOW(0x94, 14, struct btrfs_ioctl_vol_args)
	iocSnapDestroy  = 0x5000940f // _IOW(0x94, 15, struct btrfs_ioctl_vol_args)
	iocSnapCreateV2 = 0x50009417 // _IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)
	iocSync         = 0x9408     // _IO(0x94, 8): commit, and wake the cleaner
	subvolRdonly    = 1 << 1
)

type volArgs struct {
	fd   int64
	name [4088]byte
}

type volArgsV2 struct {
	fd      int64
	transid uint64
	flags   uint64
	unused  [4]uint64
	name    [4040]byte
}

func ioctl(fd uintptr, req uintptr, arg unsafe.Pointer) error {
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return errno
		}
		return nil
	}
}

func openDir(p string) (int, error) {
	return unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// snapshotIoctl is `btrfs subvolume snapshot [-r] src dst` as one ioctl:
// open the source, open the destination's parent, BTRFS_IOC_SNAP_CREATE_V2.
func snapshotIoctl(src, dst string, readonly bool) error {
	s, err := openDir(src)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	parent, err := openDir(filepath.Dir(dst))
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	a := volArgsV2{fd: int64(s)}
	if readonly {
		a.flags = subvolRdonly
	}
	copy(a.name[:], filepath.Base(dst))
	if err := ioctl(uintptr(parent), iocSnapCreateV2, unsafe.Pointer(&a)); err != nil {
		return fmt.Errorf("snapshot %s to %s: %w", src, dst, err)
	}
	return nil
}

func subvolIoctl(req uintptr, path string) error {
	parent, err := openDir(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	var a volArgs
	copy(a.name[:], filepath.Base(path))
	if err := ioctl(uintptr(parent), req, unsafe.Pointer(&a)); err != nil {
		return fmt.Errorf("subvolume ioctl on %s: %w", path, err)
	}
	return nil
}

func subvolCreate(path string) error { return subvolIoctl(iocSubvolCreate, path) }
func subvolDelete(path string) error { return subvolIoctl(iocSnapDestroy, path) }

// syncFS flushes the filesystem holding path (syncfs(2)).
func syncFS(path string) error {
	fd, err := openDir(path)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

// settle waits until btrfs has cleaned every deleted subvolume and the
// pool is flushed, so one measurement's cleanup does not land in the next.
// BTRFS_IOC_SYNC commits and wakes the cleaner, which otherwise sleeps
// until the next periodic commit (30 s).
func settle(pool string) error {
	fd, err := openDir(pool)
	if err != nil {
		return err
	}
	err = ioctl(uintptr(fd), iocSync, nil)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("BTRFS_IOC_SYNC %s: %w", pool, err)
	}
	if out, err := exec.Command("btrfs", "subvolume", "sync", pool).CombinedOutput(); err != nil {
		return fmt.Errorf("btrfs subvolume sync %s: %v: %s", pool, err, out)
	}
	return syncFS(pool)
}

// bindMount and unbind are what a plugin must do at the least to hand a
// subvolume to a container.
func bindMount(src, target string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	return unix.Mount(src, target, "", unix.MS_BIND, "")
}

func unbind(target string) error {
	if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
		return err
	}
	return os.Remove(target)
}
