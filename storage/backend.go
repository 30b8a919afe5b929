// Package storage defines the backend contract of snapvol: the objects a
// backend holds (volumes, snapshots, clones), their labels, and the errors
// callers branch on. The local (btrfs) and portworx (OpenStorage)
// implementations live in its subpackages; the Docker driver only ever
// sees this interface.
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
)

// Object is one backend object.
type Object struct {
	ID      string
	Name    string
	Kind    Kind
	Parent  string // snapshot: the source's ID; clone: the snapshot's ID
	Created time.Time
	Labels  map[string]string
}

// Owned reports whether the plugin made the object.
func (o Object) Owned() bool { return o.Labels[LabelOwner] == "1" }

// Backend is the storage a snapvol plugin drives. Every method is safe for
// concurrent use; the driver serialises calls per volume.
type Backend interface {
	// Scope is the Docker capability scope: "local" or "global".
	Scope() string
	// OptionKey reports whether key is a backend option accepted with -o.
	OptionKey(key string) bool
	// CheckOptions validates the backend options of a volume of kind
	// (KindVolume for a regular volume, KindClone for a clone volume)
	// without making anything, so Create refuses what Mount could not do.
	CheckOptions(kind Kind, opts map[string]string) error

	// Volume looks a regular volume up by name (ErrNotFound if absent).
	Volume(ctx context.Context, name string) (Object, error)
	// CreateVolume makes an empty regular volume, or returns the one of
	// that name snapvol made before; one it did not make is ErrForeign.
	CreateVolume(ctx context.Context, name string, opts map[string]string) (Object, error)
	// RemoveVolume deletes a regular volume. Only an explicit Docker
	// Remove of that plain name reaches it.
	RemoveVolume(ctx context.Context, v Object) error

	// Snapshots lists the snapshots of a source, plugin-made or not.
	Snapshots(ctx context.Context, source Object) ([]Object, error)
	// Snapshot takes a read-only snapshot of source carrying labels.
	Snapshot(ctx context.Context, source Object, labels map[string]string) (Object, error)
	// SnapshotByName looks a snapshot of source up by name (ErrNotFound if
	// absent).
	SnapshotByName(ctx context.Context, source Object, name string) (Object, error)
	// Clone makes a writable copy of snap carrying labels.
	Clone(ctx context.Context, snap Object, labels map[string]string, opts map[string]string) (Object, error)
	// Delete destroys a snapshot or clone the plugin made. It refuses
	// (ErrProtected) anything else, and succeeds if the object is gone.
	Delete(ctx context.Context, id string) error
	// Owned lists every object carrying LabelOwner.
	Owned(ctx context.Context) ([]Object, error)

	// Mount makes object id visible at target (a directory under
	// DATA_ROOT); it is a no-op when already mounted there.
	Mount(ctx context.Context, id, target string) error
	// Unmount undoes Mount; it is a no-op when nothing is mounted. id is
	// empty for a stray mount reconcile found, whose object is unknown.
	Unmount(ctx context.Context, id, target string) error
	// Mounted reports whether target is a live mount point.
	Mounted(target string) bool

	Close() error
}
