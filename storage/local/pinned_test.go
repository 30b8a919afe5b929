package local

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/snapvol/snapvol/storage"
)

// Attack (issue 20, item 4): idle @now clones pin production's old data.
// Production rewrites a 150 MiB file between @now clones; simple quotas
// bill every old copy a snapshot keeps alive to production, so neither a
// clone limit nor the clones' group stops it, and at 65aeefa production
// got ENOSPC. Now snapshots are refused, naming snapvol df, before free
// space would drop below the reserve; production keeps writing; and
// Pinned says which snapshots hold what.
func TestIdleClonesPinningProductionAreRefusedNotProduction(t *testing.T) {
	root := testPoolSize(t, 1280<<20)
	b, err := Open(Config{Pool: root, CloneSize: 32 << 20, Reserve: Reserve{Percent: 25}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ctx := context.Background()
	src, err := b.CreateVolume(ctx, "prod", nil)
	if err != nil {
		t.Fatal(err)
	}
	prod := mountAt(t, b, src.ID)
	if n, err := fill(t, prod, "db", 150<<20); err != nil {
		t.Fatalf("production wrote %dM: %v", n>>20, err)
	}
	var snaps []storage.Object
	refused := 0
	for round := 1; round <= 7; round++ {
		snap, err := b.Snapshot(ctx, src, storage.SnapshotLabels("prod"))
		switch {
		case errors.Is(err, storage.ErrNoSpace):
			refused++
			if !strings.Contains(err.Error(), "snapvol df") {
				t.Errorf("round %d: the refusal does not name snapvol df: %v", round, err)
			}
			t.Logf("round %d: %v", round, err)
		case err != nil:
			t.Fatalf("round %d: %v", round, err)
		default:
			snaps = append(snaps, snap)
			if _, err := b.Clone(ctx, snap, storage.CloneLabels(fmt.Sprintf("prod@now+%d", round), "prod"), nil); err != nil {
				t.Fatalf("round %d: clone: %v", round, err)
			}
		}
		// Production rewrites its file: it must never fail.
		if n, err := fill(t, prod, "db", 150<<20); err != nil {
			t.Fatalf("round %d: production got %v after %dM", round, err, n>>20)
		}
		u, _ := b.Usage(ctx)
		t.Logf("round %d: free %dM, reserve %dM", round, u.Free>>20, u.Reserve>>20)
	}
	if refused == 0 || len(snaps) < 2 {
		t.Fatalf("%d snapshots taken, %d refused; want some of each", len(snaps), refused)
	}
	// And some more rewrites once snapshots are refused.
	for i := 0; i < 3; i++ {
		if n, err := fill(t, prod, "db", 150<<20); err != nil {
			t.Fatalf("production rewrite %d after the refusals: %v after %dM", i, err, n>>20)
		}
	}
	if _, err := b.Clone(ctx, snaps[0], storage.CloneLabels("late", "prod"), nil); err != nil {
		t.Logf("a clone now: %v", err)
	}

	p, err := b.Pinned(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pinned: %+v", p)
	// Every snapshot keeps alive the copy production rewrote after it.
	want := int64(len(snaps)) * 150 << 20
	if got := p.Sources["prod"]; got < want*9/10 || got > want*11/10 {
		t.Errorf("pinned of prod = %dM; want about %dM (%d snapshots × 150M)", got>>20, want>>20, len(snaps))
	}
	byID := map[string]storage.PinnedObject{}
	for _, o := range p.Objects {
		byID[o.ID] = o
	}
	for _, s := range snaps {
		if o := byID[s.ID]; o.Exclusive < 140<<20 || o.Source != "prod" || o.Kind != storage.KindSnapshot {
			t.Errorf("snapshot %s pins %+v; want its own 150M copy", s.Name, o)
		}
	}
}
