package local

// Clone groups: the level-1 quota group each clone has of its own, made
// ahead, taken by a new clone, released before its clone is deleted,
// adopted for clones of earlier versions and swept once empty (see
// quota.go).

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

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
