package local

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/snapvol/snapvol/internal/tick"
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
	stop   context.CancelFunc // ends the refresh loop
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

func (q *quotas) startLoop() {
	if q.stop != nil {
		return
	}
	var ctx context.Context
	ctx, q.stop = context.WithCancel(context.Background())
	q.done = make(chan struct{})
	go q.loop(ctx)
}

func (q *quotas) loop(ctx context.Context) {
	defer close(q.done)
	tick.Every(ctx, refreshEvery, func() {
		if err := q.refresh(); err != nil {
			q.logger().WithError(err).Warn("checking the clones' quota limits")
		}
	})
}

func (q *quotas) close() {
	q.mu.Lock()
	if q.stop == nil || q.closed {
		q.mu.Unlock()
		return
	}
	q.closed = true
	q.stop()
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
