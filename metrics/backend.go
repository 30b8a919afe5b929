package metrics

import (
	"context"
	"sync/atomic"

	"github.com/snapvol/snapvol/storage"
)

// Wrap returns b counting its failed calls (snapvol_backend_errors_total,
// snapvol_no_space_errors_total) and noting whether it answers
// (snapvol_backend_up). The optional interfaces b implements
// (storage.Usager, storage.Checker, storage.Pinner) are passed through,
// and no others are added: the driver asks for them by type assertion.
// With m nil, b itself is returned.
func (m *Metrics) Wrap(b storage.Backend) storage.Backend {
	if m == nil {
		return b
	}
	w := &backend{Backend: b, m: m}
	m.state.up = &w.up
	w.up.Store(true)
	u, isU := b.(storage.Usager)
	c, isC := b.(storage.Checker)
	if p, isP := b.(storage.Pinner); isP {
		return wrapPinner(w, pinCalls{w, p}, u, isU, c, isC)
	}
	switch {
	case isU && isC:
		return struct {
			*backend
			usageCalls
			healthCalls
		}{w, usageCalls{w, u}, healthCalls{w, c}}
	case isU:
		return struct {
			*backend
			usageCalls
		}{w, usageCalls{w, u}}
	case isC:
		return struct {
			*backend
			healthCalls
		}{w, healthCalls{w, c}}
	}
	return w
}

// wrapPinner is Wrap for a backend that also measures pinned space.
func wrapPinner(w *backend, p pinCalls, u storage.Usager, isU bool, c storage.Checker, isC bool) storage.Backend {
	switch {
	case isU && isC:
		return struct {
			*backend
			usageCalls
			healthCalls
			pinCalls
		}{w, usageCalls{w, u}, healthCalls{w, c}, p}
	case isU:
		return struct {
			*backend
			usageCalls
			pinCalls
		}{w, usageCalls{w, u}, p}
	case isC:
		return struct {
			*backend
			healthCalls
			pinCalls
		}{w, healthCalls{w, c}, p}
	}
	return struct {
		*backend
		pinCalls
	}{w, p}
}

// backend counts the errors of every call of storage.Backend that can
// fail; Scope, OptionKey, Mounted and Close pass straight through the
// embedded interface.
type backend struct {
	storage.Backend
	m  *Metrics
	up atomic.Bool // the last call got an answer
}

func (w *backend) done(call string, err error) error {
	if err == nil {
		w.up.Store(true)
		return nil
	}
	class := ErrorClass(err)
	switch class {
	case "not_found":
		w.up.Store(true)
		return err
	case "unavailable", "timeout":
		w.up.Store(false)
	default:
		w.up.Store(true)
	}
	w.m.backendErrors.WithLabelValues(call, class).Inc()
	if class == "no_space" {
		w.m.noSpace.WithLabelValues(call).Inc()
	}
	return err
}

func (w *backend) CheckOptions(kind storage.Kind, opts map[string]string) error {
	// A user's bad option, not a backend failure: not counted.
	return w.Backend.CheckOptions(kind, opts)
}

func (w *backend) Volume(ctx context.Context, name string) (storage.Object, error) {
	o, err := w.Backend.Volume(ctx, name)
	return o, w.done("volume", err)
}

func (w *backend) CreateVolume(ctx context.Context, name string, opts map[string]string) (storage.Object, error) {
	o, err := w.Backend.CreateVolume(ctx, name, opts)
	return o, w.done("create_volume", err)
}

func (w *backend) RemoveVolume(ctx context.Context, v storage.Object) error {
	return w.done("remove_volume", w.Backend.RemoveVolume(ctx, v))
}

func (w *backend) Snapshots(ctx context.Context, source storage.Object) ([]storage.Object, error) {
	o, err := w.Backend.Snapshots(ctx, source)
	return o, w.done("snapshots", err)
}

func (w *backend) Snapshot(ctx context.Context, source storage.Object, labels map[string]string) (storage.Object, error) {
	o, err := w.Backend.Snapshot(ctx, source, labels)
	return o, w.done("snapshot", err)
}

func (w *backend) SnapshotOf(ctx context.Context, clone, source storage.Object, labels map[string]string) (storage.Object, error) {
	o, err := w.Backend.SnapshotOf(ctx, clone, source, labels)
	return o, w.done("snapshot_of", err)
}

func (w *backend) SnapshotByName(ctx context.Context, source storage.Object, name string) (storage.Object, error) {
	o, err := w.Backend.SnapshotByName(ctx, source, name)
	return o, w.done("snapshot_by_name", err)
}

func (w *backend) Clone(ctx context.Context, snap storage.Object, labels, opts map[string]string) (storage.Object, error) {
	o, err := w.Backend.Clone(ctx, snap, labels, opts)
	return o, w.done("clone", err)
}

func (w *backend) Delete(ctx context.Context, id string) error {
	return w.done("delete", w.Backend.Delete(ctx, id))
}

func (w *backend) Owned(ctx context.Context) ([]storage.Object, error) {
	o, err := w.Backend.Owned(ctx)
	return o, w.done("owned", err)
}

func (w *backend) Mount(ctx context.Context, id, target string) error {
	return w.done("mount", w.Backend.Mount(ctx, id, target))
}

func (w *backend) Unmount(ctx context.Context, id, target string) error {
	return w.done("unmount", w.Backend.Unmount(ctx, id, target))
}

// usageCalls passes storage.Usager through.
type usageCalls struct {
	w *backend
	u storage.Usager
}

func (x usageCalls) Usage(ctx context.Context) (storage.PoolUsage, error) {
	u, err := x.u.Usage(ctx)
	return u, x.w.done("usage", err)
}

func (x usageCalls) ObjectUsage(ctx context.Context) (map[string]storage.ObjectUsage, error) {
	u, err := x.u.ObjectUsage(ctx)
	return u, x.w.done("object_usage", err)
}

// healthCalls passes storage.Checker through.
type healthCalls struct {
	w *backend
	c storage.Checker
}

func (x healthCalls) Health(ctx context.Context) error {
	return x.w.done("health", x.c.Health(ctx))
}

// pinCalls passes storage.Pinner through.
type pinCalls struct {
	w *backend
	p storage.Pinner
}

func (x pinCalls) Pinned(ctx context.Context) (storage.PinnedUsage, error) {
	u, err := x.p.Pinned(ctx)
	return u, x.w.done("pinned", err)
}
