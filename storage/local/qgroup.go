package local

// The btrfs quota ioctls and the quota tree's items: enabling quotas,
// making, limiting, relating and reading quota groups, and the qgroup
// inherit a snapshot is made with. quota.go says how snapvol uses them.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	iocQuotaCtl     = 0xc0109428 // _IOWR(0x94, 40, struct btrfs_ioctl_quota_ctl_args)
	iocQgroupAssign = 0x40189429 // _IOW(0x94, 41, struct btrfs_ioctl_qgroup_assign_args)
	iocQgroupCreate = 0x4010942a // _IOW(0x94, 42, struct btrfs_ioctl_qgroup_create_args)
	iocQgroupLimit  = 0x8030942b // _IOR(0x94, 43, struct btrfs_ioctl_qgroup_limit_args)
	iocQuotaRescan  = 0x4040942c // _IOW(0x94, 44, struct btrfs_ioctl_quota_rescan_args)

	quotaCtlEnable       = 1
	quotaCtlEnableSimple = 4

	qgroupStatusOn           = 1 << 0
	qgroupStatusRescan       = 1 << 1
	qgroupStatusInconsistent = 1 << 2
	qgroupStatusSimple       = 1 << 3

	limitMaxExcl     = 1 << 1 // BTRFS_QGROUP_LIMIT_MAX_EXCL
	inheritSetLimits = 1 << 0 // BTRFS_QGROUP_INHERIT_SET_LIMITS
	subvolQgroupInh  = 1 << 2 // BTRFS_SUBVOL_QGROUP_INHERIT
	clearLimit       = ^uint64(0)

	// legacyGroupID is the level-1 group that held every clone before
	// clones had groups of their own (1/1936613744, "snap" in ASCII):
	// Open moves its members out and removes it.
	legacyGroupID = 1<<48 | 0x736e6170
	// reserveGroupID is the level-2 group holding every clone group, whose
	// limit keeps POOL_RESERVE free (2/1936613744).
	reserveGroupID = 2<<48 | 0x736e6170
	// cloneGroupBase is the range of clone groups: 1/(cloneGroupBase | n),
	// n a random 32-bit number.
	cloneGroupBase = 0x736e << 32

	keyQgroupRelation = 246 // BTRFS_QGROUP_RELATION_KEY
)

// isCloneGroup reports whether id is a clone group (see cloneGroupBase).
func isCloneGroup(id uint64) bool { return id>>48 == 1 && id&(1<<48-1)>>32 == 0x736e }

// quotaMode is how the pool's filesystem accounts space.
type quotaMode int

const (
	quotaOff    quotaMode = iota
	quotaFull             // qgroups: accounting by backref walks, rescans
	quotaSimple           // simple quotas (Linux 6.7+): by the writer
)

func (m quotaMode) String() string {
	switch m {
	case quotaFull:
		return "qgroups"
	case quotaSimple:
		return "simple quotas"
	}
	return "off"
}

// qgroupLimit is struct btrfs_qgroup_limit.
type qgroupLimit struct {
	flags, maxRfer, maxExcl, rsvRfer, rsvExcl uint64
}

type quotaCtlArgs struct{ cmd, status uint64 }

type qgroupAssignArgs struct{ assign, src, dst uint64 }

type qgroupCreateArgs struct{ create, qgroupID uint64 }

type qgroupLimitArgs struct {
	qgroupID uint64
	lim      qgroupLimit
}

type quotaRescanArgs struct {
	flags, progress uint64
	_               [6]uint64
}

// quotaStatus reads the quota tree's status item: quotaOff when quotas
// are not enabled (there is no quota tree), and the status flags.
func quotaStatus(f *os.File) (quotaMode, uint64, error) {
	var flags uint64
	found := false
	err := treeSearch(f.Fd(), quotaTreeID, [3]uint64{0, keyQgroupStatus, 0}, [3]uint64{0, keyQgroupStatus, ^uint64(0)}, func(it item) bool {
		if it.typ == keyQgroupStatus && len(it.data) >= 24 {
			flags, found = binary.LittleEndian.Uint64(it.data[16:]), true
		}
		return false
	})
	if errors.Is(err, unix.ENOENT) || (err == nil && !found) {
		return quotaOff, 0, nil
	}
	if err != nil {
		return quotaOff, 0, err
	}
	if flags&qgroupStatusOn == 0 {
		return quotaOff, flags, nil
	}
	if flags&qgroupStatusSimple != 0 {
		return quotaSimple, flags, nil
	}
	return quotaFull, flags, nil
}

// enableQuotas turns simple quotas on, or full qgroups where the kernel
// has no simple quotas and full ones will do; quotas already on stay as
// they are.
func enableQuotas(f *os.File, fullOK bool) (quotaMode, error) {
	mode, _, err := quotaStatus(f)
	if err != nil || mode != quotaOff {
		return mode, err
	}
	err = ioctl(f.Fd(), iocQuotaCtl, unsafe.Pointer(&quotaCtlArgs{cmd: quotaCtlEnableSimple}))
	if errors.Is(err, unix.EINVAL) && fullOK {
		// A kernel before 6.7 does not know the command.
		err = ioctl(f.Fd(), iocQuotaCtl, unsafe.Pointer(&quotaCtlArgs{cmd: quotaCtlEnable}))
	}
	if err != nil {
		return quotaOff, fmt.Errorf("enabling btrfs quotas: %w", err)
	}
	mode, _, err = quotaStatus(f)
	if err == nil && mode == quotaOff {
		err = errors.New("enabling btrfs quotas: the kernel reports them still off")
	}
	return mode, err
}

func qgroupCreate(f *os.File, id uint64) error {
	err := ioctl(f.Fd(), iocQgroupCreate, unsafe.Pointer(&qgroupCreateArgs{create: 1, qgroupID: id}))
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("creating quota group %s: %w", qgroupName(id), err)
	}
	return nil
}

// qgroupSetLimit limits what quota group id holds alone to max bytes
// (0: no limit).
func qgroupSetLimit(f *os.File, id uint64, max int64) error {
	a := &qgroupLimitArgs{qgroupID: id, lim: qgroupLimit{flags: limitMaxExcl, maxExcl: clearLimit}}
	if max > 0 {
		a.lim.maxExcl = uint64(max)
	}
	if err := ioctl(f.Fd(), iocQgroupLimit, unsafe.Pointer(a)); err != nil {
		return fmt.Errorf("setting the limit of quota group %s: %w", qgroupName(id), err)
	}
	return nil
}

// qgroupAssign makes quota group src a member of dst; being one already
// is fine.
func qgroupAssign(f *os.File, src, dst uint64) error {
	err := ioctl(f.Fd(), iocQgroupAssign, unsafe.Pointer(&qgroupAssignArgs{assign: 1, src: src, dst: dst}))
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("adding quota group %s to %s: %w", qgroupName(src), qgroupName(dst), err)
	}
	return nil
}

// qgroupRemove removes quota group id; the kernel refuses (EBUSY) while
// it has members or holds bytes.
func qgroupRemove(f *os.File, id uint64) error {
	if err := ioctl(f.Fd(), iocQgroupCreate, unsafe.Pointer(&qgroupCreateArgs{create: 0, qgroupID: id})); err != nil {
		return fmt.Errorf("removing quota group %s: %w", qgroupName(id), err)
	}
	return nil
}

// qgroupUnassign takes quota group src out of dst; not being a member is
// fine.
func qgroupUnassign(f *os.File, src, dst uint64) error {
	err := ioctl(f.Fd(), iocQgroupAssign, unsafe.Pointer(&qgroupAssignArgs{assign: 0, src: src, dst: dst}))
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("taking quota group %s out of %s: %w", qgroupName(src), qgroupName(dst), err)
	}
	return nil
}

// qgroupRelations reads every membership in one scan of the quota tree:
// the groups each group is a member of, and each group's members. The
// kernel stores a relation both ways, (member, RELATION, group) and
// (group, RELATION, member), under nonzero object IDs, apart from the
// info and limit items (object ID 0).
func qgroupRelations(f *os.File) (parents, members map[uint64][]uint64, err error) {
	parents, members = map[uint64][]uint64{}, map[uint64][]uint64{}
	err = treeSearch(f.Fd(), quotaTreeID, [3]uint64{1, keyQgroupRelation, 0}, [3]uint64{^uint64(0), keyQgroupRelation, ^uint64(0)}, func(it item) bool {
		if it.typ != keyQgroupRelation {
			return true
		}
		if it.objectID>>48 < it.offset>>48 {
			parents[it.objectID] = append(parents[it.objectID], it.offset)
		} else {
			members[it.objectID] = append(members[it.objectID], it.offset)
		}
		return true
	})
	if errors.Is(err, unix.ENOENT) {
		err = nil
	}
	return parents, members, err
}

// ownGroup is the clone group among groups, 0 if none.
func ownGroup(groups []uint64) uint64 {
	for _, g := range groups {
		if isCloneGroup(g) {
			return g
		}
	}
	return 0
}

func quotaRescan(f *os.File) error {
	err := ioctl(f.Fd(), iocQuotaRescan, unsafe.Pointer(&quotaRescanArgs{}))
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return fmt.Errorf("starting a quota rescan: %w", err)
	}
	return nil
}

func qgroupName(id uint64) string { return fmt.Sprintf("%d/%d", id>>48, id&(1<<48-1)) }

// qgroupUsage is one quota group's accounting: bytes held alone, and the
// limit on them (0: none).
type qgroupUsage struct{ excl, limit int64 }

// qgroups reads every quota group's usage and limit in one scan of the
// quota tree.
func qgroups(f *os.File) (map[uint64]qgroupUsage, error) {
	out := map[uint64]qgroupUsage{}
	err := treeSearch(f.Fd(), quotaTreeID, [3]uint64{0, keyQgroupInfo, 0}, [3]uint64{0, keyQgroupLimit, ^uint64(0)}, func(it item) bool {
		u := out[it.offset]
		switch {
		case it.typ == keyQgroupInfo && len(it.data) >= 32:
			// struct btrfs_qgroup_info_item: generation, rfer, rfer_cmpr, excl, ...
			u.excl = clampInt64(binary.LittleEndian.Uint64(it.data[24:]))
		case it.typ == keyQgroupLimit && len(it.data) >= 24:
			// struct btrfs_qgroup_limit_item: flags, max_rfer, max_excl, ...
			if binary.LittleEndian.Uint64(it.data[0:])&limitMaxExcl != 0 {
				u.limit = clampInt64(binary.LittleEndian.Uint64(it.data[16:]))
			}
		default:
			return true
		}
		out[it.offset] = u
		return true
	})
	if errors.Is(err, unix.ENOENT) {
		return out, nil // quotas off: no quota tree
	}
	return out, err
}

// qgroupExcl reads what one quota group holds alone.
func qgroupExcl(f *os.File, id uint64) (int64, error) {
	var excl int64
	err := treeSearch(f.Fd(), quotaTreeID, [3]uint64{0, keyQgroupInfo, id}, [3]uint64{0, keyQgroupInfo, id}, func(it item) bool {
		if it.typ == keyQgroupInfo && it.offset == id && len(it.data) >= 32 {
			excl = clampInt64(binary.LittleEndian.Uint64(it.data[24:]))
		}
		return false
	})
	return excl, err
}

func clampInt64(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

// qgroupInherit is struct btrfs_qgroup_inherit with its qgroups array,
// passed by pointer inside the snapshot ioctl's arguments.
type qgroupInherit struct {
	buf []uint64
}

// newInherit asks a snapshot to get limit max (0: none) and to join the
// quota groups groups.
func newInherit(max int64, groups ...uint64) *qgroupInherit {
	// flags, num_qgroups, num_ref_copies, num_excl_copies, lim (5), qgroups.
	buf := make([]uint64, 9+len(groups))
	if max > 0 {
		buf[0] = inheritSetLimits
		buf[4] = limitMaxExcl // lim.flags
		buf[6] = uint64(max)  // lim.max_excl
	}
	buf[1] = uint64(len(groups))
	copy(buf[9:], groups)
	return &qgroupInherit{buf: buf}
}

// apply sets a's qgroup inherit fields; the caller keeps q alive until the
// ioctl returns.
func (q *qgroupInherit) apply(a *volArgsV2) {
	if q == nil {
		return
	}
	a.flags |= subvolQgroupInh
	a.unused[0] = uint64(len(q.buf) * 8)
	a.unused[1] = uint64(uintptr(unsafe.Pointer(&q.buf[0])))
}

func (q *qgroupInherit) keepAlive() { runtime.KeepAlive(q) }
