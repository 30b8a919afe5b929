package local

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path"
	"runtime"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/storage"
)

// Pinned space: what snapshots and clones keep alive of their sources'
// data. Simple quotas bill an extent to the subvolume that wrote it, for
// as long as it lives: production's old data that only a snapshot (or a
// clone of one) still references stays billed to production, and nothing
// in the quota tree says it is the snapshot's doing.
//
// Pinned finds those extents, as btrfs itself can tell them:
//   - the extent tree, searched only through the blocks changed since the
//     oldest snapshot or clone was made (BTRFS_IOC_TREE_SEARCH_V2's
//     min_transid: an extent a snapshot pins had a reference dropped by
//     its source after the snapshot, which rewrote its extent item), so
//     the cost follows what changed, not the pool's size;
//   - for each data extent there old enough to be in a snapshot, and not
//     owned (simple quotas' owner ref) by a clone, the subvolumes that
//     reference it: BTRFS_IOC_LOGICAL_INO_V2 with IGNORE_OFFSET, the
//     backref walk btrfs inspect-internal logical-resolve does.
// An extent no volume references any more is pinned: exclusive to a
// snapshot when only it and the clones made from it reference it (what
// deleting them frees), shared when several snapshots do.

const (
	extentTreeID  = 2   // BTRFS_EXTENT_TREE_OBJECTID
	keyRootItem   = 132 // BTRFS_ROOT_ITEM_KEY
	keyExtentData = 108 // BTRFS_EXTENT_DATA_KEY
	keyExtentItem = 168 // BTRFS_EXTENT_ITEM_KEY
	keyOwnerRef   = 172 // BTRFS_EXTENT_OWNER_REF_KEY (simple quotas)

	extentFlagData = 1 // BTRFS_EXTENT_FLAG_DATA

	iocLogicalInoV2   = 0xc038943b // _IOWR(0x94, 59, struct btrfs_ioctl_logical_ino_args)
	logicalIgnoreOffs = 1          // BTRFS_LOGICAL_INO_ARGS_IGNORE_OFFSET
)

// rootInfo is what a subvolume's root item says about snapshots.
type rootInfo struct {
	lastSnapshot uint64 // the transaction of the last snapshot taken of it
	otransid     uint64 // the transaction that made it
	uuid, parent [16]byte
}

// rootInfos reads the root items of subvolumes ids (all when nil) from
// the root tree. Offsets are those of struct btrfs_root_item (packed).
func rootInfos(f *os.File, lo, hi uint64) (map[uint64]rootInfo, error) {
	out := map[uint64]rootInfo{}
	err := treeSearch(f.Fd(), rootTreeID, [3]uint64{lo, keyRootItem, 0}, [3]uint64{hi, keyRootItem, ^uint64(0)}, func(it item) bool {
		if it.typ != keyRootItem || len(it.data) < 208 {
			return true
		}
		ri := rootInfo{lastSnapshot: binary.LittleEndian.Uint64(it.data[200:])}
		if len(it.data) >= 311 {
			copy(ri.uuid[:], it.data[247:263])
			copy(ri.parent[:], it.data[263:279])
			ri.otransid = binary.LittleEndian.Uint64(it.data[303:])
		}
		out[it.objectID] = ri
		return true
	})
	return out, err
}

// writtenSince sums the bytes of the data extents subvolume tree
// references that were written after transaction gen: what it wrote since
// its last snapshot, when gen is that snapshot's. Only blocks written
// since are read.
func writtenSince(f *os.File, tree, gen uint64) (int64, error) {
	seen := map[uint64]bool{}
	var n int64
	err := treeSearchSince(f.Fd(), tree, gen+1, [3]uint64{0, 0, 0}, [3]uint64{^uint64(0), 255, ^uint64(0)}, func(it item) bool {
		// struct btrfs_file_extent_item: generation, ram_bytes,
		// compression, encryption, other_encoding (2), type, then for
		// regular and prealloc extents disk_bytenr, disk_num_bytes, ...
		if it.typ != keyExtentData || len(it.data) < 53 || it.data[20] == 0 {
			return true
		}
		bytenr := binary.LittleEndian.Uint64(it.data[21:])
		if binary.LittleEndian.Uint64(it.data[0:]) <= gen || bytenr == 0 || seen[bytenr] {
			return true
		}
		seen[bytenr] = true
		n += clampInt64(binary.LittleEndian.Uint64(it.data[29:]))
		return true
	})
	return n, err
}

// extentRoots lists the subvolumes that reference the data extent at
// bytenr, through any of its files and snapshots.
func extentRoots(f *os.File, bytenr uint64, buf []uint64) ([]uint64, error) {
	args := struct {
		logical, size uint64
		reserved      [3]uint64
		flags         uint64
		inodes        uint64
	}{logical: bytenr, size: uint64(len(buf) * 8), flags: logicalIgnoreOffs, inodes: uint64(uintptr(unsafe.Pointer(&buf[0])))}
	err := ioctl(f.Fd(), iocLogicalInoV2, unsafe.Pointer(&args))
	runtime.KeepAlive(buf)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil // freed meanwhile
	}
	if err != nil {
		return nil, fmt.Errorf("subvolumes referencing extent %d: %w", bytenr, err)
	}
	// struct btrfs_data_container: bytes_left, bytes_missing, elem_cnt,
	// elem_missed (u32 each), then (inode, offset, root) triples.
	cnt := int(uint32(buf[1]))
	var roots []uint64
	for i := 0; i+2 < cnt && 2+i+2 < len(buf); i += 3 {
		if r := buf[2+i+2]; !contains64(roots, r) {
			roots = append(roots, r)
		}
	}
	return roots, nil
}

func contains64(s []uint64, v uint64) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Pinned measures what snapshots and clones keep alive of their sources'
// data that the sources themselves no longer reference. See the top of
// this file for how; its cost follows what changed in the pool since the
// oldest snapshot or clone, plus one backref walk per old extent in the
// extent tree blocks that changed.
func (b *Backend) Pinned(ctx context.Context) (storage.PinnedUsage, error) {
	out := storage.PinnedUsage{Sources: map[string]int64{}}
	f, err := openDir(b.root)
	if err != nil {
		return out, b.noted(err)
	}
	defer f.Close()
	if mode, _, err := quotaStatus(f); err != nil || mode != quotaSimple {
		// Without simple quotas' owner refs a clone's own writes cannot
		// be told from its source's data cheaply: not measured.
		return out, err
	}
	w, err := b.pinFamilies(f)
	if err != nil {
		return out, b.noted(err)
	}
	if w.newest == 0 {
		return out, nil // no snapshot or clone: nothing pinned
	}
	w.sources = out.Sources
	if err := w.walkExtents(ctx, f); err != nil {
		return out, b.noted(err)
	}
	out.Objects = w.objects()
	return out, nil
}

// pinnedObj is who a subvolume is: object of the pool, and for snapshots
// and clones the family (snapshot) that pins on its behalf.
type pinnedObj struct {
	id, name, source string
	kind             storage.Kind
}

// pinnedWalk is what Pinned knows of the pool's subvolumes as it walks the
// extent tree, and what it has counted so far.
type pinnedWalk struct {
	family       map[uint64]*pinnedObj // subvolume → the snapshot (or clone) that pins through it
	ownedByClone map[uint64]bool
	// since and newest are the oldest and newest transactions that made a
	// snapshot or clone; newest is 0 when there is none.
	since, newest     uint64
	exclusive, shared map[*pinnedObj]int64
	sources           map[string]int64
}

// pinFamilies reads who each subvolume of the pool is, and puts every
// clone, with the subvolumes nested in it, in the family of the snapshot
// it was made from (or its own, that snapshot gone).
func (b *Backend) pinFamilies(f *os.File) (*pinnedWalk, error) {
	ids, err := b.subvolIDs(f)
	if err != nil {
		return nil, err
	}
	roots, err := rootInfos(f, btrfsFirstFreeID, ^uint64(0))
	if err != nil {
		return nil, err
	}
	w := &pinnedWalk{
		family: map[uint64]*pinnedObj{}, ownedByClone: map[uint64]bool{},
		exclusive: map[*pinnedObj]int64{}, shared: map[*pinnedObj]int64{},
	}
	objOf, snapByUUID := w.classify(ids, roots)
	if w.newest == 0 {
		return w, nil
	}
	for sub, o := range objOf {
		if o.kind != storage.KindClone {
			w.family[sub] = o
			continue
		}
		fam := o
		if s, ok := snapByUUID[roots[sub].parent]; ok {
			fam = s
			o.source = s.source
		} else {
			o.source = b.readLabels(o.id)[storage.LabelSource]
		}
		below, err := descendants(f, sub)
		if err != nil {
			return nil, err
		}
		for _, s := range append([]uint64{sub}, below...) {
			w.family[s], w.ownedByClone[s] = fam, true
		}
	}
	return w, nil
}

// classify names the object each subvolume in ids is, finds the
// snapshots by UUID, and sets since and newest.
func (w *pinnedWalk) classify(ids map[string]uint64, roots map[uint64]rootInfo) (objOf map[uint64]*pinnedObj, snapByUUID map[[16]byte]*pinnedObj) {
	objOf = map[uint64]*pinnedObj{}
	snapByUUID = map[[16]byte]*pinnedObj{}
	w.since, w.newest = ^uint64(0), 0
	for id, sub := range ids {
		o := &pinnedObj{id: id, name: path.Base(id)}
		switch {
		case strings.HasPrefix(id, dirVolumes+"/"):
			o.kind, o.source = storage.KindVolume, o.name
		case strings.HasPrefix(id, dirClones+"/"):
			o.kind = storage.KindClone
		default:
			o.kind, o.source = storage.KindSnapshot, strings.Split(id, "/")[1]
			snapByUUID[roots[sub].uuid] = o
		}
		objOf[sub] = o
		if o.kind != storage.KindVolume {
			w.since, w.newest = min(w.since, roots[sub].otransid), max(w.newest, roots[sub].otransid)
		}
	}
	return objOf, snapByUUID
}

// walkExtents counts every data extent written since the oldest snapshot
// or clone was made, until ctx ends.
func (w *pinnedWalk) walkExtents(ctx context.Context, f *os.File) error {
	buf := make([]uint64, 64<<10)
	var walkErr error
	err := treeSearchSince(f.Fd(), extentTreeID, w.since, [3]uint64{0, keyExtentItem, 0}, [3]uint64{^uint64(0), keyExtentItem, ^uint64(0)}, func(it item) bool {
		more, err := w.count(ctx, f, buf, it)
		if err != nil {
			walkErr = err
		}
		return more
	})
	if err == nil {
		err = walkErr
	}
	return err
}

// count bills one extent item to the families that pin it: exclusive
// when one does, shared when several do, nothing when a volume still
// references it or it is a clone's own write. It says whether the walk
// goes on.
func (w *pinnedWalk) count(ctx context.Context, f *os.File, buf []uint64, it item) (bool, error) {
	// struct btrfs_extent_item: refs, generation, flags; then inline
	// refs, simple quotas' owner ref first (type, root).
	if it.typ != keyExtentItem || len(it.data) < 24 || binary.LittleEndian.Uint64(it.data[16:])&extentFlagData == 0 {
		return true, nil
	}
	if binary.LittleEndian.Uint64(it.data[8:]) > w.newest {
		return true, nil // written after every snapshot and clone
	}
	if len(it.data) >= 33 && it.data[24] == keyOwnerRef && w.ownedByClone[binary.LittleEndian.Uint64(it.data[25:])] {
		return true, nil // a clone's own write, billed to it
	}
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	refs, err := extentRoots(f, it.objectID, buf)
	if err != nil {
		return false, err
	}
	fams := map[*pinnedObj]bool{}
	for _, r := range refs {
		o, ok := w.family[r]
		if !ok {
			continue // a subvolume being deleted, or not the pool's
		}
		if o.kind == storage.KindVolume {
			return true, nil // live: its volume still references it
		}
		fams[o] = true
	}
	size := clampInt64(it.offset)
	source := ""
	for o := range fams {
		if len(fams) == 1 {
			w.exclusive[o] += size
		} else {
			w.shared[o] += size
		}
		if source == "" || o.source < source {
			source = o.source
		}
	}
	if source != "" {
		w.sources[source] += size
	}
	return true, nil
}

// objects lists every object that pins something, once.
func (w *pinnedWalk) objects() []storage.PinnedObject {
	var out []storage.PinnedObject
	seen := map[*pinnedObj]bool{}
	for _, m := range []map[*pinnedObj]int64{w.exclusive, w.shared} {
		for o := range m {
			if seen[o] {
				continue
			}
			seen[o] = true
			out = append(out, storage.PinnedObject{ID: o.id, Name: o.name, Kind: o.kind, Source: o.source, Exclusive: w.exclusive[o], Shared: w.shared[o]})
		}
	}
	return out
}
