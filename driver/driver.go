// Package driver is snapvol's Docker VolumeDriver: it maps Docker volume
// names to records in the store and to clones in a storage.Backend, counts
// mounts, and repairs what a crash interrupted. It knows nothing of btrfs
// or HTTP.
package driver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/keylock"
	"github.com/snapvol/snapvol/storage"
)

// Config wires a Driver.
type Config struct {
	Backend  storage.Backend
	Store    *store.Store
	DataRoot string
	// LatestMaxAge is how old a snapshot @latest may reuse.
	LatestMaxAge time.Duration
	// IdleTTL is how long an unmounted clone lives (0 = forever).
	IdleTTL time.Duration
	// Sources are glob patterns of sources that may be cloned.
	Sources []string
	// Claim makes Get answer for grammar names not yet created.
	Claim bool
	// OpTimeout bounds the backend calls of one request together, well
	// inside Docker's 30 s.
	OpTimeout time.Duration
	// SlowAfter is how long a request runs before its progress is logged
	// (and again every SlowAfter); 0 means 2 s.
	SlowAfter time.Duration
	Log       *logrus.Logger
	Now       func() time.Time
	// Failpoint, when set, is called at every step between a recorded
	// intent and its completion; crash tests make it kill the process.
	Failpoint func(name string)
}

// Driver implements volume.Driver.
type Driver struct {
	cfg      Config
	b        storage.Backend
	st       *store.Store
	log      *logrus.Logger
	resolver *storage.Resolver
	locks    keylock.Map
	// gc is held for reading from choosing a snapshot until the clone made
	// from it is recorded, and for writing while snapshots are collected,
	// so a snapshot is never collected between the two.
	gc       sync.RWMutex
	inflight sync.WaitGroup

	claimMu    sync.Mutex
	claimCache map[string]claimEntry

	// unreconciled are the volumes reconcile at start did not finish (its
	// budget ran out, or the backend failed): Run retries them.
	unreconciledMu sync.Mutex
	unreconciled   map[string]bool
}

type claimEntry struct {
	ok bool
	at time.Time
}

var _ volume.Driver = (*Driver)(nil)

// New returns a driver; call Reconcile before serving.
func New(cfg Config) *Driver {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.OpTimeout == 0 {
		cfg.OpTimeout = 25 * time.Second
	}
	if cfg.SlowAfter == 0 {
		cfg.SlowAfter = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	return &Driver{
		cfg: cfg, b: cfg.Backend, st: cfg.Store, log: cfg.Log,
		resolver:   &storage.Resolver{Backend: cfg.Backend, MaxAge: cfg.LatestMaxAge, Now: cfg.Now},
		claimCache: map[string]claimEntry{}, unreconciled: map[string]bool{},
	}
}

func (d *Driver) failpoint(name string) {
	if d.cfg.Failpoint != nil {
		d.cfg.Failpoint(name)
	}
}

func (d *Driver) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d.cfg.OpTimeout)
}

// op tracks one Docker request: the returned func logs one line with the
// volume, duration and outcome, and lets Drain wait for it.
func (d *Driver) op(op, name string, err *error) func() {
	d.inflight.Add(1)
	start := time.Now()
	return func() {
		defer d.inflight.Done()
		e := d.log.WithFields(logrus.Fields{"op": op, "volume": name, "ms": time.Since(start).Milliseconds()})
		if *err != nil {
			e.WithError(*err).Warn(op + " failed")
			return
		}
		e.Info(op)
	}
}

// Drain waits up to timeout for requests in flight to finish.
func (d *Driver) Drain(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { d.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// target is where a volume (or one +each mount of it) is mounted. It is
// derived from the name, never the name itself, so no name reaches the
// filesystem as a path.
func (d *Driver) target(name, mountID string) string {
	sum := sha256.Sum256([]byte(name + "\x00" + mountID))
	safe := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, name)
	if len(safe) > 80 {
		safe = safe[:80]
	}
	return filepath.Join(d.cfg.DataRoot, safe+"-"+hex.EncodeToString(sum[:6]))
}

// isTargetName reports whether a directory name under DATA_ROOT has the
// shape target gives, so reconcile leaves anything else there alone.
func isTargetName(n string) bool {
	i := strings.LastIndexByte(n, '-')
	if i < 0 || len(n)-i-1 != 12 {
		return false
	}
	if _, err := hex.DecodeString(n[i+1:]); err != nil || strings.ToLower(n[i+1:]) != n[i+1:] {
		return false
	}
	for _, r := range n[:i] {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func (d *Driver) sourceAllowed(source string) bool {
	if len(d.cfg.Sources) == 0 {
		return true
	}
	for _, p := range d.cfg.Sources {
		if ok, _ := path.Match(p, source); ok {
			return true
		}
	}
	return false
}

// newRecord validates a name and its options and returns the record it
// would make, without writing anything.
func (d *Driver) newRecord(ctx context.Context, raw string, opts map[string]string) (*store.Record, error) {
	n, err := names.Parse(raw)
	if err != nil {
		return nil, err
	}
	n, o, err := names.Resolve(n, opts, d.b.OptionKey)
	if err != nil {
		return nil, err
	}
	kind := storage.KindVolume
	if n.IsClone() {
		kind = storage.KindClone
	}
	if err := d.b.CheckOptions(kind, o.Backend); err != nil {
		return nil, fmt.Errorf("%w: volume %q: %w", names.ErrInvalid, raw, err)
	}
	r := &store.Record{Name: raw, TTL: o.TTL, Options: o.Backend, Created: d.cfg.Now().UTC(), LastUsed: d.cfg.Now().UTC()}
	if !n.IsClone() {
		return r, nil
	}
	r.Source, r.Ref, r.Tag, r.Each = n.Source, n.Ref, n.Tag, n.Each()
	if !d.sourceAllowed(n.Source) {
		return nil, fmt.Errorf("%w: volume %q: source %q does not match SOURCES=%s; add a pattern for it with `docker plugin set snapvol SOURCES=...`",
			ErrNotAllowed, raw, n.Source, strings.Join(d.cfg.Sources, ","))
	}
	src, err := d.b.Volume(ctx, n.Source)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: volume %q: source %q does not exist; create it first (docker volume create -d snapvol %s) or check the name", ErrNoSource, raw, n.Source, n.Source)
	}
	if err != nil {
		return nil, fmt.Errorf("volume %q: looking up source %q: %w", raw, n.Source, err)
	}
	if n.Ref != names.RefLatest && n.Ref != names.RefNow {
		if _, err := d.b.SnapshotByName(ctx, src, n.Ref); err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				return nil, fmt.Errorf("volume %q: snapshot %q of source %q does not exist; use @latest, @now or an existing snapshot: %w", raw, n.Ref, n.Source, err)
			}
			return nil, fmt.Errorf("volume %q: looking up snapshot %q: %w", raw, n.Ref, err)
		}
	}
	return r, nil
}

// Create makes the record of a volume. A plain name makes an empty regular
// volume now; a clone is made at the first Mount, so it is as fresh as the
// container that uses it.
func (d *Driver) Create(req *volume.CreateRequest) (err error) {
	ctx, end := d.begin("create", req.Name, &err)
	defer end()
	r, err := d.newRecord(ctx, req.Name, req.Options)
	if err != nil {
		return err
	}
	defer d.locks.Lock(req.Name)()
	if old, ok := d.st.Get(req.Name); ok {
		if creating(old) {
			return errUnfinished(old)
		}
		return nil // Docker ignores options on later creates; so do we.
	}
	if r.IsClone() {
		return d.st.Put(r)
	}
	r.Pending = &store.Pending{Op: store.OpCreate, Since: d.cfg.Now().UTC()}
	if err := d.st.Put(r); err != nil {
		return err
	}
	d.failpoint("create:intent")
	step(ctx, "creating the volume in the backend")
	obj, err := d.b.CreateVolume(ctx, req.Name, r.Options)
	d.failpoint("create:made")
	if errors.Is(err, storage.ErrUnavailable) {
		// A server that timed out may still have made the volume: dropping
		// the record now could leave one nothing refers to. The intent
		// stays for Run to finish or undo once the backend answers.
		return fmt.Errorf("volume %q: creating: %w; the plugin finishes or undoes this create within a minute of the backend answering again, then retry", req.Name, err)
	}
	if err != nil {
		if derr := d.st.Delete(req.Name); derr != nil {
			d.log.WithError(derr).WithField("volume", req.Name).Error("could not drop record of failed create; reconcile will")
		}
		return fmt.Errorf("volume %q: creating: %w", req.Name, err)
	}
	r.Object, r.Pending = obj.ID, nil
	return d.st.Put(r)
}

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

func (d *Driver) status(r *store.Record) map[string]interface{} {
	s := map[string]interface{}{"created": rfc3339(r.Created), "mounts": r.TotalMounts()}
	if !r.IsClone() {
		s["kind"] = "volume"
		s["objects"] = []string{r.Object}
		if r.Mounts > 0 {
			s["mountpoints"] = []string{r.Target}
		}
		return s
	}
	s["kind"] = "clone"
	s["source"], s["ref"] = r.Source, r.Ref
	if r.Tag != "" {
		s["tag"] = r.Tag
	}
	clones := r.Clones()
	s["state"] = "not materialized"
	s["snapshot"], s["snapshot_time"], s["expires"] = "", "", ""
	if len(clones) > 0 {
		s["state"] = "materialized"
		// A volume has either its Clone or +each clones, never both.
		last := clones[len(clones)-1]
		s["snapshot"], s["snapshot_time"] = last.SnapshotName, rfc3339(last.SnapshotTime)
		s["clones"] = len(clones)
		var objs, mps []string
		for _, c := range clones {
			objs = append(objs, c.Object)
			if c.Mounts > 0 {
				mps = append(mps, c.Target)
			}
		}
		s["objects"], s["mountpoints"] = objs, mps
		if ttl := d.ttl(r); ttl == 0 {
			s["expires"] = "never"
		} else if r.TotalMounts() > 0 {
			s["expires"] = fmt.Sprintf("%s after the last unmount", ttl)
		} else {
			s["expires"] = rfc3339(r.LastUsed.Add(ttl))
		}
	}
	if r.Pending != nil {
		s["pending"] = r.Pending.Op
	}
	return s
}

func (d *Driver) apiVolume(r *store.Record) *volume.Volume {
	return &volume.Volume{Name: r.Name, Mountpoint: mountpoint(r), CreatedAt: rfc3339(r.Created), Status: d.status(r)}
}

// mountpoint is where a volume is mounted now, "" if it is not (or, for
// +each, where every container has its own).
func mountpoint(r *store.Record) string {
	switch {
	case r.Target != "" && r.Mounts > 0:
		return r.Target
	case r.Clone != nil && r.Clone.Mounts > 0:
		return r.Clone.Target
	}
	return ""
}

// creating reports whether r is a create not known to have succeeded (the
// backend timed out): not a volume yet, so Get and List do not show it
// (Docker, whose Create failed, would otherwise take it for one, and its
// retry would succeed without a volume), and a new Create is told to wait.
func creating(r *store.Record) bool {
	return r.Pending != nil && r.Pending.Op == store.OpCreate
}

// Get answers from the index only. For a grammar name not yet created it
// claims the name when CLAIM is on and its source is allowed and exists.
func (d *Driver) Get(req *volume.GetRequest) (*volume.GetResponse, error) {
	if r, ok := d.st.Get(req.Name); ok && !creating(r) {
		return &volume.GetResponse{Volume: d.apiVolume(r)}, nil
	}
	if d.cfg.Claim && d.claimable(req.Name) {
		return &volume.GetResponse{Volume: &volume.Volume{Name: req.Name, Status: map[string]interface{}{
			"state": "not materialized", "claimed": true, "mounts": 0,
		}}}, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrNoSuchVolume, req.Name)
}

// claimable reports, cheaply, whether Get should answer for an unknown
// name. Docker asks every plugin about every name it does not know, so
// anything not in the grammar is answered from the name alone, and source
// existence is cached for a few seconds.
func (d *Driver) claimable(raw string) bool {
	n, err := names.Parse(raw)
	if err != nil || !n.IsClone() || !d.sourceAllowed(n.Source) {
		return false
	}
	if r, ok := d.st.Get(n.Source); ok && !r.IsClone() {
		return true
	}
	now := d.cfg.Now()
	d.claimMu.Lock()
	e, ok := d.claimCache[n.Source]
	d.claimMu.Unlock()
	if ok && now.Sub(e.at) < 10*time.Second {
		return e.ok
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = d.b.Volume(ctx, n.Source)
	// A backend that cannot answer (Portworx down) must not make Get deny
	// a name Docker may already hold as ours: Docker forgets a volume whose
	// Get fails, and the Mount will say what is wrong if the source really
	// is missing. The answer is cached like the others, so Docker's probes
	// do not each wait for a hung server.
	claim := !errors.Is(err, storage.ErrNotFound)
	d.claimMu.Lock()
	if len(d.claimCache) > 1024 {
		d.claimCache = map[string]claimEntry{}
	}
	d.claimCache[n.Source] = claimEntry{ok: claim, at: now}
	d.claimMu.Unlock()
	return claim
}

// List answers from the index only, allocating the answer in one piece
// (Docker lists often, and a host may have 10,000 volumes).
func (d *Driver) List() (*volume.ListResponse, error) {
	n := d.st.Len()
	vols := make([]volume.Volume, 0, n)
	out := make([]*volume.Volume, 0, n)
	d.st.Each(func(r *store.Record) {
		if creating(r) {
			return
		}
		vols = append(vols, volume.Volume{Name: r.Name, Mountpoint: mountpoint(r), CreatedAt: rfc3339(r.Created)})
		out = append(out, &vols[len(vols)-1])
	})
	return &volume.ListResponse{Volumes: out}, nil
}

// Path returns the mount point of a mounted volume, or "" if unmounted.
func (d *Driver) Path(req *volume.PathRequest) (*volume.PathResponse, error) {
	r, ok := d.st.Get(req.Name)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNoSuchVolume, req.Name)
	}
	return &volume.PathResponse{Mountpoint: mountpoint(r)}, nil
}

// Capabilities: the scope is the backend's (local btrfs pool, or storage
// shared by a cluster).
func (d *Driver) Capabilities() *volume.CapabilitiesResponse {
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: d.b.Scope()}}
}
