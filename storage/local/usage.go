package local

import (
	"context"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/storage"
)

// Usage is the pool's size, used and free bytes as statfs(2) gives them,
// and the reserve clones may not take.
func (b *Backend) Usage(context.Context) (storage.PoolUsage, error) {
	size, used, free, err := statPool(b.root)
	if err != nil {
		return storage.PoolUsage{}, b.noted(err)
	}
	return storage.PoolUsage{Size: size, Used: used, Free: free, Reserve: b.cfg.Reserve.Of(size)}, nil
}

// ObjectUsage maps every volume, snapshot and clone in the pool to what
// its quota group says it holds alone and its limit, from two scans: the
// root tree's references to the subvolumes in the pool's directories,
// and the quota tree. Whatever the object count, that is a handful of
// ioctls. With quotas off nothing can be measured, and the map is empty.
//
// With simple quotas an object holds what it wrote itself since quotas
// were enabled: a clone its own writes and those of the subvolumes made
// inside it (its group's), a snapshot nothing (its data is its source's;
// see Pinned for what it keeps alive), a volume what was written to it
// since.
func (b *Backend) ObjectUsage(context.Context) (map[string]storage.ObjectUsage, error) {
	out := map[string]storage.ObjectUsage{}
	f, err := openDir(b.root)
	if err != nil {
		return nil, b.noted(err)
	}
	defer f.Close()
	groups, err := qgroups(f)
	if err != nil || len(groups) == 0 {
		return out, b.noted(err)
	}
	b.quota.mu.Lock()
	b.quota.rescanIfInconsistent(f)
	b.quota.mu.Unlock()
	ids, err := b.subvolIDs(f)
	if err != nil {
		return nil, b.noted(err)
	}
	parents, _, err := qgroupRelations(f)
	if err != nil {
		return nil, b.noted(err)
	}
	for id, sub := range ids {
		// A clone's group holds the clone and every subvolume nested in
		// it: what it holds is what the clone holds, and its limit the
		// clone's.
		if own := ownGroup(parents[sub]); own != 0 {
			if g, ok := groups[own]; ok {
				out[id] = storage.ObjectUsage{Bytes: g.excl, Limit: g.limit}
				continue
			}
		}
		if g, ok := groups[sub]; ok {
			out[id] = storage.ObjectUsage{Bytes: g.excl, Limit: g.limit}
		}
	}
	return out, nil
}

// subvolIDs maps the ID of every object in the pool to its subvolume ID:
// one search for the subvolumes directly in the pool's subvolume, placed
// by the directory (volumes/, clones/, snapshots/SOURCE/) they are in.
func (b *Backend) subvolIDs(f *os.File) (map[string]uint64, error) {
	pool, _, err := inoLookup(f, 0, btrfsFirstFreeID)
	if err != nil {
		return nil, err
	}
	dirs := map[uint64]string{}
	for _, d := range []string{dirVolumes, dirClones} {
		ino, err := dirIno(filepath.Join(b.root, d))
		if err != nil {
			return nil, err
		}
		dirs[ino] = d
	}
	sources, err := os.ReadDir(filepath.Join(b.root, dirSnapshots))
	if err != nil {
		return nil, err
	}
	for _, s := range sources {
		if ino, err := dirIno(filepath.Join(b.root, dirSnapshots, s.Name())); err == nil {
			dirs[ino] = dirSnapshots + "/" + s.Name()
		}
	}
	refs, err := childSubvols(f, pool)
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(refs))
	for _, r := range refs {
		if d, ok := dirs[r.dir]; ok {
			out[d+"/"+r.name] = r.child
		}
	}
	return out, nil
}

// dirIno is the inode number of directory p (not a subvolume root).
func dirIno(p string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}
