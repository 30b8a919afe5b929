package driver

import (
	"fmt"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/driver/store"
)

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func (d *Driver) ttl(r *store.Record) time.Duration {
	if r.TTL != nil {
		return *r.TTL
	}
	return d.cfg.IdleTTL
}

// status is what docker volume inspect shows under Status.
func (d *Driver) status(r *store.Record) map[string]interface{} {
	s := map[string]interface{}{"created": rfc3339(r.Created), "mounts": r.TotalMounts()}
	var objs, mps []string
	for _, k := range r.Keys() {
		a := r.Attachments[k]
		objs = append(objs, a.Object)
		if a.Mounts > 0 {
			mps = append(mps, a.Target)
		}
	}
	if r.Intent != nil {
		s["pending"] = string(r.Intent.Op)
	}
	if h := d.poolHealth(); h != "" {
		s["pool"] = h
	}
	s["options"] = d.optionsStatus(r)
	if !r.IsClone() {
		s["kind"] = "volume"
		s["objects"] = objs
		if len(mps) > 0 {
			s["mountpoints"] = mps
		}
		return s
	}
	s["kind"] = "clone"
	s["source"], s["ref"] = r.Source, r.Ref
	s["ttl"] = d.ttlStatus(r)
	if r.Tag != "" {
		s["tag"] = r.Tag
	}
	s["state"] = "not materialized"
	s["snapshot"], s["snapshot_time"], s["expires"] = "", "", ""
	clones := r.Clones()
	if len(clones) > 0 {
		s["state"] = "materialized"
		last := clones[len(clones)-1]
		s["snapshot"], s["snapshot_time"] = last.SnapshotName, rfc3339(last.SnapshotTime)
		s["clones"] = len(clones)
		s["objects"], s["mountpoints"] = objs, mps
		s["expires"] = d.expires(r)
		d.usageStatus(s, clones)
		if !last.InProgressSince.IsZero() && last.Mounts == 0 {
			s["mount"] = "the storage carries on mounting it since " + rfc3339(last.InProgressSince) + "; mount again to pick it up"
		}
	}
	d.replicaStatus(r, s) // fleet.go
	return s
}

// noOptions is what Status says of the options of a SOURCE@REF name that
// has none: with CLAIM on, Docker never calls Create for such a name (its
// Get answered), so -o options given to docker volume create never reach
// snapvol, yet Docker keeps them in the volume's Options, where docker
// volume inspect shows them beside this.
const noOptions = "none: a SOURCE@REF name takes no -o options (Docker keeps any given under Options without passing them on); options go on a plain name: docker volume create -d snapvol -o from=SOURCE -o ref=REF -o ttl=2h NAME"

// claimedStatus is the Status of a name Get claims: nothing recorded, no
// options, the idle ttl every clone of it will have.
func (d *Driver) claimedStatus() map[string]interface{} {
	return map[string]interface{}{"state": "not materialized", "claimed": true, "mounts": 0,
		"options": noOptions, "ttl": d.ttlStatus(&store.Record{})}
}

// optionsStatus is the -o options in effect on r (from and ref of a plain
// name's clone included), or noOptions for a SOURCE@REF name given none.
func (d *Driver) optionsStatus(r *store.Record) interface{} {
	opts := map[string]string{}
	for k, v := range r.Options {
		opts[k] = v
	}
	if r.TTL != nil {
		opts["ttl"] = r.TTL.String()
	}
	grammar := false
	if n, err := names.Parse(r.Name); err == nil {
		grammar = n.IsClone()
	}
	if r.IsClone() && !grammar && !r.Operator {
		opts["from"], opts["ref"] = r.Source, r.Ref
	}
	if len(opts) == 0 && grammar {
		return noOptions
	}
	return opts
}

// ttlStatus says how long r's clone may sit unmounted, and which setting
// says so.
func (d *Driver) ttlStatus(r *store.Record) string {
	ttl, from := d.cfg.IdleTTL, "IDLE_TTL"
	if r.TTL != nil {
		ttl, from = *r.TTL, "-o ttl"
	}
	if ttl == 0 {
		return "0 (never destroyed: " + from + "=0)"
	}
	return ttl.String() + " (" + from + ")"
}

// expires says what happens to a materialized volume's clones and when.
func (d *Driver) expires(r *store.Record) string {
	ttl := d.reapTTL(r, r.Attachment(""))
	switch {
	case r.Each:
		return "each clone is destroyed when its container's mount ends"
	case ttl == 0:
		return "never"
	case r.TotalMounts() > 0:
		return fmt.Sprintf("%s after the last unmount", ttl)
	}
	return rfc3339(r.LastUsed.Add(ttl))
}

func (d *Driver) apiVolume(r *store.Record) *volume.Volume {
	return &volume.Volume{Name: r.Name, Mountpoint: mountpointOf(r), CreatedAt: rfc3339(r.Created), Status: d.status(r)}
}

// mountpointOf is where a volume is mounted now, "" if it is not (or, for
// +each, where every container has its own).
func mountpointOf(r *store.Record) string {
	if a := r.Attachments[""]; a != nil && a.Mounts > 0 {
		return a.Target
	}
	return ""
}

// usageStatus adds what the clones hold alone and their limit, as the
// last refresh (at most a sweep old) knew them.
func (d *Driver) usageStatus(s map[string]interface{}, clones []*store.Attachment) {
	var bytes, limit int64
	known := false
	for _, c := range clones {
		if u, ok := d.cachedUsage(c.Object); ok {
			known = true
			bytes += u.Bytes
			limit += u.Limit
		}
	}
	if known {
		s["exclusive_bytes"] = bytes
		if limit > 0 {
			s["limit_bytes"] = limit
		}
	}
}
