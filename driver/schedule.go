package driver

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/internal/tick"
	"github.com/snapvol/snapvol/storage"
)

// Schedules: the plugin snapshots a source every Every and keeps the newest
// Keep scheduled snapshots (named ones are never expired by a schedule).
// They live in the store, so they survive restarts; @latest may reuse a
// scheduled snapshot like any snapshot of the source.

// MinScheduleEvery is the shortest schedule (tests use it).
const MinScheduleEvery = time.Second

// The operator sets schedules (Operator.SetSchedule, SetPushedSchedule,
// ClearSchedule, Schedules in admin.go).

// setPushedSchedule is setSchedule whose snapshots are each pushed to
// push (REGISTRY/REPO[:TAG], TAG defaulting to ScheduledPushTag) once
// taken; refused now, naming PUBLISH, when PUBLISH would refuse them.
func (d *Driver) setPushedSchedule(ctx context.Context, source string, every time.Duration, keep int, push string) (store.Schedule, error) {
	if push == "" {
		return store.Schedule{}, fmt.Errorf("%w: schedule of %q: --push needs REGISTRY/REPO[:TAG]", names.ErrInvalid, source)
	}
	return d.setSchedule(ctx, source, every, keep, push)
}

// setSchedule turns on (or changes) the schedule of source; its snapshots
// are pushed to push, unless it is empty.
func (d *Driver) setSchedule(ctx context.Context, source string, every time.Duration, keep int, push string) (store.Schedule, error) {
	if every < MinScheduleEvery {
		return store.Schedule{}, fmt.Errorf("schedule of %q: --every %s is shorter than %s", source, every, MinScheduleEvery)
	}
	if keep < 1 {
		return store.Schedule{}, fmt.Errorf("schedule of %q: --keep %d: keep at least 1 scheduled snapshot (or turn the schedule off with --off)", source, keep)
	}
	if _, err := d.sourceObject(ctx, source); err != nil {
		return store.Schedule{}, err
	}
	if push != "" {
		var err error
		if push, err = d.checkScheduledPush(source, push); err != nil {
			return store.Schedule{}, err
		}
	}
	sc := store.Schedule{Source: source, Every: every, Keep: keep, Push: push}
	d.pushes.storeMu.Lock()
	for _, old := range d.st.Schedules() {
		if old.Source == source {
			sc.Last = old.Last
			if old.Push == push {
				// The same destination: its last outcome still holds.
				sc.Pushed, sc.PushTried, sc.PushError = old.Pushed, old.PushTried, old.PushError
			}
		}
	}
	err := d.st.PutSchedule(sc)
	d.pushes.storeMu.Unlock()
	if err != nil {
		return store.Schedule{}, err
	}
	d.log.WithFields(logrus.Fields{"source": source, "every": every.String(), "keep": keep, "push": push}).Info("snapshot schedule set")
	return sc, nil
}

// clearSchedule turns the schedule of source off; its scheduled snapshots
// stay until removed.
func (d *Driver) clearSchedule(source string) error {
	if err := d.st.DeleteSchedule(source); err != nil {
		return err
	}
	d.log.WithField("source", source).Info("snapshot schedule off")
	return nil
}

// updateSchedule changes source's schedule as it is in the store now
// (nothing when it has none): the schedule loop and a push ending both
// write it, and neither may undo what the other wrote.
func (d *Driver) updateSchedule(source string, change func(*store.Schedule)) error {
	d.pushes.storeMu.Lock()
	defer d.pushes.storeMu.Unlock()
	for _, sc := range d.st.Schedules() {
		if sc.Source == source {
			change(&sc)
			return d.st.PutSchedule(sc)
		}
	}
	return nil
}

// runSchedules takes the snapshots that are due, every second, until ctx
// ends.
func (d *Driver) runSchedules(ctx context.Context) {
	d.pushes.mu.Lock()
	d.pushes.ctx = ctx // scheduled pushes stop with the loop
	d.pushes.mu.Unlock()
	tick.Every(ctx, MinScheduleEvery, func() {
		now := d.now()
		for _, sc := range d.st.Schedules() {
			if now.Sub(sc.Last) >= sc.Every {
				d.takeScheduled(sc, now)
			}
		}
	})
}

// takeScheduled takes one scheduled snapshot of sc.Source, registers it as
// scheduled-TIME, starts its push (sc.Push) and expires the oldest beyond
// sc.Keep.
func (d *Driver) takeScheduled(sc store.Schedule, now time.Time) {
	ctx, cancel := d.ctx()
	defer cancel()
	log := d.log.WithField("source", sc.Source)
	// The time is recorded before the attempt, so a source that cannot be
	// snapshotted is retried at its pace, not every second.
	sc.Last = now
	if err := d.updateSchedule(sc.Source, func(cur *store.Schedule) { cur.Last = now }); err != nil {
		log.WithError(err).Warn("scheduled snapshot")
		return
	}
	src, err := d.sourceObject(ctx, sc.Source)
	if err != nil {
		log.WithError(err).Warn("scheduled snapshot")
		return
	}
	name := store.ScheduledName(now)
	if _, taken := d.st.RegisteredSnapshot(sc.Source, name); taken {
		name += fmt.Sprintf("-%03d", now.Nanosecond()/1e6)
	}
	err = func() error {
		ctx, done, err := d.refs.cloning(ctx)
		if err != nil {
			return err
		}
		defer done()
		snap, err := d.b.Snapshot(ctx, src, storage.TakenSnapshotLabels(sc.Source, storage.TakenScheduled, ""))
		if err != nil {
			return err
		}
		t := snap.Created.UTC()
		if t.IsZero() {
			t = now
		}
		_, err = d.st.RegisterSnapshot(store.Snapshot{Source: sc.Source, SourceID: src.Identity, Name: name, Object: snap.ID, Kind: storage.TakenScheduled, Time: t})
		return err
	}()
	if err != nil {
		log.WithError(err).Warn("scheduled snapshot")
		return
	}
	log.WithFields(logrus.Fields{"audit": "snapshot registered", "snapshot": name}).Info("scheduled snapshot taken")
	if sc.Push != "" {
		d.pushScheduled(sc, name)
	}
	var scheduled []store.Snapshot
	for _, reg := range d.st.RegisteredSnapshots(sc.Source) {
		if reg.Kind == storage.TakenScheduled {
			scheduled = append(scheduled, reg)
		}
	}
	for i := 0; i < len(scheduled)-sc.Keep; i++ {
		// Oldest first. Clones made of an expired one keep it until they
		// go; the name goes now.
		if err := d.st.UnregisterSnapshot(sc.Source, scheduled[i].Name); err != nil {
			log.WithError(err).Warn("expiring a scheduled snapshot")
			continue
		}
		log.WithField("snapshot", scheduled[i].Name).Info("scheduled snapshot expired")
	}
	if len(scheduled) > sc.Keep {
		d.collectSnapshots(ctx, sc.Source)
	}
}
