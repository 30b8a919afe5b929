package local

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The btrfs ioctls snapvol needs, from linux/btrfs.h. Calling them directly
// keeps every operation O(1) and the plugin free of btrfs-progs at run time
// (mkfs.btrfs is needed once, to format a new pool file).
const (
	iocSubvolCreate  = 0x5000940e // _IOW(0x94, 14, struct btrfs_ioctl_vol_args)
	iocSnapDestroy   = 0x5000940f // _IOW(0x94, 15, struct btrfs_ioctl_vol_args)
	iocSnapCreateV2  = 0x50009417 // _IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)
	iocSnapDestroyV2 = 0x5000943f // _IOW(0x94, 63, struct btrfs_ioctl_vol_args_v2), Linux 5.7+
	iocSubvolGetflag = 0x80089419 // _IOR(0x94, 25, __u64)
	iocSubvolSetflag = 0x4008941a // _IOW(0x94, 26, __u64)
	subvolRdonly     = 1 << 1
	subvolSpecByID   = 1 << 4 // BTRFS_SUBVOL_SPEC_BY_ID: vol_args_v2 names a subvolume ID, not a name
	btrfsSuperMagic  = 0x9123683e
	btrfsFirstFreeID = 256 // inode number of every subvolume's root
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

func setName(dst []byte, name string) error {
	if len(name) >= len(dst) || name == "" || name == "." || name == ".." || filepath.Base(name) != name {
		return fmt.Errorf("invalid subvolume name %q", name)
	}
	copy(dst, name)
	return nil
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

func openDir(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// subvolCreate makes an empty subvolume at path.
func subvolCreate(path string) error { return subvolIoctl(iocSubvolCreate, "create", path) }

// subvolIoctl runs a vol_args ioctl (create, destroy) on the subvolume
// named by path's last element, through its parent directory.
func subvolIoctl(req uintptr, what, path string) error {
	parent, err := openDir(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer parent.Close()
	var a volArgs
	if err := setName(a.name[:], filepath.Base(path)); err != nil {
		return err
	}
	if err := ioctl(parent.Fd(), req, unsafe.Pointer(&a)); err != nil {
		return fmt.Errorf("%s subvolume %s: %w", what, path, err)
	}
	return nil
}

// snapCreate snapshots the subvolume src at dst, read-only or writable.
func snapCreate(src, dst string, readonly bool) error { return snapCreateQ(src, dst, readonly, nil) }

// snapCreateQ is snapCreate with the new subvolume's quota group limited
// and placed as inh says (nil: as the kernel does by default).
func snapCreateQ(src, dst string, readonly bool, inh *qgroupInherit) error {
	s, err := openDir(src)
	if err != nil {
		return err
	}
	defer s.Close()
	parent, err := openDir(filepath.Dir(dst))
	if err != nil {
		return err
	}
	defer parent.Close()
	a := volArgsV2{fd: int64(s.Fd())}
	if readonly {
		a.flags = subvolRdonly
	}
	if err := setName(a.name[:], filepath.Base(dst)); err != nil {
		return err
	}
	inh.apply(&a)
	err = ioctl(parent.Fd(), iocSnapCreateV2, unsafe.Pointer(&a))
	inh.keepAlive()
	if err != nil {
		return fmt.Errorf("snapshot %s to %s: %w", src, dst, err)
	}
	return nil
}

// subvolDelete destroys the subvolume at path; the kernel frees its
// extents in the background, so this is O(1) too.
func subvolDelete(path string) error { return subvolIoctl(iocSnapDestroy, "delete", path) }

// isSubvolume reports whether path is the root of a btrfs subvolume.
func isSubvolume(path string) bool {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFDIR && st.Ino == btrfsFirstFreeID
}

// isBtrfs reports whether path lives on a btrfs filesystem.
func isBtrfs(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && uint32(st.Type) == btrfsSuperMagic
}

// subvolInfo is struct btrfs_ioctl_get_subvol_info_args (504 bytes).
type subvolInfo struct {
	treeID       uint64
	name         [256]byte
	parentID     uint64
	dirID        uint64
	generation   uint64
	flags        uint64
	uuid         [16]byte
	parentUUID   [16]byte
	receivedUUID [16]byte
	ctransid     uint64
	otransid     uint64
	stransid     uint64
	rtransid     uint64
	ctime        ioctlTimespec
	otime        ioctlTimespec
	stime        ioctlTimespec
	rtime        ioctlTimespec
	reserved     [8]uint64
}

type ioctlTimespec struct {
	sec  uint64
	nsec uint32
	_    uint32
}

// _IOR(0x94, 60, struct btrfs_ioctl_get_subvol_info_args), Linux 4.18+.
const iocGetSubvolInfo = 0x81f8943c

// subvol is what the storage says about one subvolume.
type subvol struct {
	uuid, parentUUID string    // empty where the ioctl is missing
	created          time.Time // see getSubvol
}

// getSubvol reads the root item of the subvolume at path: its UUID, the
// UUID of the subvolume it is a snapshot of (what `btrfs subvolume show`
// calls Parent UUID: set by every snapshot, snapvol's or made by hand),
// and when it was created. That is the otime of its root item; the btime
// of a snapshot's root directory will not do, since a snapshot copies its
// source's root inode, otime included, so every snapshot would look as
// old as its source. Falls back to btime, without UUIDs, where the ioctl
// is missing (Linux before 4.18).
func getSubvol(path string) (subvol, error) {
	f, err := openDir(path)
	if err != nil {
		return subvol{}, err
	}
	defer f.Close()
	var info subvolInfo
	if err := ioctl(f.Fd(), iocGetSubvolInfo, unsafe.Pointer(&info)); err == nil {
		return subvol{
			uuid: uuidString(info.uuid), parentUUID: uuidString(info.parentUUID),
			created: time.Unix(int64(info.otime.sec), int64(info.otime.nsec)),
		}, nil
	}
	var stx unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_BTIME, &stx); err != nil {
		return subvol{}, err
	}
	if stx.Mask&unix.STATX_BTIME == 0 {
		return subvol{}, fmt.Errorf("%s: no creation time", path)
	}
	return subvol{created: time.Unix(stx.Btime.Sec, int64(stx.Btime.Nsec))}, nil
}

// uuidString formats a UUID as btrfs-progs shows it; the zero UUID (no
// parent) is empty.
func uuidString(u [16]byte) string {
	if u == ([16]byte{}) {
		return ""
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// subvolInfo must be exactly the kernel's 504 bytes: both fail to compile
// otherwise.
var (
	_ [504 - unsafe.Sizeof(subvolInfo{})]byte
	_ [unsafe.Sizeof(subvolInfo{}) - 504]byte
)
