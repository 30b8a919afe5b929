package driver

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/storage/memory"
)

// budgetBackend behaves like a remote backend (Portworx): a call whose
// context has ended fails at once, and a call of a method in hang blocks
// until its context ends (a hung server). It records the deadline every
// Mount, Clone and Delete call was given.
type budgetBackend struct {
	*memory.Backend
	mu        sync.Mutex
	hang      map[string]bool
	deadlines map[string][]time.Time
}

func newBudgetBackend(m *memory.Backend) *budgetBackend {
	return &budgetBackend{Backend: m, hang: map[string]bool{}, deadlines: map[string][]time.Time{}}
}

func (b *budgetBackend) setHang(method string, on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hang[method] = on
}

func (b *budgetBackend) enter(ctx context.Context, method string) error {
	b.mu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		b.deadlines[method] = append(b.deadlines[method], dl)
	} else {
		b.deadlines[method] = append(b.deadlines[method], time.Time{})
	}
	hang := b.hang[method]
	b.mu.Unlock()
	if hang {
		<-ctx.Done()
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w (%v)", method, storage.ErrUnavailable, err)
	}
	return nil
}

// latest is the latest deadline method was given; zero time means one
// call had none at all.
func (b *budgetBackend) latest(method string) (time.Time, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var max time.Time
	for _, dl := range b.deadlines[method] {
		if dl.IsZero() {
			return time.Time{}, len(b.deadlines[method])
		}
		if dl.After(max) {
			max = dl
		}
	}
	return max, len(b.deadlines[method])
}

func (b *budgetBackend) Mount(ctx context.Context, id, target string) error {
	if err := b.enter(ctx, "Mount"); err != nil {
		return err
	}
	return b.Backend.Mount(ctx, id, target)
}

func (b *budgetBackend) Clone(ctx context.Context, snap storage.Object, labels, opts map[string]string) (storage.Object, error) {
	if err := b.enter(ctx, "Clone"); err != nil {
		return storage.Object{}, err
	}
	return b.Backend.Clone(ctx, snap, labels, opts)
}

func (b *budgetBackend) Delete(ctx context.Context, id string) error {
	if err := b.enter(ctx, "Delete"); err != nil {
		return err
	}
	return b.Backend.Delete(ctx, id)
}

// A Mount whose backend hangs after the clone is made answers within its
// one budget: undoing the clone spends what is left of it, not a fresh
// OpTimeout (which could carry the answer past Docker's 30 s). The clone
// the undo could not delete is a labelled orphan the sweep destroys.
func TestFailedMountUndoesWithinItsBudget(t *testing.T) {
	d, m, st := newTestDriver(t)
	b := newBudgetBackend(m)
	d.b = b
	d.cfg.OpTimeout = 300 * time.Millisecond
	b.setHang("Mount", true)
	const name = "app-production@latest+t1"
	if _, err := d.Mount(&volume.MountRequest{Name: name, ID: "1"}); err == nil {
		t.Fatal("Mount succeeded though the backend's mount hung")
	}
	mountDL, n := b.latest("Mount")
	if n == 0 || mountDL.IsZero() {
		t.Fatalf("backend Mount called %d times, deadline %v", n, mountDL)
	}
	delDL, n := b.latest("Delete")
	if n == 0 {
		t.Fatal("the failed Mount did not try to undo its clone")
	}
	if delDL.IsZero() || delDL.After(mountDL) {
		t.Fatalf("the undo ran on a budget ending %v, after the request's (%v)", delDL, mountDL)
	}
	if _, ok := st.Get(name); ok {
		t.Fatal("a record is left of the failed Mount of a claimed name")
	}
	if ents, err := os.ReadDir(d.cfg.DataRoot); err != nil || len(ents) != 0 {
		t.Fatalf("DATA_ROOT after the failed Mount: %v, %v; want it empty (no mount point left)", ents, err)
	}
	b.setHang("Mount", false)
	if err := d.sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := m.Count(storage.KindClone); c != 0 {
		t.Fatalf("%d clones left after the sweep", c)
	}
}

// Reconcile at start shares one budget across every volume, so a hung
// backend delays serving by that budget and not by a timeout per volume;
// the volumes it did not reach are reconciled by Run once the backend
// answers.
func TestReconcileAtStartSharesOneBudget(t *testing.T) {
	d, m, st := newTestDriver(t)
	var targets []string
	for i := 0; i < 5; i++ {
		name := fmt.Sprintf("app-production@latest+r%d", i)
		resp, err := d.Mount(&volume.MountRequest{Name: name, ID: "1"})
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, resp.Mountpoint)
	}
	// A restart in a new mount namespace: records count the mounts, and
	// none is there.
	m.ForgetMounts()

	b := newBudgetBackend(m)
	b.setHang("Mount", true)
	d.b = b
	d.cfg.OpTimeout = time.Hour // were it per volume, Reconcile would hang for hours
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() { _ = d.Reconcile(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("Reconcile did not return: it does not share the start budget")
	}
	startDL, _ := ctx.Deadline()
	if dl, n := b.latest("Mount"); n == 0 || dl.IsZero() || dl.After(startDL) {
		t.Fatalf("restoring mounts ran on a budget ending %v (%d calls), after the start budget's %v", dl, n, startDL)
	}
	for _, tg := range targets {
		if m.Mounted(tg) {
			t.Fatalf("%s mounted though the backend hung", tg)
		}
	}

	b.setHang("Mount", false)
	d.retryReconcile(context.Background())
	for _, tg := range targets {
		if !m.Mounted(tg) {
			t.Fatalf("%s not mounted again once the backend answered", tg)
		}
	}
	for _, name := range st.Names() {
		if r, _ := st.Get(name); r.Intent != nil {
			t.Fatalf("%s keeps intent %+v", name, r.Intent)
		}
	}
	if len(d.unreconciled) != 0 {
		t.Fatalf("still to reconcile: %v", d.unreconciled)
	}
}
