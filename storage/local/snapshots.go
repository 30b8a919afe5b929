package local

// Snapshots: listing a source's, finding one by name, taking one (the
// read-only subvolume snapshots under snapshots/SOURCE/).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/snapvol/snapvol/storage"
)

// Snapshots reads the directory named after the source, as pools have
// always been laid out, and keeps what belongs to the source's UUID: a
// directory of a removed volume's name may hold its snapshots still.
func (b *Backend) Snapshots(_ context.Context, source storage.Object) ([]storage.Object, error) {
	ident, name, ok, err := b.identity(source)
	if err != nil || !ok {
		return nil, err
	}
	dir := filepath.Join(b.root, dirSnapshots, name)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []storage.Object
	for _, e := range ents {
		o, err := b.object(dirSnapshots+"/"+name+"/"+e.Name(), e.Name(), storage.KindSnapshot)
		if err == nil && belongs(o, ident) {
			out = append(out, o)
		}
	}
	return out, nil
}

// identity is the UUID and name of source, looked up by ID when the caller
// has no UUID; ok is false when the source is gone and its UUID unknown,
// so nothing can be said to belong to it.
func (b *Backend) identity(source storage.Object) (ident, name string, ok bool, err error) {
	_, kind, err := b.path(source.ID)
	if err != nil {
		return "", "", false, err
	}
	if kind != storage.KindVolume {
		return "", "", false, fmt.Errorf("%s is not a volume", source.ID)
	}
	name = path.Base(source.ID)
	if source.Identity != "" {
		return source.Identity, name, true, nil
	}
	v, err := b.object(source.ID, name, storage.KindVolume)
	if errors.Is(err, storage.ErrNotFound) {
		return "", name, false, nil
	}
	if err != nil {
		return "", "", false, err
	}
	return v.Identity, name, true, nil
}

// belongs reports whether snapshot s is the source ident's. Where the
// kernel cannot say (no UUIDs), the directory alone decides, as it did
// before snapshots were keyed by UUID.
func belongs(s storage.Object, ident string) bool {
	return ident == "" || s.Parent == ident
}

func (b *Backend) SnapshotByName(_ context.Context, source storage.Object, name string) (storage.Object, error) {
	if err := checkName("snapshot", name); err != nil {
		return storage.Object{}, err
	}
	ident, src, ok, err := b.identity(source)
	if err != nil {
		return storage.Object{}, err
	}
	notFound := fmt.Errorf("snapshot %q of volume %q: %w", name, src, storage.ErrNotFound)
	if !ok {
		return storage.Object{}, notFound
	}
	o, err := b.object(dirSnapshots+"/"+src+"/"+name, name, storage.KindSnapshot)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !belongs(o, ident)) {
		return storage.Object{}, notFound
	}
	return o, err
}

func (b *Backend) Snapshot(_ context.Context, source storage.Object, labels map[string]string) (storage.Object, error) {
	v, err := b.volumeOf(source)
	if err != nil {
		return storage.Object{}, fmt.Errorf("snapshot of volume %q: %w", source.Name, err)
	}
	src, _, _ := b.path(v.ID)
	if err := checkNoNested(src, "volume", v.Name); err != nil {
		return storage.Object{}, b.noted(err)
	}
	return b.snapshotInto(v, src, labels)
}

// SnapshotOf takes a read-only snapshot of the clone into the source's
// snapshot directory, labelled with the source's UUID: btrfs records the
// clone as its parent, but the label says whose it is (see
// storage.SnapshotParent), so Snapshots and SnapshotByName of the source
// find it. A btrfs snapshot does not depend on what it was taken of, so
// the clone can be deleted afterwards and the snapshot stays.
func (b *Backend) SnapshotOf(_ context.Context, clone, source storage.Object, labels map[string]string) (storage.Object, error) {
	cp, kind, err := b.path(clone.ID)
	if err != nil {
		return storage.Object{}, err
	}
	if kind != storage.KindClone {
		return storage.Object{}, fmt.Errorf("snapshot of %s: not a clone", clone.ID)
	}
	if !isSubvolume(cp) {
		return storage.Object{}, fmt.Errorf("snapshot of clone %q (%s): %w", clone.Name, clone.ID, storage.ErrNotFound)
	}
	v, err := b.volumeOf(source)
	if err != nil {
		return storage.Object{}, fmt.Errorf("snapshot of clone %q as volume %q's: %w", clone.Name, source.Name, err)
	}
	if err := checkNoNested(cp, "clone", clone.Name); err != nil {
		return storage.Object{}, b.noted(err)
	}
	return b.snapshotInto(v, cp, labels)
}

// snapshotInto takes a read-only snapshot of the subvolume src (v itself,
// or a clone of it) filed under v's snapshot directory as v's.
func (b *Backend) snapshotInto(v storage.Object, src string, labels map[string]string) (storage.Object, error) {
	if err := b.admitSnapshot(fmt.Sprintf("volume %q", v.Name), src); err != nil { // space.go
		return storage.Object{}, err
	}
	name := storage.SnapshotName(time.Now())
	id := dirSnapshots + "/" + v.Name + "/" + name
	if err := os.MkdirAll(filepath.Join(b.root, dirSnapshots, v.Name), 0o700); err != nil {
		return storage.Object{}, b.noted(err)
	}
	return b.make(id, name, storage.KindSnapshot, storage.WithSourceID(labels, v.Identity), func(dst string) error {
		return snapCreate(src, dst, true)
	})
}
