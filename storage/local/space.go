package local

import (
	"fmt"

	"github.com/snapvol/snapvol/storage"
)

// Admission: new snapshots and clones are refused before the pool's free
// space would drop below POOL_RESERVE. The clones' group already keeps
// what clones write above the reserve, but what a snapshot keeps alive
// stays billed to its source (simple quotas bill the writer), and no limit
// can stop a source rewriting its own data: the only defence is to take
// no more snapshots while space is short. A snapshot taken now will keep
// alive what its source rewrites from now on; what the source wrote since
// its last snapshot is the measure of that (read from the blocks written
// since, so it costs what changed, not the volume's size). A clone takes
// nothing at first, so it needs only free space at the reserve.

// errPoolShort is the refusal: it names snapvol df, which shows what
// holds the space.
func (b *Backend) errPoolShort(what string, free, reserve, need int64, why string) error {
	return fmt.Errorf("%w: %s refused: the pool has %s free and keeps %s for regular volumes (POOL_RESERVE=%s)%s; snapshots and idle clones may be keeping old data of their sources alive: see snapvol df, then remove clones or snapshots that are no longer needed",
		storage.ErrNoSpace, what, mib(free), mib(reserve), b.cfg.Reserve, why)
}

func mib(n int64) string { return fmt.Sprintf("%dMiB", n>>20) }

// admitSnapshot refuses a snapshot of the subvolume at src (what names
// it) when the pool's free space, less what src wrote since its last
// snapshot, is below the reserve.
func (b *Backend) admitSnapshot(what, src string) error {
	if b.cfg.Reserve.IsZero() {
		return nil
	}
	size, _, free, err := statPool(b.root)
	if err != nil {
		return err
	}
	reserve := b.cfg.Reserve.Of(size)
	need, err := b.snapshotCost(src)
	if err != nil {
		return fmt.Errorf("%s: measuring what it wrote since its last snapshot: %w", what, err)
	}
	if free-need < reserve {
		why := ""
		if need > 0 {
			why = fmt.Sprintf(", and it wrote %s since its last snapshot, which a new snapshot would keep alive as it is rewritten", mib(need))
		}
		return b.errPoolShort("a new snapshot of "+what, free, reserve, need, why)
	}
	return nil
}

// snapshotCost is what the subvolume at src wrote since its last snapshot.
func (b *Backend) snapshotCost(src string) (int64, error) {
	id, err := subvolID(src)
	if err != nil {
		return 0, err
	}
	f, err := openDir(b.root)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	ri, err := rootInfos(f, id, id)
	if err != nil {
		return 0, err
	}
	if ri[id].lastSnapshot == 0 {
		// Never snapshotted: no pace to go by, and reading all it ever
		// wrote would cost the volume's size. Its first snapshot needs
		// only free space above the reserve.
		return 0, nil
	}
	return writtenSince(f, id, ri[id].lastSnapshot)
}

// admitClone refuses a clone while the pool's free space is below the
// reserve by more than the slack the clones' group limit follows the pool
// with: clones that wrote their whole share leave the pool right at the
// reserve, give or take that, and a clone made then still reads its data
// (and gets EDQUOT on writes, as its neighbours do); below it, what took
// the space is not clones, and a new clone keeps its snapshot's pinned
// data alive longer.
func (b *Backend) admitClone(what string) error {
	if b.cfg.Reserve.IsZero() {
		return nil
	}
	size, _, free, err := statPool(b.root)
	if err != nil {
		return err
	}
	if reserve := b.cfg.Reserve.Of(size); free < reserve-min(size/64, 64<<20) {
		return b.errPoolShort("a new clone of "+what, free, reserve, 0, "")
	}
	return nil
}
