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
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

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
