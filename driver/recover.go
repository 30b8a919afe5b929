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
// registry from snapvol.registered. What lives only in the store is lost:
// -o options (ttl, size), the operator flag, schedules, and the Docker
// mount IDs of +each clones.

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
	// Skipped are objects no record could be made for, with why: the
	// sweep of the next start destroys the clones among them.
	Skipped []string `json:"skipped,omitempty"`
}

// Recover rebuilds the records of an empty store from the objects the
// backend lists as the plugin's. Run it with the plugin stopped, on a
// Fresh store (it refuses one holding records), before Seal.
func (d *Driver) Recover(ctx context.Context, held Holders) (RecoverReport, error) {
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
	now := d.now()
	snapByIdentity := map[string]storage.Object{}
	for _, o := range owned {
		if o.Kind == storage.KindSnapshot && o.Identity != "" {
			snapByIdentity[o.Identity] = o
		}
	}

	// Named snapshots: with --replace several snapshots carry one name;
	// the newest holds it.
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
			name = "scheduled-" + o.Created.UTC().Format("20060102-150405")
		}
		if source == "" || name == "" {
			continue
		}
		k := source + "@" + name
		if cur, ok := named[k]; !ok || o.Created.After(cur.Created) {
			named[k] = o
		}
	}
	regOf := map[string]string{} // snapshot ID -> its registered name
	keys := make([]string, 0, len(named))
	for k := range named {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		o := named[k]
		source := o.Labels[storage.LabelSource]
		name := k[len(source)+1:]
		kind := store.SnapNamed
		if storage.Taken(o) == storage.TakenScheduled {
			kind = store.SnapScheduled
		}
		if _, err := d.st.RegisterSnapshot(store.Snapshot{
			Source: source, SourceID: o.Parent, Name: name, Object: o.ID, Kind: kind,
			Time: o.Created.UTC(), From: o.Labels[storage.LabelFrom],
		}); err != nil {
			return rep, err
		}
		regOf[o.ID] = name
		rep.Snapshots = append(rep.Snapshots, k)
	}

	records := map[string]*store.Record{}
	mounted := map[string]bool{}
	add := func(r *store.Record, key string, a *store.Attachment, made time.Time) {
		if cur, ok := records[r.Name]; ok {
			r = cur
		} else {
			records[r.Name] = r
		}
		if made.Before(r.Created) || r.Created.IsZero() {
			r.Created = made.UTC()
		}
		if a.Mounts > 0 {
			mounted[r.Name] = true
		}
		r.SetAttachment(key, a)
	}
	for _, o := range owned {
		switch o.Kind {
		case storage.KindVolume:
			n, err := names.Parse(o.Name)
			if err != nil || n.IsClone() {
				rep.Skipped = append(rep.Skipped, fmt.Sprintf("volume %s: %q is not a plain volume name", o.ID, o.Name))
				continue
			}
			count, _ := held(o)
			a := &store.Attachment{Object: o.ID, Target: d.target(o.Name, ""), Mounts: count}
			add(&store.Record{Name: o.Name, LastUsed: now}, "", a, o.Created)
		case storage.KindClone:
			vol := o.Labels[storage.LabelVolume]
			if vol == "" {
				rep.Skipped = append(rep.Skipped, fmt.Sprintf("clone %s: its labels do not name its volume", o.ID))
				continue
			}
			r := &store.Record{Name: vol, LastUsed: now}
			n, err := names.Parse(vol)
			switch {
			case err == nil && n.IsClone():
				r.Source, r.Ref, r.Tag, r.Each = n.Source, n.Ref, n.Tag, n.Each()
			case err == nil:
				// A plain name made a clone with -o from= (or snapvol
				// volume create): the source is in the labels, the ref
				// is the registered name of its snapshot if it has one.
				r.Source, r.Ref = o.Labels[storage.LabelSource], names.RefLatest
			default:
				rep.Skipped = append(rep.Skipped, fmt.Sprintf("clone %s: volume name %q: %v", o.ID, vol, err))
				continue
			}
			if r.Source == "" {
				rep.Skipped = append(rep.Skipped, fmt.Sprintf("clone %s of volume %s: its labels do not name its source", o.ID, vol))
				continue
			}
			count, target := held(o)
			a := &store.Attachment{Object: o.ID, Mounts: count, Made: o.Created.UTC()}
			if s, ok := snapByIdentity[o.Parent]; ok {
				a.Snapshot, a.SnapshotName, a.SnapshotTime = s.ID, s.Name, s.Created.UTC()
				if reg, ok := regOf[s.ID]; ok {
					a.SnapshotName = reg
					if err == nil && !n.IsClone() {
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
				a.Target = d.target(vol, "")
			}
			if cur, ok := records[vol]; ok && cur.Attachment(key) != nil {
				// Two clones for one non-each volume (a crash between
				// making one and recording it): the held or newer one is
				// kept, the other is an orphan.
				old := cur.Attachment(key)
				if old.Mounts > a.Mounts || old.Mounts == a.Mounts && old.Made.After(a.Made) {
					rep.Skipped = append(rep.Skipped, fmt.Sprintf("clone %s of volume %s: the volume has another clone", o.ID, vol))
					continue
				}
				rep.Skipped = append(rep.Skipped, fmt.Sprintf("clone %s of volume %s: the volume has another clone", old.Object, vol))
				rep.Clones--
			}
			add(r, key, a, o.Created)
			rep.Clones++
		}
	}
	for name, r := range records {
		if err := d.st.Put(r); err != nil {
			return rep, fmt.Errorf("volume %q: %w", name, err)
		}
		rep.Volumes = append(rep.Volumes, name)
	}
	for name := range mounted {
		rep.Mounted = append(rep.Mounted, name)
	}
	sort.Strings(rep.Volumes)
	sort.Strings(rep.Mounted)
	return rep, nil
}
