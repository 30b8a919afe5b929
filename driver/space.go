package driver

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/snapvol/snapvol/admin"
	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/storage"
)

// Space that snapshots and idle clones pin. A clone keeps its snapshot,
// and a snapshot keeps alive whatever its source has rewritten since: an
// idle clone of a snapshot @latest no longer answers with holds old data
// nobody will clone again. Such clones go after SUPERSEDED_TTL, sooner
// than IDLE_TTL. (The backend refuses new snapshots and clones before the
// pool's free space would drop below its reserve; snapvol df shows what
// is pinned, per source and snapshot.)

// spaceState caches, for a moment, the newest snapshot each source's
// clones and registered snapshots know of: Reap asks for every clone.
type spaceState struct {
	mu     sync.Mutex
	at     time.Time
	newest map[string]time.Time
}

// newestSnapshot is when the newest snapshot of source that @latest could
// answer with was taken, as the records know: a snapshot a @latest or @now
// clone was made from, or one registered (a schedule's, a named one) of
// the source itself, not of a masked clone.
func (d *Driver) newestSnapshot(source string) time.Time {
	s := &d.space
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.newest == nil || time.Since(s.at) > time.Second {
		m := map[string]time.Time{}
		d.st.Each(func(r *store.Record) {
			if !r.IsClone() || named(r.Ref) {
				return
			}
			for _, a := range r.Attachments {
				if a.SnapshotTime.After(m[r.Source]) {
					m[r.Source] = a.SnapshotTime
				}
			}
		})
		for _, reg := range d.st.RegisteredSnapshots("") {
			if reg.From == "" && reg.Time.After(m[reg.Source]) {
				m[reg.Source] = reg.Time
			}
		}
		s.newest, s.at = m, time.Now()
	}
	return s.newest[source]
}

// superseded reports whether clone a of r was made from a snapshot its
// ref no longer answers with: for @latest and @now, a newer snapshot of
// the source exists; for @NAME, the name was moved (snapshot create
// --replace).
func (d *Driver) superseded(r *store.Record, a *store.Attachment) bool {
	if a == nil || a.Snapshot == "" || !r.IsClone() {
		return false
	}
	if named(r.Ref) {
		reg, ok := d.st.RegisteredSnapshot(r.Source, r.Ref)
		return ok && reg.Object != a.Snapshot
	}
	return !a.SnapshotTime.IsZero() && d.newestSnapshot(r.Source).After(a.SnapshotTime)
}

// reapTTL is how long clone a of r may sit unmounted: its ttl, or
// SUPERSEDED_TTL when that is shorter and the clone is superseded. A ttl
// the volume was given (-o ttl=) is kept as given.
func (d *Driver) reapTTL(r *store.Record, a *store.Attachment) time.Duration {
	ttl := d.ttl(r)
	sup := d.cfg.SupersededTTL
	if r.TTL != nil || sup <= 0 || (ttl > 0 && ttl <= sup) || !d.superseded(r, a) {
		return ttl
	}
	return sup
}

// pinned measures what snapshots and clones pin, for snapvol df; nil
// where the backend cannot tell.
func (d *Driver) pinned(ctx context.Context) ([]admin.Pinned, error) {
	p := d.cfg.Pinner
	if p == nil {
		p, _ = d.b.(storage.Pinner)
	}
	if p == nil {
		return []admin.Pinned{}, nil
	}
	pu, err := p.Pinned(ctx)
	if err != nil {
		return []admin.Pinned{}, fmt.Errorf("pinned space: %w", err)
	}
	names := map[string]string{} // snapshot object → registered name
	for _, reg := range d.st.RegisteredSnapshots("") {
		names[reg.Object] = reg.Name
	}
	clones := map[string][]string{} // snapshot or clone object → volumes
	d.st.Each(func(r *store.Record) {
		for _, a := range r.Attachments {
			for _, o := range []string{a.Snapshot, a.Object} {
				if o != "" && !containsString(clones[o], r.Name) {
					clones[o] = append(clones[o], r.Name)
				}
			}
		}
	})
	out := []admin.Pinned{}
	for src, n := range pu.Sources {
		out = append(out, admin.Pinned{Source: src, Bytes: n})
	}
	for _, o := range pu.Objects {
		name := o.Name
		if n, ok := names[o.ID]; ok {
			name = n
		}
		if o.Kind == storage.KindClone && len(clones[o.ID]) > 0 {
			name = "(clone of " + clones[o.ID][0] + ")"
		}
		cl := clones[o.ID]
		sort.Strings(cl)
		out = append(out, admin.Pinned{Source: o.Source, Snapshot: name, Bytes: o.Exclusive, Shared: o.Shared, Clones: cl})
	}
	// A source's total first, then its snapshots, largest first.
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Source != b.Source {
			return pu.Sources[a.Source] > pu.Sources[b.Source] || pu.Sources[a.Source] == pu.Sources[b.Source] && a.Source < b.Source
		}
		if (a.Snapshot == "") != (b.Snapshot == "") {
			return a.Snapshot == ""
		}
		return a.Bytes+a.Shared > b.Bytes+b.Shared
	})
	return out, nil
}

func containsString(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
