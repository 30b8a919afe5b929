package driver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/storage/memory"
)

// Issue 20 item 6: 32 jobs starting at once on @now took 32 snapshots of
// production (on 65aeefa), each a btrfs commit stalling production's
// fsyncs. Now requests arriving while a snapshot is taken share the next
// one: with each snapshot taking 150 ms (a loaded btrfs commit), 32
// concurrent @now Mounts take at most 3. Each still gets a clone of its
// own, of a snapshot taken after it asked.
func TestNowRequestsShareTheNextSnapshot(t *testing.T) {
	d, b, st := newTestDriver(t)
	var snapshots atomic.Int64
	b.SetHook(func(ctx context.Context, c memory.Call) error {
		if c.Method != "Snapshot" {
			return nil
		}
		snapshots.Add(1)
		select {
		case <-time.After(150 * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	const jobs = 32
	start := make(chan struct{})
	var wg sync.WaitGroup
	asked := make([]time.Time, jobs)
	errs := make([]error, jobs)
	for i := 0; i < jobs; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			asked[i] = time.Now()
			_, errs[i] = d.Mount(&volume.MountRequest{Name: fmt.Sprintf("app-production@now+job-%d", i), ID: "c"})
		}(i)
	}
	close(start)
	wg.Wait()
	objects := map[string]bool{}
	snaps := map[string]bool{}
	for i := 0; i < jobs; i++ {
		if errs[i] != nil {
			t.Fatalf("job %d: %v", i, errs[i])
		}
		r, _ := st.Get(fmt.Sprintf("app-production@now+job-%d", i))
		a := r.Attachment("")
		if a == nil || a.Mounts != 1 || objects[a.Object] {
			t.Fatalf("job %d has no clone of its own: %+v", i, a)
		}
		objects[a.Object] = true
		snaps[a.Snapshot] = true
		// @now: a snapshot taken after the request was made, never one
		// that was already in flight.
		if a.SnapshotTime.Before(asked[i]) {
			t.Fatalf("job %d asked at %v and got a snapshot of %v", i, asked[i], a.SnapshotTime)
		}
	}
	if n := b.Count(storage.KindClone); n != jobs {
		t.Fatalf("%d clones for %d jobs", n, jobs)
	}
	n := snapshots.Load()
	t.Logf("%d concurrent @now mounts: %d snapshots taken, %d used", jobs, n, len(snaps))
	if n > 3 {
		t.Fatalf("%d concurrent @now mounts took %d snapshots; want at most 3 (group commit)", jobs, n)
	}
	// One after the others ended: a snapshot of its own, taken now.
	before := snapshots.Load()
	if _, err := d.Mount(&volume.MountRequest{Name: "app-production@now+late", ID: "c"}); err != nil {
		t.Fatal(err)
	}
	if snapshots.Load() != before+1 {
		t.Fatalf("a lone @now took %d snapshots", snapshots.Load()-before)
	}
}

// A request whose budget ends while it waits for the next snapshot gives
// up with an error naming the source; the others are not failed by it,
// and a batch nobody waits for any more is not taken.
func TestNowWaitEndsWithTheBudget(t *testing.T) {
	d, b, _ := newTestDriver(t)
	release := make(chan struct{})
	var snapshots atomic.Int64
	entered := make(chan struct{}, 8)
	b.SetHook(func(ctx context.Context, c memory.Call) error {
		if c.Method != "Snapshot" {
			return nil
		}
		snapshots.Add(1)
		entered <- struct{}{}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	first := make(chan error, 1)
	go func() {
		_, err := d.Mount(&volume.MountRequest{Name: "app-production@now+first", ID: "c"})
		first <- err
	}()
	<-entered // the first snapshot is in flight
	d.cfg.MountTimeout = 200 * time.Millisecond
	start := time.Now()
	_, err := d.Mount(&volume.MountRequest{Name: "app-production@now+impatient", ID: "c"})
	if !errors.Is(err, ErrLockTimeout) || !strings.Contains(err.Error(), `"app-production"`) || !strings.Contains(err.Error(), "next snapshot") {
		t.Fatalf("a @now whose budget ended waiting: %v", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("it waited %v on a 200ms budget", el)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("the first @now: %v", err)
	}
	// The impatient request's batch had no waiter left: never taken.
	time.Sleep(50 * time.Millisecond)
	if n := snapshots.Load(); n != 1 {
		t.Fatalf("%d snapshots taken; want only the first (nobody waited for the second)", n)
	}
}
