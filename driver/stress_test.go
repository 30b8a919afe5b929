package driver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/storage/memory"
)

// stressFor is how long TestStressEveryPathAtOnce runs
// (SNAPVOL_STRESS=30s for longer).
func stressFor(t *testing.T) time.Duration {
	if s := os.Getenv("SNAPVOL_STRESS"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("SNAPVOL_STRESS=%q: %v", s, err)
		}
		return d
	}
	return 5 * time.Second
}

// inflight tracks requests by start time, so a watchdog can tell one that
// outlives its budget.
type inflight struct {
	mu   sync.Mutex
	n    int
	reqs map[int]inflightReq
}

type inflightReq struct {
	what  string
	start time.Time
}

func (f *inflight) begin(what string) func() {
	f.mu.Lock()
	f.n++
	id := f.n
	f.reqs[id] = inflightReq{what, time.Now()}
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		delete(f.reqs, id)
		f.mu.Unlock()
	}
}

// oldest is the request running longest, and for how long.
func (f *inflight) oldest() (string, time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var what string
	var age time.Duration
	for _, r := range f.reqs {
		if a := time.Since(r.start); a > age {
			what, age = r.what, a
		}
	}
	return what, age
}

// Docker's calls (Mount, Unmount, Remove, Create, +each) and every
// operator command (volume create/rm, snapshot create --from --replace,
// snapshot create and rm, schedule ticks) and the background passes (reap,
// stale mounts, sweep) all at once, on a backend that takes a little time
// for every call. No request may outlive its budget (a lock wait that
// does not end with its request fails here, with every goroutine's stack),
// no lock may be taken out of order, and when it is over the store and the
// backend agree.
func TestStressEveryPathAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("stress: not in -short")
	}
	d, b, st := newTestDriver(t)
	const budget = 2 * time.Second
	// A request may finish the step it is in when its budget ends (a
	// store write, an undo on what is left): this much later, it is stuck.
	const grace = 3 * time.Second
	d.cfg.OpTimeout, d.cfg.MountTimeout = budget, budget
	d.cfg.IdleTTL = 30 * time.Millisecond // the reaper has work
	d.cfg.LatestMaxAge = 50 * time.Millisecond
	b.SetHook(func(ctx context.Context, c memory.Call) error {
		// Every backend call takes up to 2 ms, as a real one takes some:
		// requests overlap inside each other's locks.
		wait := time.Duration(rand.IntN(2000)) * time.Microsecond
		if c.Method == "Volume" {
			wait *= 3 // a source lookup under a volume's lock, before refs.gc
		}
		select {
		case <-time.After(wait):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	ctx := context.Background()
	if _, err := d.Operator().CreateSnapshot(ctx, "app-production", "masked", "", false); err != nil {
		t.Fatal(err)
	}

	var (
		reqs     = &inflight{reqs: map[int]inflightReq{}}
		stop     atomic.Bool
		wg       sync.WaitGroup
		countsMu sync.Mutex
		ok       = map[string]int{}
		failed   = map[string]int{}
		timeouts atomic.Int64
		badErrs  []string
	)
	// call runs one request and files its outcome.
	call := func(what string, f func() error) {
		end := reqs.begin(what)
		err := f()
		end()
		countsMu.Lock()
		defer countsMu.Unlock()
		op := strings.Fields(what)[0]
		switch {
		case err == nil:
			ok[op]++
		case errors.Is(err, ErrLockOrder):
			badErrs = append(badErrs, fmt.Sprintf("%s: %v", what, err))
		default:
			if errors.Is(err, ErrLockTimeout) {
				timeouts.Add(1)
			}
			failed[op]++
		}
	}
	worker := func(f func(i int)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				f(i)
			}
		}()
	}
	opCtx := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, budget) }

	// Docker: clone volumes mounted, unmounted and removed by several
	// containers, some sharing a name.
	for w := 0; w < 3; w++ {
		worker(func(i int) {
			name := fmt.Sprintf("app-production@latest+w%d", i%2)
			id := fmt.Sprintf("c%d-%d", w, i)
			call("mount "+name, func() error { _, err := d.Mount(&volume.MountRequest{Name: name, ID: id}); return err })
			call("unmount "+name, func() error { return d.Unmount(&volume.UnmountRequest{Name: name, ID: id}) })
			if i%3 == 0 {
				call("remove "+name, func() error { return d.Remove(&volume.RemoveRequest{Name: name}) })
			}
		})
	}
	// Docker: +each, one clone per container.
	worker(func(i int) {
		const name = "app-production@now+each"
		id := fmt.Sprintf("e%d", i)
		call("mount "+name, func() error { _, err := d.Mount(&volume.MountRequest{Name: name, ID: id}); return err })
		call("unmount "+name, func() error { return d.Unmount(&volume.UnmountRequest{Name: name, ID: id}) })
	})
	// Docker: plain volumes made, used and removed; and clones of the
	// masked snapshot made with -o.
	worker(func(i int) {
		name := fmt.Sprintf("plain-%d", i%2)
		call("create "+name, func() error { return d.Create(&volume.CreateRequest{Name: name}) })
		call("mount "+name, func() error { _, err := d.Mount(&volume.MountRequest{Name: name, ID: "p"}); return err })
		call("unmount "+name, func() error { return d.Unmount(&volume.UnmountRequest{Name: name, ID: "p"}) })
		call("remove "+name, func() error { return d.Remove(&volume.RemoveRequest{Name: name}) })
		job := fmt.Sprintf("ci-%d", i%2)
		call("create "+job, func() error {
			return d.Create(&volume.CreateRequest{Name: job, Options: map[string]string{"from": "app-production", "ref": "masked"}})
		})
		call("mount "+job, func() error { _, err := d.Mount(&volume.MountRequest{Name: job, ID: "j"}); return err })
		call("unmount "+job, func() error { return d.Unmount(&volume.UnmountRequest{Name: job, ID: "j"}) })
		call("remove "+job, func() error { return d.Remove(&volume.RemoveRequest{Name: job}) })
	})
	// The operator's masking recipe, over and over: volume create, a
	// masker mounts it, snapshot create --from --replace, volume rm.
	for w := 0; w < 2; w++ {
		worker(func(i int) {
			name := fmt.Sprintf("mask-%d", w)
			c, cancel := opCtx()
			defer cancel()
			call("volume-create "+name, func() error {
				_, err := d.Operator().Create(c, name, "app-production@now", store.AccessDocker)
				return err
			})
			call("mount "+name, func() error { _, err := d.Mount(&volume.MountRequest{Name: name, ID: "masker"}); return err })
			call("snapshot-create-from "+name, func() error {
				c, cancel := opCtx()
				defer cancel()
				_, err := d.Operator().CreateSnapshot(c, "app-production", "masked", name, true)
				return err
			})
			call("unmount "+name, func() error { return d.Unmount(&volume.UnmountRequest{Name: name, ID: "masker"}) })
			call("volume-rm "+name, func() error {
				c, cancel := opCtx()
				defer cancel()
				return d.Operator().Remove(c, name)
			})
		})
	}
	// The operator snapshots a Docker user's clone volume while its
	// containers come and go (a clone being made holds the volume's lock
	// and then waits for refs.gc: the deadlock of issue 21 when this took
	// them the other way round). Refused once --from takes only operator
	// volumes; it must still end inside its budget.
	worker(func(i int) {
		name := fmt.Sprintf("app-production@latest+w%d", i%2)
		call("snapshot-create-from-docker "+name, func() error {
			c, cancel := opCtx()
			defer cancel()
			_, err := d.Operator().CreateSnapshot(c, "app-production", "ci-masked", name, true)
			return err
		})
	})
	// The operator: named snapshots made and removed.
	worker(func(i int) {
		name := fmt.Sprintf("n%d", i%3)
		call("snapshot-create "+name, func() error {
			c, cancel := opCtx()
			defer cancel()
			_, err := d.Operator().CreateSnapshot(c, "app-production", name, "", false)
			return err
		})
		call("snapshot-rm "+name, func() error {
			c, cancel := opCtx()
			defer cancel()
			return d.Operator().RemoveSnapshot(c, "app-production", name)
		})
	})
	// Schedule ticks, and the background passes Run makes.
	worker(func(i int) {
		call("schedule-tick", func() error {
			d.takeScheduled(store.Schedule{Source: "app-production", Every: time.Second, Keep: 2}, d.now())
			return nil
		})
		time.Sleep(5 * time.Millisecond)
	})
	worker(func(i int) {
		call("reap", func() error { d.Reap(); return nil })
		call("stale-mounts", func() error { d.dropStaleMounts(); return nil })
		call("sweep", func() error {
			c, cancel := opCtx()
			defer cancel()
			return d.sweep(c)
		})
		time.Sleep(5 * time.Millisecond)
	})

	// The watchdog: a request running past its budget and the grace is
	// stuck; every goroutine's stack says where.
	deadline := time.After(stressFor(t))
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	stuck := func(what string, age time.Duration) {
		stop.Store(true)
		t.Fatalf("%s still running after %v (budget %v): a lock wait outlived its request\n%s", what, age.Round(time.Millisecond), budget, goroutines())
	}
watch:
	for {
		select {
		case <-deadline:
			break watch
		case <-tick.C:
			if what, age := reqs.oldest(); age > budget+grace {
				stuck(what, age)
			}
		}
	}
	stop.Store(true)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-tick.C:
			if what, age := reqs.oldest(); age > budget+grace {
				stuck(what, age)
			}
		}
	}

	countsMu.Lock()
	defer countsMu.Unlock()
	for _, e := range badErrs {
		t.Error(e)
	}
	var summary []string
	for op, n := range ok {
		summary = append(summary, fmt.Sprintf("%s %d ok/%d failed", op, n, failed[op]))
	}
	sort.Strings(summary)
	t.Logf("%s; %d lock waits ended with their budget", strings.Join(summary, ", "), timeouts.Load())
	// Every kind of request got through, many times: the stress was one.
	for _, op := range []string{"mount", "unmount", "remove", "create", "volume-create", "snapshot-create-from", "volume-rm", "snapshot-create", "snapshot-rm", "sweep"} {
		if ok[op] == 0 {
			t.Errorf("no %s succeeded: nothing was stressed", op)
		}
	}

	// Quiet now: the backend answers at once, a sweep tidies what budgets
	// cut short, and the store and the backend agree.
	b.SetHook(nil)
	if err := d.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	consistent(t, d, b, st)
}
