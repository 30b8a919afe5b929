package local

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Space isolation: btrfs quota groups, through the ioctls.
//
// With simple quotas (Linux 6.7+, used wherever the kernel has them) every
// clone gets a level-1 quota group of its own, 1/X (X in the range
// cloneGroupBase, "sn" in ASCII), and its subvolume 0/ID is made a member
// of it by the snapshot ioctl that makes it (qgroup inherit). The clone's
// limit (CLONE_SIZE, or -o size=) is on 1/X, and on 0/ID too, as a record.
// A subvolume a container creates inside its clone (no capability needed)
// is put by the kernel into the groups of the subvolume it is made in
// (simple quotas' auto-inherit, fs/btrfs/qgroup.c qgroup_auto_inherit), so
// it lands in 1/X, and so does one made inside that: the clone's limit
// holds for everything below it, at any depth. With a reserve
// (POOL_RESERVE) every clone group is a member of one level-2 group,
// 2/reserveGroupID, whose limit keeps what all clones hold together below
// what would leave less than the reserve free: clones' bytes + free -
// reserve, recomputed every few seconds (as regular volumes grow, the
// clones' allowance shrinks). A write past either limit fails with EDQUOT
// in that clone only; regular volumes are in no limited group.
//
// Simple quotas account each extent to the subvolume that wrote it, so a
// clone's bytes are what it wrote itself (what deleting it frees), and
// nothing needs rescanning. What snapshots and clones keep alive of their
// source's data stays its source's; usage.go measures it (Pinned).
//
// Deleting a subvolume reserves metadata in the subvolume holding its
// directory entry: inside a clone at its limit, deleting a nested
// subvolume fails with EDQUOT. Delete therefore lifts the clone's own
// limits and takes its group out of the reserve group first (release);
// no other group is touched. The limits snapvol set are read back from
// the kernel every few seconds; one changed by hand is logged, naming the
// group, and set again. Groups of deleted clones are removed once the
// kernel has dropped the clone (sweep).
//
// Older kernels get full qgroups: a per-clone limit on 0/ID, set right
// after the clone is made; no reserve and no clone groups, since adding a
// subvolume to a group marks full qgroups inconsistent, which stops their
// accounting until a rescan (a reserve asked for there is refused at
// Open), and so no limit on subvolumes nested in a clone either. Where
// quotas cannot be enabled at all, limits are refused clearly, at Open or
// at the Clone that asks for one. Data written before quotas were enabled
// is not accounted.

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

// Reserve is POOL_RESERVE: the space clones together may never take from
// the pool, as a share of its size or in bytes.
type Reserve struct {
	Percent float64 // of the pool's size, 0-100
	Bytes   int64
}

// Of is the reserve in bytes of a pool of size bytes.
func (r Reserve) Of(size int64) int64 {
	if r.Percent > 0 {
		return int64(float64(size) * r.Percent / 100)
	}
	return r.Bytes
}

// IsZero reports whether there is no reserve.
func (r Reserve) IsZero() bool { return r.Percent <= 0 && r.Bytes <= 0 }

func (r Reserve) String() string {
	if r.Percent > 0 {
		return strconv.FormatFloat(r.Percent, 'f', -1, 64) + "%"
	}
	return strconv.FormatInt(r.Bytes, 10)
}

// ParseReserve parses POOL_RESERVE: "10%" (of the pool's size), a size
// such as "2G" or "512M", or "0" for none.
func ParseReserve(v string) (Reserve, error) {
	s := strings.TrimSpace(v)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || f < 0 || f >= 100 || math.IsNaN(f) {
			return Reserve{}, fmt.Errorf("%q is not a share of the pool like 10%%", v)
		}
		return Reserve{Percent: f}, nil
	}
	n, err := ParseBytes(s)
	if err != nil {
		return Reserve{}, fmt.Errorf("%q is neither a share of the pool like 10%% nor a size like 2G", v)
	}
	return Reserve{Bytes: n}, nil
}

// ParseBytes parses a size: a number of bytes with an optional K, M, G or
// T suffix (powers of 1024, with or without a trailing B or iB), or "0".
// It is the syntax of CLONE_SIZE and of a clone's -o size=.
func ParseBytes(v string) (int64, error) {
	s := strings.ToUpper(strings.TrimSpace(v))
	s = strings.TrimSuffix(s, "B")
	s = strings.TrimSuffix(s, "I")
	mult := int64(1)
	if s != "" {
		switch s[len(s)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			s = s[:len(s)-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is not a size like 10G or 512M (0 for none)", v)
	}
	return n * mult, nil
}

// minCloneSize is the smallest clone limit accepted: below it a clone
// cannot even hold the metadata of a few files.
const minCloneSize = 1 << 20

// ParseCloneSize parses CLONE_SIZE or a clone's -o size=: a size of at
// least 1M, or 0 for no limit.
func ParseCloneSize(v string) (int64, error) {
	n, err := ParseBytes(v)
	if err != nil {
		return 0, err
	}
	if n != 0 && n < minCloneSize {
		return 0, fmt.Errorf("%q is below the smallest clone size, 1M (0 for no limit)", v)
	}
	return n, nil
}

// quotas is the local backend's space isolation state.
type quotas struct {
	root      string
	cloneSize int64 // CLONE_SIZE, 0: none
	reserve   Reserve
	// own: the pool is a filesystem of its own (snapvol mounted it, or
	// POOL is where one is mounted), whose quotas snapvol may turn on.
	// Quotas on a filesystem POOL is only a directory of are the
	// operator's to turn on: they apply to the whole filesystem, and
	// simple quotas set an incompat flag older kernels cannot mount.
	own bool

	mu    sync.Mutex
	mode  quotaMode
	err   error // why quotas could not be enabled, once tried
	tried bool
	group bool // reserveGroupID exists and clone groups join it
	// set is the reserve group's limit as snapvol last set it (0: not
	// yet); each round compares it with the kernel's, never trusts it.
	set int64
	// want is each clone group's limit as snapvol set it (0: none), read
	// from the kernel at Open for clones made before.
	want map[uint64]int64
	// born is when this process made each clone group, so the sweep
	// leaves a group alone while its clone is being made.
	born map[uint64]time.Time
	// spare are clone groups made ahead, in the reserve group, with no
	// limit and no member yet: a clone takes one, so making a clone costs
	// no more ioctls than it did when all clones shared one group.
	spare  []uint64
	log    logrus.FieldLogger
	rounds int
	stop   chan struct{}
	done   chan struct{}
	closed bool
}

// refreshEvery is how often the reserve group's limit follows the pool's
// free space and every limit is checked against the kernel's; every
// sweepEvery rounds, the groups of deleted clones are removed.
const (
	refreshEvery = 2 * time.Second
	sweepEvery   = 15
	// groupGrace is how long a clone group may be empty after it was
	// made: the snapshot ioctl that puts the clone in it comes after.
	groupGrace = time.Minute
	// spareGroups is how many clone groups are kept made ahead.
	spareGroups = 8
)

// SetLog sends the backend's warnings (limits changed by hand) to l;
// until it is called they go to logrus's standard logger.
func (b *Backend) SetLog(l logrus.FieldLogger) {
	b.quota.mu.Lock()
	b.quota.log = l
	b.quota.mu.Unlock()
}

func (q *quotas) logger() logrus.FieldLogger {
	if q.log == nil {
		return logrus.StandardLogger()
	}
	return q.log
}

// setup enables quotas at Open when limits are configured, and gives
// every clone its group (and the groups the reserve group). Quotas
// already on are used for Usage even when nothing is limited.
func (q *quotas) setup() error {
	q.want, q.born = map[uint64]int64{}, map[uint64]time.Time{}
	f, err := openDir(q.root)
	if err != nil {
		return err
	}
	defer f.Close()
	if q.cloneSize == 0 && q.reserve.IsZero() {
		mode, _, err := quotaStatus(f)
		if err != nil {
			return nil // usage then unknown; nothing was asked for
		}
		q.mode, q.tried = mode, mode != quotaOff
	} else {
		if err := q.enable(f); err != nil {
			return err
		}
		q.rescanIfInconsistent(f)
		if !q.reserve.IsZero() && q.mode != quotaSimple {
			return fmt.Errorf("POOL_RESERVE=%s needs btrfs simple quotas (Linux 6.7 or later); the pool %s has %s, with which a group of clones cannot be limited without stopping its accounting; set POOL_RESERVE=0 to run with per-clone limits only", q.reserve, q.root, q.mode)
		}
	}
	if q.mode != quotaSimple {
		return nil
	}
	if !q.reserve.IsZero() {
		if err := qgroupCreate(f, reserveGroupID); err != nil {
			return err
		}
		q.group = true
	}
	if err := q.adoptClones(f); err != nil {
		return err
	}
	if q.group {
		groups, err := qgroups(f)
		if err != nil {
			return err
		}
		if err := q.refreshLocked(f, groups); err != nil {
			return err
		}
	}
	if err := q.topUp(f); err != nil {
		return err
	}
	q.startLoop()
	return nil
}

// enable turns quotas on once; the caller holds q.mu or is setup.
func (q *quotas) enable(f *os.File) error {
	if q.tried {
		return q.err
	}
	q.tried = true
	if !q.own {
		if q.mode, _, q.err = quotaStatus(f); q.err == nil && q.mode == quotaOff {
			q.err = fmt.Errorf("quotas are off on the btrfs filesystem POOL %s is a directory of, and turning them on would change that whole filesystem; turn them on yourself (btrfs quota enable --simple, btrfs-progs 6.7+ on Linux 6.7+; or btrfs quota enable) or give POOL a filesystem of its own, or set CLONE_SIZE=0 and POOL_RESERVE=0 for no limits", q.root)
		}
	} else {
		q.mode, q.err = enableQuotas(f, q.reserve.IsZero())
	}
	if q.err != nil {
		q.err = fmt.Errorf("clone size limits need btrfs quotas on the pool %s: %w", q.root, q.err)
	}
	return q.err
}

// rescanIfInconsistent starts a rescan of full qgroups whose numbers the
// kernel marked inconsistent (after deleting a large subvolume, say): it
// stops accounting, and so enforcing limits, until one has run. Simple
// quotas are never inconsistent.
func (q *quotas) rescanIfInconsistent(f *os.File) {
	if q.mode != quotaFull {
		return
	}
	if _, flags, err := quotaStatus(f); err == nil && flags&qgroupStatusInconsistent != 0 && flags&qgroupStatusRescan == 0 {
		_ = quotaRescan(f)
	}
}

// adoptClones gives every clone in clones/ a group of its own, with the
// subvolumes nested in it, as a clone made now has: clones made by an
// earlier snapvol (in the one level-1 group all clones shared, or in none)
// are moved, their limit on 0/ID copied to the group. Clones that have a
// group already teach want their limit. The shared group of old is
// emptied and removed. Simple quotas only: moving members is free there.
func (q *quotas) adoptClones(f *os.File) error {
	clones, err := q.cloneIDs(f)
	if err != nil {
		return err
	}
	parents, members, err := qgroupRelations(f)
	if err != nil {
		return err
	}
	groups, err := qgroups(f)
	if err != nil {
		return err
	}
	for _, c := range clones {
		own := ownGroup(parents[c])
		if own == 0 {
			if own, err = q.newGroup(f, groups[c].limit); err != nil {
				return err
			}
			below, err := descendants(f, c)
			if err != nil {
				return err
			}
			for _, s := range append([]uint64{c}, below...) {
				if err := qgroupAssign(f, s, own); err != nil {
					return err
				}
			}
			delete(q.born, own)
		} else {
			lim := groups[own].limit
			if lim == 0 {
				lim = groups[c].limit
			}
			q.want[own] = lim
			if q.group {
				if err := qgroupAssign(f, own, reserveGroupID); err != nil {
					return err
				}
			}
		}
	}
	if !q.group {
		// A reserve an earlier run kept, set to none now: its group
		// must not go on holding clones back.
		if _, ok := groups[reserveGroupID]; ok {
			if err := qgroupSetLimit(f, reserveGroupID, 0); err != nil {
				return err
			}
		}
	}
	if _, ok := groups[legacyGroupID]; ok {
		for _, m := range members[legacyGroupID] {
			if err := qgroupUnassign(f, m, legacyGroupID); err != nil {
				return err
			}
		}
		_ = qgroupSetLimit(f, legacyGroupID, 0)
		_ = qgroupRemove(f, legacyGroupID) // once empty; else at the next Open
	}
	return nil
}

// cloneIDs lists the subvolume IDs of the clones in clones/.
func (q *quotas) cloneIDs(f *os.File) ([]uint64, error) {
	poolID, _, err := inoLookup(f, 0, btrfsFirstFreeID)
	if err != nil {
		return nil, err
	}
	ino, err := dirIno(q.root + "/" + dirClones)
	if err != nil {
		return nil, err
	}
	refs, err := childSubvols(f, poolID)
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, r := range refs {
		if r.dir == ino {
			out = append(out, r.child)
		}
	}
	return out, nil
}

// descendants lists the subvolumes below subvolume id, at any depth,
// from the root tree, without a path.
func descendants(f *os.File, id uint64) ([]uint64, error) {
	var out []uint64
	for todo := []uint64{id}; len(todo) > 0; {
		cur := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		refs, err := childSubvols(f, cur)
		if err != nil {
			return nil, err
		}
		for _, r := range refs {
			out = append(out, r.child)
			todo = append(todo, r.child)
		}
	}
	return out, nil
}

// newGroup makes a clone group limited to max bytes (0: none), in the
// reserve group if there is one, or takes a spare one. The caller holds
// q.mu or is setup.
func (q *quotas) newGroup(f *os.File, max int64) (uint64, error) {
	if n := len(q.spare); n > 0 {
		id := q.spare[n-1]
		q.spare = q.spare[:n-1]
		if max > 0 {
			if err := qgroupSetLimit(f, id, max); err != nil {
				return 0, err
			}
		}
		q.want[id], q.born[id] = max, time.Now()
		return id, nil
	}
	id, err := q.makeGroup(f)
	if err != nil {
		return 0, err
	}
	if max > 0 {
		if err := qgroupSetLimit(f, id, max); err != nil {
			return 0, err
		}
	}
	q.want[id] = max
	return id, nil
}

// makeGroup makes an empty clone group, in the reserve group if there is
// one.
func (q *quotas) makeGroup(f *os.File) (uint64, error) {
	var id uint64
	for try := 0; ; try++ {
		var n [4]byte
		_, _ = rand.Read(n[:])
		id = 1<<48 | cloneGroupBase | uint64(binary.LittleEndian.Uint32(n[:]))
		err := ioctl(f.Fd(), iocQgroupCreate, unsafe.Pointer(&qgroupCreateArgs{create: 1, qgroupID: id}))
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EEXIST) || try == 8 {
			return 0, fmt.Errorf("creating a quota group for a clone: %w", err)
		}
	}
	q.born[id] = time.Now()
	if q.group {
		if err := qgroupAssign(f, id, reserveGroupID); err != nil {
			return 0, err
		}
	}
	return id, nil
}

// topUp makes spare clone groups, up to spareGroups.
func (q *quotas) topUp(f *os.File) error {
	for len(q.spare) < spareGroups {
		id, err := q.makeGroup(f)
		if err != nil {
			return err
		}
		q.spare = append(q.spare, id)
	}
	return nil
}

// release lifts the limits of the clone at p before it is deleted, so
// that deleting the subvolumes nested in it cannot fail with EDQUOT
// (deleting one reserves metadata in the subvolume holding it, which a
// full group refuses): the limit on its group and on its 0/ID, and its
// group's membership in the reserve group. Only the clone's own groups
// are touched. The clone is being deleted: it is no longer held to
// anything, and the refresh no longer puts its limit back.
func (q *quotas) release(p string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.mode != quotaSimple && q.mode != quotaFull {
		return
	}
	id, err := subvolID(p)
	if err != nil {
		return
	}
	// The ioctls go through the pool's root, never the clone: each
	// reserves metadata in the subvolume it is called on, which the
	// clone's full groups would refuse.
	f, err := openDir(q.root)
	if err != nil {
		return
	}
	defer f.Close()
	log := q.logger().WithField("clone", p)
	if err := qgroupSetLimit(f, id, 0); err != nil {
		log.WithError(err).Warn("lifting a clone's limit before deleting it")
	}
	parents, _, err := qgroupRelations(f)
	if err != nil {
		log.WithError(err).Warn("reading a clone's quota groups before deleting it")
		return
	}
	for _, g := range parents[id] {
		switch {
		case isCloneGroup(g):
			delete(q.want, g)
			if err := qgroupSetLimit(f, g, 0); err != nil {
				log.WithError(err).Warn("lifting a clone group's limit before deleting the clone")
			}
			if err := qgroupUnassign(f, g, reserveGroupID); err != nil {
				log.WithError(err).Warn("taking a clone group out of the reserve group before deleting the clone")
			}
		case g == legacyGroupID:
			_ = qgroupUnassign(f, id, g)
		}
	}
}

func (q *quotas) startLoop() {
	if q.stop != nil {
		return
	}
	q.stop, q.done = make(chan struct{}), make(chan struct{})
	go q.loop()
}

func (q *quotas) loop() {
	defer close(q.done)
	t := time.NewTicker(refreshEvery)
	defer t.Stop()
	for {
		select {
		case <-q.stop:
			return
		case <-t.C:
			if err := q.refresh(); err != nil {
				q.logger().WithError(err).Warn("checking the clones' quota limits")
			}
		}
	}
}

func (q *quotas) close() {
	q.mu.Lock()
	if q.stop == nil || q.closed {
		q.mu.Unlock()
		return
	}
	q.closed = true
	close(q.stop)
	q.mu.Unlock()
	<-q.done
}

// refresh sets the reserve group's limit to what keeps the reserve free,
// puts back any limit changed by hand, and now and then removes the
// groups of deleted clones.
func (q *quotas) refresh() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	f, err := openDir(q.root)
	if err != nil {
		return err
	}
	defer f.Close()
	groups, err := qgroups(f)
	if err != nil {
		return err
	}
	if q.group {
		if err := q.refreshLocked(f, groups); err != nil {
			return err
		}
	}
	q.checkLimits(f, groups)
	if q.rounds++; q.rounds%sweepEvery == 0 {
		q.sweep(f, groups)
	}
	return q.topUp(f)
}

// refreshLocked: clones may hold what they hold plus the free space above
// the reserve; never less than they hold (the limit stops growth, it
// does not undo it). The limit in force is the kernel's, read in groups:
// one that is not what snapvol set was changed by hand, and is set again.
func (q *quotas) refreshLocked(f *os.File, groups map[uint64]qgroupUsage) error {
	size, _, free, err := statPool(q.root)
	if err != nil {
		return err
	}
	g := groups[reserveGroupID]
	held := g.excl
	if q.set != 0 && g.limit != q.set {
		q.logger().WithFields(logrus.Fields{"qgroup": qgroupName(reserveGroupID), "limit": g.limit, "set": q.set}).
			Warn("the limit of the clones' reserve group (POOL_RESERVE) was changed by hand; setting it again")
		q.set = 0
	}
	limit := held + free - q.reserve.Of(size)
	if limit < held {
		limit = held
	}
	if limit < 1 {
		limit = 1
	}
	// A tighter limit is written at once; a looser one once it moved by
	// a 64th of the pool (at most 64M), sparing a transaction per round.
	slack := min(size/64, 64<<20)
	if d := limit - q.set; q.set != 0 && d >= 0 && d < slack {
		return nil
	}
	if err := qgroupSetLimit(f, reserveGroupID, limit); err != nil {
		return err
	}
	q.set = limit
	return nil
}

// checkLimits puts back the limit of every clone group whose limit in the
// kernel is not the one snapvol set, saying so.
func (q *quotas) checkLimits(f *os.File, groups map[uint64]qgroupUsage) {
	for id, want := range q.want {
		g, ok := groups[id]
		if !ok || g.limit == want {
			continue
		}
		log := q.logger().WithFields(logrus.Fields{"qgroup": qgroupName(id), "limit": g.limit, "set": want})
		if err := qgroupSetLimit(f, id, want); err != nil {
			log.WithError(err).Warn("the limit of a clone's quota group was changed by hand; setting it again failed")
			continue
		}
		log.Warn("the limit of a clone's quota group was changed by hand; set it again")
	}
}

// sweep removes clone groups with no member left (their clone deleted and
// dropped by the kernel), except those just made, and puts clone groups
// taken out of the reserve group by hand back in.
func (q *quotas) sweep(f *os.File, groups map[uint64]qgroupUsage) {
	parents, members, err := qgroupRelations(f)
	if err != nil {
		return
	}
	now := time.Now()
	for id := range groups {
		if !isCloneGroup(id) || slices.Contains(q.spare, id) {
			continue
		}
		if len(members[id]) > 0 || now.Sub(q.born[id]) < groupGrace {
			if _, ours := q.want[id]; ours && q.group && len(members[id]) > 0 && !slices.Contains(parents[id], reserveGroupID) {
				q.logger().WithField("qgroup", qgroupName(id)).Warn("a clone's quota group was taken out of the reserve group by hand; putting it back")
				_ = qgroupAssign(f, id, reserveGroupID)
			}
			continue
		}
		for _, p := range parents[id] {
			_ = qgroupUnassign(f, id, p)
		}
		if qgroupRemove(f, id) == nil {
			delete(q.want, id)
			delete(q.born, id)
		}
	}
}

// forClone returns what a new clone limited to max bytes (0: none) is
// made with: with simple quotas, a qgroup inherit that puts it in a new
// group of its own (limited to max, in the reserve group); with full
// qgroups, the limit to set once it exists (post > 0). Quotas are enabled
// on the first clone that asks for a limit.
func (q *quotas) forClone(max int64) (inh *qgroupInherit, post int64, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if max > 0 && q.mode == quotaOff {
		f, err := openDir(q.root)
		if err != nil {
			return nil, 0, err
		}
		err = q.enable(f)
		f.Close()
		if err != nil {
			return nil, 0, err
		}
	}
	switch q.mode {
	case quotaSimple:
		f, err := openDir(q.root)
		if err != nil {
			return nil, 0, err
		}
		defer f.Close()
		id, err := q.newGroup(f, max)
		if err != nil {
			return nil, 0, err
		}
		q.startLoop()
		return newInherit(max, id), 0, nil
	case quotaFull:
		// A full-qgroup snapshot takes its source's limits whatever the
		// inherit says: the limit is set after.
		return nil, max, nil
	}
	return nil, 0, nil
}

// statPool is the pool's size, used and free bytes (free: what a write
// may still take).
func statPool(root string) (size, used, free int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return 0, 0, 0, err
	}
	bs := int64(st.Bsize)
	return int64(st.Blocks) * bs, int64(st.Blocks-st.Bfree) * bs, int64(st.Bavail) * bs, nil
}
