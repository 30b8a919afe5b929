// Package storage defines the backend contract of snapvol: the objects a
// backend holds (volumes, snapshots, clones), their labels, and the errors
// callers branch on. The local (btrfs) and portworx (OpenStorage)
// implementations live in its subpackages, an in-memory one for tests in
// storage/memory; storage/storagetest checks any of them against this
// contract. The Docker driver only ever sees this interface.
//
// What is inside a clone belongs to the container that mounts it and is
// hostile to the plugin: a backend never resolves a path below an
// object's root (a container can swap any directory there for a link
// while the plugin looks), and deleting an object never reaches anything
// outside it, whatever its content.
package storage

import (
	"context"
	"errors"
	"time"
)

// Kind says what a backend object is.
type Kind string

const (
	// KindVolume is a regular volume: a source, or an empty volume a user made.
	KindVolume Kind = "volume"
	// KindSnapshot is a read-only point-in-time copy of a volume.
	KindSnapshot Kind = "snapshot"
	// KindClone is a writable copy of a snapshot, owned by one snapvol volume.
	KindClone Kind = "clone"
)

// Sentinel errors callers branch on. Backends wrap them with %w.
var (
	ErrNotFound    = errors.New("not found")
	ErrUnavailable = errors.New("backend unavailable")
	ErrDenied      = errors.New("access denied")
	ErrNoSpace     = errors.New("no space left in the pool")
	ErrProtected   = errors.New("refusing to modify a source volume")
	// ErrForeign: a regular volume of that name exists and snapvol did not
	// make it (CreateVolume); it is never adopted.
	ErrForeign = errors.New("volume exists and was not made by snapvol")
	// ErrBusy: the storage keeps the object for something that depends on
	// it and that snapvol may not delete (a snapshot someone else took of a
	// volume, a clone of a snapshot). Retrying after that is gone works.
	ErrBusy = errors.New("in use by objects that depend on it")
	// ErrInProgress: the storage is still doing what was asked when the
	// request's time ran out, and carries on; asking again for the same
	// thing picks up its result instead of starting over (Portworx
	// attaching a large volume).
	ErrInProgress = errors.New("still in progress")
)

// Object is one backend object.
type Object struct {
	// ID is what the backend finds the object by; the driver records it.
	// It is not an identity: local IDs are paths, and a volume made again
	// under a removed one's name gets the removed one's ID.
	ID string
	// Identity stays with the object for its whole life and is never
	// given to another: the volume ID on OpenStorage, the subvolume UUID
	// on btrfs. Empty only where the storage cannot tell.
	Identity string
	Name     string
	Kind     Kind
	// Parent is the Identity of what the object belongs to. A snapshot
	// belongs to the source whose Identity its LabelSourceID names, or,
	// without that label, to the volume it was taken of (a snapshot made
	// by hand included); a clone to the snapshot it was made from. Empty
	// for a volume.
	Parent  string
	Created time.Time
	Labels  map[string]string
}

// Owned reports whether the plugin made the object (see KindOf).
func (o Object) Owned() bool {
	_, ok := KindOf(o.Labels)
	return ok
}

// Backend is the storage a snapvol plugin drives. Every method is safe for
// concurrent use; the driver serialises calls per volume.
//
// Objects are found by ID and keyed by Identity: a name can be reused once
// its volume is removed, an Identity never is, so nothing that belonged to
// a removed volume (its snapshots) is ever offered for a new one.
type Backend interface {
	// Scope is the Docker capability scope: "local" or "global".
	Scope() string
	// OptionKey reports whether key is a backend option accepted with -o.
	OptionKey(key string) bool
	// CheckOptions validates the backend options of a volume of kind
	// (KindVolume for a regular volume, KindClone for a clone volume)
	// without making anything, so Create refuses what Mount could not do.
	CheckOptions(kind Kind, opts map[string]string) error

	// Volume looks a regular volume up by name, whoever made it (sources
	// are made by hand); ErrNotFound if there is none.
	Volume(ctx context.Context, name string) (Object, error)
	// CreateVolume makes an empty regular volume labelled VolumeLabels(),
	// or returns the one of that name snapvol made before (an interrupted
	// create being finished). One it did not make is ErrForeign; so is one
	// made by snapvol before volumes were labelled, which cannot be told
	// from a volume made by hand.
	CreateVolume(ctx context.Context, name string, opts map[string]string) (Object, error)
	// RemoveVolume deletes a regular volume snapvol made (CreateVolume),
	// and with it the snapshots the plugin took of it: nothing can clone
	// them once their source is gone, since every ref resolves through the
	// source. Only an explicit Docker Remove of that plain name reaches it;
	// v may carry only ID and Name. A volume that is gone is success; one
	// snapvol did not make is ErrProtected. Snapshots others took are never
	// deleted: where the storage lets a volume go while it has snapshots
	// (btrfs) they outlive it and stay its own, where it does not
	// (OpenStorage) RemoveVolume fails with ErrBusy.
	RemoveVolume(ctx context.Context, v Object) error

	// Snapshots lists the snapshots that belong to source (Object.Parent
	// equals its Identity), plugin-made or not. source may carry only ID
	// and Name; its Identity is then looked up.
	Snapshots(ctx context.Context, source Object) ([]Object, error)
	// Snapshot takes a read-only snapshot of source carrying labels (the
	// driver's, built with SnapshotLabels) and the backend's own: its
	// instance and host, and LabelSourceID, source's Identity, unless
	// labels name one already. A source that is gone, or was replaced by a
	// namesake since source was looked up, is ErrNotFound.
	Snapshot(ctx context.Context, source Object, labels map[string]string) (Object, error)
	// SnapshotOf takes a read-only snapshot of clone, a clone of a snapshot
	// of source (after a masking job wrote to it, say), and files it as a
	// snapshot of source: it carries LabelSourceID source's Identity, so
	// Snapshots(source) lists it and SnapshotByName finds it. The clone is
	// not changed. A clone or source that is gone is ErrNotFound.
	SnapshotOf(ctx context.Context, clone, source Object, labels map[string]string) (Object, error)
	// SnapshotByName looks a snapshot that belongs to source up by name
	// (ErrNotFound if absent).
	SnapshotByName(ctx context.Context, source Object, name string) (Object, error)
	// Clone makes a writable copy of snap carrying labels (built with
	// CloneLabels) and the backend's own; a snap that is gone is
	// ErrNotFound.
	Clone(ctx context.Context, snap Object, labels map[string]string, opts map[string]string) (Object, error)
	// Delete destroys a snapshot or clone the plugin made. It refuses
	// (ErrProtected) anything else, regular volumes included, and succeeds
	// if the object is gone.
	Delete(ctx context.Context, id string) error
	// Owned lists every object the plugin made (KindOf its labels says
	// so), volumes included, each with the Kind KindOf gives.
	Owned(ctx context.Context) ([]Object, error)

	// Mount makes volume or clone id visible at target (a directory under
	// DATA_ROOT, made if missing); it is a no-op when something is
	// mounted there already. A missing object is ErrNotFound, and leaves
	// no mount point behind. Snapshots need not be mountable.
	Mount(ctx context.Context, id, target string) error
	// Unmount undoes Mount: it succeeds once nothing is mounted at target,
	// whether or not anything was. It then removes target if it is an
	// empty directory, and leaves a directory with files in place (they
	// were written while nothing was mounted, and are not snapvol's to
	// delete). It logs nothing; errors say what failed. id is empty for a
	// stray mount reconcile found, whose object is unknown.
	Unmount(ctx context.Context, id, target string) error
	// Mounted reports whether target is a live mount point.
	Mounted(target string) bool

	Close() error
}
