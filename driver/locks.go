package driver

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// The lock order (see the package doc) is checked at every acquisition: a
// request's context carries the highest lock level it holds, and taking a
// lock at or below it is refused with ErrLockOrder instead of risking a
// deadlock. Tests run every path under this check (the stress test fails
// on any ErrLockOrder).

type lockLevel int

const (
	levelNone   lockLevel = iota
	levelVolume           // Driver.locks: one volume
	levelGC               // refs.gc, for reading or writing
	levelSource           // refs.sources: one source's @latest
)

func (l lockLevel) String() string {
	switch l {
	case levelVolume:
		return "a volume's lock"
	case levelGC:
		return "snapshot collection's lock"
	case levelSource:
		return "a source's @latest lock"
	}
	return "no lock"
}

type heldKey struct{}

func heldLevel(ctx context.Context) lockLevel {
	l, _ := ctx.Value(heldKey{}).(lockLevel)
	return l
}

// ErrLockTimeout is returned when a request's budget ran out while it
// waited for a lock another operation held.
var ErrLockTimeout = errors.New("timed out waiting behind another operation")

// ErrLockOrder is returned when code would take a lock out of order: a bug,
// refused before it can deadlock.
var ErrLockOrder = errors.New("lock order violated")

// ordered checks that ctx may take a lock at level l and returns the
// context that records it held.
func ordered(ctx context.Context, l lockLevel) (context.Context, error) {
	if h := heldLevel(ctx); h >= l {
		return ctx, fmt.Errorf("%w: taking %s while holding %s (the order is volume, snapshot collection, source)", ErrLockOrder, l, h)
	}
	return context.WithValue(ctx, heldKey{}, l), nil
}

// waited says how long a lock wait that began at start ran, for an error
// message.
func waited(start time.Time) string {
	return time.Since(start).Round(time.Millisecond).String()
}

// lockVolume takes volume name's lock, waiting at most as long as ctx
// allows. The returned context records the lock as held; use it (and only
// it) for the work done under the lock.
func (d *Driver) lockVolume(ctx context.Context, name string) (context.Context, func(), error) {
	lctx, err := ordered(ctx, levelVolume)
	if err != nil {
		err = fmt.Errorf("volume %q: %w", name, err)
		d.logOf(ctx).WithError(err).Error("lock order")
		return ctx, nil, err
	}
	step(ctx, "waiting for the lock of volume %q (another operation on it is running)", name)
	start := time.Now()
	unlock, err := d.locks.LockCtx(ctx, name)
	if err != nil {
		return ctx, nil, fmt.Errorf("%w: volume %q: gave up after %s waiting for another operation on it (a mount, unmount, remove or snapshot --from) to finish; try again: %w",
			ErrLockTimeout, name, waited(start), err)
	}
	return lctx, unlock, nil
}
