package driver

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/storage"
)

// Mount mounts a volume for one container mount point (req.ID), making
// the clone first if it does not exist yet. Mounts are counted, never kept
// as a set: Docker reuses IDs (docker cp) and may pair extra Mount/Unmount
// calls (docker create).
func (d *Driver) Mount(req *volume.MountRequest) (resp *volume.MountResponse, err error) {
	ctx, end := d.begin("mount", req.Name, &err)
	defer end()
	step(ctx, "waiting for the volume's lock")
	defer d.locks.Lock(req.Name)()

	r, ok := d.st.Get(req.Name)
	claimed := false
	if !ok {
		if !d.cfg.Claim {
			return nil, fmt.Errorf("%w: %q; create it first with docker volume create -d snapvol", ErrNoSuchVolume, req.Name)
		}
		// A claimed name: Docker never calls Create for it, so the record is
		// made here, from the name alone.
		if r, err = d.newRecord(ctx, req.Name, nil); err != nil {
			return nil, err
		}
		if !r.IsClone() {
			return nil, fmt.Errorf("%w: %q", ErrNoSuchVolume, req.Name)
		}
		claimed = true
	}

	if r.Pending != nil {
		return nil, errUnfinished(r)
	}
	if !r.IsClone() {
		if r.Mounts == 0 || !d.b.Mounted(r.Target) {
			r.Target = d.target(r.Name, "")
			step(ctx, "mounting the volume at %s", r.Target)
			if err := d.b.Mount(ctx, r.Object, r.Target); err != nil {
				return nil, fmt.Errorf("volume %q: mount: %w", r.Name, err)
			}
		}
		r.Mounts++
		if err := d.st.Put(r); err != nil {
			return nil, err
		}
		return &volume.MountResponse{Mountpoint: r.Target}, nil
	}
	key := r.CloneKey(req.ID)
	c := r.CloneFor(key)
	if c == nil {
		if c, err = d.materialize(ctx, r, key); err != nil {
			if claimed {
				_ = d.st.Delete(r.Name)
			}
			return nil, err
		}
		return &volume.MountResponse{Mountpoint: c.Target}, nil
	}
	if c.Mounts == 0 || !d.b.Mounted(c.Target) {
		step(ctx, "mounting clone %s at %s", c.Object, c.Target)
		if err := d.b.Mount(ctx, c.Object, c.Target); err != nil {
			return nil, fmt.Errorf("volume %q: mount clone: %w", r.Name, err)
		}
	}
	c.Mounts++
	if err := d.st.Put(r); err != nil {
		return nil, err
	}
	return &volume.MountResponse{Mountpoint: c.Target}, nil
}

// materialize makes and mounts a clone of r (for +each, the clone of mount
// ID key) and records it in r, counted as mounted once (the mount it is
// made for: one record write instead of two). The intent is saved first,
// so a crash in between leaves a labelled clone that reconcile finds
// unreferenced and destroys.
func (d *Driver) materialize(ctx context.Context, r *store.Record, key string) (*store.Clone, error) {
	start := time.Now()
	r.Pending = &store.Pending{Op: store.OpMaterialize, MountID: key, Since: d.cfg.Now().UTC()}
	if err := d.st.Put(r); err != nil {
		return nil, err
	}
	d.failpoint("materialize:intent")
	step(ctx, "waiting for snapshot collection to finish")
	// From choosing the snapshot until the clone is recorded: collect
	// counts a snapshot as used only once a record names it.
	d.gc.RLock()
	defer d.gc.RUnlock()
	c, err := d.makeClone(ctx, r, key)
	r.Pending = nil
	if err != nil {
		if perr := d.st.Put(r); perr != nil {
			d.log.WithError(perr).WithField("volume", r.Name).Error("could not clear intent; reconcile will")
		}
		return nil, err
	}
	c.Mounts = 1
	if r.Each {
		if r.EachClones == nil {
			r.EachClones = map[string]*store.Clone{}
		}
		r.EachClones[key] = c
	} else {
		r.Clone = c
	}
	if err := d.st.Put(r); err != nil {
		// Without a record the clone would be an orphan: undo it now.
		d.undoClone(ctx, r.Name, c)
		return nil, err
	}
	d.log.WithFields(logrus.Fields{
		"audit": "clone made", "volume": r.Name, "source": r.Source, "snapshot": c.SnapshotName,
		"snapshot_time": rfc3339(c.SnapshotTime), "clone": c.Object, "ms": time.Since(start).Milliseconds(),
	}).Info("clone made")
	return c, nil
}

// makeClone resolves r's ref, clones that snapshot and mounts the clone.
// The caller holds d.gc for reading.
func (d *Driver) makeClone(ctx context.Context, r *store.Record, key string) (*store.Clone, error) {
	step(ctx, "looking up source %q", r.Source)
	src, err := d.b.Volume(ctx, r.Source)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: volume %q: source %q no longer exists", ErrNoSource, r.Name, r.Source)
	}
	if err != nil {
		return nil, fmt.Errorf("volume %q: looking up source %q: %w", r.Name, r.Source, err)
	}
	step(ctx, "resolving @%s of %q (taking a snapshot if it needs one)", r.Ref, r.Source)
	snap, _, err := d.resolver.Resolve(ctx, src, r.Ref)
	if err != nil {
		return nil, fmt.Errorf("volume %q: %w", r.Name, err)
	}
	d.failpoint("materialize:snapshot")
	labels := map[string]string{storage.LabelOwner: "1", storage.LabelVolume: r.Name, storage.LabelSource: r.Source}
	step(ctx, "cloning snapshot %q of %q", snap.Name, r.Source)
	obj, err := d.b.Clone(ctx, snap, labels, r.Options)
	if err != nil {
		return nil, fmt.Errorf("volume %q: cloning snapshot %q of %q: %w", r.Name, snap.Name, r.Source, err)
	}
	d.failpoint("materialize:clone")
	c := &store.Clone{
		Object: obj.ID, Snapshot: snap.ID, SnapshotName: snap.Name, SnapshotTime: snap.Created.UTC(),
		Made: d.cfg.Now().UTC(), Target: d.target(r.Name, key),
	}
	step(ctx, "mounting clone %s at %s", c.Object, c.Target)
	if err := d.b.Mount(ctx, c.Object, c.Target); err != nil {
		d.undoClone(ctx, r.Name, c)
		return nil, fmt.Errorf("volume %q: mounting clone: %w", r.Name, err)
	}
	d.failpoint("materialize:mount")
	return c, nil
}

// destroyClone unmounts and deletes a clone, logging the audit line.
func (d *Driver) destroyClone(ctx context.Context, volName string, c *store.Clone) error {
	step(ctx, "unmounting and deleting clone %s", c.Object)
	if err := d.b.Unmount(ctx, c.Object, c.Target); err != nil {
		return fmt.Errorf("volume %q: unmounting clone: %w", volName, err)
	}
	d.failpoint("destroy:unmounted")
	if err := d.b.Delete(ctx, c.Object); err != nil {
		return fmt.Errorf("volume %q: deleting clone %s: %w", volName, c.Object, err)
	}
	d.log.WithFields(logrus.Fields{
		"audit": "clone destroyed", "volume": volName, "snapshot": c.SnapshotName, "clone": c.Object,
	}).Info("clone destroyed")
	return nil
}

// undoClone destroys a clone a failed request made and will not record.
// It spends what is left of the request's budget, not a fresh one, so the
// request still answers inside Docker's 30 s; if the undo fails or the
// budget is gone, the clone is a labelled orphan the sweep destroys. The
// request's own error is the one to return, so this one is logged.
func (d *Driver) undoClone(ctx context.Context, volName string, c *store.Clone) {
	if err := d.destroyClone(ctx, volName, c); err != nil {
		d.log.WithError(err).WithFields(logrus.Fields{"volume": volName, "clone": c.Object}).Warn("could not undo a clone; the orphan sweep will")
	}
}

// release destroys one clone of r (key is the +each mount ID, "" for the
// volume's clone) and keeps the record: the next Mount makes a fresh one.
// If it fails in a request, the intent is withdrawn (the clone is still
// whole and recorded); in reconcile (retry) it stays to be tried again.
func (d *Driver) release(ctx context.Context, r *store.Record, key string, retry bool) error {
	c := r.CloneFor(key)
	if c == nil {
		return nil
	}
	r.Pending = &store.Pending{Op: store.OpRelease, MountID: key, Object: c.Object, Since: d.cfg.Now().UTC()}
	if err := d.st.Put(r); err != nil {
		return err
	}
	d.failpoint("release:intent")
	if err := d.destroyClone(ctx, r.Name, c); err != nil {
		if !retry {
			d.withdraw(r)
		}
		return err
	}
	d.failpoint("release:destroyed")
	if r.Each {
		delete(r.EachClones, key)
	} else {
		r.Clone = nil
	}
	r.Pending = nil
	r.LastUsed = d.cfg.Now().UTC()
	return d.st.Put(r)
}

// Unmount ends one mount. Counts never go below zero; data is never
// deleted here except a +each clone at its mount ID's last Unmount.
func (d *Driver) Unmount(req *volume.UnmountRequest) (err error) {
	ctx, end := d.begin("unmount", req.Name, &err)
	defer end()
	// Set when a +each clone went: its snapshot may be collectable. Run
	// after the volume's lock is released (defers run last in, first out),
	// as Remove does, so every other container of the same +each name does
	// not wait on a pool-wide collection.
	collectSource := ""
	defer func() {
		if collectSource != "" {
			d.collectSnapshots(ctx, collectSource)
		}
	}()
	defer d.locks.Lock(req.Name)()
	r, ok := d.st.Get(req.Name)
	if !ok {
		return fmt.Errorf("%w: %q", ErrNoSuchVolume, req.Name)
	}
	if !r.IsClone() {
		if r.Mounts == 0 {
			return nil
		}
		r.Mounts--
		if r.Mounts == 0 {
			step(ctx, "unmounting %s", r.Target)
			if err := d.b.Unmount(ctx, r.Object, r.Target); err != nil {
				return fmt.Errorf("volume %q: unmount: %w", r.Name, err)
			}
			r.LastUsed = d.cfg.Now().UTC()
		}
		return d.st.Put(r)
	}
	key := r.CloneKey(req.ID)
	c := r.CloneFor(key)
	if c == nil || c.Mounts == 0 {
		return nil
	}
	c.Mounts--
	if c.Mounts > 0 {
		return d.st.Put(r)
	}
	if r.Each {
		if err := d.release(ctx, r, key, false); err != nil {
			return err
		}
		collectSource = r.Source
		return nil
	}
	step(ctx, "unmounting %s", c.Target)
	if err := d.b.Unmount(ctx, c.Object, c.Target); err != nil {
		return fmt.Errorf("volume %q: unmount clone: %w", r.Name, err)
	}
	r.LastUsed = d.cfg.Now().UTC()
	return d.st.Put(r)
}

// Remove destroys a volume. A clone volume loses its clones and record;
// a plain volume is deleted only when no clone volume comes from it.
func (d *Driver) Remove(req *volume.RemoveRequest) (err error) {
	ctx, end := d.begin("remove", req.Name, &err)
	defer end()
	step(ctx, "waiting for the volume's lock")
	unlock := d.locks.Lock(req.Name)
	r, ok := d.st.Get(req.Name)
	if !ok {
		unlock()
		return nil
	}
	if r.Pending != nil && r.Pending.Op != store.OpRemove {
		// Only reconcile knows how to finish it: an interrupted create,
		// say, has no object recorded yet, and removing just the record
		// would leave the volume the backend made.
		unlock()
		return errUnfinished(r)
	}
	if n := r.TotalMounts(); n > 0 && !r.IsClone() {
		// Production data: a count may belong to another dockerd on the
		// same host (the binary run directly serves every daemon that looks
		// in /run/docker/plugins), whose container still uses the volume.
		unlock()
		return fmt.Errorf("%w: volume %q is mounted %d time(s); stop the containers using it first (a count left by a container that exited while dockerd was down with --live-restore keeps it; see README, Limits)", ErrInUse, r.Name, n)
	} else if n > 0 {
		// Docker calls Remove only when no container, running or stopped,
		// refers to the volume (it checks its references first, even with
		// -f); mounts still counted then are Unmounts it will never send
		// (dockerd 20.10 sends none for a container that exited while it
		// was down with --live-restore). Refusing would keep the clone
		// forever; a clone holds no production data.
		d.log.WithFields(logrus.Fields{"volume": r.Name, "mounts": n}).Warn("removing a clone volume with mounts Docker never unmounted")
	}
	if !r.IsClone() {
		var users []string
		d.st.Each(func(o *store.Record) {
			if o.Source == r.Name {
				users = append(users, o.Name)
			}
		})
		if len(users) > 0 {
			unlock()
			sort.Strings(users)
			return fmt.Errorf("%w: volume %q is the source of %s; remove those first", ErrInUse, r.Name, strings.Join(users, ", "))
		}
	}
	err = d.remove(ctx, r, false)
	unlock()
	if err == nil {
		source := r.Source
		if source == "" {
			source = r.Name
		}
		d.collectSnapshots(ctx, source)
	}
	return err
}

// remove destroys r's storage and record. The intent is recorded first, so
// a crash part-way is finished at the next start. If it fails in a request
// (retry false) the intent is withdrawn and the record keeps whatever is
// left, so Docker and the user see a whole volume and can try again.
func (d *Driver) remove(ctx context.Context, r *store.Record, retry bool) (err error) {
	if r.Pending == nil || r.Pending.Op != store.OpRemove {
		r.Pending = &store.Pending{Op: store.OpRemove, Since: d.cfg.Now().UTC()}
		if err := d.st.Put(r); err != nil {
			return err
		}
	}
	defer func() {
		if err != nil && !retry {
			d.withdraw(r)
		}
	}()
	d.failpoint("remove:intent")
	if !r.IsClone() {
		if r.Target != "" {
			step(ctx, "unmounting %s", r.Target)
			if err := d.b.Unmount(ctx, r.Object, r.Target); err != nil {
				return fmt.Errorf("volume %q: unmount: %w", r.Name, err)
			}
		}
		if r.Object != "" {
			step(ctx, "deleting the volume in the backend")
			if err := d.b.RemoveVolume(ctx, storage.Object{ID: r.Object, Name: r.Name, Kind: storage.KindVolume}); err != nil {
				return fmt.Errorf("volume %q: deleting: %w", r.Name, err)
			}
		}
	}
	if r.Clone != nil {
		if err := d.destroyClone(ctx, r.Name, r.Clone); err != nil {
			return err
		}
		r.Clone = nil
		d.failpoint("remove:destroyed")
	}
	for id, c := range r.EachClones {
		if err := d.destroyClone(ctx, r.Name, c); err != nil {
			return err
		}
		delete(r.EachClones, id)
		d.failpoint("remove:destroyed")
	}
	return d.st.Delete(r.Name)
}

// errUnfinished refuses a request on a volume whose intent a failed
// reconcile left (the backend was down); Run retries it every sweep.
func errUnfinished(r *store.Record) error {
	return fmt.Errorf("%w: volume %q: an interrupted %s is being finished; retry in a minute", ErrInUse, r.Name, r.Pending.Op)
}

// withdraw clears a failed request's intent, keeping what is left recorded.
func (d *Driver) withdraw(r *store.Record) {
	r.Pending = nil
	if err := d.st.Put(r); err != nil {
		d.log.WithError(err).WithField("volume", r.Name).Error("could not withdraw intent")
	}
}

// collectSnapshots deletes the snapshots of source the plugin took that no
// clone uses, except the newest while @latest may still reuse it. Sources
// and snapshots the plugin did not take are never touched. It runs on what
// is left of the request's budget: what it cannot finish, the sweep does.
func (d *Driver) collectSnapshots(ctx context.Context, source string) {
	step(ctx, "collecting unused snapshots of %q", source)
	if !d.mayCollect(ctx, source) {
		return
	}
	d.gc.Lock()
	defer d.gc.Unlock()
	owned, err := d.b.Owned(ctx)
	if err != nil {
		d.log.WithError(err).WithField("source", source).Warn("listing snapshots to collect")
		return
	}
	d.collect(ctx, owned, func(s string) bool { return source == "" || s == source })
}

// mayCollect looks cheaply, without the gc lock, at whether source has a
// plugin snapshot collect could delete: one other than the newest, young
// one @latest may still reuse. In CI's steady state (every job cloning one
// shared @latest snapshot) there is none, and a Remove need not stop every
// clone being made while it lists the whole pool. Anything unclear answers
// yes and goes to the full collection under the lock.
func (d *Driver) mayCollect(ctx context.Context, source string) bool {
	src, err := d.b.Volume(ctx, source)
	if err != nil {
		return true
	}
	snaps, err := d.b.Snapshots(ctx, src)
	if err != nil {
		return true
	}
	var owned []storage.Object
	for _, s := range snaps {
		if s.Owned() && s.Labels[storage.LabelSource] == source {
			owned = append(owned, s)
		}
	}
	newest, _ := storage.Newest(owned)
	now := d.cfg.Now()
	for _, s := range owned {
		if !d.keptForLatest(s, newest, now) {
			return true
		}
	}
	return false
}

// keptForLatest reports whether s, among snapshots of one source whose
// newest is newest, is the one @latest may still reuse.
func (d *Driver) keptForLatest(s, newest storage.Object, now time.Time) bool {
	return s.ID == newest.ID && now.Sub(s.Created) < d.cfg.LatestMaxAge
}

// collect deletes unneeded plugin snapshots among owned whose source
// matches; the caller holds d.gc for writing.
func (d *Driver) collect(ctx context.Context, owned []storage.Object, match func(string) bool) {
	inUse := map[string]bool{}
	// A volume whose ref names a plugin snapshot (SOURCE@snapvol-…, or
	// -o ref=) needs it for every clone it will make, not only while one
	// exists: keyed source/name.
	named := map[string]bool{}
	d.st.Each(func(r *store.Record) {
		for _, c := range r.Clones() {
			inUse[c.Snapshot] = true
		}
		if r.IsClone() && r.Ref != "latest" && r.Ref != "now" {
			named[r.Source+"/"+r.Ref] = true
		}
	})
	bySource := map[string][]storage.Object{}
	for _, o := range owned {
		if o.Kind == storage.KindSnapshot && match(o.Labels[storage.LabelSource]) {
			bySource[o.Labels[storage.LabelSource]] = append(bySource[o.Labels[storage.LabelSource]], o)
		}
	}
	now := d.cfg.Now()
	for source, snaps := range bySource {
		newest, _ := storage.Newest(snaps)
		for _, s := range snaps {
			if inUse[s.ID] || named[source+"/"+s.Name] {
				continue
			}
			if d.keptForLatest(s, newest, now) {
				if _, err := d.b.Volume(ctx, source); err == nil {
					continue // the source is still there to be cloned @latest
				}
			}
			if err := d.b.Delete(ctx, s.ID); err != nil {
				d.log.WithError(err).WithFields(logrus.Fields{"source": source, "snapshot": s.Name}).Warn("deleting unused snapshot")
				continue
			}
			d.log.WithFields(logrus.Fields{"audit": "snapshot deleted", "source": source, "snapshot": s.Name}).Info("snapshot deleted")
		}
	}
}
