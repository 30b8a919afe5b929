package local

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"unsafe"
)

// Reading btrfs's own trees (the root tree for where subvolumes are, the
// quota tree for what they hold) with BTRFS_IOC_TREE_SEARCH_V2: one ioctl
// returns as many items as fit in its buffer, so a scan of every object in
// the pool is a handful of syscalls, not one per object.

const (
	iocTreeSearchV2 = 0xc0709411 // _IOWR(0x94, 17, struct btrfs_ioctl_search_args_v2), 112 bytes
	iocInoLookup    = 0xd0009412 // _IOWR(0x94, 18, struct btrfs_ioctl_ino_lookup_args), 4096 bytes

	rootTreeID  = 1 // BTRFS_ROOT_TREE_OBJECTID
	quotaTreeID = 8 // BTRFS_QUOTA_TREE_OBJECTID

	keyRootRef      = 156 // BTRFS_ROOT_REF_KEY: (parent root, ROOT_REF, child root)
	keyQgroupStatus = 240 // BTRFS_QGROUP_STATUS_KEY
	keyQgroupInfo   = 242 // BTRFS_QGROUP_INFO_KEY
	keyQgroupLimit  = 244 // BTRFS_QGROUP_LIMIT_KEY

	searchKeySize    = 104 // struct btrfs_ioctl_search_key
	searchHeaderSize = 32  // struct btrfs_ioctl_search_header
	searchBufSize    = 256 << 10
)

// searchKey is struct btrfs_ioctl_search_key: items whose key (objectid,
// type, offset) lies between the min and max keys, compared as a whole.
type searchKey struct {
	treeID                   uint64
	minObjectID, maxObjectID uint64
	minOffset, maxOffset     uint64
	minTransID, maxTransID   uint64
	minType, maxType         uint32
	nrItems                  uint32
	_                        uint32
	_                        [4]uint64
}

var (
	_ [searchKeySize - unsafe.Sizeof(searchKey{})]byte
	_ [unsafe.Sizeof(searchKey{}) - searchKeySize]byte
)

// item is one item a tree search returned.
type item struct {
	objectID, offset uint64
	typ              uint32
	data             []byte
}

// treeSearch calls fn for every item of tree between (objectid, typ,
// offset) minimum and maximum, in key order, until fn returns false. The
// items' data is only valid during fn. fd is any file on the filesystem.
func treeSearch(fd uintptr, tree uint64, min, max [3]uint64, fn func(it item) bool) error {
	return treeSearchSince(fd, tree, 0, min, max, fn)
}

// treeSearchSince is treeSearch through the tree blocks written in
// transaction since or later only (the search's min_transid; 0: every
// block): items of older blocks, which cannot have changed since, are
// skipped unread (pinned.go).
func treeSearchSince(fd uintptr, tree, since uint64, min, max [3]uint64, fn func(it item) bool) error {
	buf := make([]byte, searchKeySize+8+searchBufSize)
	k := (*searchKey)(unsafe.Pointer(&buf[0]))
	k.treeID = tree
	k.minObjectID, k.minType, k.minOffset = min[0], uint32(min[1]), min[2]
	k.maxObjectID, k.maxType, k.maxOffset = max[0], uint32(max[1]), max[2]
	k.minTransID, k.maxTransID = since, ^uint64(0)
	for {
		k.nrItems = ^uint32(0)
		binary.LittleEndian.PutUint64(buf[searchKeySize:], searchBufSize)
		err := ioctl(fd, iocTreeSearchV2, unsafe.Pointer(&buf[0]))
		runtime.KeepAlive(buf)
		if err != nil {
			return fmt.Errorf("btrfs tree search (tree %d): %w", tree, err)
		}
		n := k.nrItems
		if n == 0 {
			return nil
		}
		p := buf[searchKeySize+8:]
		var last item
		for i := uint32(0); i < n; i++ {
			if len(p) < searchHeaderSize {
				return fmt.Errorf("btrfs tree search (tree %d): short answer", tree)
			}
			it := item{
				objectID: binary.LittleEndian.Uint64(p[8:]),
				offset:   binary.LittleEndian.Uint64(p[16:]),
				typ:      binary.LittleEndian.Uint32(p[24:]),
			}
			l := binary.LittleEndian.Uint32(p[28:])
			if uint64(len(p)) < searchHeaderSize+uint64(l) {
				return fmt.Errorf("btrfs tree search (tree %d): short item", tree)
			}
			it.data = p[searchHeaderSize : searchHeaderSize+l]
			p = p[searchHeaderSize+l:]
			if !fn(it) {
				return nil
			}
			last = it
		}
		// Go on after the last key returned.
		switch {
		case last.offset < ^uint64(0):
			k.minObjectID, k.minType, k.minOffset = last.objectID, last.typ, last.offset+1
		case last.typ < 255:
			k.minObjectID, k.minType, k.minOffset = last.objectID, last.typ+1, 0
		case last.objectID < ^uint64(0):
			k.minObjectID, k.minType, k.minOffset = last.objectID+1, 0, 0
		default:
			return nil
		}
		if k.minObjectID > k.maxObjectID ||
			(k.minObjectID == k.maxObjectID && (k.minType > k.maxType ||
				(k.minType == k.maxType && k.minOffset > k.maxOffset))) {
			return nil
		}
	}
}

// inoLookupArgs is struct btrfs_ioctl_ino_lookup_args.
type inoLookupArgs struct {
	treeID   uint64
	objectID uint64
	name     [4080]byte
}

// inoLookup resolves directory dir of subvolume tree to its path inside
// that subvolume ("" for the subvolume's root, "a/b/" otherwise); tree 0
// means the subvolume f is in, whose ID is returned.
func inoLookup(f *os.File, tree, dir uint64) (uint64, string, error) {
	a := &inoLookupArgs{treeID: tree, objectID: dir}
	if err := ioctl(f.Fd(), iocInoLookup, unsafe.Pointer(a)); err != nil {
		return 0, "", fmt.Errorf("btrfs inode lookup (tree %d, inode %d): %w", tree, dir, err)
	}
	n := 0
	for n < len(a.name) && a.name[n] != 0 {
		n++
	}
	return a.treeID, string(a.name[:n]), nil
}

// subvolID is the ID of the subvolume (its tree) that path is in.
func subvolID(path string) (uint64, error) {
	f, err := openDir(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	id, _, err := inoLookup(f, 0, btrfsFirstFreeID)
	return id, err
}

// rootRef is a ROOT_REF item: subvolume child sits in directory dir of
// its parent subvolume under name.
type rootRef struct {
	child uint64
	dir   uint64
	name  string
}

// childSubvols lists the subvolumes directly inside subvolume parent,
// with one search of the root tree. f is any file on the filesystem.
func childSubvols(f *os.File, parent uint64) ([]rootRef, error) {
	var out []rootRef
	var bad error
	err := treeSearch(f.Fd(), rootTreeID, [3]uint64{parent, keyRootRef, 0}, [3]uint64{parent, keyRootRef, ^uint64(0)}, func(it item) bool {
		if it.typ != keyRootRef || it.objectID != parent {
			return true
		}
		// struct btrfs_root_ref: dirid, sequence, name_len, then the name.
		if len(it.data) < 18 {
			bad = fmt.Errorf("short root ref item of subvolume %d", it.offset)
			return false
		}
		n := int(binary.LittleEndian.Uint16(it.data[16:]))
		if len(it.data) < 18+n {
			bad = fmt.Errorf("short root ref name of subvolume %d", it.offset)
			return false
		}
		out = append(out, rootRef{child: it.offset, dir: binary.LittleEndian.Uint64(it.data[0:]), name: string(it.data[18 : 18+n])})
		return true
	})
	if err == nil {
		err = bad
	}
	return out, err
}
