// Package portworx is the snapvol backend for Portworx, or any OpenStorage
// server, over the OpenStorage REST API. A source is a volume looked up by
// name; @latest and @NAME come from its snapshots (SnapEnumerate), @now is
// a read-only snapshot; a clone is a writable snapshot of a snapshot
// (Snapshot(id, readonly=false, locator)), attached and mounted by the
// server on this host under PX_MOUNT_DIR and bound by snapvol at a path
// under DATA_ROOT.
package portworx

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libopenstorage/openstorage/api"

	"github.com/snapvol/snapvol/storage"
)

// DefaultSize is the size of a regular volume created without size=.
const DefaultSize = 1 << 30

// Config holds the settings the portworx backend reads.
type Config struct {
	Endpoint string // PX_ENDPOINT: http://HOST:PORT or unix:///PATH.sock
	Driver   string // PX_DRIVER, e.g. pxd
	Token    string // PX_TOKEN: bearer token, empty when auth is off

	// DataRoot is DATA_ROOT as this process sees it: every mount target
	// is below it.
	DataRoot string
	// MountDir is PX_MOUNT_DIR, the host directory the server is told to
	// mount volumes under (at MountDir/snapvol-<Instance>/..., see
	// mount.go): one Portworx mounts into and shares with the host, as its
	// own Docker plugin's /var/lib/osd/mounts. Empty: DefaultMountDir.
	MountDir string
	// MountDirLocal is where this process sees MountDir: ManagedMountDir,
	// the pxmounts mount, in the managed plugin. Empty: MountDir (snapvol
	// on the host).
	MountDirLocal string
	// Instance identifies this plugin's database among all snapvol
	// instances sharing the cluster (see InstanceID).
	Instance string

	// CallTimeout bounds each question to the server (inspect, list;
	// default 10s), DialTimeout each connection attempt (default 3s): a
	// stopped or hung server turns into ErrUnavailable well inside
	// Docker's 30 s. Work the server does (clone, attach, mount …) is
	// bounded by the request instead, and attaching and mounting by
	// WorkTimeout (default 10m), past the request if need be (work.go).
	CallTimeout time.Duration
	DialTimeout time.Duration
	WorkTimeout time.Duration
}

// Backend is the OpenStorage implementation of storage.Backend.
type Backend struct {
	cfg           Config
	rest          *rest
	mountDir      string // cleaned Config.MountDir
	mountDirLocal string // cleaned Config.MountDirLocal
	host          string

	// cloning are the clones being made and labelled now; rescan asks
	// the next Owned to look for clones left without labels (at start,
	// and after a clone that could be neither labelled nor deleted).
	cloning sync.Map // names
	rescan  atomic.Bool
	jobs    jobs // work that outlives a request (work.go)
}

var _ storage.Backend = (*Backend)(nil)

// Open checks the settings and prepares the client. It does not contact
// the server: a plugin whose server is down must still start, answer Get
// and List from its index, and report the outage on the calls that need
// the server (see Ping).
func Open(cfg Config) (*Backend, error) {
	if cfg.Driver == "" {
		return nil, fmt.Errorf("PX_DRIVER is empty: name the OpenStorage driver, e.g. pxd")
	}
	if cfg.Instance == "" {
		return nil, fmt.Errorf("portworx backend: no instance ID")
	}
	if !filepath.IsAbs(cfg.DataRoot) {
		return nil, fmt.Errorf("DATA_ROOT=%q must be an absolute path", cfg.DataRoot)
	}
	if cfg.MountDir == "" {
		cfg.MountDir = defaultMountDir
	}
	if cfg.MountDirLocal == "" {
		cfg.MountDirLocal = cfg.MountDir
	}
	if !filepath.IsAbs(cfg.MountDir) {
		return nil, fmt.Errorf("PX_MOUNT_DIR=%q must be an absolute host path", cfg.MountDir)
	}
	if !filepath.IsAbs(cfg.MountDirLocal) {
		return nil, fmt.Errorf("portworx backend: MountDirLocal=%q must be an absolute path", cfg.MountDirLocal)
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 10 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 3 * time.Second
	}
	if cfg.WorkTimeout <= 0 {
		cfg.WorkTimeout = 10 * time.Minute
	}
	r, err := newREST(cfg.Endpoint, cfg.Driver, cfg.Token, cfg.CallTimeout, cfg.DialTimeout)
	if err != nil {
		return nil, err
	}
	b := &Backend{cfg: cfg, rest: r}
	b.rescan.Store(true)
	b.host, _ = os.Hostname()
	b.mountDir, b.mountDirLocal = filepath.Clean(cfg.MountDir), filepath.Clean(cfg.MountDirLocal)
	return b, nil
}

// MountDirs are the host directory the server is told to mount under
// (PX_MOUNT_DIR) and where this process sees it.
func (b *Backend) MountDirs() (host, local string) { return b.mountDir, b.mountDirLocal }

// Ping checks that PX_ENDPOINT is an OpenStorage REST v1 API that
// answers and accepts PX_TOKEN. The versions route needs no token on any
// OpenStorage server, so the token is checked with a call that does (a
// listing of this instance's objects: every volume call goes through the
// server's authentication). A server that is down is ErrUnavailable; a
// wrong endpoint ErrEndpoint and a refused token storage.ErrDenied, which
// are settings to fix, not outages to wait out.
func (b *Backend) Ping(ctx context.Context) error {
	vs, err := b.versions(ctx)
	if err != nil {
		return err
	}
	if !slices.Contains(vs, apiVersion) {
		return fmt.Errorf("%w: the server at PX_ENDPOINT=%s speaks API versions %v, not %s", ErrEndpoint, b.cfg.Endpoint, vs, apiVersion)
	}
	sel := map[string]string{storage.LabelInstance: b.cfg.Instance}
	if _, err := b.rest.enumerate(ctx, "checking PX_TOKEN with a listing of snapvol's volumes", &api.VolumeLocator{VolumeLabels: sel}, nil); err != nil {
		return err
	}
	return nil
}

// versions asks the versions route, which every OpenStorage REST server
// answers with 200 and a JSON list, without a token. An outage is only
// what answers nothing at all (refused, timed out, unreachable, or a proxy's
// 502/503/504); any other answer at start is not the REST API, and a port
// that takes connections and closes every one unanswered, asked three
// times on new connections, is not one either (Portworx's gossip port).
func (b *Backend) versions(ctx context.Context) ([]string, error) {
	var err error
	for try := 0; try < 3; try++ {
		if try > 0 {
			b.rest.transport.CloseIdleConnections()
			select {
			case <-ctx.Done():
				return nil, err
			case <-time.After(200 * time.Millisecond):
			}
		}
		var vs []string
		vs, err = b.rest.versions(ctx)
		switch {
		case err == nil:
			return vs, nil
		case errors.Is(err, errNoAnswer):
			continue
		case errors.Is(err, storage.ErrUnavailable), errors.Is(err, storage.ErrDenied), errors.Is(err, ErrEndpoint):
			return nil, err
		default:
			return nil, fmt.Errorf("%w: %w; %s", ErrEndpoint, err, portsHint)
		}
	}
	said := b.rest.probe(ctx, 500*time.Millisecond)
	if said == "" {
		said = "it takes connections and gives no HTTP answer"
	}
	// Not %w: this is no outage.
	return nil, fmt.Errorf("%w: the server at PX_ENDPOINT=%s is not an HTTP/1 server: %s (%v); %s", ErrEndpoint, b.cfg.Endpoint, said, err, portsHint)
}

// Scope is local. The data lives in a cluster, but the Docker volume does
// not: a clone is attached to and mounted on one host, its record and
// mount counts are in that host's bbolt, and two hosts naming the same
// app-production@latest must each get their own clone. Global scope would
// make Docker (and Swarm) treat the clone as visible on every node, which
// it is not, and would hand one writable clone to containers on several
// hosts at once.
func (b *Backend) Scope() string { return "local" }

func (b *Backend) Close() error {
	b.rest.transport.CloseIdleConnections()
	return nil
}

// find looks a volume (not a snapshot, not a plugin object) up by name.
// Enumerate's name may be a pattern on some servers, so names are matched
// exactly here.
func (b *Backend) find(ctx context.Context, name string) (*api.Volume, error) {
	what := fmt.Sprintf("looking up volume %q", name)
	vols, err := b.rest.enumerate(ctx, what, &api.VolumeLocator{Name: name}, nil)
	if err != nil {
		return nil, err
	}
	var match []*api.Volume
	for _, v := range vols {
		if v == nil || volumeName(v) != name || v.IsSnapshot() {
			continue
		}
		if k, ok := kindOf(v); ok && k != storage.KindVolume {
			continue
		}
		match = append(match, v)
	}
	switch len(match) {
	case 0:
		// With security on, the SDK's listings leave out the volumes the
		// caller may not read (VolumeServer.InspectWithFilters checks
		// IsPermitted(Ownership_Read)): a request without a token is a
		// guest's, who reads only public volumes, and a non-admin user
		// reads only its own and those shared with it. So "not found"
		// may mean "hidden", and creating the volume, which the driver
		// would advise, fails ("already exists and is owned by another
		// user"): the error carries the hint for the driver to show.
		hint := "it does not exist, or PX_TOKEN's user may not read it: on a cluster with security enabled another user's private volume is hidden from all but admins, so snapvol needs an admin token"
		if b.cfg.Token == "" {
			hint = "PX_TOKEN is not set: on a cluster with security enabled snapvol is then a guest and sees only public volumes; set PX_TOKEN to an admin token"
		}
		return nil, &hinted{err: fmt.Errorf("volume %q: %w on the OpenStorage server at %s (driver %s)", name, storage.ErrNotFound, b.cfg.Endpoint, b.cfg.Driver), hint: hint}
	case 1:
		return match[0], nil
	}
	ids := make([]string, len(match))
	for i, v := range match {
		ids[i] = v.Id
	}
	return nil, fmt.Errorf("volume %q is ambiguous: the OpenStorage server has %d volumes of that name (%s)", name, len(match), strings.Join(ids, ", "))
}

func (b *Backend) Volume(ctx context.Context, name string) (storage.Object, error) {
	v, err := b.find(ctx, name)
	if err != nil {
		return storage.Object{}, err
	}
	return b.object(v, storage.KindVolume), nil
}

// CreateVolume makes an empty volume named name. A volume of that name
// that snapvol did not create is refused rather than adopted: adopting
// it would let `docker volume rm` delete production data.
func (b *Backend) CreateVolume(ctx context.Context, name string, opts map[string]string) (storage.Object, error) {
	existing, err := b.find(ctx, name)
	switch {
	case err == nil && b.createdByUs(existing):
		return b.object(existing, storage.KindVolume), nil
	case err == nil:
		return storage.Object{}, fmt.Errorf("%w: volume %q already exists on the OpenStorage server and was not made by snapvol; clone it with %s@latest instead of creating it", storage.ErrForeign, name, name)
	case !errors.Is(err, storage.ErrNotFound):
		return storage.Object{}, err
	}
	sp, loc, err := volumeSpec(opts)
	if err != nil {
		return storage.Object{}, fmt.Errorf("volume %q: %w", name, err)
	}
	if sp.Size == 0 {
		sp.Size = DefaultSize
	}
	loc.Name = name
	for k, v := range b.labels(storage.VolumeLabels(), name) {
		loc.VolumeLabels[k] = v
	}
	what := fmt.Sprintf("creating volume %q", name)
	id, err := b.rest.create(ctx, what, &api.VolumeCreateRequest{Locator: loc, Source: &api.Source{}, Spec: sp})
	if err != nil {
		return storage.Object{}, err
	}
	v, err := b.rest.inspect(ctx, id)
	if err != nil {
		return storage.Object{}, fmt.Errorf("%s: created as %s but: %w", what, id, err)
	}
	return b.object(v, storage.KindVolume), nil
}

// createdByUs: volumes made before LabelKind carry LabelCreated, which
// KindOf reads as a volume too.
func (b *Backend) createdByUs(v *api.Volume) bool {
	return isKind(v, storage.KindVolume) && b.mine(v)
}

// RemoveVolume deletes a volume snapvol created, after the snapshots this
// instance took of it (the one kept for @latest, typically): OpenStorage
// servers refuse to delete a volume that has snapshots. Snapshots others
// took are left alone, so the server's refusal is passed on then, as
// ErrBusy.
func (b *Backend) RemoveVolume(ctx context.Context, obj storage.Object) error {
	v, err := b.rest.inspect(ctx, obj.ID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if !b.createdByUs(v) {
		return fmt.Errorf("volume %q (%s) was not created by this snapvol: %w", volumeName(v), v.Id, storage.ErrProtected)
	}
	snaps, err := b.Snapshots(ctx, b.object(v, storage.KindVolume))
	if err != nil {
		return err
	}
	for _, s := range snaps {
		if k, ok := storage.KindOf(s.Labels); ok && k == storage.KindSnapshot && b.ours(s.Labels) {
			if err := b.Delete(ctx, s.ID); err != nil {
				return fmt.Errorf("deleting snapshot %q of volume %q: %w", s.Name, volumeName(v), err)
			}
		}
	}
	if err := b.detachAll(ctx, v); err != nil {
		return err
	}
	return b.deleteID(ctx, fmt.Sprintf("deleting volume %q (%s)", volumeName(v), v.Id), v.Id)
}

// Delete destroys a snapshot or clone this instance made, unmounting and
// detaching it first if a crash left it so. Anything else is refused.
func (b *Backend) Delete(ctx context.Context, id string) error {
	if err := b.stopWork(ctx, id); err != nil {
		return err
	}
	v, err := b.rest.inspect(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	// snapvol's snapshots and clones always have a parent; labels copied
	// onto a volume without one do not make it snapvol's.
	if !b.mine(v) && !b.unlabelledClone(v) || b.mine(v) && !(isKind(v, storage.KindClone) || isKind(v, storage.KindSnapshot)) || parentOf(v) == "" {
		return fmt.Errorf("delete %q (%s): not a snapshot or clone this snapvol made: %w", volumeName(v), id, storage.ErrProtected)
	}
	if err := b.detachAll(ctx, v); err != nil {
		return err
	}
	return b.deleteID(ctx, fmt.Sprintf("deleting %q (%s)", volumeName(v), id), id)
}

func (b *Backend) deleteID(ctx context.Context, what, id string) error {
	err := b.rest.delete(ctx, what, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	return err
}

// detachAll unmounts every path the server has v mounted at and detaches
// it; only called on objects snapvol owns.
func (b *Backend) detachAll(ctx context.Context, v *api.Volume) error {
	for _, p := range v.AttachPath {
		if _, err := b.rest.set(ctx, fmt.Sprintf("unmounting %q from %s", volumeName(v), p), v.Id, &api.VolumeSetRequest{
			Action: &api.VolumeStateAction{Mount: api.VolumeActionParam_VOLUME_ACTION_PARAM_OFF, MountPath: p},
		}); err != nil {
			return err
		}
		// A server path of this instance's goes with its mount.
		if sp, ok := b.serverPathAt(p); ok {
			_ = b.removeServerPath(sp)
		}
	}
	if attached(v) {
		return b.detach(ctx, v)
	}
	return nil
}

func attached(v *api.Volume) bool {
	return v.State == api.VolumeState_VOLUME_STATE_ATTACHED || v.AttachedOn != "" || v.DevicePath != ""
}

func (b *Backend) detach(ctx context.Context, v *api.Volume) error {
	_, err := b.rest.set(ctx, fmt.Sprintf("detaching %q", volumeName(v)), v.Id, &api.VolumeSetRequest{
		Action: &api.VolumeStateAction{Attach: api.VolumeActionParam_VOLUME_ACTION_PARAM_OFF},
	})
	if notSupported(err) {
		return nil
	}
	return err
}

// Owned lists what this instance made. Volumes made before LabelKind
// carry no LabelOwner and are not listed: the driver looks for clones and
// snapshots here, and those always had it.
func (b *Backend) Owned(ctx context.Context) ([]storage.Object, error) {
	sel := map[string]string{storage.LabelOwner: "1", storage.LabelInstance: b.cfg.Instance}
	vols, err := b.rest.enumerate(ctx, "listing snapvol's volumes", &api.VolumeLocator{VolumeLabels: sel}, nil)
	if err != nil {
		return nil, err
	}
	// Portworx leaves snapshots out of Enumerate; ask for them too.
	snaps, err := b.rest.snapEnumerate(ctx, "listing snapvol's snapshots", nil, sel)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []storage.Object
	for _, v := range append(vols, snaps...) {
		// Servers may match label keys only (openstorage v1.0.0 does), so
		// values are checked here.
		if v == nil || seen[v.Id] || !b.mine(v) {
			continue
		}
		seen[v.Id] = true
		k, _ := kindOf(v)
		out = append(out, b.object(v, k))
	}
	if !b.rescan.Load() {
		return out, nil
	}
	// Clones made but never labelled carry their snapshot's labels, so
	// no selector finds them: only their name does, in a full listing.
	all, err := b.rest.enumerate(ctx, "listing every volume for clones left unlabelled", &api.VolumeLocator{}, nil)
	if err != nil {
		return nil, err
	}
	for _, v := range all {
		if v == nil || seen[v.Id] || !b.unlabelledClone(v) {
			continue
		}
		if _, busy := b.cloning.Load(volumeName(v)); busy {
			continue
		}
		// Looked at again after the check above: a clone whose Clone was
		// running when the list was taken is labelled by now (Clone is in
		// cloning from before the object exists until it is labelled).
		if v, err = b.rest.inspect(ctx, v.Id); errors.Is(err, storage.ErrNotFound) {
			continue
		} else if err != nil {
			return nil, err
		}
		if !b.unlabelledClone(v) {
			continue
		}
		seen[v.Id] = true
		o := b.object(v, storage.KindClone)
		o.Labels = map[string]string{storage.LabelOwner: "1", storage.LabelKind: string(storage.KindClone), storage.LabelInstance: b.cfg.Instance}
		out = append(out, o)
	}
	b.rescan.Store(false)
	return out, nil
}
