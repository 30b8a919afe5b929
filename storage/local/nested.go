package local

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Nested subvolumes. Creating a subvolume needs no capability, so a
// container can make one inside its clone; btrfs then refuses to delete
// the clone (ENOTEMPTY) until the nested ones are gone. A snapshot does
// not descend into nested subvolumes either: it holds an empty directory
// where each was, so a clone of a source that holds one would silently
// lack its data. Both are found the same way, from the root tree (the
// references of a subvolume to the subvolumes inside it), without walking
// the data.
//
// What is inside a clone (or a volume a container mounts) is its
// container's, and hostile: it can rename anything there at any moment,
// swap a directory for a symbolic link with renameat2(RENAME_EXCHANGE),
// and keep doing so from another container through a file descriptor
// passed over a socket. So nothing below a clone's root is ever named by
// a path here. Nested subvolumes are found by ID in the root tree and
// destroyed by ID (BTRFS_IOC_SNAP_DESTROY_V2 with BTRFS_SUBVOL_SPEC_BY_ID),
// which the kernel resolves through the subvolume's own back reference:
// the directory holding it, by inode, and its name there, with no path
// walk and no symbolic link followed. Each ID is re-checked to be below
// the subvolume being deleted right before it is destroyed.

// subvolNode is a subvolume below another, as the root tree has it: it
// sits under name in directory dir of subvolume parent.
type subvolNode struct {
	id, parent, dir uint64
	name            string
}

// subvolsBelow lists every subvolume below subvolume top, each after the
// subvolume it is in (depth first, siblings in root-tree order). It is a
// loop over an explicit stack, so no nesting depth is too deep. f is any
// file on the filesystem.
func subvolsBelow(f *os.File, top uint64) ([]subvolNode, error) {
	var out []subvolNode
	seen := map[uint64]bool{top: true}
	stack := []subvolNode{{id: top}}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if n.id != top {
			out = append(out, n)
		}
		refs, err := childSubvols(f, n.id)
		if err != nil {
			return nil, err
		}
		// Pushed in reverse, popped in order: the first child's whole
		// subtree comes before the second child.
		for i := len(refs) - 1; i >= 0; i-- {
			r := refs[i]
			if seen[r.child] {
				// A subvolume has one back reference; a second sighting is
				// a tree the kernel would not make, and following it
				// could loop forever.
				return nil, fmt.Errorf("subvolume %d is referenced twice below subvolume %d", r.child, top)
			}
			seen[r.child] = true
			stack = append(stack, subvolNode{id: r.child, parent: n.id, dir: r.dir, name: r.name})
		}
	}
	return out, nil
}

// nestedSubvols lists the subvolumes anywhere below the subvolume at p,
// as paths relative to p, each after the subvolume it is in. The paths
// are for messages only: nothing is ever opened by them.
func nestedSubvols(p string) ([]string, error) {
	f, err := openSubvol(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	top, _, err := inoLookup(f, 0, btrfsFirstFreeID)
	if err != nil {
		return nil, err
	}
	below, err := subvolsBelow(f, top)
	if err != nil {
		return nil, fmt.Errorf("listing the subvolumes inside %s: %w", p, err)
	}
	rel := map[uint64]string{top: ""}
	out := make([]string, 0, len(below))
	for _, n := range below {
		_, dir, err := inoLookup(f, n.parent, n.dir)
		if err != nil {
			return nil, fmt.Errorf("listing the subvolumes inside %s: %w", p, err)
		}
		r := rel[n.parent] + dir + n.name
		rel[n.id] = r + "/"
		out = append(out, r)
	}
	return out, nil
}

// openSubvol opens the subvolume root at p without following a symbolic
// link in its last element. p is the plugin's own (a directory of the
// pool and an object's name); what is below it is not.
func openSubvol(p string) (*os.File, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, err
	}
	if st.Ino != btrfsFirstFreeID {
		f.Close()
		return nil, fmt.Errorf("%s is not a btrfs subvolume", p)
	}
	return f, nil
}

// deleteRounds bounds how often deleteSubvol lists again because new
// subvolumes appeared while it deleted (a container still holding a file
// descriptor of the clone can make them as fast as they go); the caller
// retries later (Remove, the reaper).
const deleteRounds = 16

// deleteSubvol deletes the subvolume at p and first, deepest first, every
// subvolume someone made inside it, which would make btrfs refuse. All of
// them by ID, from a file descriptor of p: see the comment at the top.
func deleteSubvol(p string) error {
	f, err := openSubvol(p)
	if err != nil {
		return fmt.Errorf("delete subvolume %s: %w", p, err)
	}
	defer f.Close()
	top, _, err := inoLookup(f, 0, btrfsFirstFreeID)
	if err != nil {
		return fmt.Errorf("delete subvolume %s: %w", p, err)
	}
	// below holds the subvolumes found below top during this deletion. A
	// subvolume below a clone cannot leave it: only its container can
	// reach it, by the clone's mount (or a descriptor of something in
	// it), and rename(2) does not cross mounts; and btrfs never gives a
	// subvolume ID to another subvolume while the filesystem is mounted.
	below := map[uint64]bool{top: true}
	for round := 1; ; round++ {
		nodes, err := subvolsBelow(f, top)
		if err != nil {
			return fmt.Errorf("delete subvolume %s: listing the subvolumes inside it: %w", p, err)
		}
		byID := make(map[uint64]subvolNode, len(nodes))
		for _, n := range nodes {
			byID[n.id] = n
		}
		for i := len(nodes) - 1; i >= 0; i-- {
			n := nodes[i]
			err := destroyBelow(f, top, n.id, below)
			if errors.Is(err, unix.EROFS) {
				// Its container made the subvolume holding it read-only
				// (the owner of a subvolume may): writable again, it
				// can go.
				if err = clearReadonly(f, top, n.parent, byID); err == nil {
					err = destroyBelow(f, top, n.id, below)
				}
			}
			if err != nil {
				return fmt.Errorf("delete subvolume %s: the subvolume %d (%q) made inside it: %w", p, n.id, n.name, err)
			}
		}
		err = destroySubvolID(f, top)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.ENOTEMPTY) || round == deleteRounds {
			return fmt.Errorf("delete subvolume %s: %w", p, err)
		}
		// More were made inside while we deleted: list again.
	}
}

// destroyBelow destroys subvolume id if it is (still) below subvolume
// top: its back reference is read again right before, and its chain of
// parents followed up to top or to a subvolume already seen below top.
// One that is gone meanwhile is no error; one that is not below top is.
func destroyBelow(f *os.File, top, id uint64, below map[uint64]bool) error {
	ok, gone, err := isBelow(f, top, id, below)
	switch {
	case err != nil:
		return err
	case gone:
		return nil
	case !ok:
		return fmt.Errorf("it is no longer below subvolume %d; not deleting it", top)
	}
	err = destroySubvolID(f, id)
	if errors.Is(err, unix.ENOENT) {
		return nil // its container deleted it meanwhile
	}
	return err
}

// isBelow reports whether subvolume id is below top, following root
// back references up; gone is true when id itself no longer exists.
// Subvolumes found below top are added to below.
func isBelow(f *os.File, top, id uint64, below map[uint64]bool) (ok, gone bool, err error) {
	var chain []uint64
	for cur := id; ; {
		parent, found, err := rootBackref(f, cur)
		if err != nil {
			return false, false, err
		}
		if !found {
			return false, cur == id, nil
		}
		chain = append(chain, cur)
		if below[parent] {
			for _, c := range chain {
				below[c] = true
			}
			return true, false, nil
		}
		if parent < btrfsFirstFreeID || len(chain) > 1<<20 {
			// Reached the filesystem's top (5) without meeting top.
			return false, false, nil
		}
		cur = parent
	}
}

// clearReadonly makes subvolume id, top or one below it, writable. It is
// the one place something below top is opened: by openBelow, from top's
// descriptor, and checked to be subvolume id itself.
func clearReadonly(f *os.File, top, id uint64, nodes map[uint64]subvolNode) error {
	sub := f
	if id != top {
		rel, err := relPath(f, top, id, nodes)
		if err != nil {
			return err
		}
		g, err := openBelow(f, rel)
		if err != nil {
			return fmt.Errorf("opening the subvolume %d holding it: %w", id, err)
		}
		defer g.Close()
		var st unix.Stat_t
		if err := unix.Fstat(int(g.Fd()), &st); err != nil {
			return err
		}
		got, _, err := inoLookup(g, 0, btrfsFirstFreeID)
		if err != nil {
			return err
		}
		if st.Ino != btrfsFirstFreeID || got != id {
			// Renamed meanwhile: the next round finds it where it is.
			return fmt.Errorf("subvolume %d moved while it was opened (found subvolume %d, inode %d)", id, got, st.Ino)
		}
		sub = g
	}
	var flags uint64
	if err := ioctl(sub.Fd(), iocSubvolGetflag, unsafe.Pointer(&flags)); err != nil {
		return fmt.Errorf("reading the flags of subvolume %d: %w", id, err)
	}
	if flags&subvolRdonly == 0 {
		return nil
	}
	flags &^= subvolRdonly
	if err := ioctl(sub.Fd(), iocSubvolSetflag, unsafe.Pointer(&flags)); err != nil {
		return fmt.Errorf("making subvolume %d writable: %w", id, err)
	}
	return nil
}

// relPath is the path of subvolume id relative to top, from the root
// tree (nodes is what subvolsBelow listed), for openBelow only.
func relPath(f *os.File, top, id uint64, nodes map[uint64]subvolNode) (string, error) {
	var parts []string
	for cur := id; cur != top; {
		n, ok := nodes[cur]
		if !ok {
			return "", fmt.Errorf("subvolume %d is not below subvolume %d", cur, top)
		}
		_, dir, err := inoLookup(f, n.parent, n.dir)
		if err != nil {
			return "", err
		}
		parts = append(parts, dir+n.name)
		cur = n.parent
	}
	var b strings.Builder
	for i := len(parts) - 1; i >= 0; i-- {
		b.WriteString(parts[i])
		if i > 0 {
			b.WriteByte('/')
		}
	}
	return b.String(), nil
}

// openBelow opens the directory rel below the directory f, resolved by
// the kernel one element at a time with no symbolic link followed, no
// ".." above f and no mount crossed (openat2 with RESOLVE_BENEATH,
// RESOLVE_NO_SYMLINKS, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_XDEV; Linux
// 5.6+), so a container renaming things or swapping a directory for a
// link meanwhile gets an error, never another directory outside f.
// Whatever it opens the caller still checks to be what it expected.
func openBelow(f *os.File, rel string) (*os.File, error) {
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	for try := 1; ; try++ {
		fd, err := unix.Openat2(int(f.Fd()), rel, &how)
		if (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)) && try < 100 {
			continue // a rename raced the walk: walk again
		}
		if err != nil {
			return nil, err
		}
		return os.NewFile(uintptr(fd), rel), nil
	}
}

// keyRootBackref is BTRFS_ROOT_BACKREF_KEY: (child root, ROOT_BACKREF,
// parent root), one per subvolume.
const keyRootBackref = 144

// rootBackref is the subvolume id is directly in, found false when id has
// no back reference (deleted, or the top of the filesystem).
func rootBackref(f *os.File, id uint64) (parent uint64, found bool, err error) {
	err = treeSearch(f.Fd(), rootTreeID, [3]uint64{id, keyRootBackref, 0}, [3]uint64{id, keyRootBackref, ^uint64(0)}, func(it item) bool {
		if it.objectID == id && it.typ == keyRootBackref {
			parent, found = it.offset, true
			return false
		}
		return true
	})
	return parent, found, err
}

// destroySubvolID destroys subvolume id by its ID: the kernel finds the
// directory that holds it from its back reference and removes it there,
// without a path. f is any file on the same mounted filesystem (it
// carries the write access to it); the subvolume need not be under f
// (only on an idmapped mount must it be, and the pool's never is).
func destroySubvolID(f *os.File, id uint64) error {
	a := volArgsV2{flags: subvolSpecByID}
	binary.LittleEndian.PutUint64(a.name[:8], id)
	err := ioctl(f.Fd(), iocSnapDestroyV2, unsafe.Pointer(&a))
	if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EOPNOTSUPP) {
		// No fallback to a path: that is the hole this closes.
		return fmt.Errorf("deleting subvolume %d by ID (BTRFS_IOC_SNAP_DESTROY_V2) needs Linux 5.7 or later: %w", id, err)
	}
	return err
}

// checkNoNested refuses to snapshot the subvolume at p, what of volume
// name, while it holds nested subvolumes, naming them.
func checkNoNested(p, what, name string) error {
	nested, err := nestedSubvols(p)
	if err != nil {
		return err
	}
	if len(nested) == 0 {
		return nil
	}
	// The names are a container's: quoted, so that one cannot pass for
	// the message's own text.
	var list []string
	for i, s := range nested {
		if i == 5 {
			list = append(list, fmt.Sprintf("and %d more", len(nested)-5))
			break
		}
		list = append(list, fmt.Sprintf("%q", s))
	}
	return fmt.Errorf("%s %q holds nested btrfs subvolumes (%s): a snapshot would have empty directories in their place, so its clones would silently lack their data; refusing. Make them plain directories (or volumes of their own) to clone %q",
		what, name, strings.Join(list, ", "), name)
}
