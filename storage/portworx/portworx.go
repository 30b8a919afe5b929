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
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libopenstorage/openstorage/api"
	"github.com/libopenstorage/openstorage/api/spec"

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

// volumeKeys are the OpenStorage spec keys (api.Spec*) accepted with -o;
// api/spec parses their values. parent and name are not: the plugin
// decides what a volume is made from and what it is called.
var volumeKeys = map[string]bool{
	api.SpecNodes: true, api.SpecEphemeral: true, api.SpecShared: true, api.SpecSticky: true,
	api.SpecSecure: true, api.SpecCompressed: true, api.SpecSize: true, api.SpecScale: true,
	api.SpecFilesystem: true, api.SpecBlockSize: true, api.SpecHaLevel: true, api.SpecPriority: true,
	api.SpecPriorityAlias: true, api.SpecSnapshotInterval: true, api.SpecSnapshotSchedule: true,
	api.SpecAggregationLevel: true, api.SpecDedupe: true, api.SpecPassphrase: true, api.SpecGroup: true,
	api.SpecGroupEnforce: true, api.SpecZones: true, api.SpecRacks: true, api.SpecLabels: true,
	api.SpecIoProfile: true,
}

// cloneKeys are the spec keys that can change on an existing volume, and
// so apply to a clone, which inherits everything else from its snapshot.
// sticky is not among them: a sticky clone could never be deleted.
// secret_key is not a spec change: a clone of a volume encrypted with a
// per-volume secret is attached with that secret's name (Portworx needs
// it on every attach), which the clone keeps in storage.LabelSecretKey.
//
// Space on Portworx. size= on a clone sets its volume's spec size (a
// volume update right after the clone is made). What that does and does
// not enforce:
//   - A Portworx volume is a block device of its spec size with a
//     filesystem on it: a clone can never hold more than its size; a
//     container writing past it gets ENOSPC. That limit holds whatever
//     snapvol does.
//   - A clone starts as large as its snapshot, that is its source. size=
//     can grow it (an online resize); it cannot shrink it, and a size
//     below the snapshot's is refused before anything is made.
//   - CLONE_SIZE and POOL_RESERVE are local settings: nothing in the
//     OpenStorage v1 API limits what clones take together, and Portworx
//     storage pools are thin-provisioned, so clones that all write fill
//     the pool production is on. Portworx's own capacity management
//     (pool alerts, thin-provisioning limits) governs that, outside
//     snapvol.
//   - The v1 mount action carries a path only, no mount options: a clone
//     cannot be asked to be mounted nosuid,nodev. The server mounts it at
//     a staging path under PX_MOUNT_DIR and snapvol binds that onto the
//     path Docker is given, nosuid,nodev, whether snapvol runs on the
//     host or as a managed plugin (see mount.go).
var cloneKeys = map[string]bool{
	api.SpecHaLevel: true, api.SpecPriority: true, api.SpecPriorityAlias: true,
	api.SpecIoProfile: true, api.SpecLabels: true, api.SpecSnapshotInterval: true,
	api.SpecSize: true, api.SpecPassphrase: true,
}

// OptionKey accepts the OpenStorage spec keys.
func (b *Backend) OptionKey(key string) bool { return volumeKeys[key] }

// CheckOptions parses opts with api/spec as CreateVolume (KindVolume) or
// Clone (KindClone) will, so a bad key or value fails docker volume create
// instead of every later Mount.
func (b *Backend) CheckOptions(kind storage.Kind, opts map[string]string) error {
	var err error
	if kind == storage.KindClone {
		_, err = cloneSpec(opts)
	} else {
		_, _, err = volumeSpec(opts)
	}
	return err
}

// volumeSpec parses the options of a new regular volume.
func volumeSpec(opts map[string]string) (*api.VolumeSpec, *api.VolumeLocator, error) {
	sp, loc, src, err := spec.NewSpecHandler().SpecFromOpts(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("options %v: %w", opts, err)
	}
	if err := checkUserLabels(loc.VolumeLabels); err != nil {
		return nil, nil, err
	}
	if src.Parent != "" {
		return nil, nil, errors.New("option parent is not allowed; clone with NAME@REF or -o from=")
	}
	if err := checkHaLevel(opts, sp); err != nil {
		return nil, nil, err
	}
	return sp, loc, nil
}

// checkHaLevel refuses a replica count Portworx does not have: it keeps
// 1 to 3 replicas, and an OpenStorage server may ignore any other value
// (the fake driver's Set does) rather than refuse it.
func checkHaLevel(opts map[string]string, sp *api.VolumeSpec) error {
	if _, ok := opts[api.SpecHaLevel]; ok && (sp.HaLevel < 1 || sp.HaLevel > 3) {
		return fmt.Errorf("option %s=%s: the HA level must be 1, 2 or 3", api.SpecHaLevel, opts[api.SpecHaLevel])
	}
	return nil
}

// cloneSpec parses the options of a clone: only keys that can change on
// an existing volume apply (nil spec when there are none).
func cloneSpec(opts map[string]string) (*api.VolumeSpec, error) {
	for k := range opts {
		if !cloneKeys[k] {
			return nil, fmt.Errorf("option %s= cannot be applied to a clone, which inherits it from the snapshot; clones take %s", k, strings.Join(sortedKeys(cloneKeys), ", "))
		}
	}
	if len(opts) == 0 {
		return nil, nil
	}
	sp, loc, _, err := spec.NewSpecHandler().UpdateSpecFromOpts(opts, &api.VolumeSpec{VolumeLabels: map[string]string{}}, &api.VolumeLocator{VolumeLabels: map[string]string{}}, nil)
	if err != nil {
		return nil, fmt.Errorf("clone options %v: %w", opts, err)
	}
	if err := checkUserLabels(loc.VolumeLabels); err != nil {
		return nil, err
	}
	if err := checkHaLevel(opts, sp); err != nil {
		return nil, err
	}
	return sp, nil
}

func (b *Backend) Close() error {
	b.rest.transport.CloseIdleConnections()
	return nil
}

// ours reports whether this instance made the object labels belong to;
// objects of other instances sharing the cluster are never touched.
func (b *Backend) ours(labels map[string]string) bool {
	_, ok := storage.KindOf(labels)
	return ok && labels[storage.LabelInstance] == b.cfg.Instance
}

// ownLabels are v's labels if they are its own. OpenStorage objects
// inherit labels: a clone carries its snapshot's (the server copies the
// parent's; servers since 2024-09 merge the ones the request asked for
// over them, older ones drop those), and a snapshot Portworx or pxctl
// takes of a snapvol volume carries the volume's. Labels naming another object (storage.LabelName), and a
// volume's labels on an object that has a parent, describe the parent:
// the object is not what they say, and not snapvol's. Objects labelled
// before LabelName have none and are taken at their word.
func ownLabels(v *api.Volume) map[string]string {
	l := locatorLabels(v)
	if n := l[storage.LabelName]; n != "" && n != volumeName(v) {
		return nil
	}
	if k, ok := storage.KindOf(l); ok && k == storage.KindVolume && parentOf(v) != "" {
		return nil
	}
	return l
}

// mine says whether this instance made v.
func (b *Backend) mine(v *api.Volume) bool { return b.ours(ownLabels(v)) }

// kindOf classifies what any snapvol instance made, so one host never
// takes another's clone for a source or a snapshot.
func kindOf(v *api.Volume) (storage.Kind, bool) { return storage.KindOf(ownLabels(v)) }

func isKind(v *api.Volume, k storage.Kind) bool {
	got, ok := kindOf(v)
	return ok && got == k
}

func locatorLabels(v *api.Volume) map[string]string {
	if v.Locator == nil {
		return nil
	}
	return v.Locator.VolumeLabels
}

func volumeName(v *api.Volume) string {
	if v.Locator == nil {
		return ""
	}
	return v.Locator.Name
}

func parentOf(v *api.Volume) string {
	if v.Source == nil {
		return ""
	}
	return v.Source.Parent
}

func created(v *api.Volume) time.Time {
	if v.Ctime == nil {
		return time.Time{}
	}
	return time.Unix(v.Ctime.Seconds, int64(v.Ctime.Nanos)).UTC()
}

func copyLabels(l map[string]string) map[string]string {
	out := make(map[string]string, len(l))
	for k, v := range l {
		out[k] = v
	}
	return out
}

// object is v as a storage.Object. The volume ID is the Identity: the
// server never gives it to another volume.
func (b *Backend) object(v *api.Volume, kind storage.Kind) storage.Object {
	o := storage.Object{
		ID: v.Id, Identity: v.Id, Name: volumeName(v), Kind: kind,
		Created: created(v), Labels: objectLabels(ownLabels(v)),
	}
	switch kind {
	case storage.KindSnapshot:
		o.Parent = storage.SnapshotParent(o.Labels, parentOf(v))
	case storage.KindClone:
		o.Parent = parentOf(v)
	}
	return o
}

// objectLabels are the labels the driver sees: LabelName is the
// backend's own, and an empty value is a label blanked out (see
// finishClone).
func objectLabels(l map[string]string) map[string]string {
	out := make(map[string]string, len(l))
	for k, v := range l {
		if v != "" && k != storage.LabelName {
			out[k] = v
		}
	}
	return out
}

// identity is o's Identity, which is its ID here when the caller has only
// that.
func identity(o storage.Object) string {
	if o.Identity != "" {
		return o.Identity
	}
	return o.ID
}

// labels adds this instance's labels, and the name of the object they go
// on, to the driver's.
func (b *Backend) labels(l map[string]string, name string) map[string]string {
	out := copyLabels(l)
	out[storage.LabelInstance] = b.cfg.Instance
	out[storage.LabelName] = name
	if b.host != "" {
		out[storage.LabelHost] = b.host
	}
	return out
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

func checkUserLabels(l map[string]string) error {
	for k := range l {
		if k == storage.LabelOwner || strings.HasPrefix(k, storage.LabelOwner+".") {
			return fmt.Errorf("label %q is reserved for snapvol's own bookkeeping", k)
		}
	}
	return nil
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

// children lists the snapshots the server holds that belong to source,
// clones left out: those made from source, unless labelled as another
// source's (storage.LabelSourceID), and those made from anything else
// (a clone of source, by SnapshotOf) labelled as source's. Two listings:
// the server's parent index, and a label selector.
func (b *Backend) children(ctx context.Context, source storage.Object) ([]*api.Volume, error) {
	what := fmt.Sprintf("listing snapshots of %q", source.Name)
	vols, err := b.rest.snapEnumerate(ctx, what, []string{source.ID}, nil)
	if errors.Is(err, storage.ErrNotFound) {
		// The SDK checks the volume before listing its children
		// (SnapshotEnumerateWithFilters → checkAccessForVolumeId), so a
		// removed source's are not listed by its ID, though they may
		// live on with a dangling parent (the fake driver deletes a
		// volume that has snapshots): every snapshot, filtered here.
		var all []*api.Volume
		all, err = b.rest.snapEnumerate(ctx, what, nil, nil)
		vols = nil
		for _, v := range all {
			if v != nil && parentOf(v) == source.ID {
				vols = append(vols, v)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	ident := identity(source)
	filed, err := b.rest.snapEnumerate(ctx, what, nil, map[string]string{storage.LabelSourceID: ident})
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []*api.Volume
	for _, v := range append(vols, filed...) {
		// Filtered here too: some servers ignore or mangle the ID filter,
		// and some match label keys only.
		if v == nil || seen[v.Id] || parentOf(v) == "" || isKind(v, storage.KindClone) {
			continue
		}
		l := ownLabels(v)
		if parentOf(v) != source.ID && l[storage.LabelSourceID] == "" {
			continue
		}
		if storage.SnapshotParent(l, parentOf(v)) == ident {
			seen[v.Id] = true
			out = append(out, v)
		}
	}
	return out, nil
}

// Snapshots lists the point-in-time copies of source @latest may use:
// the read-only snapshots, whoever took them (Portworx's schedules, pxctl,
// snapvol). Writable children are never among them, whatever their labels
// say (labels are anyone's to write with pxctl): a writable snapshot or
// clone is how people ran CI on Portworx before snapvol (pxctl snap
// create, then writing to it), and anyone with pxctl or the pxd driver
// can make one and write to it, so what it holds is not the source's at
// any point in time. snapvol takes every snapshot of its own read-only.
func (b *Backend) Snapshots(ctx context.Context, source storage.Object) ([]storage.Object, error) {
	vols, err := b.children(ctx, source)
	if err != nil {
		return nil, err
	}
	var out []storage.Object
	for _, v := range vols {
		if v.Readonly {
			out = append(out, b.object(v, storage.KindSnapshot))
		}
	}
	return out, nil
}

// SnapshotByName finds the snapshot a user named in @NAME: a read-only
// snapshot of source, as Snapshots lists them. A writable child of that
// name is not one: whoever named a raw writable clone of production
// "masked-…" would otherwise hand it to CI through SOURCES=…@masked*.
func (b *Backend) SnapshotByName(ctx context.Context, source storage.Object, name string) (storage.Object, error) {
	vols, err := b.children(ctx, source)
	if err != nil {
		return storage.Object{}, err
	}
	writable := false
	for _, v := range vols {
		if volumeName(v) != name {
			continue
		}
		if v.Readonly {
			return b.object(v, storage.KindSnapshot), nil
		}
		writable = true
	}
	if writable {
		return storage.Object{}, fmt.Errorf("%q is a writable snapshot or clone of volume %q, not a read-only snapshot: anything may have been written to it since, so it cannot stand for %s at a point in time: %w", name, source.Name, source.Name, storage.ErrNotFound)
	}
	return storage.Object{}, fmt.Errorf("snapshot %q of volume %q: %w on the OpenStorage server", name, source.Name, storage.ErrNotFound)
}

func randHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}

// snapName is a valid snapvol word, so users can name the snapshot as
// @REF, and unique in the cluster, where names must be.
func snapName() string {
	return "snapvol-" + time.Now().UTC().Format("20060102-150405") + "-" + randHex(4)
}

func (b *Backend) Snapshot(ctx context.Context, source storage.Object, labels map[string]string) (storage.Object, error) {
	name := snapName()
	loc := &api.VolumeLocator{Name: name, VolumeLabels: b.labels(storage.WithSourceID(labels, identity(source)), name)}
	what := fmt.Sprintf("taking a snapshot of %q", source.Name)
	id, err := b.rest.snapshot(ctx, what, &api.SnapCreateRequest{Id: source.ID, Readonly: true, Locator: loc})
	if err != nil {
		return storage.Object{}, b.explainSnapshotLimit(ctx, source, err)
	}
	// The server's ctime is read back by later listings; until then the
	// snapshot is as old as this call.
	return storage.Object{
		ID: id, Identity: id, Name: loc.Name, Kind: storage.KindSnapshot,
		Parent:  storage.SnapshotParent(loc.VolumeLabels, source.ID),
		Created: time.Now().UTC(), Labels: objectLabels(loc.VolumeLabels),
	}, nil
}

// snapshotLimit is Portworx's: "There is an implementation limit of 64
// snapshots per volume" (docs.portworx.com, reference/cli/snapshots).
const snapshotLimit = 64

// explainSnapshotLimit adds, to a refused snapshot of a source that holds
// Portworx's limit of snapshots, what they are and what to do: Portworx's
// own words for it are not documented, so the count is what tells.
func (b *Backend) explainSnapshotLimit(ctx context.Context, source storage.Object, err error) error {
	if errors.Is(err, storage.ErrUnavailable) || errors.Is(err, storage.ErrDenied) || errors.Is(err, storage.ErrNotFound) {
		return err
	}
	vols, lerr := b.rest.snapEnumerate(ctx, "counting snapshots", []string{source.ID}, nil)
	if lerr != nil || len(vols) < snapshotLimit {
		return err
	}
	mine := 0
	for _, v := range vols {
		if b.mine(v) {
			mine++
		}
	}
	return fmt.Errorf("%w: volume %q has %d snapshots and clones (%d of them snapvol's), and Portworx allows %d per volume: remove named or scheduled snapshots (snapvol snapshot ls/rm, schedule --keep), clones no longer needed (docker volume rm), or snapshots Portworx's own schedules keep",
		err, source.Name, len(vols), mine, snapshotLimit)
}

// SnapshotOf takes a read-only snapshot of the clone (an OpenStorage
// snapshot of the clone's volume) labelled with source's Identity, which
// files it as source's (see children). The server records the clone as
// its parent, so it keeps the clone while the snapshot exists: Delete of
// the clone is ErrBusy until the snapshot is deleted.
func (b *Backend) SnapshotOf(ctx context.Context, clone, source storage.Object, labels map[string]string) (storage.Object, error) {
	cv, err := b.rest.inspect(ctx, clone.ID)
	if err != nil {
		return storage.Object{}, fmt.Errorf("snapshot of clone %q: %w", clone.Name, err)
	}
	if !isKind(cv, storage.KindClone) || !b.mine(cv) {
		return storage.Object{}, fmt.Errorf("snapshot of %q (%s): not a clone this snapvol made", volumeName(cv), cv.Id)
	}
	sv, err := b.rest.inspect(ctx, source.ID)
	if err != nil {
		return storage.Object{}, fmt.Errorf("snapshot of clone %q as volume %q's: %w", clone.Name, source.Name, err)
	}
	if source.Identity != "" && sv.Id != source.Identity {
		return storage.Object{}, fmt.Errorf("snapshot of clone %q: volume %q is not %s: %w", clone.Name, source.Name, source.Identity, storage.ErrNotFound)
	}
	name := snapName()
	loc := &api.VolumeLocator{Name: name, VolumeLabels: b.labels(storage.WithSourceID(labels, sv.Id), name)}
	what := fmt.Sprintf("taking a snapshot of clone %q for %q", clone.Name, source.Name)
	id, err := b.rest.snapshot(ctx, what, &api.SnapCreateRequest{Id: cv.Id, Readonly: true, Locator: loc})
	if err != nil {
		return storage.Object{}, err
	}
	return storage.Object{
		ID: id, Identity: id, Name: loc.Name, Kind: storage.KindSnapshot,
		Parent:  storage.SnapshotParent(loc.VolumeLabels, cv.Id),
		Created: time.Now().UTC(), Labels: objectLabels(loc.VolumeLabels),
	}, nil
}

// checkCloneSize refuses a clone size below its snapshot's: a block
// device cannot shrink under the filesystem on it.
func (b *Backend) checkCloneSize(ctx context.Context, snap storage.Object, size uint64) error {
	sv, err := b.rest.inspect(ctx, snap.ID)
	if err != nil {
		return fmt.Errorf("clone of snapshot %q: %w", snap.Name, err)
	}
	if have := sv.GetSpec().GetSize(); size < have {
		return fmt.Errorf("option size=%d is below the size of snapshot %q (%d bytes): a Portworx clone is a volume as large as its snapshot, which can grow but not shrink", size, snap.Name, have)
	}
	return nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
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
		// A staging directory of this instance's goes with its mount.
		if st, ok := b.stagingAt(p); ok {
			_ = b.removeStaging(st)
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
