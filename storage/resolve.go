package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/snapvol/snapvol/keylock"
)

// Resolver turns a ref (latest, now, a snapshot name) into a snapshot.
type Resolver struct {
	Backend Backend
	// MaxAge is how old a snapshot @latest may reuse.
	MaxAge time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	// One lock per source serialises @latest, so concurrent jobs inside
	// MaxAge share one snapshot instead of each taking their own.
	locks keylock.Map
}

func (r *Resolver) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Resolve returns the snapshot ref names for source, taking one when the
// ref asks for it; made says whether it did.
func (r *Resolver) Resolve(ctx context.Context, source Object, ref string) (snap Object, made bool, err error) {
	switch ref {
	case "now":
		snap, err = r.take(ctx, source)
		return snap, err == nil, err
	case "latest":
		defer r.locks.Lock(source.ID)()
		snaps, err := r.Backend.Snapshots(ctx, source)
		if err != nil {
			return Object{}, false, fmt.Errorf("listing snapshots of %q: %w", source.Name, err)
		}
		if newest, ok := Newest(snaps); ok && r.now().Sub(newest.Created) < r.MaxAge {
			return newest, false, nil
		}
		snap, err = r.take(ctx, source)
		return snap, err == nil, err
	default:
		snap, err = r.Backend.SnapshotByName(ctx, source, ref)
		if errors.Is(err, ErrNotFound) {
			return Object{}, false, fmt.Errorf("snapshot %q of source %q does not exist (use @latest, @now or the name of an existing snapshot): %w", ref, source.Name, err)
		}
		return snap, false, err
	}
}

func (r *Resolver) take(ctx context.Context, source Object) (Object, error) {
	snap, err := r.Backend.Snapshot(ctx, source, map[string]string{LabelOwner: "1", LabelSource: source.Name})
	if err != nil {
		return Object{}, fmt.Errorf("taking a snapshot of %q: %w", source.Name, err)
	}
	return snap, nil
}

// Newest returns the most recently created object.
func Newest(objs []Object) (Object, bool) {
	var best Object
	found := false
	for _, o := range objs {
		if !found || o.Created.After(best.Created) {
			best, found = o, true
		}
	}
	return best, found
}
