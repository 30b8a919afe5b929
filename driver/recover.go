package driver

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/storage"
)

// Recovering the records from the pool (snapvol recover). The backend
// labels every object the plugin makes with what it is and whose it is
// (storage/labels.go), so when the store is lost the records can be
// rebuilt from the objects alone: a plain volume's record from its
// volume, a clone volume's from its clones (the volume name is the
// grammar name, which says source, ref and tag), and the named snapshots'
// registry from snapvol.registered; a clone volume's operator mark and
// access, ref and ttl from its clones' labels (storage/clonevolume.go,
// written by cloneLabels). What lives only in the store is lost: backend
// -o options (size), schedules, and the Docker mount IDs of +each clones.

// Holders says, for a backend object, how many mounts of it containers (or
// other processes) hold now, and where it is mounted under DATA_ROOT in
// this mount namespace ("" if nowhere): recover counts mounts from what
// is mounted, since the counts were in the lost store. nil: nothing is
// held.
type Holders func(o storage.Object) (count int, target string)

// RecoverReport is what Recover rebuilt.
type RecoverReport struct {
	Volumes   []string `json:"volumes"`
	Clones    int      `json:"clones"`
	Snapshots []string `json:"snapshots"` // SOURCE@NAME registered again
	Mounted   []string `json:"mounted"`   // volumes with mounts counted
	// Operator are the operator volumes rebuilt as such, with what Docker
	// users may do with each (storage.OperatorNone, OperatorDocker or
	// OperatorSecret).
	Operator map[string]string `json:"operator,omitempty"`
	// Skipped are objects no record could be made for, with why: the
	// sweep of the next start destroys the clones among them.
	Skipped []string `json:"skipped,omitempty"`
}

// Recover rebuilds the records of an empty store from the objects the
// backend lists as the plugin's. Run it with the plugin stopped, on a
// Fresh store (it refuses one holding records), before Seal.
func (o *Operator) Recover(ctx context.Context, held Holders) (RecoverReport, error) {
	d := o.d
	var rep RecoverReport
	if d.st.Len() > 0 || len(d.st.RegisteredSnapshots("")) > 0 {
		return rep, fmt.Errorf("the store %s holds records already; recover rebuilds an empty one", d.st.Path())
	}
	if held == nil {
		held = func(storage.Object) (int, string) { return 0, "" }
	}
	owned, err := d.b.Owned(ctx)
	if err != nil {
		return rep, fmt.Errorf("listing the objects snapvol made: %w", err)
	}
	rc := &recovery{
		d: d, held: held, now: d.now(),
		snapByIdentity: map[string]storage.Object{}, regOf: map[string]string{},
		records: map[string]*store.Record{}, mounted: map[string]bool{},
	}
	for _, o := range owned {
		if o.Kind == storage.KindSnapshot && o.Identity != "" {
			rc.snapByIdentity[o.Identity] = o
		}
	}
	if err := rc.registerSnapshots(newestNamed(owned)); err != nil {
		return rc.rep, err
	}
	anchors := replicaAnchors(owned) // fleet.go
	for _, o := range owned {
		switch o.Kind {
		case storage.KindVolume:
			if !anchors[o.Name] {
				rc.recoverVolume(o)
			}
		case storage.KindClone:
			rc.recoverClone(o)
		}
	}
	return rc.save()
}

// recovery is one Recover in progress: what the pool holds, and the
// records rebuilt from it so far.
type recovery struct {
	d              *Driver
	held           Holders
	now            time.Time
	rep            RecoverReport
	snapByIdentity map[string]storage.Object
	regOf          map[string]string // snapshot ID -> its registered name
	records        map[string]*store.Record
	mounted        map[string]bool // volumes with mounts counted
}

// newestNamed finds the named and scheduled snapshots among owned, by
// SOURCE@NAME: with --replace several snapshots carry one name; the
// newest holds it.
func newestNamed(owned []storage.Object) map[string]storage.Object {
	named := map[string]storage.Object{}
	for _, o := range owned {
		if o.Kind != storage.KindSnapshot {
			continue
		}
		source := o.Labels[storage.LabelSource]
		var name string
		switch storage.Taken(o) {
		case storage.TakenNamed:
			name = o.Labels[storage.LabelRegistered]
		case storage.TakenScheduled:
			// A schedule names its snapshots after the time taken.
			name = store.ScheduledName(o.Created)
		}
		if source == "" || name == "" {
			continue
		}
		k := source + "@" + name
		if cur, ok := named[k]; !ok || o.Created.After(cur.Created) {
			named[k] = o
		}
	}
	return named
}

// registerSnapshots registers the named snapshots again, in SOURCE@NAME
// order.
func (rc *recovery) registerSnapshots(named map[string]storage.Object) error {
	keys := make([]string, 0, len(named))
	for k := range named {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		o := named[k]
		source := o.Labels[storage.LabelSource]
		name := k[len(source)+1:]
		kind := storage.TakenNamed
		if storage.Taken(o) == storage.TakenScheduled {
			kind = storage.TakenScheduled
		}
		if _, err := rc.d.st.RegisterSnapshot(store.Snapshot{
			Source: source, SourceID: o.Parent, Name: name, Object: o.ID, Kind: kind,
			Time: o.Created.UTC(), From: o.Labels[storage.LabelFrom],
		}); err != nil {
			return err
		}
		rc.regOf[o.ID] = name
		rc.rep.Snapshots = append(rc.rep.Snapshots, k)
	}
	return nil
}

// add puts attachment a (made at made) under key in the record of r's
// name, r itself if there is none yet.
func (rc *recovery) add(r *store.Record, key string, a *store.Attachment, made time.Time) {
	if cur, ok := rc.records[r.Name]; ok {
		r = cur
	} else {
		rc.records[r.Name] = r
	}
	if made.Before(r.Created) || r.Created.IsZero() {
		r.Created = made.UTC()
	}
	if a.Mounts > 0 {
		rc.mounted[r.Name] = true
	}
	r.SetAttachment(key, a)
}

// recoverVolume rebuilds the record of plain volume o.
func (rc *recovery) recoverVolume(o storage.Object) {
	n, err := names.Parse(o.Name)
	if err != nil || n.IsClone() {
		rc.rep.Skipped = append(rc.rep.Skipped, fmt.Sprintf("volume %s: %q is not a plain volume name", o.ID, o.Name))
		return
	}
	count, _ := rc.held(o)
	a := &store.Attachment{Object: o.ID, Target: rc.d.target(o.Name, ""), Mounts: count}
	rc.add(&store.Record{Name: o.Name, LastUsed: rc.now}, "", a, o.Created)
}

// recoverClone adds clone o to the record of the volume its labels name.
func (rc *recovery) recoverClone(o storage.Object) {
	vol := o.Labels[storage.LabelVolume]
	r, plain, ok := rc.cloneRecord(o, vol)
	if !ok {
		return
	}
	count, target := rc.held(o)
	a := &store.Attachment{Object: o.ID, Mounts: count, Made: o.Created.UTC()}
	if s, ok := rc.snapByIdentity[o.Parent]; ok {
		a.Snapshot, a.SnapshotName, a.SnapshotTime = s.ID, s.Name, s.Created.UTC()
		if reg, ok := rc.regOf[s.ID]; ok {
			a.SnapshotName = reg
			if plain && o.Labels[storage.LabelRef] == "" { // labelled before LabelRef
				r.Ref = reg
			}
		}
	}
	key := ""
	if r.Each {
		// The Docker mount ID it was made for is lost: its own key,
		// and the target it is mounted at now, if any.
		key, a.Target = "recovered-"+o.Name, target
	} else {
		a.Target = rc.d.target(vol, "")
	}
	if cur, ok := rc.records[vol]; ok && cur.Attachment(key) != nil {
		// Two clones for one non-each volume (a crash between
		// making one and recording it): the held or newer one is
		// kept, the other is an orphan.
		old := cur.Attachment(key)
		if old.Mounts > a.Mounts || old.Mounts == a.Mounts && old.Made.After(a.Made) {
			rc.rep.Skipped = append(rc.rep.Skipped, fmt.Sprintf("clone %s of volume %s: the volume has another clone", o.ID, vol))
			return
		}
		rc.rep.Skipped = append(rc.rep.Skipped, fmt.Sprintf("clone %s of volume %s: the volume has another clone", old.Object, vol))
		rc.rep.Clones--
	}
	rc.add(r, key, a, o.Created)
	rc.rep.Clones++
}

// cloneRecord is the record clone o's volume vol is rebuilt as: source,
// ref and tag from the grammar name, or for a plain name (plain) the
// source from the labels. ok is false, and o skipped, when there is none.
func (rc *recovery) cloneRecord(o storage.Object, vol string) (r *store.Record, plain, ok bool) {
	if vol == "" {
		rc.rep.Skipped = append(rc.rep.Skipped, fmt.Sprintf("clone %s: its labels do not name its volume", o.ID))
		return nil, false, false
	}
	r = &store.Record{Name: vol, LastUsed: rc.now}
	n, err := names.Parse(vol)
	switch {
	case err == nil && n.IsClone():
		r.Source, r.Ref, r.Tag, r.Each = n.Source, n.Ref, n.Tag, n.Each()
	case err == nil:
		// A plain name made a clone with -o from= (or snapvol
		// volume create): the source is in the labels, the ref
		// is the registered name of its snapshot if it has one.
		r.Source, r.Ref = o.Labels[storage.LabelSource], names.RefLatest
		plain = true
	default:
		rc.rep.Skipped = append(rc.rep.Skipped, fmt.Sprintf("clone %s: volume name %q: %v", o.ID, vol, err))
		return nil, false, false
	}
	if r.Source == "" {
		rc.rep.Skipped = append(rc.rep.Skipped, fmt.Sprintf("clone %s of volume %s: its labels do not name its source", o.ID, vol))
		return nil, false, false
	}
	recordFromLabels(r, o.Labels, plain)
	return r, plain, true
}

// cloneLabels are the labels of a clone made for r: CloneLabels, and what
// recover needs to rebuild r from them (storage/clonevolume.go): above
// all the operator mark, without which a recovered operator volume would
// be a Docker volume (a --secret clone of raw production listed and
// mountable by every Docker user).
func cloneLabels(r *store.Record) map[string]string {
	l := storage.CloneLabels(r.Name, r.Source)
	if r.Ref != "" {
		l[storage.LabelRef] = r.Ref
	}
	if r.TTL != nil {
		l[storage.LabelTTL] = r.TTL.String()
	}
	if r.Operator {
		switch r.Access {
		case store.AccessDocker:
			l[storage.LabelOperator] = storage.OperatorDocker
		case store.AccessSecret:
			l[storage.LabelOperator] = storage.OperatorSecret
		default:
			l[storage.LabelOperator] = storage.OperatorNone
		}
	}
	return l
}

// recordFromLabels sets on r what clone labels l say beyond its name and
// source; a label absent (a clone made before it existed) leaves r as the
// name alone makes it. plain: r's name is plain, so only the label can
// say its ref.
func recordFromLabels(r *store.Record, l map[string]string, plain bool) {
	if ref := l[storage.LabelRef]; plain && ref != "" && names.CheckWord(ref) == "" && ref != names.TagEach {
		r.Ref = ref
	}
	if v, ok := l[storage.LabelTTL]; ok {
		if ttl, err := time.ParseDuration(v); err == nil && ttl >= 0 {
			r.TTL = &ttl
		}
	}
	switch v, ok := l[storage.LabelOperator]; {
	case !ok:
	case v == storage.OperatorDocker:
		r.Operator, r.Access = true, store.AccessDocker
	case v == storage.OperatorSecret:
		r.Operator, r.Access = true, store.AccessSecret
	default:
		// OperatorNone, or a value this version does not know: the
		// operator's, and the least Docker users may do with it.
		r.Operator, r.Access = true, store.AccessNone
	}
}

// save writes the rebuilt records and completes the report.
func (rc *recovery) save() (RecoverReport, error) {
	for name, r := range rc.records {
		if err := rc.d.st.Put(r); err != nil {
			return rc.rep, fmt.Errorf("volume %q: %w", name, err)
		}
		rc.rep.Volumes = append(rc.rep.Volumes, name)
	}
	for name, r := range rc.records {
		if !r.Operator {
			continue
		}
		if rc.rep.Operator == nil {
			rc.rep.Operator = map[string]string{}
		}
		rc.rep.Operator[name] = cloneLabels(r)[storage.LabelOperator]
	}
	for name := range rc.mounted {
		rc.rep.Mounted = append(rc.rep.Mounted, name)
	}
	sort.Strings(rc.rep.Volumes)
	sort.Strings(rc.rep.Mounted)
	return rc.rep, nil
}
