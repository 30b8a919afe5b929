package driver

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/storage"
)

// The eight VolumeDriver handlers. Get, List and Path answer from the
// store's index only; the others go to the backend within one budget.

// newRecord validates a name and its options and returns the record it
// would make, without writing anything.
func (d *Driver) newRecord(ctx context.Context, raw string, opts map[string]string) (*store.Record, error) {
	n, err := names.Parse(raw)
	if err != nil {
		return nil, err
	}
	n, o, err := names.WithOptions(n, opts, d.b.OptionKey)
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
	r := &store.Record{Name: raw, TTL: o.TTL, Options: o.Backend, Created: d.now(), LastUsed: d.now()}
	if !n.IsClone() {
		if err := d.refuseReplicaVolume(raw); err != nil {
			return nil, err
		}
		return r, nil
	}
	r.Source, r.Ref, r.Tag, r.Each = n.Source, n.Ref, n.Tag, n.Each()
	if !d.allowed(r) {
		return nil, d.errNotAllowed(r)
	}
	if err := d.ensureReplica(ctx, n.Source, n.Ref); err != nil {
		return nil, fmt.Errorf("volume %q: %w", raw, err)
	}
	src, err := d.b.Volume(ctx, n.Source)
	if hint, ok := backendHint(err); ok && errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: volume %q: source %q was not found: %s", ErrNoSource, raw, n.Source, hint)
	}
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: volume %q: source %q does not exist; create it first (docker volume create -d snapvol %s) or check the name", ErrNoSource, raw, n.Source, n.Source)
	}
	if err != nil {
		return nil, fmt.Errorf("volume %q: looking up source %q: %w", raw, n.Source, err)
	}
	if named(n.Ref) {
		if _, err := d.refs.lookup(ctx, src, n.Ref); err != nil {
			return nil, fmt.Errorf("volume %q: %w", raw, err)
		}
	}
	return r, nil
}

// Create makes the record of a volume. A plain name makes an empty regular
// volume now; a clone is made at the first Mount, so it is as fresh as the
// container that uses it.
func (d *Driver) Create(req *volume.CreateRequest) error {
	return d.As(CallerUnknown).Create(req)
}

func (d *Driver) create(ctx context.Context, req *volume.CreateRequest) error {
	r, err := d.newRecord(ctx, req.Name, req.Options)
	if err != nil {
		return err
	}
	ctx, unlock, err := d.lockVolume(ctx, req.Name)
	if err != nil {
		return err
	}
	defer unlock()
	if old, ok := d.st.Get(req.Name); ok {
		if creating(old) {
			return errUnfinished(old)
		}
		if !dockerSees(old) {
			// The operator's: a Docker Create must not make it Docker's.
			return errOperatorOnly(old, "create, mount or remove")
		}
		return nil // Docker ignores options on later creates; so do we.
	}
	if r.IsClone() {
		return d.st.Put(r)
	}
	// A server that timed out may still have made the volume: dropping the
	// record then could leave one nothing refers to, so the intent stays
	// for Run to finish or undo once the backend answers.
	unavailable := func(err error) bool { return errors.Is(err, storage.ErrUnavailable) }
	err = d.withIntent(r, store.OpCreate, "", unavailable, func() error {
		step(ctx, "creating the volume in the backend")
		obj, err := d.b.CreateVolume(ctx, req.Name, r.Options)
		d.failpoint("create:made")
		if err != nil {
			return err
		}
		r.SetAttachment("", &store.Attachment{Object: obj.ID})
		return nil
	})
	if unavailable(err) {
		return fmt.Errorf("volume %q: creating: %w; the plugin finishes or undoes this create within a minute of the backend answering again, then retry", req.Name, err)
	}
	if err != nil {
		return fmt.Errorf("volume %q: creating: %w", req.Name, err)
	}
	return nil
}

// creating reports whether r is a create not known to have succeeded (the
// backend timed out): not a volume yet, so Get and List do not show it
// (Docker, whose Create failed, would otherwise take it for one, and its
// retry would succeed without a volume), and a new Create is told to wait.
func creating(r *store.Record) bool {
	return r.Intent != nil && r.Intent.Op == store.OpCreate
}

// Get answers from the index only. For a grammar name not yet created it
// claims the name when CLAIM is on and its source is allowed and exists.
func (d *Driver) Get(req *volume.GetRequest) (*volume.GetResponse, error) {
	if r, ok := d.st.Get(req.Name); ok && !creating(r) && dockerSees(r) {
		return &volume.GetResponse{Volume: d.apiVolume(r)}, nil
	}
	if d.cfg.Claim && d.claimable(req.Name) {
		return &volume.GetResponse{Volume: &volume.Volume{Name: req.Name, Status: d.claimedStatus()}}, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrNoSuchVolume, req.Name)
}

// claimable reports, cheaply, whether Get should answer for an unknown
// name. Docker asks every plugin about every name it does not know, so
// anything not in the grammar is answered from the name alone, and source
// existence is cached for a few seconds.
func (d *Driver) claimable(raw string) bool {
	n, err := names.Parse(raw)
	if err != nil || !n.IsClone() || !d.cfg.Sources.Allows(n.Source, n.Ref) {
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
		if creating(r) || !dockerLists(r) {
			return
		}
		vols = append(vols, volume.Volume{Name: r.Name, Mountpoint: mountpointOf(r), CreatedAt: rfc3339(r.Created)})
		out = append(out, &vols[len(vols)-1])
	})
	return &volume.ListResponse{Volumes: out}, nil
}

// Path returns the mount point of a mounted volume, or "" if unmounted.
func (d *Driver) Path(req *volume.PathRequest) (*volume.PathResponse, error) {
	r, ok := d.st.Get(req.Name)
	if !ok || !dockerSees(r) {
		return nil, fmt.Errorf("%w: %q", ErrNoSuchVolume, req.Name)
	}
	return &volume.PathResponse{Mountpoint: mountpointOf(r)}, nil
}

// Capabilities: the scope is the backend's (local btrfs pool, or storage
// shared by a cluster).
func (d *Driver) Capabilities() *volume.CapabilitiesResponse {
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: d.b.Scope()}}
}

// Mount mounts a volume for one container mount point (req.ID), making
// the clone first if it does not exist yet. Mounts are counted, never kept
// as a set: Docker reuses IDs (docker cp) and may pair extra Mount/Unmount
// calls (docker create).
func (d *Driver) Mount(req *volume.MountRequest) (*volume.MountResponse, error) {
	return d.As(CallerUnknown).Mount(req)
}

func (d *Driver) mount(ctx context.Context, req *volume.MountRequest) (*volume.MountResponse, error) {
	ctx, unlock, err := d.lockVolume(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()

	r, ok := d.st.Get(req.Name)
	if !ok {
		if !d.cfg.Claim {
			return nil, fmt.Errorf("%w: %q; create it first with docker volume create -d snapvol", ErrNoSuchVolume, req.Name)
		}
		// A claimed name: Docker never calls Create for it, so the record
		// is made here, from the name alone, in the clone's own write.
		if r, err = d.newRecord(ctx, req.Name, nil); err != nil {
			return nil, err
		}
		if !r.IsClone() {
			return nil, fmt.Errorf("%w: %q", ErrNoSuchVolume, req.Name)
		}
	}
	if r.Intent != nil {
		return nil, errUnfinished(r)
	}
	if r.Operator {
		if err := dockerMount(r); err != nil {
			return nil, err
		}
	}
	// At every Mount, not only at Create: SOURCES may have been narrowed
	// since the record was made.
	if !d.allowed(r) {
		return nil, d.errNotAllowed(r)
	}
	a, err := d.attach(ctx, r, r.Key(req.ID))
	if err != nil {
		return nil, err
	}
	return &volume.MountResponse{Mountpoint: a.Target}, nil
}

// Unmount ends one mount. Counts never go below zero; data is never
// deleted here except a +each clone at its mount ID's last Unmount.
func (d *Driver) Unmount(req *volume.UnmountRequest) error {
	return d.As(CallerUnknown).Unmount(req)
}

func (d *Driver) unmount(ctx context.Context, req *volume.UnmountRequest) error {
	// Set when a +each clone went: its snapshot may be collectable. Run
	// after the volume's lock is released (defers run last in, first out),
	// as Remove does, so every other container of the same +each name does
	// not wait on a pool-wide collection.
	collectSource := ""
	defer func() {
		if collectSource != "" {
			d.collectSnapshots(ctx, collectSource)
		}
	}()
	lctx, unlock, err := d.lockVolume(ctx, req.Name)
	if err != nil {
		return err
	}
	defer unlock()
	r, ok := d.st.Get(req.Name)
	if !ok {
		return fmt.Errorf("%w: %q", ErrNoSuchVolume, req.Name)
	}
	released, err := d.detach(lctx, r, r.Key(req.ID))
	if released && err == nil {
		collectSource = r.Source
	}
	return err
}

// Remove destroys a volume. A clone volume loses its clones and record;
// a plain volume is deleted only when no clone volume comes from it.
func (d *Driver) Remove(req *volume.RemoveRequest) error {
	return d.As(CallerUnknown).Remove(req)
}

// removeVolume removes volume name for the caller of ctx's request: Docker
// (Remove) or the operator (snapvol volume rm).
func (d *Driver) removeVolume(ctx context.Context, name string) error {
	lctx, unlock, err := d.lockVolume(ctx, name)
	if err != nil {
		return err
	}
	r, ok := d.st.Get(name)
	if !ok {
		unlock()
		return nil
	}
	if callerOf(ctx) != CallerOperator {
		if err := dockerRemove(r); err != nil {
			unlock()
			return err
		}
	}
	if err := d.removable(lctx, r); err != nil {
		unlock()
		return err
	}
	err = d.remove(lctx, r, nil)
	// Collection runs after the lock is let go (on ctx, which holds none),
	// so other requests on this name do not wait for a pool-wide scan.
	unlock()
	if err != nil {
		return err
	}
	source := r.Source
	if !r.IsClone() {
		// Its names and schedule die with it: a new volume of that name
		// is another volume.
		source = r.Name
		d.forgetSource(name)
	}
	d.collectSnapshots(ctx, source)
	return nil
}

// removable says why Remove must refuse r, if it must.
func (d *Driver) removable(ctx context.Context, r *store.Record) error {
	if r.Intent != nil && r.Intent.Op != store.OpRemove {
		// Only reconcile knows how to finish it: an interrupted create,
		// say, has no object recorded yet, and removing just the record
		// would leave the volume the backend made.
		return errUnfinished(r)
	}
	// One rule for plain and clone volumes (see caller.go): refused while
	// a running process other than the caller holds a mount; the caller's
	// own counts and those of processes that are gone are stale. An
	// operator (CallerOperator) holds none: every count whose holder runs
	// or cannot be seen refuses it.
	if n := r.TotalMounts(); n > 0 {
		if h, live := d.liveHolder(r, callerOf(ctx)); live {
			return fmt.Errorf("%w: volume %q is mounted %d time(s), held by %s, which is still running; stop the containers using it (docker ps -a --filter volume=%s), then remove it with docker volume rm %s",
				ErrInUse, r.Name, n, describeCaller(h), r.Name, r.Name)
		}
		d.logOf(ctx).WithFields(logrus.Fields{"volume": r.Name, "mounts": n}).Warn("removing a volume with mounts no running process holds (Unmounts Docker never sent)")
	}
	if r.IsClone() {
		return nil
	}
	var users []string
	d.st.Each(func(o *store.Record) {
		// A +each volume holds a clone only while a container runs; with
		// none it is a name, not a user of the source.
		if o.Source == r.Name && (!o.Each || len(o.Attachments) > 0) {
			users = append(users, o.Name)
		}
	})
	if len(users) > 0 {
		sort.Strings(users)
		return fmt.Errorf("%w: volume %q is the source of %s; remove those first", ErrInUse, r.Name, strings.Join(users, ", "))
	}
	return nil
}
