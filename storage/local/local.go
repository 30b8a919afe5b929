// Package local is the embedded default backend: a btrfs pool on the Docker
// host. Regular volumes are subvolumes under volumes/, snapshots are
// read-only subvolume snapshots under snapshots/SOURCE/, clones are writable
// snapshots under clones/. The labels of a plugin-made object are JSON in
// an extended attribute (labelXattr) of an empty file under labels/, made
// before the object: metadata the btrfs transaction that makes the object
// commits with it, so a crash never leaves an unlabelled plugin object.
// (Label files an older snapvol wrote hold the JSON as content.)
//
// A subvolume's UUID is its Identity. snapshots/SOURCE/ is named after the
// source, as pools have always been laid out, but a name can outlive its
// volume: a snapshot belongs to the source whose UUID its label names
// (storage.LabelSourceID), or, without one (taken by hand, or before the
// label), whose UUID is its parent UUID.
//
// A clone's content belongs to its container, and the plugin treats it as
// hostile (so is a volume's, while containers mount it): a container can
// rename anything in it, swap a directory for a symbolic link at any
// moment, make subvolumes there, nest them, make them read-only. The
// plugin names the pool's own directories and an object's root by path,
// and nothing below an object's root ever: nested subvolumes are found by
// ID in the root tree and destroyed by ID (nested.go); where something
// below a root must be opened, it is opened from the root's descriptor
// with no link followed, no ".." above it and no mount crossed, and
// checked to be what was expected (openBelow).
package local

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/keylock"
	"github.com/snapvol/snapvol/mountpoint"
	"github.com/snapvol/snapvol/storage"
)

const (
	dirVolumes   = "volumes"
	dirSnapshots = "snapshots"
	dirClones    = "clones"
	dirStaging   = "staging"
	dirLabels    = "labels"
)

// Config holds the settings the local backend reads.
type Config struct {
	Pool     string // POOL
	StateDir string // STATE_DIR
	PoolSize int64  // POOL_SIZE in bytes

	// CloneSize is CLONE_SIZE: the most one clone may hold alone (what
	// it wrote itself, not what it shares with its snapshot), in bytes;
	// 0 is no limit. A clone volume's -o size= overrides it. A write past
	// it fails with EDQUOT in that clone only.
	CloneSize int64
	// Reserve is POOL_RESERVE: free space clones together never take, so
	// regular volumes (production) can still write when clones have
	// filled the rest; zero is none. Needs btrfs simple quotas (Linux
	// 6.7+): Open refuses a reserve where the kernel lacks them.
	Reserve Reserve
}

// Backend is the btrfs implementation of storage.Backend.
type Backend struct {
	root string
	cfg  Config
	// names serialises CreateVolume and RemoveVolume per volume: the label
	// written before the subvolume is one call's to take back.
	names  keylock.Map
	quota  *quotas
	health health
}

var (
	_ storage.Backend = (*Backend)(nil)
	_ storage.Usager  = (*Backend)(nil)
	_ storage.Checker = (*Backend)(nil)
)

// Open mounts (or creates) the pool and prepares its layout and its space
// limits.
func Open(cfg Config) (*Backend, error) {
	root, err := openPool(cfg.Pool, cfg.StateDir, cfg.PoolSize)
	if err != nil {
		return nil, err
	}
	return open(root, cfg)
}

// OpenDir uses an already mounted btrfs directory as the pool, with no
// space limits.
func OpenDir(root string) (*Backend, error) { return open(root, Config{}) }

func open(root string, cfg Config) (*Backend, error) {
	if !isBtrfs(root) {
		return nil, fmt.Errorf("pool %s is not on btrfs", root)
	}
	// The pool holds clones of production and whatever CI wrote into
	// them: no other host user may enter it.
	for _, d := range []string{dirVolumes, dirSnapshots, dirClones, dirLabels, dirStaging} {
		p := filepath.Join(root, d)
		if err := os.MkdirAll(p, 0o700); err != nil {
			return nil, err
		}
		if err := os.Chmod(p, 0o700); err != nil {
			return nil, err
		}
	}
	b := &Backend{root: root, cfg: cfg}
	b.quota = &quotas{root: root, cloneSize: cfg.CloneSize, reserve: cfg.Reserve, own: mountpoint.IsMountPoint(root)}
	b.health.root = root
	b.dropStaging()
	b.dropStaleLabels()
	if err := b.quota.setup(); err != nil {
		return nil, err
	}
	return b, nil
}

// Root is the pool directory.
func (b *Backend) Root() string { return b.root }

// Scope is local: the pool is on this host only.
func (b *Backend) Scope() string { return "local" }

// optSize is a clone volume's -o size=: the most its clone may hold
// alone, overriding CLONE_SIZE (0: no limit).
const optSize = "size"

// OptionKey: size=, on clone volumes.
func (b *Backend) OptionKey(key string) bool { return key == optSize }

// CheckOptions accepts size= (ParseCloneSize) on clone volumes; regular
// volumes take no options here.
func (b *Backend) CheckOptions(kind storage.Kind, opts map[string]string) error {
	for k, v := range opts {
		switch {
		case k != optSize:
			return fmt.Errorf("option %s= is not known to the local backend (it takes size= on clone volumes)", k)
		case kind != storage.KindClone:
			return fmt.Errorf("option size= applies to clone volumes (-o from=SOURCE): a regular volume of the local backend shares the pool and has no size of its own")
		}
		if _, err := ParseCloneSize(v); err != nil {
			return fmt.Errorf("option size=: %w", err)
		}
	}
	return nil
}

// cloneLimit is the limit a clone made with opts gets.
func (b *Backend) cloneLimit(opts map[string]string) (int64, error) {
	if err := b.CheckOptions(storage.KindClone, opts); err != nil {
		return 0, err
	}
	if v, ok := opts[optSize]; ok {
		return ParseCloneSize(v)
	}
	return b.cfg.CloneSize, nil
}

// Close stops following the pool's free space with the clones' limit.
func (b *Backend) Close() error {
	b.quota.close()
	return nil
}

// path maps an object ID to its directory, refusing anything that is not
// one of the three layouts, so an ID can never point outside the pool.
func (b *Backend) path(id string) (string, storage.Kind, error) {
	parts := strings.Split(id, "/")
	for _, p := range parts {
		if p == "" || p == "." || p == ".." || strings.ContainsRune(p, 0) {
			return "", "", fmt.Errorf("invalid object id %q", id)
		}
	}
	switch {
	case len(parts) == 2 && parts[0] == dirVolumes:
		return filepath.Join(b.root, id), storage.KindVolume, nil
	case len(parts) == 2 && parts[0] == dirClones:
		return filepath.Join(b.root, id), storage.KindClone, nil
	case len(parts) == 3 && parts[0] == dirSnapshots:
		return filepath.Join(b.root, id), storage.KindSnapshot, nil
	}
	return "", "", fmt.Errorf("invalid object id %q", id)
}

func labelFile(root, id string) string {
	return filepath.Join(root, dirLabels, strings.ReplaceAll(id, "/", "%")+".json")
}

func (b *Backend) writeLabels(id string, labels map[string]string) error {
	data, err := json.Marshal(labels)
	if err != nil {
		return err
	}
	return writeLabelFile(labelFile(b.root, id), data)
}

// labelXattr holds a label file's JSON. In an extended attribute the labels
// are metadata, committed by the btrfs transaction of the snapshot or
// subvolume creation that follows them, with no fsync: as file data they
// would be delayed allocation, which a transaction commit does not flush,
// so a power cut could leave the object with an empty label (a plugin
// snapshot would then look made by hand and never be collected), unless
// fsynced first, which cost 0.7 ms of every clone.
const labelXattr = "user.snapvol.labels"

// writeLabelFile makes the label file path holding data, whole or not at
// all: an empty file gets the attribute under a temporary name and is
// renamed into place, all of it metadata ordered before the object that
// is made next.
func writeLabelFile(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	if err := unix.Setxattr(tmp, labelXattr, data, 0); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("labels of %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

// readLabelFile reads a label file's JSON: from its attribute, or from its
// content where an older snapvol wrote it there.
func readLabelFile(path string) ([]byte, error) {
	buf := make([]byte, 4096)
	for {
		n, err := unix.Getxattr(path, labelXattr, buf)
		if errors.Is(err, unix.ERANGE) && len(buf) < 1<<20 {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if errors.Is(err, unix.ENODATA) {
			return os.ReadFile(path)
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

func (b *Backend) readLabels(id string) map[string]string {
	data, err := readLabelFile(labelFile(b.root, id))
	if err != nil {
		return nil
	}
	var l map[string]string
	if json.Unmarshal(data, &l) != nil {
		return nil
	}
	return l
}

// dropStaleLabels removes label files whose object is gone (a crash between
// deleting an object and its labels). Only called when nothing else runs.
func (b *Backend) dropStaleLabels() {
	ents, _ := os.ReadDir(filepath.Join(b.root, dirLabels))
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			os.Remove(filepath.Join(b.root, dirLabels, name))
			continue
		}
		id := strings.ReplaceAll(strings.TrimSuffix(name, ".json"), "%", "/")
		if p, _, err := b.path(id); err == nil && !isSubvolume(p) {
			os.Remove(filepath.Join(b.root, dirLabels, name))
		}
	}
}

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

// object reads the object id is, named name, as the storage has it now.
func (b *Backend) object(id, name string, kind storage.Kind) (storage.Object, error) {
	p, _, err := b.path(id)
	if err != nil {
		return storage.Object{}, err
	}
	if !isSubvolume(p) {
		return storage.Object{}, fmt.Errorf("%s %q: %w", kind, name, storage.ErrNotFound)
	}
	sv, err := getSubvol(p)
	if err != nil {
		if !isSubvolume(p) {
			return storage.Object{}, fmt.Errorf("%s %q: %w", kind, name, storage.ErrNotFound)
		}
		return storage.Object{}, fmt.Errorf("%s %q: %w", kind, name, err)
	}
	o := storage.Object{ID: id, Identity: sv.uuid, Name: name, Kind: kind, Created: sv.created, Labels: b.readLabels(id)}
	switch kind {
	case storage.KindSnapshot:
		o.Parent = storage.SnapshotParent(o.Labels, sv.parentUUID)
	case storage.KindClone:
		o.Parent = sv.parentUUID
	}
	return o, nil
}

// volumeOf is the volume source stands for now: found by its ID, which is
// all the driver may have, and ErrNotFound when the volume there is not
// the one source was (removed, and its name reused since).
func (b *Backend) volumeOf(source storage.Object) (storage.Object, error) {
	_, kind, err := b.path(source.ID)
	if err != nil {
		return storage.Object{}, err
	}
	if kind != storage.KindVolume {
		return storage.Object{}, fmt.Errorf("%s is not a volume", source.ID)
	}
	v, err := b.object(source.ID, path.Base(source.ID), storage.KindVolume)
	if err != nil {
		return storage.Object{}, err
	}
	if source.Identity != "" && v.Identity != source.Identity {
		return storage.Object{}, fmt.Errorf("volume %q (%s) was removed; the volume of that name now is another one (%s): %w", v.Name, source.Identity, v.Identity, storage.ErrNotFound)
	}
	return v, nil
}

func checkName(what, name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 255 {
		return fmt.Errorf("invalid %s name %q", what, name)
	}
	return nil
}

func wrapErr(err error) error {
	switch {
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
		return fmt.Errorf("%w: %w", storage.ErrNoSpace, err)
	}
	return err
}

func (b *Backend) Volume(_ context.Context, name string) (storage.Object, error) {
	if err := checkName("volume", name); err != nil {
		return storage.Object{}, err
	}
	return b.object(dirVolumes+"/"+name, name, storage.KindVolume)
}

// madeVolume reports whether labels say snapvol made the volume they
// belong to. Volumes made before volumes were labelled cannot be told from
// volumes made by hand, and count as not snapvol's: adopting production,
// or deleting it, is the one mistake this backend must never make.
func madeVolume(labels map[string]string) bool {
	k, ok := storage.KindOf(labels)
	return ok && k == storage.KindVolume
}

// CreateVolume writes the label, then the subvolume, as make does, so a
// crash leaves a stale label (dropped at Open) or a labelled volume.
func (b *Backend) CreateVolume(_ context.Context, name string, _ map[string]string) (storage.Object, error) {
	if err := checkName("volume", name); err != nil {
		return storage.Object{}, err
	}
	id := dirVolumes + "/" + name
	defer b.names.Lock(id)()
	p := filepath.Join(b.root, dirVolumes, name)
	foreign := fmt.Errorf("%w: volume %q is in the pool and was not made by snapvol; clone it with %s@latest instead of creating it", storage.ErrForeign, name, name)
	if isSubvolume(p) {
		v, err := b.object(id, name, storage.KindVolume)
		if err != nil {
			return storage.Object{}, err
		}
		if !madeVolume(v.Labels) {
			return storage.Object{}, foreign
		}
		return v, nil
	}
	if err := b.writeLabels(id, storage.VolumeLabels()); err != nil {
		return storage.Object{}, fmt.Errorf("volume %q: %w", name, b.noted(err))
	}
	if err := subvolCreate(p); err != nil {
		// Under the name's lock the label is this call's alone to take back.
		os.Remove(labelFile(b.root, id))
		if errors.Is(err, unix.EEXIST) {
			return storage.Object{}, foreign // made by someone else meanwhile
		}
		return storage.Object{}, fmt.Errorf("volume %q: %w", name, b.noted(err))
	}
	return b.object(id, name, storage.KindVolume)
}

// RemoveVolume deletes a volume snapvol made and the plugin's snapshots of
// it. Others' snapshots stay: a btrfs snapshot does not need its source,
// and keyed by the removed volume's UUID it is never offered for a later
// volume of the same name.
func (b *Backend) RemoveVolume(ctx context.Context, v storage.Object) error {
	p, kind, err := b.path(v.ID)
	if err != nil {
		return err
	}
	if kind != storage.KindVolume {
		return fmt.Errorf("%s is not a volume: %w", v.ID, storage.ErrProtected)
	}
	defer b.names.Lock(v.ID)()
	cur, err := b.volumeOf(v)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if !madeVolume(cur.Labels) {
		return fmt.Errorf("volume %q was not made by snapvol: %w", cur.Name, storage.ErrProtected)
	}
	snaps, err := b.Snapshots(ctx, cur)
	if err != nil {
		return err
	}
	for _, s := range snaps {
		if k, ok := storage.KindOf(s.Labels); ok && k == storage.KindSnapshot {
			if err := b.Delete(ctx, s.ID); err != nil {
				return fmt.Errorf("volume %q: deleting its snapshot %q: %w", cur.Name, s.Name, err)
			}
		}
	}
	if err := deleteSubvol(p); err != nil {
		return fmt.Errorf("volume %q: %w", cur.Name, b.noted(err))
	}
	if err := os.Remove(labelFile(b.root, v.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

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

func randHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
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
	// A valid snapshot word, so users can also name it as @REF.
	name := "snapvol-" + time.Now().UTC().Format("20060102-150405.000000") + "-" + randHex(2)
	id := dirSnapshots + "/" + v.Name + "/" + name
	if err := os.MkdirAll(filepath.Join(b.root, dirSnapshots, v.Name), 0o700); err != nil {
		return storage.Object{}, b.noted(err)
	}
	return b.make(id, name, storage.KindSnapshot, storage.WithSourceID(labels, v.Identity), func(dst string) error {
		return snapCreate(src, dst, true)
	})
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
	name := "c-" + randHex(12)
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

// make writes the labels, then the object, so that whatever a crash leaves
// is either a stale label (dropped at Open) or a labelled object.
func (b *Backend) make(id, name string, kind storage.Kind, labels map[string]string, create func(dst string) error) (storage.Object, error) {
	dst, _, err := b.path(id)
	if err != nil {
		return storage.Object{}, err
	}
	if err := b.writeLabels(id, labels); err != nil {
		return storage.Object{}, b.noted(err)
	}
	if err := create(dst); err != nil {
		os.Remove(labelFile(b.root, id))
		return storage.Object{}, b.noted(err)
	}
	return b.object(id, name, kind)
}

// Delete destroys a clone (clones/ holds nothing but the plugin's) or a
// snapshot labelled as the plugin's. An object that is gone is success,
// whatever its labels were: its label file may be gone with it.
func (b *Backend) Delete(_ context.Context, id string) error {
	p, kind, err := b.path(id)
	if err != nil {
		return err
	}
	if !isSubvolume(p) {
		if err := os.Remove(labelFile(b.root, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	k, ours := storage.KindOf(b.readLabels(id))
	switch {
	case kind == storage.KindClone:
		b.quota.release(p) // a clone at its limit must stay deletable
	case kind == storage.KindSnapshot && ours && k == storage.KindSnapshot:
	default:
		return fmt.Errorf("delete %s: not a snapshot or clone snapvol made: %w", id, storage.ErrProtected)
	}
	if err := deleteSubvol(p); err != nil && isSubvolume(p) {
		return b.noted(err)
	}
	if err := os.Remove(labelFile(b.root, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Owned lists clones/ (all the plugin's), and the volumes and snapshots
// labelled as the plugin's.
func (b *Backend) Owned(_ context.Context) ([]storage.Object, error) {
	var out []storage.Object
	clones, err := os.ReadDir(filepath.Join(b.root, dirClones))
	if err != nil {
		return nil, err
	}
	for _, e := range clones {
		o, err := b.object(dirClones+"/"+e.Name(), e.Name(), storage.KindClone)
		if err != nil {
			continue
		}
		if k, ok := storage.KindOf(o.Labels); !ok || k != storage.KindClone {
			// A clone whose label is lost or garbled is still an orphan
			// the sweep must find.
			o.Labels = map[string]string{storage.LabelOwner: "1", storage.LabelKind: string(storage.KindClone)}
		}
		out = append(out, o)
	}
	vols, err := os.ReadDir(filepath.Join(b.root, dirVolumes))
	if err != nil {
		return nil, err
	}
	for _, e := range vols {
		o, err := b.object(dirVolumes+"/"+e.Name(), e.Name(), storage.KindVolume)
		if err == nil && madeVolume(o.Labels) {
			out = append(out, o)
		}
	}
	sources, err := os.ReadDir(filepath.Join(b.root, dirSnapshots))
	if err != nil {
		return nil, err
	}
	for _, s := range sources {
		snaps, _ := os.ReadDir(filepath.Join(b.root, dirSnapshots, s.Name()))
		for _, e := range snaps {
			o, err := b.object(dirSnapshots+"/"+s.Name()+"/"+e.Name(), e.Name(), storage.KindSnapshot)
			if k, ok := storage.KindOf(o.Labels); err == nil && ok && k == storage.KindSnapshot {
				out = append(out, o)
			}
		}
	}
	return out, nil
}

func (b *Backend) Mount(_ context.Context, id, target string) error {
	p, kind, err := b.path(id)
	if err != nil {
		return err
	}
	if kind == storage.KindSnapshot {
		return fmt.Errorf("mount %s: snapshots are not mounted", id)
	}
	if !isSubvolume(p) {
		return fmt.Errorf("mount %s: %w", id, storage.ErrNotFound)
	}
	if kind == storage.KindClone {
		// What CI wrote into a clone must not act on the host: a setuid
		// binary runs without its owner's rights, a device node opens
		// nothing, here and in every container the mount is bound into.
		return mountpoint.BindMountFlags(p, target, cloneMountFlags)
	}
	return mountpoint.BindMount(p, target)
}

// cloneMountFlags are the flags of every mount of a clone.
const cloneMountFlags = unix.MS_NOSUID | unix.MS_NODEV

func (b *Backend) Unmount(_ context.Context, _, target string) error {
	return mountpoint.Unbind(target)
}

func (b *Backend) Mounted(target string) bool { return mountpoint.IsMountPoint(target) }
