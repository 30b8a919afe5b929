package memory_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/storage/memory"
	"github.com/snapvol/snapvol/storage/storagetest"
)

// The fake keeps the contract the real backends keep, so driver tests on
// it test what runs in production.
func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend { return memory.New() })
}

func TestFailNextAndAlways(t *testing.T) {
	b := memory.New()
	ctx := context.Background()
	boom := errors.New("boom")
	b.FailNext("CreateVolume", boom)
	b.FailNext("CreateVolume", storage.ErrUnavailable)
	if _, err := b.CreateVolume(ctx, "a", nil); err != boom {
		t.Fatalf("first call: %v, want boom", err)
	}
	if _, err := b.CreateVolume(ctx, "a", nil); err != storage.ErrUnavailable {
		t.Fatalf("second call: %v, want the second failure queued", err)
	}
	v, err := b.CreateVolume(ctx, "a", nil)
	if err != nil {
		t.Fatalf("third call: %v, want the queue used up", err)
	}
	b.FailAlways("Unmount", boom)
	for i := 0; i < 3; i++ {
		if err := b.Unmount(ctx, v.ID, t.TempDir()); err != boom {
			t.Fatalf("Unmount %d: %v", i, err)
		}
	}
	b.FailAlways("Unmount", nil)
	if err := b.Unmount(ctx, v.ID, t.TempDir()); err != nil {
		t.Fatalf("Unmount after clearing: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("FailNext of a method that does not exist did not panic")
		}
	}()
	b.FailNext("Unmout", boom)
}

// SetFail fails what makes objects, not what looks or deletes: a full
// pool still lets the driver clean up.
func TestSetFail(t *testing.T) {
	b := memory.New()
	ctx := context.Background()
	v, _ := b.CreateVolume(ctx, "src", nil)
	s, _ := b.Snapshot(ctx, v, storage.SnapshotLabels("src"))
	c, _ := b.Clone(ctx, s, storage.CloneLabels("src@latest", "src"), nil)
	fire := errors.New("pool on fire")
	b.SetFail(fire)
	if _, err := b.CreateVolume(ctx, "new", nil); err != fire {
		t.Errorf("CreateVolume: %v", err)
	}
	if got, err := b.CreateVolume(ctx, "src", nil); err != nil || got.ID != v.ID {
		t.Errorf("CreateVolume of an existing volume: %v", err)
	}
	if _, err := b.Snapshot(ctx, v, nil); err != fire {
		t.Errorf("Snapshot: %v", err)
	}
	if _, err := b.Clone(ctx, s, nil, nil); err != fire {
		t.Errorf("Clone: %v", err)
	}
	if _, err := b.Volume(ctx, "src"); err != nil {
		t.Errorf("Volume: %v", err)
	}
	if err := b.Delete(ctx, c.ID); err != nil {
		t.Errorf("Delete: %v", err)
	}
	b.SetFail(nil)
	if _, err := b.Clone(ctx, s, nil, nil); err != nil {
		t.Errorf("Clone after SetFail(nil): %v", err)
	}
}

// A hook sees every call with its context, first: it can record deadlines
// and hang until the caller gives up, as a hung server does.
func TestHook(t *testing.T) {
	b := memory.New()
	var calls []memory.Call
	b.SetHook(func(ctx context.Context, c memory.Call) error {
		calls = append(calls, c)
		if c.Method == "Mount" {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	})
	b.FailAlways("Mount", errors.New("not reached"))
	v, err := b.CreateVolume(context.Background(), "src", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	target := t.TempDir() + "/m"
	if err := b.Mount(ctx, v.ID, target); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung Mount: %v", err)
	}
	want := []memory.Call{{Method: "CreateVolume", Name: "src"}, {Method: "Mount", ID: v.ID, Target: target}}
	if len(calls) != 2 || calls[0] != want[0] || calls[1] != want[1] {
		t.Fatalf("hook saw %+v, want %+v", calls, want)
	}
	if b.Mounted(target) {
		t.Fatal("a failed Mount is recorded")
	}
}

func TestBookkeeping(t *testing.T) {
	b := memory.New()
	ctx := context.Background()
	v, _ := b.CreateVolume(ctx, "src", nil)
	if v.ID == v.Identity {
		t.Errorf("ID and Identity are both %q: code taking one for the other would pass", v.ID)
	}
	s, _ := b.Snapshot(ctx, v, storage.SnapshotLabels("src"))
	b.Clone(ctx, s, storage.CloneLabels("src@latest", "src"), nil)
	if b.Count(storage.KindVolume) != 1 || b.Count(storage.KindSnapshot) != 1 || b.Count(storage.KindClone) != 1 {
		t.Errorf("Count: %d %d %d", b.Count(storage.KindVolume), b.Count(storage.KindSnapshot), b.Count(storage.KindClone))
	}
	b.Owned(ctx)
	b.Owned(ctx)
	if n := b.OwnedCalls(); n != 2 {
		t.Errorf("OwnedCalls = %d", n)
	}
	target := t.TempDir() + "/m"
	if err := b.Mount(ctx, v.ID, target); err != nil {
		t.Fatal(err)
	}
	if m := b.Mounts(); len(m) != 1 || m[target] != v.ID {
		t.Errorf("Mounts = %v", m)
	}
	b.ForgetMounts()
	if b.Mounted(target) || len(b.Mounts()) != 0 {
		t.Error("ForgetMounts kept a mount")
	}
	if err := b.CheckOptions(storage.KindClone, map[string]string{"tier": "ssd"}); err == nil {
		t.Error("tier= accepted on a clone")
	}
	if err := b.CheckOptions(storage.KindVolume, map[string]string{"tier": "ssd"}); err != nil || !b.OptionKey("tier") || b.OptionKey("size") {
		t.Errorf("tier on a volume: %v", err)
	}
	if _, err := b.ForeignVolume(ctx, "src"); err == nil {
		t.Error("ForeignVolume over an existing volume")
	}
}
