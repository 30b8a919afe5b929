package driver

import (
	"context"
	"time"

	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/internal/tick"
)

// Reap destroys clones idle longer than their ttl, and +each clones whose
// Unmount could not destroy them; records stay.
func (d *Driver) Reap() {
	now := d.cfg.Now()
	type clone struct{ volume, key string }
	var due []clone
	d.st.Each(func(r *store.Record) {
		for key := range r.Attachments {
			if d.reapable(r, key, now) {
				due = append(due, clone{r.Name, key})
			}
		}
	})
	for _, c := range due {
		func() {
			ctx, cancel := d.ctx()
			defer cancel()
			log := d.log.WithField("volume", c.volume)
			ctx, unlock, err := d.lockVolume(ctx, c.volume)
			if err != nil {
				log.WithError(err).Warn("reaping clone (retried at the next sweep)")
				return
			}
			defer unlock()
			r, ok := d.st.Get(c.volume)
			if !ok || !d.reapable(r, c.key, now) {
				return
			}
			if r.Each {
				log = log.WithField("mount_id", c.key)
				log.Info("destroying a +each clone its Unmount left")
			} else {
				log.WithField("idle", now.Sub(r.LastUsed).Round(time.Second).String()).Info("reaping idle clone")
			}
			if err := d.release(ctx, r, c.key, nil); err != nil {
				log.WithError(err).Warn("reaping clone")
				return
			}
			d.obs().CloneReaped(r.Each)
		}()
	}
}

// reapable reports whether Reap destroys clone key of r ("" for a
// non-each volume's clone). A +each clone goes at its last Unmount, so
// one still there with no mount is what a failed destruction left; any
// other clone goes once unmounted for its ttl. A volume with an unfinished
// intent is left to reconcile.
func (d *Driver) reapable(r *store.Record, key string, now time.Time) bool {
	if r.Intent != nil || !r.IsClone() {
		return false
	}
	c := r.Attachment(key)
	if c == nil || c.Mounts > 0 {
		return false
	}
	ttl := d.reapTTL(r, c) // space.go: sooner for superseded snapshots
	return r.Each || ttl > 0 && now.Sub(r.LastUsed) >= ttl
}

// ReapInterval is how often Run reaps: at least every minute, and twice
// per IDLE_TTL when that is shorter.
func (d *Driver) ReapInterval() time.Duration {
	iv := time.Minute
	for _, ttl := range []time.Duration{d.cfg.IdleTTL, d.cfg.SupersededTTL} {
		if ttl > 0 && ttl/2 < iv {
			iv = ttl / 2
		}
	}
	if iv < 100*time.Millisecond {
		iv = 100 * time.Millisecond
	}
	return iv
}

// Run reaps idle clones and sweeps orphans until ctx ends.
func (d *Driver) Run(ctx context.Context) {
	go d.runSchedules(ctx)
	tick.Every(ctx, d.ReapInterval(), func() {
		d.retryReconcile(ctx)
		d.watchPool()
		d.dropStaleMounts()
		d.Reap()
		sctx, cancel := d.ctx()
		if err := d.sweep(sctx); err != nil {
			d.log.WithError(err).Warn("sweep")
		}
		cancel()
	})
}

// inProgressGrace is how long a mount left unfinished
// (Attachment.InProgressSince) is left for its retry before the sweep
// takes it for stale.
const inProgressGrace = 10 * time.Minute

// stale says whether a is a mount no count holds.
func (d *Driver) stale(a *store.Attachment) bool {
	if a.Mounts != 0 || a.Target == "" || !a.InProgressSince.IsZero() && d.now().Sub(a.InProgressSince) < inProgressGrace {
		return false
	}
	return d.b.Mounted(a.Target)
}

// dropStaleMounts unmounts what an Unmount counted down but could not
// unmount (see detach): a mount no count holds.
func (d *Driver) dropStaleMounts() {
	var stale []string
	d.st.Each(func(r *store.Record) {
		for _, a := range r.Attachments {
			if d.stale(a) {
				stale = append(stale, r.Name)
				return
			}
		}
	})
	for _, name := range stale {
		func() {
			ctx, cancel := d.ctx()
			defer cancel()
			ctx, unlock, err := d.lockVolume(ctx, name)
			if err != nil {
				d.log.WithError(err).WithField("volume", name).Warn("dropping a mount no count holds (retried at the next sweep)")
				return
			}
			defer unlock()
			r, ok := d.st.Get(name)
			if !ok || r.Intent != nil {
				return
			}
			for _, a := range r.Attachments {
				if d.stale(a) {
					if err := d.b.Unmount(ctx, a.Object, a.Target); err != nil {
						d.log.WithError(err).WithField("volume", name).Warn("dropping a mount no count holds")
						continue
					}
					d.obs().Repaired(RepairStaleMount)
					d.log.WithField("volume", name).Info("dropped a mount no count holds")
				}
			}
		}()
	}
}
