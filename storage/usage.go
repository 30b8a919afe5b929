package storage

import (
	"context"
	"errors"
)

// PoolUsage is how full a backend's storage is, in bytes; -1 where the
// backend cannot tell.
type PoolUsage struct {
	Size, Used, Free int64
	// Reserve is what clones together may not take (regular volumes keep
	// it), 0 when there is none.
	Reserve int64
}

// ObjectUsage is what one object holds alone and the most it may.
type ObjectUsage struct {
	// Bytes is what deleting the object would free: for a clone, what it
	// wrote itself, not what it shares with its snapshot.
	Bytes int64
	// Limit is the most Bytes may grow to (a clone's quota), 0 for none.
	Limit int64
}

// Usager is implemented by backends that can say how full they are and
// how much each object holds alone. It is optional: snapvol df and ls,
// and a volume's Status, show "unknown" where a backend cannot tell.
type Usager interface {
	Usage(ctx context.Context) (PoolUsage, error)
	// ObjectUsage maps the ID of every object the backend can measure to
	// its usage: one call for all, so listing 10,000 volumes is one scan.
	ObjectUsage(ctx context.Context) (map[string]ObjectUsage, error)
}

// ErrUnhealthy is wrapped by a Checker's report of storage that cannot
// take new clones safely (a pool forced read-only, I/O errors).
var ErrUnhealthy = errors.New("storage unhealthy")

// Checker is implemented by backends that can tell when their storage has
// failed under them. Health is cheap (the driver asks before every clone
// it makes) and returns nil or an error wrapping ErrUnhealthy that names
// the storage and the kernel's reason.
type Checker interface {
	Health(ctx context.Context) error
}

// PinnedUsage is what snapshots and clones keep alive of their sources'
// data that the sources no longer reference (rewritten or deleted since):
// space the pool cannot get back while they exist, though accounting by
// writer (btrfs simple quotas) still bills it to the source.
type PinnedUsage struct {
	// Sources maps a source volume's name to the bytes of its data that
	// only snapshots and clones still hold, each extent counted once.
	Sources map[string]int64
	// Objects are the snapshots (and clones whose snapshot is gone) that
	// pin anything.
	Objects []PinnedObject
}

// PinnedObject is one snapshot's (or orphan clone's) share of PinnedUsage.
type PinnedObject struct {
	ID, Name string
	Kind     Kind
	Source   string // the source volume's name
	// Exclusive is what only it and the clones made from it hold:
	// what deleting them frees. Shared is held with other snapshots too.
	Exclusive, Shared int64
}

// Pinner is implemented by backends that can measure PinnedUsage. It is
// optional and may be slow (it reads what changed since the oldest
// snapshot): snapvol df asks, nothing on a request path does.
type Pinner interface {
	Pinned(ctx context.Context) (PinnedUsage, error)
}
