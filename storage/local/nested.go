package local

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

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

// nestedSubvols lists the subvolumes anywhere below the subvolume at p,
// as paths relative to p, each after the subvolume it is in.
func nestedSubvols(p string) ([]string, error) {
	f, err := openDir(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	top, _, err := inoLookup(f, 0, btrfsFirstFreeID)
	if err != nil {
		return nil, err
	}
	var out []string
	var walk func(id uint64, base string, depth int) error
	walk = func(id uint64, base string, depth int) error {
		if depth > 64 {
			return fmt.Errorf("subvolumes below %s nest deeper than 64", p)
		}
		refs, err := childSubvols(f, id)
		if err != nil {
			return err
		}
		for _, r := range refs {
			_, dir, err := inoLookup(f, id, r.dir)
			if err != nil {
				return err
			}
			rel := base + dir + r.name
			if !filepath.IsLocal(rel) {
				return fmt.Errorf("nested subvolume %q of %s is outside it", rel, p)
			}
			out = append(out, rel)
			if err := walk(r.child, rel+"/", depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(top, "", 0); err != nil {
		return nil, fmt.Errorf("listing the subvolumes inside %s: %w", p, err)
	}
	return out, nil
}

// deleteSubvol deletes the subvolume at p, and first, deepest first, the
// subvolumes someone made inside it, which would make btrfs refuse.
func deleteSubvol(p string) error {
	err := subvolDelete(p)
	if !errors.Is(err, unix.ENOTEMPTY) {
		return err
	}
	nested, lerr := nestedSubvols(p)
	if lerr != nil {
		return fmt.Errorf("%w (%v)", err, lerr)
	}
	for i := len(nested) - 1; i >= 0; i-- {
		if err := subvolDelete(filepath.Join(p, nested[i])); err != nil && isSubvolume(filepath.Join(p, nested[i])) {
			return fmt.Errorf("deleting the subvolume %s made inside %s: %w", nested[i], p, err)
		}
	}
	return subvolDelete(p)
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
	list := nested
	if len(list) > 5 {
		list = append(append([]string(nil), list[:5]...), fmt.Sprintf("and %d more", len(nested)-5))
	}
	return fmt.Errorf("%s %q holds nested btrfs subvolumes (%s): a snapshot would have empty directories in their place, so its clones would silently lack their data; refusing. Make them plain directories (or volumes of their own) to clone %q",
		what, name, strings.Join(list, ", "), name)
}
