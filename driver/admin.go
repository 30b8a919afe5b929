package driver

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/admin"
	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/storage"
)

// Operator is the operator's API of a driver, beside the VolumeDriver API
// the Driver serves Docker: what the admin socket asks for (snapvol ls,
// df, volume, snapshot, schedule), each call one request (request.go) of
// CallerOperator, bounded by operatorBudget within the ctx it is given
// (the admin connection's); what the fleet service asks for (fleet.go:
// snapvol push and pull, and the pulls they and replica mounts need) and
// snapvol recover (recover.go), within the ctx their caller made. SOURCES
// does not apply here; these are the operator's decisions. Its wire types
// are package admin's.
type Operator struct{ d *Driver }

// Operator is the operator's API of d.
func (d *Driver) Operator() *Operator { return &Operator{d: d} }

// ErrExists is returned when an admin command would make something that
// exists already.
var ErrExists = errors.New("already exists")

// Volumes lists every volume, by name.
func (o *Operator) Volumes(ctx context.Context) []admin.Volume {
	ctx, cancel := o.d.enterOperator(ctx, "ls", "")
	defer cancel()
	return o.d.volumes(ctx)
}

func (d *Driver) volumes(ctx context.Context) []admin.Volume {
	usage := d.objectUsage(ctx)
	now := d.now()
	out := make([]admin.Volume, 0, d.st.Len())
	d.st.Each(func(r *store.Record) { out = append(out, d.volumeInfo(r, usage, now)) })
	return out
}

// Volume is one volume as snapvol volume inspect shows it: a Docker
// user's or the operator's (even a --secret one, whose name the operator
// has).
func (o *Operator) Volume(ctx context.Context, name string) (admin.Volume, error) {
	d := o.d
	ctx, cancel := d.enterOperator(ctx, "volume inspect", name)
	defer cancel()
	r, ok := d.st.Get(name)
	if !ok {
		return admin.Volume{}, fmt.Errorf("%w: %q", ErrNoSuchVolume, name)
	}
	return d.volumeInfo(r, d.objectUsage(ctx), d.now()), nil
}

// volumeInfo is r as snapvol ls shows it; usage is nil where the backend
// cannot measure.
func (d *Driver) volumeInfo(r *store.Record, usage map[string]storage.ObjectUsage, now time.Time) admin.Volume {
	clones := r.Clones()
	v := admin.Volume{
		Name: r.Name, Kind: "volume", Source: r.Source, Ref: r.Ref, Tag: r.Tag, Each: r.Each, Created: r.Created,
		AgeSeconds: int64(now.Sub(r.Created) / time.Second), Mounts: r.TotalMounts(),
		Clones: len(clones), State: "ready",
	}
	if r.IsClone() {
		v.Kind, v.State = "clone", "not materialized"
		if r.Operator {
			v.Kind, v.Access = "operator", r.Access
			if v.Access == store.AccessNone {
				v.Access = "none"
			}
		}
		ttl := d.reapTTL(r, r.Attachment(""))
		secs := int64(ttl / time.Second)
		v.TTLSeconds = &secs
		if len(clones) > 0 {
			last := clones[len(clones)-1]
			v.State, v.Snapshot, v.SnapshotTime = "materialized", last.SnapshotName, last.SnapshotTime
			// An unmounted clone goes at LastUsed + ttl; a mounted one
			// ttl after its last unmount, and +each clones at theirs:
			// neither has a time yet.
			if !r.Each && ttl > 0 && r.TotalMounts() == 0 {
				v.Expires = r.LastUsed.Add(ttl)
			}
		}
	}
	if r.Intent != nil {
		v.State = "pending " + string(r.Intent.Op)
	}
	if usage != nil {
		var n int64
		for _, a := range r.Attachments {
			n += usage[a.Object].Bytes
		}
		v.Bytes = &n
	}
	return v
}

func (d *Driver) objectUsage(ctx context.Context) map[string]storage.ObjectUsage {
	u, ok := d.b.(storage.Usager)
	if !ok {
		return nil
	}
	m, err := u.ObjectUsage(ctx)
	if err != nil {
		d.log.WithError(err).Warn("usage of volumes")
		return nil
	}
	return m
}

// Usage reports how full the backend is and its ten largest consumers.
func (o *Operator) Usage(ctx context.Context) (admin.DiskUsage, error) {
	d := o.d
	ctx, cancel := d.enterOperator(ctx, "df", "")
	defer cancel()
	du := admin.DiskUsage{Size: -1, Used: -1, Free: -1, Consumers: []admin.Consumer{}}
	u, ok := d.b.(storage.Usager)
	if !ok {
		return du, nil
	}
	pu, err := u.Usage(ctx)
	if err != nil {
		return du, fmt.Errorf("pool usage: %w", err)
	}
	du.Size, du.Used, du.Free, du.Reserve = pu.Size, pu.Used, pu.Free, pu.Reserve
	for _, v := range d.volumes(ctx) {
		if v.Bytes != nil {
			du.Consumers = append(du.Consumers, admin.Consumer{Name: v.Name, Kind: v.Kind, Bytes: *v.Bytes})
		}
	}
	sort.SliceStable(du.Consumers, func(i, j int) bool { return du.Consumers[i].Bytes > du.Consumers[j].Bytes })
	if len(du.Consumers) > 10 {
		du.Consumers = du.Consumers[:10]
	}
	if du.Pinned, err = d.pinned(ctx); err != nil {
		d.log.WithError(err).Warn("snapvol df")
	}
	return du, nil
}

// parseSourceRef splits SOURCE[@REF] (REF defaults to latest).
func parseSourceRef(s string) (source, ref string, err error) {
	source, ref, _ = strings.Cut(s, "@")
	if ref == "" {
		ref = names.RefLatest
	}
	if why := names.CheckWord(source); why != "" {
		return "", "", fmt.Errorf("%w: source %q %s", names.ErrInvalid, source, why)
	}
	if why := names.CheckWord(ref); why != "" || ref == names.TagEach {
		return "", "", fmt.Errorf("%w: ref %q is not latest, now or a snapshot name", names.ErrInvalid, ref)
	}
	return source, ref, nil
}

// Create makes NAME, a clone of from (SOURCE[@REF]) that the
// operator made: the clone is made now (an operator masking data wants the
// snapshot of this moment). access is what Docker users may do with it
// (store.AccessNone, AccessDocker or AccessSecret; operator.go); with
// AccessSecret the volume's name is NAME with random bits appended, and
// the answer carries it.
func (o *Operator) Create(ctx context.Context, name, from, access string) (admin.Volume, error) {
	d := o.d
	ctx, cancel := d.enterOperator(ctx, "volume create", name)
	defer cancel()
	switch access {
	case store.AccessNone, store.AccessDocker:
	case store.AccessSecret:
		// Checked first, so an error names what the operator typed.
		if _, err := names.Parse(name); err != nil {
			return admin.Volume{}, err
		}
		var err error
		if name, err = secretName(name); err != nil {
			return admin.Volume{}, err
		}
	default:
		return admin.Volume{}, fmt.Errorf("%w: volume %q: access %q is not none, docker or secret", names.ErrInvalid, name, access)
	}
	n, err := names.Parse(name)
	if err != nil {
		return admin.Volume{}, err
	}
	if n.IsClone() {
		return admin.Volume{}, fmt.Errorf("%w: volume %q: an operator volume has a plain name; say what it clones with --from SOURCE[@REF]", names.ErrInvalid, name)
	}
	source, ref, err := parseSourceRef(from)
	if err != nil {
		return admin.Volume{}, fmt.Errorf("volume %q: --from %s: %w", name, from, err)
	}
	if source == name {
		return admin.Volume{}, fmt.Errorf("%w: volume %q cannot be a clone of itself", names.ErrInvalid, name)
	}
	ctx, unlock, err := d.lockVolume(ctx, name)
	if err != nil {
		return admin.Volume{}, err
	}
	defer unlock()
	if old, ok := d.st.Get(name); ok {
		if !old.Operator {
			// Squatting: a Docker user made it first, and whatever they
			// put there must not become the operator's.
			return admin.Volume{}, fmt.Errorf("%w: volume %q exists and Docker users made it (docker volume create or a container's mount): it is not the operator's; choose another name (snapvol volume create NAME --secret makes one nobody can take first)", ErrExists, name)
		}
		return admin.Volume{}, fmt.Errorf("%w: volume %q exists; remove it first (snapvol volume rm %s)", ErrExists, name, name)
	}
	now := d.now()
	r := &store.Record{Name: name, Source: source, Ref: ref, Operator: true, Access: access, Created: now, LastUsed: now}
	if _, err := d.makeClone(ctx, r, "", ""); err != nil {
		return admin.Volume{}, err
	}
	return d.volumeInfo(r, nil, now), nil
}

// Remove removes a volume as docker volume rm does, with the same
// refusals (in use, the source of clone volumes). The operator holds no
// mount, so every counted mount whose holder is running or cannot be seen
// (dockerd, in a managed plugin) refuses it.
func (o *Operator) Remove(ctx context.Context, name string) error {
	if _, ok := o.d.st.Get(name); !ok {
		return fmt.Errorf("%w: %q", ErrNoSuchVolume, name)
	}
	ctx, cancel := o.d.enterOperator(ctx, "volume rm", name)
	defer cancel()
	return o.d.removeVolume(ctx, name)
}

// sourceObject looks a source up for an admin command.
func (d *Driver) sourceObject(ctx context.Context, source string) (storage.Object, error) {
	if why := names.CheckWord(source); why != "" {
		return storage.Object{}, fmt.Errorf("%w: source %q %s", names.ErrInvalid, source, why)
	}
	src, err := d.b.Volume(ctx, source)
	if hint, ok := backendHint(err); ok && errors.Is(err, storage.ErrNotFound) {
		return src, fmt.Errorf("%w: source %q was not found: %s", ErrNoSource, source, hint)
	}
	if errors.Is(err, storage.ErrNotFound) {
		return src, fmt.Errorf("%w: source %q does not exist", ErrNoSource, source)
	}
	if err != nil {
		return src, fmt.Errorf("looking up source %q: %w", source, err)
	}
	return src, nil
}

// cloneUsers maps snapshot object IDs to the volumes with a clone of them.
func (d *Driver) cloneUsers() map[string][]string {
	users := map[string][]string{}
	d.st.Each(func(r *store.Record) {
		seen := map[string]bool{}
		for _, c := range r.Clones() {
			if !seen[c.Snapshot] {
				seen[c.Snapshot] = true
				users[c.Snapshot] = append(users[c.Snapshot], r.Name)
			}
		}
	})
	return users
}

// SnapshotsOf lists the snapshots of source: the names registered for it
// and every other snapshot the backend has of it, oldest first.
func (o *Operator) SnapshotsOf(ctx context.Context, source string) ([]admin.Snapshot, error) {
	d := o.d
	ctx, cancel := d.enterOperator(ctx, "snapshot ls", source)
	defer cancel()
	src, err := d.sourceObject(ctx, source)
	if err != nil {
		return nil, err
	}
	snaps, err := d.b.Snapshots(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("listing snapshots of %q: %w", source, err)
	}
	users := d.cloneUsers()
	registered := map[string]bool{}
	out := []admin.Snapshot{}
	for _, reg := range d.st.RegisteredSnapshots(source) {
		if reg.SourceID != "" && src.Identity != "" && reg.SourceID != src.Identity {
			continue // a removed namesake's
		}
		registered[reg.Object] = true
		out = append(out, admin.Snapshot{Source: source, Name: reg.Name, Time: reg.Time, Kind: reg.Kind, From: reg.From, Object: reg.Object, Clones: orEmpty(users[reg.Object])})
	}
	for _, s := range snaps {
		if registered[s.ID] {
			continue
		}
		kind := storage.Taken(s)
		if kind == "" {
			kind = "external"
		}
		out = append(out, admin.Snapshot{Source: source, Name: s.Name, Time: s.Created.UTC(), Kind: kind, From: s.Labels[storage.LabelFrom], Object: s.ID, Clones: orEmpty(users[s.ID])})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, nil
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	sort.Strings(s)
	return s
}

// CreateSnapshot takes a read-only snapshot of source, or of from (a clone
// volume of source, e.g. after masking), and registers it as source@name.
// With replace an existing name moves to the new snapshot in one write;
// clones of the old one keep their data and the old one is collected once
// nothing uses it.
func (o *Operator) CreateSnapshot(ctx context.Context, source, name, from string, replace bool) (admin.Snapshot, error) {
	d := o.d
	ctx, cancel := d.enterOperator(ctx, "snapshot create", source)
	defer cancel()
	if why := names.CheckWord(name); why != "" || name == names.RefLatest || name == names.RefNow || name == names.TagEach {
		if why == "" {
			why = "is reserved"
		}
		return admin.Snapshot{}, fmt.Errorf("%w: snapshot name %q %s; use a word such as masked or nightly", names.ErrInvalid, name, why)
	}
	src, err := d.sourceObject(ctx, source)
	if err != nil {
		return admin.Snapshot{}, err
	}
	if _, ok := d.st.RegisteredSnapshot(source, name); ok && !replace {
		return admin.Snapshot{}, fmt.Errorf("%w: snapshot %s@%s; add --replace to move the name to a new snapshot", ErrExists, source, name)
	}
	if _, err := d.b.SnapshotByName(ctx, src, name); err == nil {
		return admin.Snapshot{}, fmt.Errorf("%w: source %q has a snapshot named %q that snapvol did not register; choose another name", ErrExists, source, name)
	}
	// The lock order: the volume --from names first, then refs.gc (as a
	// Mount takes them), never the other way round.
	if from != "" {
		var unlock func()
		if ctx, unlock, err = d.lockVolume(ctx, from); err != nil {
			return admin.Snapshot{}, fmt.Errorf("snapshot %s@%s --from %s: %w", source, name, from, err)
		}
		defer unlock()
	}
	// From taking the snapshot until its name is registered, collection
	// would see an unused plugin snapshot.
	ctx, done, err := d.refs.cloning(ctx)
	if err != nil {
		return admin.Snapshot{}, fmt.Errorf("snapshot %s@%s: %w", source, name, err)
	}
	defer done()
	var snap storage.Object
	if from == "" {
		snap, err = d.b.Snapshot(ctx, src, storage.NamedSnapshotLabels(source, name, ""))
	} else {
		snap, err = d.snapshotOfClone(ctx, src, from, name)
	}
	if err != nil {
		return admin.Snapshot{}, fmt.Errorf("snapshot %s@%s: %w", source, name, err)
	}
	reg := store.Snapshot{Source: source, SourceID: src.Identity, Name: name, Object: snap.ID, Kind: storage.TakenNamed, Time: snap.Created.UTC(), From: from}
	if reg.Time.IsZero() {
		reg.Time = d.now()
	}
	old, err := d.st.RegisterSnapshot(reg)
	if err != nil {
		if derr := d.b.Delete(ctx, snap.ID); derr != nil {
			d.log.WithError(derr).WithField("snapshot", snap.ID).Warn("could not delete an unregistered snapshot; the sweep will")
		}
		return admin.Snapshot{}, err
	}
	d.log.WithFields(logrus.Fields{"audit": "snapshot registered", "source": source, "snapshot": name, "object": snap.ID, "from": from}).Info("snapshot registered")
	if old != nil {
		d.log.WithFields(logrus.Fields{"source": source, "snapshot": name, "old_object": old.Object}).Info("snapshot name moved; the old snapshot goes once no clone uses it")
		go func() {
			cctx, cancel := d.ctx()
			defer cancel()
			d.collectSnapshots(cctx, source)
		}()
	}
	return admin.Snapshot{Source: source, Name: name, Time: reg.Time, Kind: reg.Kind, From: from, Object: snap.ID, Clones: []string{}}, nil
}

// snapshotOfClone snapshots the clone of volume from, which must be a
// clone volume of src, filed as src's. The caller holds from's lock.
func (d *Driver) snapshotOfClone(ctx context.Context, src storage.Object, from, name string) (storage.Object, error) {
	r, ok := d.st.Get(from)
	if !ok {
		return storage.Object{}, fmt.Errorf("%w: --from %q", ErrNoSuchVolume, from)
	}
	if !r.Operator {
		// A Docker user's volume holds whatever they wrote (and one of
		// them could remove and remake the name under the operator).
		return storage.Object{}, fmt.Errorf("%w: --from %q is not an operator volume: snapvol snapshot create --from takes only volumes made with snapvol volume create NAME --from %s@now", names.ErrInvalid, from, src.Name)
	}
	if r.Source != src.Name {
		return storage.Object{}, fmt.Errorf("%w: --from %q is not a clone of %q (make one with snapvol volume create NAME --from %s@now)", names.ErrInvalid, from, src.Name, src.Name)
	}
	a := r.Attachment("")
	if a == nil {
		return storage.Object{}, fmt.Errorf("%w: --from %q has no clone: it was destroyed after sitting idle; recreate it with snapvol volume create", ErrNoSuchVolume, from)
	}
	labels := storage.NamedSnapshotLabels(src.Name, name, from)
	if src.Identity != "" {
		labels[storage.LabelSourceID] = src.Identity
	}
	return d.b.SnapshotOf(ctx, storage.Object{ID: a.Object, Name: from, Kind: storage.KindClone}, src, labels)
}

// RemoveSnapshot deletes snapshot source@name, refused while clones use it
// (naming them) and for snapshots snapvol did not take.
func (o *Operator) RemoveSnapshot(ctx context.Context, source, name string) error {
	d := o.d
	ctx, cancel := d.enterOperator(ctx, "snapshot rm", source)
	defer cancel()
	src, err := d.sourceObject(ctx, source)
	if err != nil {
		return err
	}
	ctx, done, err := d.refs.collecting(ctx)
	if err != nil {
		return fmt.Errorf("snapshot %s@%s: %w", source, name, err)
	}
	defer done()
	reg, registered := d.st.RegisteredSnapshot(source, name)
	var obj storage.Object
	if registered {
		obj = storage.Object{ID: reg.Object, Name: name}
	} else if obj, err = d.b.SnapshotByName(ctx, src, name); err != nil {
		return fmt.Errorf("snapshot %s@%s: %w", source, name, err)
	} else if storage.Taken(obj) == "" {
		return fmt.Errorf("%w: snapshot %s@%s was not made by snapvol; delete it with the storage's own tools", storage.ErrProtected, source, name)
	}
	if users := d.cloneUsers()[obj.ID]; len(users) > 0 {
		sort.Strings(users)
		return fmt.Errorf("%w: snapshot %s@%s is used by the clones of %s; remove those volumes first", ErrInUse, source, name, strings.Join(users, ", "))
	}
	if registered {
		if err := d.st.UnregisterSnapshot(source, name); err != nil {
			return err
		}
	}
	if err := d.b.Delete(ctx, obj.ID); err != nil {
		return fmt.Errorf("snapshot %s@%s: deleting %s (the sweep retries): %w", source, name, obj.ID, err)
	}
	d.log.WithFields(logrus.Fields{"audit": "snapshot deleted", "source": source, "snapshot": name, "object": obj.ID}).Info("snapshot deleted")
	return nil
}

// SetSchedule turns on (or changes) the schedule of source (schedule.go);
// its snapshots are not pushed (SetPushedSchedule).
func (o *Operator) SetSchedule(ctx context.Context, source string, every time.Duration, keep int) (admin.Schedule, error) {
	ctx, cancel := o.d.enterOperator(ctx, "schedule", source)
	defer cancel()
	sc, err := o.d.setSchedule(ctx, source, every, keep, "")
	return admin.Schedule(sc), err
}

// SetPushedSchedule is SetSchedule whose snapshots are each pushed to push
// (REGISTRY/REPO[:TAG]) once taken; refused now, naming PUBLISH, when
// PUBLISH would refuse them.
func (o *Operator) SetPushedSchedule(ctx context.Context, source string, every time.Duration, keep int, push string) (admin.Schedule, error) {
	ctx, cancel := o.d.enterOperator(ctx, "schedule", source)
	defer cancel()
	sc, err := o.d.setPushedSchedule(ctx, source, every, keep, push)
	return admin.Schedule(sc), err
}

// ClearSchedule turns the schedule of source off; its scheduled snapshots
// stay until removed.
func (o *Operator) ClearSchedule(source string) error { return o.d.clearSchedule(source) }

// Schedules lists the schedules.
func (o *Operator) Schedules() []admin.Schedule {
	out := []admin.Schedule{}
	for _, sc := range o.d.st.Schedules() {
		out = append(out, admin.Schedule(sc))
	}
	return out
}

// forgetSource drops the registered snapshot names and the schedule of a
// source that was removed; collection then deletes the snapshots no clone
// uses.
func (d *Driver) forgetSource(source string) {
	for _, reg := range d.st.RegisteredSnapshots(source) {
		if err := d.st.UnregisterSnapshot(source, reg.Name); err != nil {
			d.log.WithError(err).WithField("source", source).Warn("dropping the snapshot names of a removed source")
		}
	}
	if err := d.st.DeleteSchedule(source); err != nil {
		d.log.WithError(err).WithField("source", source).Warn("dropping the schedule of a removed source")
	}
}
