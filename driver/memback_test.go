package driver

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/snapvol/snapvol/storage"
)

// memBackend is an in-memory storage.Backend for unit tests and fuzzing
// of the driver's logic without root; the integration tests in test/ run
// the same logic on real btrfs.
type memBackend struct {
	mu      sync.Mutex
	n       int
	objs    map[string]storage.Object
	mounted map[string]string // target -> id
	fail    error             // returned by every mutating call when set
	owned   int               // calls of Owned (a scan of the whole pool)
}

func newMemBackend() *memBackend {
	return &memBackend{objs: map[string]storage.Object{}, mounted: map[string]string{}}
}

func (m *memBackend) Scope() string           { return "local" }
func (m *memBackend) OptionKey(k string) bool { return k == "tier" }

// CheckOptions: tier sets where a new volume lives, so a clone, which
// lives where its snapshot does, cannot take one.
func (m *memBackend) CheckOptions(kind storage.Kind, opts map[string]string) error {
	if _, ok := opts["tier"]; ok && kind == storage.KindClone {
		return fmt.Errorf("option tier= cannot be applied to a clone")
	}
	return nil
}
func (m *memBackend) Close() error { return nil }
func (m *memBackend) Mounted(target string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.mounted[target]
	return ok
}

func (m *memBackend) add(kind storage.Kind, name, parent string, labels map[string]string) storage.Object {
	m.n++
	o := storage.Object{ID: fmt.Sprintf("%s-%d", kind, m.n), Name: name, Kind: kind, Parent: parent, Created: time.Now(), Labels: labels}
	m.objs[o.ID] = o
	return o
}

func (m *memBackend) Volume(_ context.Context, name string) (storage.Object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range m.objs {
		if o.Kind == storage.KindVolume && o.Name == name {
			return o, nil
		}
	}
	return storage.Object{}, fmt.Errorf("volume %q: %w", name, storage.ErrNotFound)
}

func (m *memBackend) CreateVolume(ctx context.Context, name string, _ map[string]string) (storage.Object, error) {
	if o, err := m.Volume(ctx, name); err == nil {
		if o.Labels["made-elsewhere"] == "1" {
			return storage.Object{}, fmt.Errorf("volume %q: %w", name, storage.ErrForeign)
		}
		return o, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return storage.Object{}, m.fail
	}
	return m.add(storage.KindVolume, name, "", nil), nil
}

func (m *memBackend) RemoveVolume(_ context.Context, v storage.Object) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objs, v.ID)
	return nil
}

func (m *memBackend) Snapshots(_ context.Context, source storage.Object) ([]storage.Object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []storage.Object
	for _, o := range m.objs {
		if o.Kind == storage.KindSnapshot && o.Parent == source.ID {
			out = append(out, o)
		}
	}
	return out, nil
}

func (m *memBackend) Snapshot(_ context.Context, source storage.Object, labels map[string]string) (storage.Object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return storage.Object{}, m.fail
	}
	return m.add(storage.KindSnapshot, fmt.Sprintf("snap%d", m.n+1), source.ID, labels), nil
}

func (m *memBackend) SnapshotByName(ctx context.Context, source storage.Object, name string) (storage.Object, error) {
	snaps, _ := m.Snapshots(ctx, source)
	for _, s := range snaps {
		if s.Name == name {
			return s, nil
		}
	}
	return storage.Object{}, fmt.Errorf("snapshot %q: %w", name, storage.ErrNotFound)
}

func (m *memBackend) Clone(_ context.Context, snap storage.Object, labels, _ map[string]string) (storage.Object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return storage.Object{}, m.fail
	}
	return m.add(storage.KindClone, "clone", snap.ID, labels), nil
}

func (m *memBackend) Delete(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objs[id]
	if !ok {
		return nil
	}
	if !o.Owned() {
		return storage.ErrProtected
	}
	delete(m.objs, id)
	return nil
}

func (m *memBackend) Owned(context.Context) ([]storage.Object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.owned++
	var out []storage.Object
	for _, o := range m.objs {
		if o.Owned() {
			out = append(out, o)
		}
	}
	return out, nil
}

func (m *memBackend) Mount(_ context.Context, id, target string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objs[id]; !ok {
		return storage.ErrNotFound
	}
	m.mounted[target] = id
	return nil
}

func (m *memBackend) Unmount(_ context.Context, _, target string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.mounted, target)
	return nil
}

func (m *memBackend) count(kind storage.Kind) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, o := range m.objs {
		if o.Kind == kind {
			n++
		}
	}
	return n
}
