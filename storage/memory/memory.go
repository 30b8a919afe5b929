// Package memory is an in-memory storage.Backend for tests: the driver's
// logic without root, held to the same contract as the real backends by
// storage/storagetest. Objects live in a map. Mount makes the mount point
// directory and records the mount but mounts nothing, so no data moves;
// Unmount removes the directory when it is empty, as the real ones do.
//
// Failures can be injected into any method that returns an error: a Hook
// sees every call first (and may block on its context, as a hung server
// would), FailNext and FailAlways fail calls of one method, and SetFail
// fails every call that would make an object.
package memory

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/snapvol/snapvol/mountpoint"
	"github.com/snapvol/snapvol/storage"
)

// Call describes one call of a Backend method, for a Hook.
type Call struct {
	// Method is the storage.Backend method name, e.g. "Mount".
	Method string
	// ID is the object the call is about: the volume of RemoveVolume, the
	// source of Snapshot, Snapshots and SnapshotByName, the snapshot of
	// Clone, the object of Delete, Mount and Unmount. Empty otherwise.
	ID string
	// Name is the volume name of Volume and CreateVolume, the snapshot
	// name of SnapshotByName.
	Name string
	// Target is the mount point of Mount and Unmount.
	Target string
}

// A Hook runs at the start of every call of a method that returns an
// error, before any failure set with FailNext or FailAlways; an error it
// returns is the call's. Calls without a context (CheckOptions, Close)
// pass context.Background().
type Hook func(ctx context.Context, c Call) error

// methods are those a failure can be injected into.
var methods = map[string]bool{
	"CheckOptions": true, "Volume": true, "CreateVolume": true, "RemoveVolume": true,
	"Snapshots": true, "Snapshot": true, "SnapshotOf": true, "SnapshotByName": true, "Clone": true,
	"Delete": true, "Owned": true, "Mount": true, "Unmount": true, "Close": true,
}

type object struct {
	storage.Object
	seq int // creation order, for stable listings
}

// Backend is the in-memory storage.Backend. The zero value is not usable;
// call New.
type Backend struct {
	mu         sync.Mutex
	n          int
	objs       map[string]object
	mounted    map[string]string // target -> id
	hook       Hook
	failNext   map[string][]error
	failAlways map[string]error
	fail       error
	owned      int
}

var _ storage.Backend = (*Backend)(nil)

// New returns an empty backend.
func New() *Backend {
	return &Backend{
		objs: map[string]object{}, mounted: map[string]string{},
		failNext: map[string][]error{}, failAlways: map[string]error{},
	}
}

// SetHook installs h (nil removes it).
func (b *Backend) SetHook(h Hook) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hook = h
}

// FailNext makes the next call of method fail with err; calls queue up,
// so FailNext twice fails the next two. It panics on a name that is not a
// method returning an error, so a typo cannot pass as a test.
func (b *Backend) FailNext(method string, err error) {
	mustMethod(method)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failNext[method] = append(b.failNext[method], err)
}

// FailAlways makes every call of method fail with err until it is called
// again with nil.
func (b *Backend) FailAlways(method string, err error) {
	mustMethod(method)
	b.mu.Lock()
	defer b.mu.Unlock()
	if err == nil {
		delete(b.failAlways, method)
		return
	}
	b.failAlways[method] = err
}

// SetFail makes every call that would make an object (CreateVolume of a
// volume that does not exist yet, Snapshot, Clone) fail with err, a pool
// that is full or on fire, until SetFail(nil).
func (b *Backend) SetFail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fail = err
}

func mustMethod(method string) {
	if !methods[method] {
		panic(fmt.Sprintf("memory: no method %q to fail", method))
	}
}

// enter runs the hook and the injected failures of a call.
func (b *Backend) enter(ctx context.Context, c Call) error {
	b.mu.Lock()
	h := b.hook
	b.mu.Unlock()
	if h != nil {
		if err := h(ctx, c); err != nil {
			return err
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if q := b.failNext[c.Method]; len(q) > 0 {
		b.failNext[c.Method] = q[1:]
		return q[0]
	}
	return b.failAlways[c.Method]
}

// ForeignVolume makes a regular volume as someone other than snapvol
// would (a production volume): Volume finds it, CreateVolume refuses it,
// nothing deletes it. It implements storagetest.Outsider.
func (b *Backend) ForeignVolume(_ context.Context, name string) (storage.Object, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.volume(name); ok {
		return storage.Object{}, fmt.Errorf("volume %q exists", name)
	}
	return b.add(storage.KindVolume, name, "", nil), nil
}

// ForeignSnapshot takes a read-only snapshot named name of source as
// someone other than snapvol would (a schedule, pxctl, btrfs by hand). It
// implements storagetest.Outsider.
func (b *Backend) ForeignSnapshot(_ context.Context, source storage.Object, name string) (storage.Object, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	src, err := b.source(source)
	if err != nil {
		return storage.Object{}, err
	}
	for _, o := range b.objs {
		if o.Kind == storage.KindSnapshot && o.Parent == src.Identity && o.Name == name {
			return storage.Object{}, fmt.Errorf("snapshot %q of %q exists", name, source.Name)
		}
	}
	return b.add(storage.KindSnapshot, name, src.Identity, nil), nil
}

// HoldsNoData tells storagetest that nothing written through a mount
// reaches an object here (storagetest.Fake).
func (b *Backend) HoldsNoData() {}

// Count is the number of objects of kind, plugin-made or not.
func (b *Backend) Count(kind storage.Kind) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, o := range b.objs {
		if o.Kind == kind {
			n++
		}
	}
	return n
}

// OwnedCalls is how many times Owned (a scan of the whole pool on a real
// backend) has been called.
func (b *Backend) OwnedCalls() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.owned
}

// Mounts returns what is mounted: target -> object ID.
func (b *Backend) Mounts() map[string]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]string, len(b.mounted))
	for k, v := range b.mounted {
		out[k] = v
	}
	return out
}

// ForgetMounts drops every mount, as a restart in a new mount namespace
// (or a reboot) would; mount point directories stay.
func (b *Backend) ForgetMounts() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mounted = map[string]string{}
}

func (b *Backend) Scope() string           { return "local" }
func (b *Backend) OptionKey(k string) bool { return k == "tier" }

// CheckOptions: tier sets where a new volume lives, so a clone, which
// lives where its snapshot does, cannot take one.
func (b *Backend) CheckOptions(kind storage.Kind, opts map[string]string) error {
	if err := b.enter(context.Background(), Call{Method: "CheckOptions"}); err != nil {
		return err
	}
	if _, ok := opts["tier"]; ok && kind == storage.KindClone {
		return fmt.Errorf("option tier= cannot be applied to a clone")
	}
	return nil
}

func (b *Backend) Close() error { return b.enter(context.Background(), Call{Method: "Close"}) }

func (b *Backend) Mounted(target string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.mounted[target]
	return ok
}

// add makes an object; the caller holds b.mu. IDs and identities differ,
// so code that takes one for the other fails here too.
func (b *Backend) add(kind storage.Kind, name, parent string, labels map[string]string) storage.Object {
	b.n++
	o := storage.Object{
		ID: fmt.Sprintf("%s-%d", kind, b.n), Identity: fmt.Sprintf("ident-%d", b.n),
		Name: name, Kind: kind, Parent: parent, Created: time.Now(), Labels: copyLabels(labels),
	}
	b.objs[o.ID] = object{Object: o, seq: b.n}
	return out(o)
}

// out copies o's labels, so callers cannot change what is stored.
func out(o storage.Object) storage.Object {
	o.Labels = copyLabels(o.Labels)
	return o
}

func copyLabels(l map[string]string) map[string]string {
	if l == nil {
		return nil
	}
	c := make(map[string]string, len(l))
	for k, v := range l {
		c[k] = v
	}
	return c
}

func (b *Backend) volume(name string) (storage.Object, bool) {
	for _, o := range b.objs {
		if o.Kind == storage.KindVolume && o.Name == name {
			return o.Object, true
		}
	}
	return storage.Object{}, false
}

// source finds the volume source names, as it is now; the caller holds
// b.mu.
func (b *Backend) source(source storage.Object) (storage.Object, error) {
	o, ok := b.objs[source.ID]
	if !ok || o.Kind != storage.KindVolume || (source.Identity != "" && source.Identity != o.Identity) {
		return storage.Object{}, fmt.Errorf("volume %q (%s): %w", source.Name, source.ID, storage.ErrNotFound)
	}
	return o.Object, nil
}

// sorted lists the objects keep selects in creation order; the caller
// holds b.mu.
func (b *Backend) sorted(keep func(storage.Object) bool) []storage.Object {
	var sel []object
	for _, o := range b.objs {
		if keep(o.Object) {
			sel = append(sel, o)
		}
	}
	sort.Slice(sel, func(i, j int) bool { return sel[i].seq < sel[j].seq })
	res := make([]storage.Object, len(sel))
	for i, o := range sel {
		res[i] = out(o.Object)
	}
	return res
}

func (b *Backend) Volume(ctx context.Context, name string) (storage.Object, error) {
	if err := b.enter(ctx, Call{Method: "Volume", Name: name}); err != nil {
		return storage.Object{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if o, ok := b.volume(name); ok {
		return out(o), nil
	}
	return storage.Object{}, fmt.Errorf("volume %q: %w", name, storage.ErrNotFound)
}

func (b *Backend) CreateVolume(ctx context.Context, name string, _ map[string]string) (storage.Object, error) {
	if err := b.enter(ctx, Call{Method: "CreateVolume", Name: name}); err != nil {
		return storage.Object{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if o, ok := b.volume(name); ok {
		if k, ours := storage.KindOf(o.Labels); !ours || k != storage.KindVolume {
			return storage.Object{}, fmt.Errorf("volume %q: %w", name, storage.ErrForeign)
		}
		return out(o), nil
	}
	if b.fail != nil {
		return storage.Object{}, b.fail
	}
	return b.add(storage.KindVolume, name, "", storage.VolumeLabels()), nil
}

func (b *Backend) RemoveVolume(ctx context.Context, v storage.Object) error {
	if err := b.enter(ctx, Call{Method: "RemoveVolume", ID: v.ID}); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	o, ok := b.objs[v.ID]
	if !ok {
		return nil
	}
	if k, ours := storage.KindOf(o.Labels); o.Kind != storage.KindVolume || !ours || k != storage.KindVolume {
		return fmt.Errorf("remove volume %q (%s): not a volume snapvol made: %w", o.Name, o.ID, storage.ErrProtected)
	}
	for id, s := range b.objs {
		if k, ours := storage.KindOf(s.Labels); s.Kind == storage.KindSnapshot && s.Parent == o.Identity && ours && k == storage.KindSnapshot {
			delete(b.objs, id)
		}
	}
	delete(b.objs, o.ID)
	return nil
}

func (b *Backend) Snapshots(ctx context.Context, source storage.Object) ([]storage.Object, error) {
	if err := b.enter(ctx, Call{Method: "Snapshots", ID: source.ID}); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.snapshots(source), nil
}

// snapshots lists those of source by its identity, looked up from its ID
// when the caller has none; the caller holds b.mu.
func (b *Backend) snapshots(source storage.Object) []storage.Object {
	ident := source.Identity
	if ident == "" {
		o, ok := b.objs[source.ID]
		if !ok {
			return nil
		}
		ident = o.Identity
	}
	return b.sorted(func(o storage.Object) bool { return o.Kind == storage.KindSnapshot && o.Parent == ident })
}

func (b *Backend) Snapshot(ctx context.Context, source storage.Object, labels map[string]string) (storage.Object, error) {
	if err := b.enter(ctx, Call{Method: "Snapshot", ID: source.ID}); err != nil {
		return storage.Object{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return storage.Object{}, b.fail
	}
	src, err := b.source(source)
	if err != nil {
		return storage.Object{}, fmt.Errorf("snapshot: %w", err)
	}
	l := storage.WithSourceID(labels, src.Identity)
	return b.add(storage.KindSnapshot, fmt.Sprintf("snap%d", b.n+1), storage.SnapshotParent(l, src.Identity), l), nil
}

func (b *Backend) SnapshotOf(ctx context.Context, clone, source storage.Object, labels map[string]string) (storage.Object, error) {
	if err := b.enter(ctx, Call{Method: "SnapshotOf", ID: clone.ID}); err != nil {
		return storage.Object{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return storage.Object{}, b.fail
	}
	if c, ok := b.objs[clone.ID]; !ok || c.Kind != storage.KindClone {
		return storage.Object{}, fmt.Errorf("snapshot of clone %q: %w", clone.ID, storage.ErrNotFound)
	}
	src, err := b.source(source)
	if err != nil {
		return storage.Object{}, fmt.Errorf("snapshot of clone %q: %w", clone.ID, err)
	}
	l := storage.WithSourceID(labels, src.Identity)
	return b.add(storage.KindSnapshot, fmt.Sprintf("snap%d", b.n+1), storage.SnapshotParent(l, src.Identity), l), nil
}

func (b *Backend) SnapshotByName(ctx context.Context, source storage.Object, name string) (storage.Object, error) {
	if err := b.enter(ctx, Call{Method: "SnapshotByName", ID: source.ID, Name: name}); err != nil {
		return storage.Object{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.snapshots(source) {
		if s.Name == name {
			return s, nil
		}
	}
	return storage.Object{}, fmt.Errorf("snapshot %q of %q: %w", name, source.Name, storage.ErrNotFound)
}

func (b *Backend) Clone(ctx context.Context, snap storage.Object, labels, _ map[string]string) (storage.Object, error) {
	if err := b.enter(ctx, Call{Method: "Clone", ID: snap.ID}); err != nil {
		return storage.Object{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return storage.Object{}, b.fail
	}
	s, ok := b.objs[snap.ID]
	if !ok || s.Kind != storage.KindSnapshot {
		return storage.Object{}, fmt.Errorf("clone of snapshot %q (%s): %w", snap.Name, snap.ID, storage.ErrNotFound)
	}
	return b.add(storage.KindClone, "clone", s.Identity, labels), nil
}

func (b *Backend) Delete(ctx context.Context, id string) error {
	if err := b.enter(ctx, Call{Method: "Delete", ID: id}); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	o, ok := b.objs[id]
	if !ok {
		return nil
	}
	if k, ours := storage.KindOf(o.Labels); !ours || k != o.Kind || o.Kind == storage.KindVolume {
		return fmt.Errorf("delete %q (%s): not a snapshot or clone snapvol made: %w", o.Name, id, storage.ErrProtected)
	}
	delete(b.objs, id)
	return nil
}

func (b *Backend) Owned(ctx context.Context) ([]storage.Object, error) {
	if err := b.enter(ctx, Call{Method: "Owned"}); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.owned++
	return b.sorted(func(o storage.Object) bool { return o.Owned() }), nil
}

func (b *Backend) Mount(ctx context.Context, id, target string) error {
	if err := b.enter(ctx, Call{Method: "Mount", ID: id, Target: target}); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	o, ok := b.objs[id]
	if !ok {
		return fmt.Errorf("mount %s: %w", id, storage.ErrNotFound)
	}
	if _, ok := b.mounted[target]; ok {
		return nil
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("mount %q (%s): creating mount point: %w", o.Name, id, err)
	}
	b.mounted[target] = id
	return nil
}

func (b *Backend) Unmount(ctx context.Context, id, target string) error {
	if err := b.enter(ctx, Call{Method: "Unmount", ID: id, Target: target}); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.mounted, target)
	return mountpoint.RemoveMountPoint(target)
}
