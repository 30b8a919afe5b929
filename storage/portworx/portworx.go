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
	"sort"
	"strings"
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

	// CallTimeout bounds each REST call (default 10s), DialTimeout each
	// connection attempt (default 3s): a stopped or hung server turns into
	// ErrUnavailable well inside Docker's 30 s.
	CallTimeout time.Duration
	DialTimeout time.Duration
}

// Backend is the OpenStorage implementation of storage.Backend.
type Backend struct {
	cfg           Config
	rest          *rest
	mountDir      string // cleaned Config.MountDir
	mountDirLocal string // cleaned Config.MountDirLocal
	host          string
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
	r, err := newREST(cfg.Endpoint, cfg.Driver, cfg.Token, cfg.CallTimeout, cfg.DialTimeout)
	if err != nil {
		return nil, err
	}
	b := &Backend{cfg: cfg, rest: r}
	b.host, _ = os.Hostname()
	b.mountDir, b.mountDirLocal = filepath.Clean(cfg.MountDir), filepath.Clean(cfg.MountDirLocal)
	return b, nil
}

// MountDirs are the host directory the server is told to mount under
// (PX_MOUNT_DIR) and where this process sees it.
func (b *Backend) MountDirs() (host, local string) { return b.mountDir, b.mountDirLocal }

// Ping checks that the server answers, speaks API v1 and accepts PX_TOKEN.
func (b *Backend) Ping(ctx context.Context) error {
	vs, err := b.rest.versions(ctx)
	if err != nil {
		return err
	}
	for _, v := range vs {
		if v == apiVersion {
			return nil
		}
	}
	return fmt.Errorf("the OpenStorage server at %s speaks API versions %v, not %s", b.cfg.Endpoint, vs, apiVersion)
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
	api.SpecSize: true,
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
	return sp, loc, nil
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

// kindOf classifies what any snapvol instance made, so one host never
// takes another's clone for a source or a snapshot.
func kindOf(v *api.Volume) (storage.Kind, bool) { return storage.KindOf(locatorLabels(v)) }

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
		Created: created(v), Labels: copyLabels(locatorLabels(v)),
	}
	switch kind {
	case storage.KindSnapshot:
		o.Parent = storage.SnapshotParent(o.Labels, parentOf(v))
	case storage.KindClone:
		o.Parent = parentOf(v)
	}
	return o
}

// identity is o's Identity, which is its ID here when the caller has only
// that.
func identity(o storage.Object) string {
	if o.Identity != "" {
		return o.Identity
	}
	return o.ID
}

// labels adds this instance's labels to the driver's.
func (b *Backend) labels(l map[string]string) map[string]string {
	out := copyLabels(l)
	out[storage.LabelInstance] = b.cfg.Instance
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
		return nil, fmt.Errorf("volume %q: %w on the OpenStorage server at %s (driver %s)", name, storage.ErrNotFound, b.cfg.Endpoint, b.cfg.Driver)
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
	for k, v := range b.labels(storage.VolumeLabels()) {
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
	return isKind(v, storage.KindVolume) && b.ours(locatorLabels(v))
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
		l := locatorLabels(v)
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

// Snapshots lists the point-in-time copies of source @latest may use: the
// read-only snapshots, whoever took them (Portworx's schedules, pxctl),
// and snapvol's own snapshots (some servers do not keep the read-only
// flag). Writable snapshots others made are left out: that is how people
// ran CI on Portworx before snapvol (pxctl snap create, then writing to
// the snapshot), so their content may have drifted from the source's.
func (b *Backend) Snapshots(ctx context.Context, source storage.Object) ([]storage.Object, error) {
	vols, err := b.children(ctx, source)
	if err != nil {
		return nil, err
	}
	var out []storage.Object
	for _, v := range vols {
		if v.Readonly || isKind(v, storage.KindSnapshot) {
			out = append(out, b.object(v, storage.KindSnapshot))
		}
	}
	return out, nil
}

// SnapshotByName finds the snapshot a user named in @NAME. Writable ones
// count: the user chose it.
func (b *Backend) SnapshotByName(ctx context.Context, source storage.Object, name string) (storage.Object, error) {
	vols, err := b.children(ctx, source)
	if err != nil {
		return storage.Object{}, err
	}
	for _, v := range vols {
		if volumeName(v) == name {
			return b.object(v, storage.KindSnapshot), nil
		}
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
	loc := &api.VolumeLocator{Name: snapName(), VolumeLabels: b.labels(storage.WithSourceID(labels, identity(source)))}
	what := fmt.Sprintf("taking a snapshot of %q", source.Name)
	id, err := b.rest.snapshot(ctx, what, &api.SnapCreateRequest{Id: source.ID, Readonly: true, Locator: loc})
	if err != nil {
		return storage.Object{}, err
	}
	// The server's ctime is read back by later listings; until then the
	// snapshot is as old as this call.
	return storage.Object{
		ID: id, Identity: id, Name: loc.Name, Kind: storage.KindSnapshot,
		Parent:  storage.SnapshotParent(loc.VolumeLabels, source.ID),
		Created: time.Now().UTC(), Labels: copyLabels(loc.VolumeLabels),
	}, nil
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
	if !isKind(cv, storage.KindClone) || !b.ours(locatorLabels(cv)) {
		return storage.Object{}, fmt.Errorf("snapshot of %q (%s): not a clone this snapvol made", volumeName(cv), cv.Id)
	}
	sv, err := b.rest.inspect(ctx, source.ID)
	if err != nil {
		return storage.Object{}, fmt.Errorf("snapshot of clone %q as volume %q's: %w", clone.Name, source.Name, err)
	}
	if source.Identity != "" && sv.Id != source.Identity {
		return storage.Object{}, fmt.Errorf("snapshot of clone %q: volume %q is not %s: %w", clone.Name, source.Name, source.Identity, storage.ErrNotFound)
	}
	loc := &api.VolumeLocator{Name: snapName(), VolumeLabels: b.labels(storage.WithSourceID(labels, sv.Id))}
	what := fmt.Sprintf("taking a snapshot of clone %q for %q", clone.Name, source.Name)
	id, err := b.rest.snapshot(ctx, what, &api.SnapCreateRequest{Id: cv.Id, Readonly: true, Locator: loc})
	if err != nil {
		return storage.Object{}, err
	}
	return storage.Object{
		ID: id, Identity: id, Name: loc.Name, Kind: storage.KindSnapshot,
		Parent:  storage.SnapshotParent(loc.VolumeLabels, cv.Id),
		Created: time.Now().UTC(), Labels: copyLabels(loc.VolumeLabels),
	}, nil
}

// Clone makes a writable snapshot of snap. Spec options are applied with
// a volume update right after, since a snapshot request carries no spec;
// if that fails the clone is deleted, so nothing half made remains.
func (b *Backend) Clone(ctx context.Context, snap storage.Object, labels map[string]string, opts map[string]string) (storage.Object, error) {
	// Parse before making anything: a bad value fails with no clone.
	sp, err := cloneSpec(opts)
	if err != nil {
		return storage.Object{}, err
	}
	if sp != nil && sp.Size != 0 {
		if err := b.checkCloneSize(ctx, snap, sp.Size); err != nil {
			return storage.Object{}, err
		}
	}
	loc := &api.VolumeLocator{Name: "snapvol-clone-" + randHex(8), VolumeLabels: b.labels(labels)}
	what := fmt.Sprintf("cloning snapshot %q", snap.Name)
	id, err := b.rest.snapshot(ctx, what, &api.SnapCreateRequest{Id: snap.ID, Readonly: false, Locator: loc})
	if err != nil {
		return storage.Object{}, err
	}
	obj := storage.Object{
		ID: id, Identity: id, Name: loc.Name, Kind: storage.KindClone, Parent: snap.ID,
		Created: time.Now().UTC(), Labels: copyLabels(loc.VolumeLabels),
	}
	if sp == nil {
		return obj, nil
	}
	if err := b.applyOptions(ctx, id, opts); err != nil {
		if derr := b.deleteID(ctx, "deleting the clone whose options failed", id); derr != nil {
			err = fmt.Errorf("%w (and the clone %s could not be deleted: %v; the orphan sweep will retry)", err, id, derr)
		}
		return storage.Object{}, err
	}
	return obj, nil
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

// applyOptions updates a clone's spec from its current one, so fields the
// options do not name stay as the server has them.
func (b *Backend) applyOptions(ctx context.Context, id string, opts map[string]string) error {
	v, err := b.rest.inspect(ctx, id)
	if err != nil {
		return err
	}
	cur := &api.VolumeSpec{}
	if v.Spec != nil {
		cur = v.Spec.Copy()
	}
	if cur.VolumeLabels == nil {
		cur.VolumeLabels = map[string]string{}
	}
	userLoc := &api.VolumeLocator{VolumeLabels: map[string]string{}}
	sp, userLoc, _, err := spec.NewSpecHandler().UpdateSpecFromOpts(opts, cur, userLoc, nil)
	if err != nil {
		return fmt.Errorf("clone options %v: %w", opts, err)
	}
	if err := checkUserLabels(userLoc.VolumeLabels); err != nil {
		return err
	}
	req := &api.VolumeSetRequest{Spec: sp}
	if len(userLoc.VolumeLabels) > 0 {
		loc := &api.VolumeLocator{Name: volumeName(v), VolumeLabels: copyLabels(locatorLabels(v))}
		for k, val := range userLoc.VolumeLabels {
			loc.VolumeLabels[k] = val
		}
		req.Locator = loc
	}
	_, err = b.rest.set(ctx, fmt.Sprintf("applying options %v to clone %s", opts, id), id, req)
	return err
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
	v, err := b.rest.inspect(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if !b.ours(locatorLabels(v)) || !(isKind(v, storage.KindClone) || isKind(v, storage.KindSnapshot)) {
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
		if v == nil || seen[v.Id] || !b.ours(locatorLabels(v)) {
			continue
		}
		seen[v.Id] = true
		k, _ := kindOf(v)
		out = append(out, b.object(v, k))
	}
	return out, nil
}
