package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/mountpoint"
	"github.com/snapvol/snapvol/storage"
)

// Reconcile repairs what a crash left: it finishes or undoes every recorded
// intent, restores the mounts the records count, drops stray mounts and
// destroys plugin-made objects no record owns. Run it before serving. All
// of it shares ctx, so a slow or down backend delays serving by ctx's
// budget, not by a timeout per volume: Get and List need no backend, and
// what is left over (volumes not reached or failed, the sweep) Run retries.
func (d *Driver) Reconcile(ctx context.Context) error {
	names := d.st.Names()
	for i, name := range names {
		if ctx.Err() != nil {
			d.markUnreconciled(names[i:]...)
			d.log.WithField("volumes", len(names)-i).Warn("reconcile at start ran out of time; the rest is retried while serving")
			break
		}
		if err := d.reconcileVolume(ctx, name); err != nil {
			d.markUnreconciled(name)
			d.log.WithError(err).WithField("volume", name).Warn("reconcile")
		}
	}
	if d.st.Fresh() {
		// The store was made by this run: a mount or object it does not
		// know may be a lost state's (under a running container), never
		// this one's leftovers, so nothing is dropped or destroyed.
		d.log.Info("reconcile: new state; stray mounts and orphans are left alone in this run")
	} else {
		d.dropStrayMounts(ctx)
	}
	d.watchPool()
	return d.sweep(ctx)
}

func (d *Driver) markUnreconciled(names ...string) {
	d.unreconciledMu.Lock()
	defer d.unreconciledMu.Unlock()
	for _, n := range names {
		d.unreconciled[n] = true
	}
}

// retryReconcile reconciles again the volumes with an unfinished intent
// (the backend was down when it was tried) and those reconcile at start
// did not finish.
func (d *Driver) retryReconcile(ctx context.Context) {
	d.unreconciledMu.Lock()
	todo := d.unreconciled
	d.unreconciled = map[string]bool{}
	d.unreconciledMu.Unlock()
	d.st.Each(func(r *store.Record) {
		if r.Intent != nil {
			todo[r.Name] = true
		}
	})
	names := make([]string, 0, len(todo))
	for name := range todo {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := d.reconcileVolume(ctx, name); err != nil {
			d.markUnreconciled(name)
			d.log.WithError(err).WithField("volume", name).Warn("reconcile")
		}
	}
}

// dropStrayMounts unmounts whatever is mounted under DATA_ROOT that no
// record counts: a crash between mounting a clone and recording it leaves
// one. Only safe at start, when no Mount is in flight.
func (d *Driver) dropStrayMounts(ctx context.Context) {
	known := map[string]bool{}
	d.st.Each(func(r *store.Record) {
		for _, a := range r.Attachments {
			known[a.Target] = true
		}
	})
	ents, err := os.ReadDir(d.cfg.DataRoot)
	if err != nil {
		return
	}
	for _, e := range ents {
		target := filepath.Join(d.cfg.DataRoot, e.Name())
		// DATA_ROOT may be shared on a host: only directories shaped like
		// the plugin's own mount points are its to drop.
		if known[target] || !e.IsDir() || !isTargetName(e.Name()) {
			continue
		}
		// The object is unknown here; backends unmount by path alone.
		if err := d.b.Unmount(ctx, "", target); err != nil {
			d.log.WithError(err).WithField("target", target).Warn("dropping stray mount")
			continue
		}
		d.obs().Repaired(RepairStrayMount)
		d.log.WithField("target", target).Info("reconcile: dropped stray mount")
	}
}

func (d *Driver) reconcileVolume(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.OpTimeout)
	defer cancel()
	ctx, unlock, err := d.lockVolume(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	r, ok := d.st.Get(name)
	if !ok {
		return nil
	}
	if in := r.Intent; in != nil {
		log := d.log.WithFields(logrus.Fields{"volume": name, "intent": in.Op, "since": rfc3339(in.Since)})
		switch in.Op {
		case store.OpCreate:
			return d.finishCreate(ctx, r, log)
		case store.OpRelease:
			log.Info("reconcile: finishing interrupted clone destruction")
			if err := d.release(ctx, r, in.Key, retrying); err != nil {
				return err
			}
			d.obs().Repaired(RepairRelease)
		case store.OpRemove:
			log.Info("reconcile: finishing interrupted remove")
			if err := d.remove(ctx, r, retrying); err != nil {
				return err
			}
			d.obs().Repaired(RepairRemove)
			return nil
		default:
			return fmt.Errorf("volume %q: unknown intent %q; remove the volume", name, in.Op)
		}
	}
	return d.restoreMounts(ctx, r)
}

// finishCreate rolls an interrupted create forward if the volume got made,
// back if it did not. A backend that cannot say (down, slow) keeps the
// intent for Run to retry: dropping the record then could leave a volume
// the backend did make without a record.
func (d *Driver) finishCreate(ctx context.Context, r *store.Record, log *logrus.Entry) error {
	obj, err := d.b.Volume(ctx, r.Name)
	if errors.Is(err, storage.ErrNotFound) {
		log.Info("reconcile: interrupted create made nothing; dropping the record")
		d.obs().Repaired(RepairCreate)
		return d.st.Delete(r.Name)
	}
	if err == nil {
		// A volume of that name is there; adopt it only if snapvol made it
		// (a crash before CreateVolume refused a production volume of the
		// same name must not make it ours to delete).
		obj, err = d.b.CreateVolume(ctx, r.Name, r.Options)
	}
	if errors.Is(err, storage.ErrForeign) {
		log.WithError(err).Warn("reconcile: interrupted create found a volume snapvol did not make; dropping the record, leaving the volume alone")
		d.obs().Repaired(RepairCreate)
		return d.st.Delete(r.Name)
	}
	if err != nil {
		return fmt.Errorf("volume %q: finishing interrupted create: %w", r.Name, err)
	}
	r.SetAttachment("", &store.Attachment{Object: obj.ID})
	r.Intent = nil
	log.Info("reconcile: finished interrupted create")
	d.obs().Repaired(RepairCreate)
	return d.st.Put(r)
}

// restoreMounts makes the mounts match the counts: a plugin restarted in
// a new mount namespace must serve running containers' volumes again, and
// a mount whose count dropped to zero while we were down goes away.
func (d *Driver) restoreMounts(ctx context.Context, r *store.Record) error {
	for _, key := range r.Keys() {
		a := r.Attachments[key]
		if a.Target == "" {
			continue
		}
		mounted := d.b.Mounted(a.Target)
		switch {
		case a.Mounts > 0 && !mounted:
			if err := d.b.Mount(ctx, a.Object, a.Target); err != nil {
				return fmt.Errorf("volume %q: restoring mount: %w", r.Name, err)
			}
			d.obs().Repaired(RepairRestoredMount)
		case a.Mounts == 0 && mounted:
			if err := d.b.Unmount(ctx, a.Object, a.Target); err != nil {
				return fmt.Errorf("volume %q: dropping stale mount: %w", r.Name, err)
			}
			d.obs().Repaired(RepairStaleMount)
		case a.Mounts == 0:
			// A Mount killed between making the mount point and mounting
			// leaves the empty directory; it is the volume's, so the stray
			// mount check does not look at it.
			if err := mountpoint.RemoveMountPoint(a.Target); err != nil {
				d.log.WithError(err).WithField("volume", r.Name).Warn("removing an unused mount point")
			}
		}
	}
	return nil
}

// sweep destroys plugin-made clones no record references and collects
// unneeded snapshots. Each orphan is re-checked under its volume's lock, so
// a clone being made right now is never taken for an orphan.
func (d *Driver) sweep(ctx context.Context) error {
	if d.st.Fresh() {
		// Never collect or destroy anything in the run that made the
		// store: what it does not know is not proven to be no one's.
		return nil
	}
	owned, err := d.b.Owned(ctx)
	if err != nil {
		return fmt.Errorf("listing plugin objects: %w", err)
	}
	for _, o := range owned {
		if o.Kind != storage.KindClone {
			continue
		}
		vol := o.Labels[storage.LabelVolume]
		if d.cloneReferenced(vol, o.ID) {
			continue
		}
		_, unlock, err := d.lockVolume(ctx, vol)
		if err != nil {
			d.log.WithError(err).WithField("clone", o.ID).Warn("orphan clone left for the next sweep")
			continue
		}
		if !d.cloneReferenced(vol, o.ID) {
			if err := d.b.Delete(ctx, o.ID); errors.Is(err, storage.ErrBusy) {
				d.log.WithError(err).WithField("clone", o.ID).Debug("orphan clone kept while a snapshot of it exists")
			} else if err != nil {
				d.log.WithError(err).WithField("clone", o.ID).Warn("deleting orphan clone")
			} else {
				d.obs().Repaired(RepairOrphanClone)
				d.log.WithFields(logrus.Fields{"audit": "orphan destroyed", "volume": vol, "clone": o.ID}).Info("orphan clone destroyed")
			}
		}
		unlock()
	}
	return d.collectAll(ctx, owned)
}

func (d *Driver) cloneReferenced(vol, id string) bool {
	r, ok := d.st.Get(vol)
	if !ok {
		return false
	}
	for _, c := range r.Clones() {
		if c.Object == id {
			return true
		}
	}
	return false
}
