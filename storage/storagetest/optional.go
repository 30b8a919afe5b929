package storagetest

// Checks of the optional interfaces a backend may implement: how full it
// is (storage.Usager) and whether its storage failed (storage.Checker).

import (
	"testing"

	"github.com/snapvol/snapvol/storage"
)

// A backend that can say how full it is (storage.Usager) gives sizes
// that add up, and usage only for objects it holds, never negative.
func testUsage(t *testing.T, e *env) {
	u, ok := e.b.(storage.Usager)
	if !ok {
		t.Skipf("%T does not report usage (storage.Usager)", e.b)
	}
	src := e.create("usage-src")
	s := e.snapshot(src)
	c := e.clone(s, "usage-src@latest", src.Name)
	pu, err := u.Usage(e.ctx)
	if err != nil {
		t.Fatalf("Usage: %v", err)
	}
	if pu.Size != -1 && (pu.Size <= 0 || pu.Used < 0 || pu.Free < 0 || pu.Used > pu.Size || pu.Free > pu.Size || pu.Reserve < 0 || pu.Reserve > pu.Size) {
		t.Errorf("Usage = %+v; want sizes that add up", pu)
	}
	ou, err := u.ObjectUsage(e.ctx)
	if err != nil {
		t.Fatalf("ObjectUsage: %v", err)
	}
	known := map[string]bool{src.ID: true, s.ID: true, c.ID: true}
	for id, o := range ou {
		if !known[id] {
			t.Errorf("ObjectUsage reports %s, which is no object here", id)
		}
		if o.Bytes < 0 || o.Limit < 0 {
			t.Errorf("ObjectUsage[%s] = %+v", id, o)
		}
	}
}

// A backend that can tell when its storage failed (storage.Checker)
// reports a fresh one healthy.
func testHealth(t *testing.T, e *env) {
	h, ok := e.b.(storage.Checker)
	if !ok {
		t.Skipf("%T cannot tell its storage's health (storage.Checker)", e.b)
	}
	if err := h.Health(e.ctx); err != nil {
		t.Fatalf("Health of a fresh backend: %v", err)
	}
	e.create("health-src")
	if err := h.Health(e.ctx); err != nil {
		t.Fatalf("Health after making a volume: %v", err)
	}
}
