package driver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/keylock"
	"github.com/snapvol/snapvol/storage"
)

// refs owns everything about which snapshot a clone is made from: the
// @latest reuse rule, the snapshots the plugin takes, and which of those it
// keeps. Both halves read one rule (reusable), so a snapshot @latest would
// reuse is never collected, and one lock (gc) keeps collection from
// deleting a snapshot between its being chosen and the clone of it being
// recorded.
type refs struct {
	b      storage.Backend
	st     *store.Store
	maxAge time.Duration
	now    func() time.Time

	// One lock per source serialises @latest, so concurrent jobs inside
	// maxAge share one snapshot instead of each taking their own.
	sources keylock.Map
	// nowGroup is @now's group commit (now.go): requests that arrive while a
	// snapshot of their source is taken share the next one.
	nowGroup nowGroup
	// gc is held for reading from choosing a snapshot until the clone made
	// from it is recorded (see cloning), and for writing while snapshots
	// are collected (see collecting). Only refs's methods touch gc and
	// sources; every wait on them ends with the request's budget.
	gc keylock.RW
}

// cloning holds off collection until the returned func is called: call it
// once the clone of the snapshot resolve returns is recorded (or failed).
// It waits at most as long as ctx allows; the returned context records the
// lock as held (pass it to resolve).
func (f *refs) cloning(ctx context.Context) (context.Context, func(), error) {
	return f.lockGC(ctx, false)
}

// collecting holds the snapshots still (no clone is being made of one, no
// name being registered) while the caller deletes those nothing needs.
func (f *refs) collecting(ctx context.Context) (context.Context, func(), error) {
	return f.lockGC(ctx, true)
}

func (f *refs) lockGC(ctx context.Context, write bool) (context.Context, func(), error) {
	lctx, err := ordered(ctx, levelGC)
	if err != nil {
		return ctx, nil, err
	}
	what := "a clone being made or a snapshot being registered"
	lock := f.gc.LockCtx
	if !write {
		what = "snapshot collection"
		lock = f.gc.RLockCtx
	}
	step(ctx, "waiting for %s to finish", what)
	start := time.Now()
	unlock, err := lock(ctx)
	if err != nil {
		return ctx, nil, fmt.Errorf("%w: gave up after %s waiting for %s to finish; try again: %w", ErrLockTimeout, waited(start), what, err)
	}
	return lctx, unlock, nil
}

// reusable is the snapshot @latest clones without taking a new one: the
// newest snapshot of the source itself (the plugin's, a schedule's, a named
// one, one made by hand; not one of a masked clone), if younger than
// maxAge.
func (f *refs) reusable(snaps []storage.Object, now time.Time) (storage.Object, bool) {
	var best storage.Object
	found := false
	for _, s := range snaps {
		if s.Labels[storage.LabelFrom] != "" {
			continue
		}
		if !found || s.Created.After(best.Created) {
			best, found = s, true
		}
	}
	if !found || now.Sub(best.Created) >= f.maxAge {
		return storage.Object{}, false
	}
	return best, true
}

// resolve returns the snapshot of source that ref names, taking one for
// now, and for latest when none is reusable. The caller holds cloning.
func (f *refs) resolve(ctx context.Context, source storage.Object, ref string) (storage.Object, error) {
	switch ref {
	case names.RefNow:
		return f.nowGroup.snapshot(ctx, source, func(ctx context.Context) (storage.Object, error) { return f.take(ctx, source) })
	case names.RefLatest:
		if _, err := ordered(ctx, levelSource); err != nil {
			return storage.Object{}, err
		}
		start := time.Now()
		unlock, err := f.sources.LockCtx(ctx, source.ID)
		if err != nil {
			return storage.Object{}, fmt.Errorf("%w: gave up after %s waiting for another clone of %q@latest to choose its snapshot; try again: %w", ErrLockTimeout, waited(start), source.Name, err)
		}
		defer unlock()
		snaps, err := f.b.Snapshots(ctx, source)
		if err != nil {
			return storage.Object{}, fmt.Errorf("listing snapshots of %q: %w", source.Name, err)
		}
		if s, ok := f.reusable(snaps, f.now()); ok {
			return s, nil
		}
		return f.take(ctx, source)
	}
	return f.lookup(ctx, source, ref)
}

// lookup finds the snapshot of source named ref: a name registered with
// snapvol snapshot create or a schedule, else one the backend has by that
// name (made by hand, or pxctl).
func (f *refs) lookup(ctx context.Context, source storage.Object, ref string) (storage.Object, error) {
	if reg, ok := f.st.RegisteredSnapshot(source.Name, ref); ok && (reg.SourceID == "" || source.Identity == "" || reg.SourceID == source.Identity) {
		return storage.Object{ID: reg.Object, Name: reg.Name, Kind: storage.KindSnapshot, Parent: reg.SourceID, Created: reg.Time}, nil
	}
	s, err := f.b.SnapshotByName(ctx, source, ref)
	if errors.Is(err, storage.ErrNotFound) {
		return storage.Object{}, fmt.Errorf("snapshot %q of source %q does not exist (use @latest, @now or the name of an existing snapshot; snapvol snapshot ls %s lists them): %w", ref, source.Name, source.Name, err)
	}
	return s, err
}

func (f *refs) take(ctx context.Context, source storage.Object) (storage.Object, error) {
	s, err := f.b.Snapshot(ctx, source, storage.TakenSnapshotLabels(source.Name, storage.TakenPlugin, ""))
	if err != nil {
		return storage.Object{}, fmt.Errorf("taking a snapshot of %q: %w", source.Name, err)
	}
	return s, nil
}

// named reports whether ref names one snapshot (not latest or now).
func named(ref string) bool { return ref != names.RefLatest && ref != names.RefNow }

// needed says which plugin snapshots something needs, so they are not
// collected: those a clone was made from or a name is registered for, and
// those a volume's ref names (it needs them for every clone it will make,
// not only while one exists).
type needed struct {
	inUse map[string]bool // snapshot IDs
	named map[string]bool // source + "/" + snapshot name
}

func (d *Driver) neededSnapshots() needed {
	k := needed{inUse: map[string]bool{}, named: map[string]bool{}}
	for _, reg := range d.st.RegisteredSnapshots("") {
		k.inUse[reg.Object] = true
	}
	d.st.Each(func(r *store.Record) {
		for _, c := range r.Clones() {
			k.inUse[c.Snapshot] = true
		}
		if r.IsClone() && named(r.Ref) {
			k.named[r.Source+"/"+r.Ref] = true
		}
	})
	return k
}

// collectable returns the plugin snapshots of one source that nothing
// needs. all is every snapshot of the live source (nil if it is gone),
// plugin lists the plugin's own snapshots labelled with its name.
func (f *refs) collectable(source string, all, plugin []storage.Object, k needed) []storage.Object {
	latest, hasLatest := f.reusable(all, f.now())
	var out []storage.Object
	for _, s := range plugin {
		if k.inUse[s.ID] || k.named[source+"/"+s.Name] || hasLatest && s.ID == latest.ID {
			continue
		}
		out = append(out, s)
	}
	return out
}

// sourceSnapshots returns every snapshot of the source named source, nil
// if the source is gone; ok is false when the backend cannot say.
func (d *Driver) sourceSnapshots(ctx context.Context, source string) (all []storage.Object, ok bool) {
	src, err := d.b.Volume(ctx, source)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, true
	}
	if err != nil {
		return nil, false
	}
	all, err = d.b.Snapshots(ctx, src)
	return all, err == nil
}

// collectSnapshots deletes the plugin snapshots of source that nothing
// needs. Sources and snapshots the plugin did not take are never touched.
// It runs on what is left of the request's budget: what it cannot finish,
// the sweep does.
func (d *Driver) collectSnapshots(ctx context.Context, source string) {
	step(ctx, "collecting unused snapshots of %q", source)
	// Cheaply, without the gc lock: in CI's steady state (every job
	// cloning one shared @latest snapshot) there is nothing to collect,
	// and a Remove need not stop every clone being made while it lists
	// the whole pool.
	if all, ok := d.sourceSnapshots(ctx, source); ok && all != nil {
		var plugin []storage.Object
		for _, s := range all {
			if s.Owned() && s.Labels[storage.LabelSource] == source {
				plugin = append(plugin, s)
			}
		}
		if len(d.refs.collectable(source, all, plugin, needed{inUse: map[string]bool{}, named: map[string]bool{}})) == 0 {
			return
		}
	}
	ctx, done, err := d.refs.collecting(ctx)
	if err != nil {
		d.logOf(ctx).WithError(err).WithField("source", source).Warn("collecting unused snapshots (the sweep retries)")
		return
	}
	defer done()
	owned, err := d.b.Owned(ctx)
	if err != nil {
		d.logOf(ctx).WithError(err).WithField("source", source).Warn("listing snapshots to collect")
		return
	}
	d.collect(ctx, owned, func(s string) bool { return s == source })
}

// collectAll deletes every plugin snapshot among owned that nothing
// needs (the sweep).
func (d *Driver) collectAll(ctx context.Context, owned []storage.Object) error {
	ctx, done, err := d.refs.collecting(ctx)
	if err != nil {
		return fmt.Errorf("collecting unused snapshots: %w", err)
	}
	defer done()
	d.collect(ctx, owned, func(string) bool { return true })
	return nil
}

// collect deletes the plugin snapshots among owned, of sources match
// accepts, that nothing needs; the caller holds refs.gc for writing.
func (d *Driver) collect(ctx context.Context, owned []storage.Object, match func(string) bool) {
	k := d.neededSnapshots()
	bySource := map[string][]storage.Object{}
	for _, o := range owned {
		if o.Kind == storage.KindSnapshot && match(o.Labels[storage.LabelSource]) {
			bySource[o.Labels[storage.LabelSource]] = append(bySource[o.Labels[storage.LabelSource]], o)
		}
	}
	for source, plugin := range bySource {
		all, ok := d.sourceSnapshots(ctx, source)
		if !ok {
			continue // the backend cannot say which one @latest reuses
		}
		for _, s := range d.refs.collectable(source, all, plugin, k) {
			if err := d.b.Delete(ctx, s.ID); err != nil {
				d.logOf(ctx).WithError(err).WithFields(logrus.Fields{"source": source, "snapshot": s.Name}).Warn("deleting unused snapshot")
				continue
			}
			d.logOf(ctx).WithFields(logrus.Fields{"audit": "snapshot deleted", "source": source, "snapshot": s.Name}).Info("snapshot deleted")
		}
	}
}
