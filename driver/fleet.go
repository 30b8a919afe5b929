package driver

// Runner fleets (DESIGN.md "Runner fleets"): what the driver does for the
// fleet code (package fleet), which owns the registry and the streams. The
// driver knows neither: it asks a Replicas whether a source is a replica
// and to make sure one is pulled, and registers what was pulled as
// SOURCE@TAG, as snapvol snapshot create --replace registers a name.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/storage"
)

// SnapPulled is the kind of a registered snapshot pulled from a registry.
const SnapPulled = "pulled"

// Replicas are this host's replica sources (REPLICAS).
type Replicas interface {
	// IsReplica reports whether source is taken from a registry here.
	IsReplica(source string) bool
	// Ensure makes sure a version of source that ref can resolve to was
	// pulled (pulling now, within ctx, when none was); a version pulled
	// before is enough, whether or not the registry answers now.
	Ensure(ctx context.Context, source, ref string) error
	// Checked is when the registry last answered a pull of source (zero:
	// not since the start) and the last pull's error (nil once one works).
	Checked(source string) (time.Time, error)
}

// replicaStatus tells, in a replica clone's Status, how old its data is
// (the production snapshot's time it was made from, or else the newest
// pulled) and whether the registry answers, so a job run while the
// registry is down knows it got the newest local copy.
func (d *Driver) replicaStatus(r *store.Record, s map[string]interface{}) {
	if !r.IsClone() || !d.isReplica(r.Source) {
		return
	}
	at := time.Time{}
	if clones := r.Clones(); len(clones) > 0 {
		at = clones[len(clones)-1].SnapshotTime
	} else if src, err := d.b.Volume(context.Background(), r.Source); err == nil {
		if v, err := d.replicaLatest(src); err == nil {
			at = v.Created
		}
	}
	if !at.IsZero() {
		s["replica_age"] = d.now().Sub(at).Round(time.Second).String()
	}
	checked, err := d.replicas.Checked(r.Source)
	s["registry_checked"] = ""
	if !checked.IsZero() {
		s["registry_checked"] = rfc3339(checked)
	}
	if err != nil {
		s["registry_error"] = err.Error()
	}
}

// SetReplicas wires the replica sources in, before serving.
func (d *Driver) SetReplicas(r Replicas) { d.replicas = r }

func (d *Driver) isReplica(source string) bool {
	if d.replicas == nil || !d.replicas.IsReplica(source) {
		return false
	}
	// A Docker volume of that name here is a local source (a host that
	// is production and CI at once, REPLICAS copied from a CI host's
	// settings): it stays local, its containers mount it and its named
	// snapshots stay its own; ReplicaSource refuses pulls into it.
	_, local := d.st.Get(source)
	return !local
}

// labelReceivedUUID is the label the fleet puts on a pulled version
// (fleet.labelReceived): a volume with such snapshots is a replica
// source's anchor, never a Docker volume.
const labelReceivedUUID = "snapvol.received-uuid"

// replicaAnchors are the volumes among owned that anchor pulled versions
// (by their snapshots' labels, not REPLICAS: recover may run without the
// plugin's settings). Recover makes no record of them: a record would make
// the anchor a Docker volume, listed and mounted writable.
func replicaAnchors(owned []storage.Object) map[string]bool {
	out := map[string]bool{}
	for _, o := range owned {
		if o.Kind == storage.KindSnapshot && o.Labels[labelReceivedUUID] != "" && o.Labels[storage.LabelSource] != "" {
			out[o.Labels[storage.LabelSource]] = true
		}
	}
	return out
}

// ErrReplica: what was asked cannot be done to a replica source.
var ErrReplica = errors.New("replica source")

// refuseReplicaVolume refuses a plain volume named after a replica source:
// its volume in the pool only anchors the pulled snapshots, and is never
// Docker's to mount or write.
func (d *Driver) refuseReplicaVolume(name string) error {
	if !d.isReplica(name) {
		return nil
	}
	return fmt.Errorf("%w: volume %q: %q is a replica source (REPLICAS), pulled from a registry; it cannot be mounted or written: clone it as %s@latest or %s@TAG", ErrNotAllowed, name, name, name, name)
}

// ensureReplica pulls a replica source on first use; a no-op for other
// sources.
func (d *Driver) ensureReplica(ctx context.Context, source, ref string) error {
	if !d.isReplica(source) {
		return nil
	}
	if ref == names.RefNow {
		return fmt.Errorf("%w: %s@now: %q is a replica source and takes no snapshots here; use @latest or the tag pulled", ErrReplica, source, source)
	}
	step(ctx, "making sure replica source %q has a pulled version", source)
	return d.replicas.Ensure(ctx, source, ref)
}

// replicaLatest is what @latest of replica source src clones: the newest
// pulled version, never a snapshot taken here.
func (d *Driver) replicaLatest(src storage.Object) (storage.Object, error) {
	var best *store.Snapshot
	for _, reg := range d.st.RegisteredSnapshots(src.Name) {
		if reg.Kind != SnapPulled || (reg.SourceID != "" && src.Identity != "" && reg.SourceID != src.Identity) {
			continue
		}
		if best == nil || reg.Time.After(best.Time) {
			r := reg
			best = &r
		}
	}
	if best == nil {
		return storage.Object{}, fmt.Errorf("%w: replica source %q has nothing pulled yet (snapvol pull %s)", storage.ErrNotFound, src.Name, src.Name)
	}
	return storage.Object{ID: best.Object, Name: best.Name, Kind: storage.KindSnapshot, Parent: best.SourceID, Created: best.Time}, nil
}

// resolveFor resolves ref of src for a clone: replica sources never take
// a snapshot.
func (d *Driver) resolveFor(ctx context.Context, src storage.Object, ref string) (storage.Object, error) {
	if !d.isReplica(src.Name) {
		return d.refs.resolve(ctx, src, ref)
	}
	if ref == names.RefLatest {
		return d.replicaLatest(src)
	}
	return d.refs.lookup(ctx, src, ref)
}

// PublishedSnapshot is the snapshot source@ref names, for snapvol push: a
// named one (registered, or the backend's of that name); @latest and @now
// are refused, since a push publishes one version on purpose.
func (o *Operator) PublishedSnapshot(ctx context.Context, source, ref string) (src, snap storage.Object, err error) {
	d := o.d
	if !named(ref) {
		return src, snap, fmt.Errorf("%w: %s@%s: push a named snapshot (snapvol snapshot create %s NAME), not @%s", names.ErrInvalid, source, ref, source, ref)
	}
	if src, err = d.sourceObject(ctx, source); err != nil {
		return src, snap, err
	}
	if snap, err = d.refs.lookup(ctx, src, ref); err != nil {
		return src, snap, err
	}
	// A registered name carries the object's ID only: the stream's
	// annotations need its Identity and time as the storage has them.
	snaps, err := d.b.Snapshots(ctx, src)
	if err != nil {
		return src, snap, fmt.Errorf("listing snapshots of %q: %w", source, err)
	}
	for _, s := range snaps {
		if s.ID == snap.ID {
			if s.Identity == "" {
				return src, s, fmt.Errorf("snapshot %s@%s: the storage gives it no UUID, which a push needs", source, ref)
			}
			return src, s, nil
		}
	}
	return src, snap, fmt.Errorf("snapshot %s@%s (%s) is not among %q's snapshots: %w", source, ref, snap.ID, source, storage.ErrNotFound)
}

// SnapshotByIdentity finds the snapshot of source whose Identity is id
// (what a registry's last layer names), for an incremental push.
func (o *Operator) SnapshotByIdentity(ctx context.Context, source, id string) (storage.Object, bool) {
	d := o.d
	src, err := d.sourceObject(ctx, source)
	if err != nil || id == "" {
		return storage.Object{}, false
	}
	snaps, err := d.b.Snapshots(ctx, src)
	if err != nil {
		return storage.Object{}, false
	}
	for _, s := range snaps {
		if s.Identity == id {
			return s, true
		}
	}
	return storage.Object{}, false
}

// ReplicaSource is the volume of replica source source, made (empty,
// labelled as snapvol's) if missing: it anchors the pulled snapshots.
func (o *Operator) ReplicaSource(ctx context.Context, source string) (storage.Object, error) {
	d := o.d
	if why := names.CheckWord(source); why != "" {
		return storage.Object{}, fmt.Errorf("%w: replica source %q %s", names.ErrInvalid, source, why)
	}
	if _, local := d.st.Get(source); local {
		return storage.Object{}, fmt.Errorf("%w: replica source %q: a Docker volume of that name is on this host, a local source; REPLICAS cannot take it over (its named snapshots would be replaced by pulled ones): name the replica source otherwise in REPLICAS, e.g. %s-replica=REGISTRY/REPO", ErrReplica, source, source)
	}
	src, err := d.b.Volume(ctx, source)
	if err == nil {
		if k, ok := storage.KindOf(src.Labels); !ok || k != storage.KindVolume {
			return src, fmt.Errorf("%w: replica source %q: a volume of that name is in the pool and was not made by snapvol; REPLICAS cannot use it", ErrReplica, source)
		}
		return src, nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return src, fmt.Errorf("replica source %q: %w", source, err)
	}
	return d.b.CreateVolume(ctx, source, nil)
}

// PulledVersion is the registered pulled snapshot of source@tag.
func (o *Operator) PulledVersion(source, tag string) (store.Snapshot, bool) {
	d := o.d
	reg, ok := d.st.RegisteredSnapshot(source, tag)
	return reg, ok && reg.Kind == SnapPulled
}

// RegisterPulled makes a pulled version visible: publish makes its
// snapshot of src, and source@tag moves to it in one store write. Clones
// of the version before keep it; it is collected once none uses it.
func (o *Operator) RegisterPulled(ctx context.Context, src storage.Object, tag string, at time.Time, publish func(context.Context) (storage.Object, error)) error {
	d := o.d
	ctx, done, err := d.refs.cloning(ctx)
	if err != nil {
		return fmt.Errorf("registering %s@%s: %w", src.Name, tag, err)
	}
	defer done()
	snap, err := publish(ctx)
	if err != nil {
		return fmt.Errorf("registering %s@%s: %w", src.Name, tag, err)
	}
	old, err := d.st.RegisterSnapshot(store.Snapshot{Source: src.Name, SourceID: src.Identity, Name: tag, Object: snap.ID, Kind: SnapPulled, Time: at.UTC()})
	if err != nil {
		if derr := d.b.Delete(ctx, snap.ID); derr != nil {
			d.log.WithError(derr).WithField("snapshot", snap.ID).Warn("could not delete an unregistered snapshot; the sweep will")
		}
		return err
	}
	d.log.WithFields(logrus.Fields{"audit": "snapshot registered", "source": src.Name, "snapshot": tag, "object": snap.ID, "kind": SnapPulled}).Info("pulled version visible")
	if old != nil {
		go func() {
			cctx, cancel := d.ctx()
			defer cancel()
			d.collectSnapshots(cctx, src.Name)
		}()
	}
	return nil
}

// SnapPushed is the kind of the registered snapshot a registry tag's
// newest layer was sent from: kept so the next push can send only what
// changed since (btrfs send -p needs it on this host).
const SnapPushed = "pushed"

// KeepPushed registers snap as source@pushed.TAG, the parent of tag's next
// incremental push, moving the name from the snapshot pushed before
// (collected once no clone uses it).
func (o *Operator) KeepPushed(ctx context.Context, src, snap storage.Object, tag string) error {
	d := o.d
	name := "pushed." + tag
	if len(name) > 63 {
		name = name[:63]
	}
	ctx, done, err := d.refs.cloning(ctx)
	if err != nil {
		return fmt.Errorf("keeping %s@%s: %w", src.Name, name, err)
	}
	defer done()
	old, err := d.st.RegisterSnapshot(store.Snapshot{Source: src.Name, SourceID: src.Identity, Name: name, Object: snap.ID, Kind: SnapPushed, Time: snap.Created.UTC()})
	if err != nil {
		return err
	}
	if old != nil && old.Object != snap.ID {
		go func() {
			cctx, cancel := d.ctx()
			defer cancel()
			d.collectSnapshots(cctx, src.Name)
		}()
	}
	return nil
}

// Scheduled pushes (snapvol snapshot schedule SOURCE --push REPO[:TAG]):
// each snapshot a schedule takes is pushed right after, in its own
// goroutine, so a slow or unreachable registry never holds up the
// schedule loop or any request. A push that fails is logged, kept in the
// schedule (push_error) and not retried by itself: the next scheduled
// snapshot is pushed at the next tick, and it holds everything the
// failed one did.

// ScheduledPushTag is the tag a scheduled push moves when --push names
// none: a fixed tag, so every push extends one chain (the default of
// snapvol push, the ref, would be a new scheduled-TIME tag each time).
const ScheduledPushTag = "scheduled"

// scheduledPushBudget bounds one scheduled push: streams of a large
// source take minutes.
const scheduledPushBudget = time.Hour

// Pusher is what the driver asks of the fleet for scheduled pushes.
type Pusher interface {
	// CheckPush says, without the network, whether source@ref may be
	// pushed to repo (PUBLISH, the repository's form, a backend that can
	// send), with an error naming what refuses it.
	CheckPush(source, ref, repo string) error
	// Push publishes source@ref to repo, as snapvol push does.
	Push(ctx context.Context, source, ref, repo string) error
}

// pushState: the fleet's pusher and the sources with a scheduled push
// running (one at a time per source: a tick while one still runs does
// not start another).
type pushState struct {
	mu      sync.Mutex
	pusher  Pusher
	ctx     context.Context // the schedule loop's (runSchedules)
	running map[string]bool
	// storeMu orders the read-modify-writes of schedules
	// (updateSchedule, setSchedule).
	storeMu sync.Mutex
}

// SetPusher wires the fleet's pushes in, before serving.
func (d *Driver) SetPusher(p Pusher) {
	d.pushes.mu.Lock()
	defer d.pushes.mu.Unlock()
	d.pushes.pusher = p
}

func (d *Driver) pusher() Pusher {
	d.pushes.mu.Lock()
	defer d.pushes.mu.Unlock()
	return d.pushes.pusher
}

// withPushTag is repo with its tag made explicit (ScheduledPushTag when it
// names none). The tag is after the last '/' (a registry's :port is not).
func withPushTag(repo string) string {
	if strings.Contains(repo[strings.LastIndex(repo, "/")+1:], ":") {
		return repo
	}
	return repo + ":" + ScheduledPushTag
}

// checkScheduledPush refuses, when the schedule is set, a push PUBLISH
// would refuse at every tick: the scheduled snapshots' names are
// scheduled-YYYYMMDD-HHMMSS, so PUBLISH must allow SOURCE@scheduled-*.
func (d *Driver) checkScheduledPush(source, repo string) (string, error) {
	p := d.pusher()
	if p == nil {
		return "", fmt.Errorf("schedule of %q: --push %s: this snapvol has no registry pushes", source, repo)
	}
	repo = withPushTag(repo)
	if err := p.CheckPush(source, store.ScheduledName(d.now()), repo); err != nil {
		return "", fmt.Errorf("schedule of %q: --push %s: its snapshots are named scheduled-YYYYMMDD-HHMMSS, so PUBLISH must allow %s@scheduled-*: %w", source, repo, source, err)
	}
	return repo, nil
}

// pushScheduled starts the push of source@ref, the snapshot sc just took,
// unless one of source is still running; it returns at once.
func (d *Driver) pushScheduled(sc store.Schedule, ref string) {
	log := d.log.WithFields(logrus.Fields{"source": sc.Source, "snapshot": ref, "push": sc.Push})
	p := d.pusher()
	if p == nil {
		log.Warn("scheduled push: this snapvol has no registry pushes")
		return
	}
	d.pushes.mu.Lock()
	if d.pushes.running == nil {
		d.pushes.running = map[string]bool{}
	}
	busy := d.pushes.running[sc.Source]
	d.pushes.running[sc.Source] = true
	ctx := d.pushes.ctx
	d.pushes.mu.Unlock()
	if ctx == nil {
		ctx = context.Background()
	}
	if busy {
		log.Warn("scheduled push: the one before is still running; this snapshot is not pushed, the next one will be")
		return
	}
	go func() {
		defer func() {
			d.pushes.mu.Lock()
			delete(d.pushes.running, sc.Source)
			d.pushes.mu.Unlock()
		}()
		pctx, cancel := context.WithTimeout(ctx, scheduledPushBudget)
		defer cancel()
		started := d.now()
		err := p.Push(pctx, sc.Source, ref, sc.Push)
		d.recordPush(sc.Source, sc.Push, started, err)
		if err != nil {
			reg, repo, _ := strings.Cut(sc.Push, "/")
			repo, tag, _ := strings.Cut(repo, ":")
			log.WithError(err).WithFields(logrus.Fields{"registry": reg, "repository": repo, "tag": tag}).Warn("scheduled push failed; the next scheduled snapshot is pushed at the next tick")
			return
		}
		log.Info("scheduled push done")
	}()
}

// recordPush keeps the outcome of a scheduled push in source's schedule,
// unless the schedule was changed to push elsewhere (or turned off) since.
func (d *Driver) recordPush(source, repo string, started time.Time, err error) {
	perr := d.updateSchedule(source, func(sc *store.Schedule) {
		if sc.Push != repo {
			return
		}
		sc.PushTried, sc.PushError = started, ""
		if err != nil {
			sc.PushError = err.Error()
		} else {
			sc.Pushed = d.now()
		}
	})
	if perr != nil {
		d.log.WithError(perr).WithField("source", source).Warn("recording a scheduled push")
	}
}
