package driver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/storage"
)

// attach mounts attachment key of r for one more container mount, making
// the clone first when r is a clone volume that has none for key yet, and
// records the new count. The caller holds r's lock.
func (d *Driver) attach(ctx context.Context, r *store.Record, key string) (*store.Attachment, error) {
	a := r.Attachment(key)
	if a == nil {
		if !r.IsClone() {
			return nil, fmt.Errorf("%w: volume %q has no backend volume recorded; remove it and create it again", ErrNoSuchVolume, r.Name)
		}
		if r.Operator {
			return nil, errReaped(r) // operator.go: never remade implicitly
		}
		return d.materialize(ctx, r, key)
	}
	if a.Target == "" {
		a.Target = d.target(r.Name, key)
	}
	if a.Mounts == 0 || !d.b.Mounted(a.Target) {
		step(ctx, "mounting %s at %s", a.Object, a.Target)
		if err := d.b.Mount(ctx, a.Object, a.Target); err != nil {
			if errors.Is(err, storage.ErrInProgress) && a.Mounts == 0 {
				a.InProgressSince = d.now()
				if perr := d.st.Put(r); perr != nil {
					return nil, perr
				}
			}
			return nil, fmt.Errorf("volume %q: mount: %w", r.Name, err)
		}
	}
	a.InProgressSince = time.Time{}
	a.Mounts++
	hold(a, callerOf(ctx))
	if err := d.st.Put(r); err != nil {
		return nil, err
	}
	return a, nil
}

// detach ends one container mount of attachment key of r. The failure
// policy, the same for every attachment: the count always goes down and is
// saved before the backend is asked to unmount, as moby's local driver
// does. Docker treats the mount as ended whatever we answer, so a count
// kept up by a failed unmount would never come down again: the volume
// could never be reaped or removed. A mount left in place by a failed
// unmount is dropped by the next sweep, a +each clone left by a failed
// destruction is destroyed by the reaper. The caller holds r's lock;
// released reports that a +each clone went (its snapshot may now be
// collectable).
func (d *Driver) detach(ctx context.Context, r *store.Record, key string) (released bool, err error) {
	a := r.Attachment(key)
	if a == nil || a.Mounts == 0 {
		return false, nil // never below zero: Docker repeats Unmounts
	}
	a.Mounts--
	d.unhold(a, callerOf(ctx))
	if a.Mounts > 0 {
		return false, d.st.Put(r)
	}
	r.LastUsed = d.now()
	if r.Each {
		// The count goes down in the release's intent write.
		return true, d.release(ctx, r, key, nil)
	}
	if err := d.st.Put(r); err != nil {
		return false, err
	}
	step(ctx, "unmounting %s", a.Target)
	if err := d.b.Unmount(ctx, a.Object, a.Target); err != nil {
		return false, fmt.Errorf("volume %q: unmount: %w; the mount is dropped at the next sweep", r.Name, err)
	}
	return false, nil
}

// materialize makes and mounts a clone of r for attachment key and records
// it, counted as mounted once, in one durable write.
func (d *Driver) materialize(ctx context.Context, r *store.Record, key string) (*store.Attachment, error) {
	return d.makeClone(ctx, r, key, d.target(r.Name, key))
}

// makeClone makes a clone of r for attachment key, mounts it at target
// (none when target is "": an operator volume made ahead of its first
// Mount) and records it in one durable write: the clone's labels, written
// before it, are its intent (a crash before the record leaves a labelled
// clone no record owns, which the sweep destroys, and a stray mount
// reconcile drops).
func (d *Driver) makeClone(ctx context.Context, r *store.Record, key, target string) (*store.Attachment, error) {
	start := time.Now()
	step(ctx, "checking the storage's health")
	if err := d.checkHealth(ctx); err != nil {
		return nil, errUnhealthy(r.Name, err)
	}
	if err := d.ensureReplica(ctx, r.Source, r.Ref); err != nil {
		return nil, fmt.Errorf("volume %q: %w", r.Name, err)
	}
	ctx, done, err := d.refs.cloning(ctx)
	if err != nil {
		return nil, fmt.Errorf("volume %q: %w", r.Name, err)
	}
	defer done()
	src, err := d.sourceOf(ctx, r)
	if err != nil {
		return nil, err
	}
	step(ctx, "resolving @%s of %q (taking a snapshot if it needs one)", r.Ref, r.Source)
	snap, err := d.resolveFor(ctx, src, r.Ref)
	if err != nil {
		return nil, fmt.Errorf("volume %q: %w", r.Name, err)
	}
	d.failpoint("materialize:snapshot")
	step(ctx, "cloning snapshot %q of %q", snap.Name, r.Source)
	obj, err := d.b.Clone(ctx, snap, cloneLabels(r), r.Options) // recover.go
	if err != nil {
		return nil, fmt.Errorf("volume %q: cloning snapshot %q of %q: %w", r.Name, snap.Name, r.Source, err)
	}
	d.failpoint("materialize:clone")
	a := &store.Attachment{
		Object: obj.ID, Target: target,
		Snapshot: snap.ID, SnapshotName: snap.Name, SnapshotTime: snap.Created.UTC(), Made: d.now(),
	}
	// inProgress is the answer when the storage carries on mounting the clone
	// past this request: the clone is recorded all the same.
	var inProgress error
	if target != "" {
		if inProgress, err = d.mountNewClone(ctx, r, key, a); err != nil {
			return nil, err
		}
	}
	r.SetAttachment(key, a)
	if err := d.st.Put(r); err != nil {
		delete(r.Attachments, key)
		d.undoClone(ctx, r.Name, a) // without a record it would be an orphan
		return nil, err
	}
	d.obs().CloneMade(time.Since(start))
	d.logOf(ctx).WithFields(logrus.Fields{
		"audit": "clone made", "volume": r.Name, "source": r.Source, "snapshot": a.SnapshotName,
		"snapshot_time": rfc3339(a.SnapshotTime), "clone": a.Object, "ms": time.Since(start).Milliseconds(),
	}).Info("clone made")
	if inProgress != nil {
		return nil, inProgress
	}
	return a, nil
}

// sourceOf looks up r's source volume; a source that does not exist is
// ErrNoSource.
func (d *Driver) sourceOf(ctx context.Context, r *store.Record) (storage.Object, error) {
	step(ctx, "looking up source %q", r.Source)
	src, err := d.b.Volume(ctx, r.Source)
	if hint, ok := backendHint(err); ok && errors.Is(err, storage.ErrNotFound) {
		return storage.Object{}, fmt.Errorf("%w: volume %q: source %q was not found: %s", ErrNoSource, r.Name, r.Source, hint)
	}
	if errors.Is(err, storage.ErrNotFound) {
		return storage.Object{}, fmt.Errorf("%w: volume %q: source %q does not exist", ErrNoSource, r.Name, r.Source)
	}
	if err != nil {
		return storage.Object{}, fmt.Errorf("volume %q: looking up source %q: %w", r.Name, r.Source, err)
	}
	return src, nil
}

// mountNewClone mounts the clone a has just made at a.Target, holding it
// for the caller. A mount the storage carries on with past this request
// leaves a marked in progress (InProgressSince) and unmounted, and is the
// answer (inProgress); any other failure undoes the clone (err).
func (d *Driver) mountNewClone(ctx context.Context, r *store.Record, key string, a *store.Attachment) (inProgress, err error) {
	step(ctx, "mounting clone %s at %s", a.Object, a.Target)
	err = d.b.Mount(ctx, a.Object, a.Target)
	switch {
	case errors.Is(err, storage.ErrInProgress) && key == "":
		// Still attaching and mounting it (a large Portworx volume):
		// recorded unmounted, so Docker's retry picks the mount up
		// where it got to instead of starting over; with no retry it
		// is reaped as any idle clone. (A +each clone is its mount
		// ID's, which a retry does not reuse: it is undone.)
		a.InProgressSince = d.now()
		r.LastUsed = a.InProgressSince
		return fmt.Errorf("volume %q: mounting clone: %w", r.Name, err), nil
	case err != nil:
		d.undoClone(ctx, r.Name, a)
		return nil, fmt.Errorf("volume %q: mounting clone: %w", r.Name, err)
	}
	a.Mounts = 1
	hold(a, callerOf(ctx))
	d.failpoint("materialize:mount")
	return nil, nil
}

// destroy unmounts and deletes the backend object of attachment key of r
// and drops it from r (not from the store: the caller's intent write
// does). A clone volume's object is its clone; a plain volume's is the
// regular volume, which only an explicit Remove of its name reaches.
func (d *Driver) destroy(ctx context.Context, r *store.Record, key string) error {
	a := r.Attachment(key)
	if a == nil {
		return nil
	}
	if err := d.destroyObject(ctx, r.Name, r.IsClone(), a); err != nil {
		return err
	}
	delete(r.Attachments, key)
	return nil
}

// destroyObject unmounts a's object and deletes it: a clone, or (clone
// false) a plain volume's backend volume.
func (d *Driver) destroyObject(ctx context.Context, volName string, clone bool, a *store.Attachment) error {
	start := time.Now()
	if a.Target != "" { // never mounted: no path to hand the backend
		step(ctx, "unmounting %s", a.Target)
		if err := d.b.Unmount(ctx, a.Object, a.Target); err != nil {
			return fmt.Errorf("volume %q: unmounting %s: %w", volName, a.Object, err)
		}
	}
	d.failpoint("destroy:unmounted")
	step(ctx, "deleting %s", a.Object)
	if clone {
		if err := d.b.Delete(ctx, a.Object); errors.Is(err, storage.ErrBusy) {
			// A snapshot was taken of it (snapvol snapshot create --from, on
			// OpenStorage, which keeps a snapshot's parent): the volume goes,
			// its labelled clone stays until that snapshot goes, and the
			// sweep deletes it then.
			d.logOf(ctx).WithError(err).WithFields(logrus.Fields{"volume": volName, "clone": a.Object}).Info(
				"clone kept while a snapshot of it exists; the sweep deletes it once that snapshot is gone")
		} else if err != nil {
			return fmt.Errorf("volume %q: deleting clone %s: %w", volName, a.Object, err)
		}
		d.obs().CloneDestroyed(time.Since(start))
		d.logOf(ctx).WithFields(logrus.Fields{
			"audit": "clone destroyed", "volume": volName, "snapshot": a.SnapshotName, "clone": a.Object,
		}).Info("clone destroyed")
	} else if err := d.b.RemoveVolume(ctx, storage.Object{ID: a.Object, Name: volName, Kind: storage.KindVolume}); errors.Is(err, storage.ErrProtected) {
		// A volume the backend does not know as snapvol's: made by hand and
		// adopted by a version that did not label volumes. Its data is never
		// snapvol's to delete; the record goes, the data stays.
		d.logOf(ctx).WithFields(logrus.Fields{"volume": volName, "object": a.Object}).Warn(
			"removing the record of a volume snapvol did not make (or made before it labelled volumes); its data is left in place")
	} else if err != nil {
		return fmt.Errorf("volume %q: deleting: %w", volName, err)
	}
	return nil
}

// undoClone destroys a clone a failed request made and will not record.
// It spends what is left of the request's budget, not a fresh one, so the
// request still answers inside Docker's 30 s; if the undo fails or the
// budget is gone, the clone is a labelled orphan the sweep destroys. The
// request's own error is the one to return, so this one is logged.
func (d *Driver) undoClone(ctx context.Context, volName string, a *store.Attachment) {
	if err := d.destroyObject(ctx, volName, true, a); err != nil {
		d.logOf(ctx).WithError(err).WithFields(logrus.Fields{"volume": volName, "clone": a.Object}).Warn("could not undo a clone; the orphan sweep will")
	}
}

// release destroys one clone of r and keeps the record: the next Mount
// makes a fresh one. policy is the intent's failure policy (nil in a
// request: a failure withdraws it, the clone is still whole and recorded).
func (d *Driver) release(ctx context.Context, r *store.Record, key string, policy intentPolicy) error {
	if r.Attachment(key) == nil {
		return nil
	}
	return d.withIntent(r, store.OpRelease, key, policy, func() error {
		if err := d.destroy(ctx, r, key); err != nil {
			return err
		}
		d.failpoint("release:destroyed")
		r.LastUsed = d.now()
		return nil
	})
}

// remove destroys every attachment of r, then its record. A crash part-way
// is finished at the next start; a failure in a request (policy nil)
// withdraws the intent and the record keeps whatever is left, so Docker
// and the user see a whole volume and can try again.
func (d *Driver) remove(ctx context.Context, r *store.Record, policy intentPolicy) error {
	return d.withIntent(r, store.OpRemove, "", policy, func() error {
		for _, key := range r.Keys() {
			if err := d.destroy(ctx, r, key); err != nil {
				return err
			}
			d.failpoint("remove:destroyed")
		}
		return nil
	})
}
