package local

// Clones: writable snapshots made in staging/ and renamed into clones/,
// with their space limit.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/snapvol/snapvol/storage"
)

// dropStaging deletes what a crash left in staging/: a clone made but not
// yet moved into clones/ (its label, left without an object, is dropped
// next). Only called when nothing else runs.
func (b *Backend) dropStaging() {
	dir := filepath.Join(b.root, dirStaging)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		stage := filepath.Join(dir, e.Name())
		subs, _ := os.ReadDir(stage)
		for _, s := range subs {
			if p := filepath.Join(stage, s.Name()); isSubvolume(p) {
				_ = deleteSubvol(p)
			}
		}
		os.Remove(stage)
	}
}

// staged makes a writable snapshot of src at dst in a directory of its
// own under staging/, then renames it into place. btrfs holds the parent
// directory's lock through the whole snapshot creation, transaction commit
// included, so clones made straight in clones/ queued behind each other;
// snapshots made in different directories share commits, and the rename
// takes the lock of clones/ only for a moment. 32 writable snapshots of
// one source at once, on a loop pool (p50 of 15 rounds): 40 ms into one
// directory, 15 ms staged. (A read-only snapshot cannot be renamed, so
// Snapshot does not do this.)
func (b *Backend) staged(src, dst string, inh *qgroupInherit) error {
	stage := filepath.Join(b.root, dirStaging, filepath.Base(dst))
	if err := os.Mkdir(stage, 0o700); err != nil {
		return err
	}
	defer os.Remove(stage)
	tmp := filepath.Join(stage, filepath.Base(dst))
	if err := snapCreateQ(src, tmp, false, inh); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = subvolDelete(tmp) // else dropStaging at the next start
		return fmt.Errorf("moving new clone %s into place: %w", dst, err)
	}
	return nil
}

// Clone makes a writable snapshot of snap, limited to the clone size
// (opts' size=, or CLONE_SIZE) and in the clones' quota group when there
// is a reserve: with simple quotas both come with the snapshot ioctl
// itself; with full qgroups the limit is set right after, and a clone
// whose limit cannot be set is deleted again.
func (b *Backend) Clone(ctx context.Context, snap storage.Object, labels map[string]string, opts map[string]string) (storage.Object, error) {
	src, kind, err := b.path(snap.ID)
	if err != nil || kind != storage.KindSnapshot {
		return storage.Object{}, fmt.Errorf("cannot clone %q: not a snapshot", snap.ID)
	}
	limit, err := b.cloneLimit(opts)
	if err != nil {
		return storage.Object{}, err
	}
	if !isSubvolume(src) {
		return storage.Object{}, fmt.Errorf("clone of snapshot %q: %w", snap.Name, storage.ErrNotFound)
	}
	if err := b.admitClone(fmt.Sprintf("snapshot %q", snap.Name)); err != nil { // space.go
		return storage.Object{}, err
	}
	inh, post, err := b.quota.forClone(limit)
	if err != nil {
		return storage.Object{}, err
	}
	name := "c-" + storage.RandomHex(12)
	c, err := b.make(dirClones+"/"+name, name, storage.KindClone, labels, func(dst string) error {
		return b.staged(src, dst, inh)
	})
	if err != nil || post == 0 {
		return c, err
	}
	if err := b.limitSubvol(filepath.Join(b.root, c.ID), post); err != nil {
		if derr := b.Delete(ctx, c.ID); derr != nil {
			err = fmt.Errorf("%w (and deleting the clone failed: %v)", err, derr)
		}
		return storage.Object{}, fmt.Errorf("clone of snapshot %q: %w", snap.Name, err)
	}
	return c, nil
}

// limitSubvol limits what the subvolume at p holds alone to max bytes.
func (b *Backend) limitSubvol(p string, max int64) error {
	f, err := openDir(p)
	if err != nil {
		return err
	}
	defer f.Close()
	id, _, err := inoLookup(f, 0, btrfsFirstFreeID)
	if err != nil {
		return err
	}
	return qgroupSetLimit(f, id, max)
}
