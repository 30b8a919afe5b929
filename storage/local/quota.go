package local

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Space isolation: btrfs quota groups, through the ioctls.
//
// Every clone's subvolume has its quota group 0/ID; a clone made with a
// limit (CLONE_SIZE, or -o size=) has a limit on the bytes it holds
// alone. With a reserve (POOL_RESERVE) every clone is also a member of one
// level-1 group, 1/cloneGroupID, whose limit keeps what all clones hold
// together below what would leave less than the reserve free: clones'
// bytes + free - reserve, recomputed every few seconds (as regular
// volumes grow, the clones' allowance shrinks). A write past either limit
// fails with EDQUOT in the clone only; regular volumes are in no limited
// group.
//
// Simple quotas (Linux 6.7+) are used wherever the kernel has them: they
// account each extent to the subvolume that wrote it, so a clone's bytes
// are what it wrote itself (what deleting it frees), nothing needs
// rescanning, and a clone is limited and put in the group by the same
// snapshot ioctl that makes it (qgroup inherit). Older kernels get full
// qgroups: per-clone limits, set right after the clone is made; no
// reserve, since adding a new snapshot to a group marks full qgroups
// inconsistent, which stops their accounting until a rescan; a
// reserve asked for there is refused at Open. Where quotas cannot be
// enabled at all, limits are refused clearly, at Open or at the Clone that
// asks for one.
//
// Known limits of the mechanism, all on the kernel's side: a subvolume a
// container creates inside its clone has a quota group of its own, which
// the clone's limit does not cover (simple quotas put it in the clone's
// level-1 group, so the reserve still holds; Delete destroys it with the
// clone); data written before quotas were enabled is not accounted.

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

	// cloneGroupID is the level-1 quota group holding every clone
	// (1/1936613744, "snap" in ASCII, shown so by btrfs qgroup show).
	cloneGroupID = 1<<48 | 0x736e6170
)

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

	mu     sync.Mutex
	mode   quotaMode
	err    error // why quotas could not be enabled, once tried
	tried  bool
	group  bool  // cloneGroupID exists and clones join it
	limit  int64 // the group's limit as last set
	stop   chan struct{}
	done   chan struct{}
	closed bool
}

// refreshEvery is how often the clone group's limit follows the pool's
// free space.
const refreshEvery = 2 * time.Second

// setup enables quotas at Open when limits are configured, and prepares
// the clone group of a reserve. Quotas already on are used for Usage even
// when nothing is limited.
func (q *quotas) setup() error {
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
		return nil
	}
	if err := q.enable(f); err != nil {
		return err
	}
	q.rescanIfInconsistent(f)
	if q.reserve.IsZero() {
		return nil
	}
	if q.mode != quotaSimple {
		return fmt.Errorf("POOL_RESERVE=%s needs btrfs simple quotas (Linux 6.7 or later); the pool %s has %s, with which a group of clones cannot be limited without stopping its accounting; set POOL_RESERVE=0 to run with per-clone limits only: %w", q.reserve, q.root, q.mode, ErrSetting)
	}
	if err := qgroupCreate(f, cloneGroupID); err != nil {
		return err
	}
	// Clones made before the reserve existed join the group too.
	if err := q.adoptClones(f); err != nil {
		return err
	}
	q.group = true
	if err := q.refreshLocked(f); err != nil {
		return err
	}
	q.stop, q.done = make(chan struct{}), make(chan struct{})
	go q.loop()
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

func (q *quotas) adoptClones(f *os.File) error {
	poolID, _, err := inoLookup(f, 0, btrfsFirstFreeID)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat(q.root+"/"+dirClones, &st); err != nil {
		return err
	}
	refs, err := childSubvols(f, poolID)
	if err != nil {
		return err
	}
	for _, r := range refs {
		if r.dir == st.Ino {
			if err := qgroupAssign(f, r.child, cloneGroupID); err != nil {
				return err
			}
		}
	}
	return nil
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
			_ = q.refresh()
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

// refresh sets the clone group's limit to what keeps the reserve free.
func (q *quotas) refresh() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.group {
		return nil
	}
	f, err := openDir(q.root)
	if err != nil {
		return err
	}
	defer f.Close()
	return q.refreshLocked(f)
}

// refreshLocked: clones may hold what they hold plus the free space above
// the reserve; never less than they hold (the limit stops growth, it
// does not undo it).
func (q *quotas) refreshLocked(f *os.File) error {
	size, _, free, err := statPool(q.root)
	if err != nil {
		return err
	}
	held, err := qgroupExcl(f, cloneGroupID)
	if err != nil {
		return err
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
	if d := limit - q.limit; q.limit != 0 && d >= 0 && d < slack {
		return nil
	}
	if err := qgroupSetLimit(f, cloneGroupID, limit); err != nil {
		return err
	}
	q.limit = limit
	return nil
}

// forClone returns what a new clone limited to max bytes (0: none) is
// made with: a qgroup inherit for simple quotas, and for full qgroups the
// limit to set once it exists (post > 0). Quotas are enabled on the first
// clone that asks for a limit.
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
	switch {
	case q.mode == quotaSimple && q.group:
		return newInherit(max, cloneGroupID), 0, nil
	case q.mode == quotaSimple && max > 0:
		return newInherit(max), 0, nil
	case q.mode == quotaFull:
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
