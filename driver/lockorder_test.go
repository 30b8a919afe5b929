package driver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/storage/memory"
)

// goroutines is every goroutine's stack (debug=2: the panic format, with
// each goroutine's wait reason).
func goroutines() string {
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
	return buf.String()
}

var goroutineHeader = regexp.MustCompile(`^goroutine \d+ \[([^\]]+)\]`)

// parked reports whether a goroutine running fn is parked (waiting on a
// lock, a channel or a select, not running), and whether one runs fn at
// all.
func parked(fn string) (waiting, exists bool) {
	for _, g := range strings.Split(goroutines(), "\n\n") {
		if !strings.Contains(g, fn+"(") {
			continue
		}
		exists = true
		m := goroutineHeader.FindStringSubmatch(g)
		if m == nil {
			continue
		}
		state := strings.SplitN(m[1], ",", 2)[0]
		if state != "running" && state != "runnable" && state != "syscall" {
			waiting = true
		}
	}
	return waiting, exists
}

// waitParkedOrGone waits until the goroutine running fn is parked, or has
// returned (done closed): the order of the three calls below is then
// fixed, whichever code runs.
func waitParkedOrGone(t *testing.T, fn string, done <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			return
		default:
		}
		if w, _ := parked(fn); w {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s neither parked nor returned within 10 s\n%s", fn, goroutines())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// The three-way deadlock of issue 21: a Mount holds its volume's lock and
// is about to take refs.gc for reading (to make the clone); snapvol
// snapshot create --from that volume took refs.gc for reading and waits for
// the volume's lock; snapvol snapshot rm queues for refs.gc for writing. A
// writer queued on a sync.RWMutex blocks new readers, so on 65aeefa all
// three waited forever (and every later clone behind them). The Mount is
// held, deterministically, in its source lookup by a memory.Hook; each of
// the other two is started once the one before is parked (or done). All
// three must finish, well inside their budgets.
func TestMountSnapshotFromAndSnapshotRmNeverDeadlock(t *testing.T) {
	d, b, _ := newTestDriver(t)
	ctx := context.Background()
	if _, err := d.Operator().CreateSnapshot(ctx, "app-production", "old", "", false); err != nil {
		t.Fatal(err)
	}
	const vol = "app-production@now+mask"
	var armed atomic.Bool
	inLookup := make(chan struct{})
	release := make(chan struct{})
	b.SetHook(func(ctx context.Context, c memory.Call) error {
		if c.Method == "Volume" && c.Name == "app-production" && armed.CompareAndSwap(true, false) {
			close(inLookup)
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	armed.Store(true)

	var wg sync.WaitGroup
	var mountErr, snapErr, rmErr error
	mountDone, snapDone, rmDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	wg.Add(3)
	go func() {
		defer wg.Done()
		defer close(mountDone)
		_, mountErr = d.Mount(&volume.MountRequest{Name: vol, ID: "masker"})
	}()
	<-inLookup // the Mount holds the volume's lock
	go func() {
		defer wg.Done()
		defer close(snapDone)
		_, snapErr = d.Operator().CreateSnapshot(ctx, "app-production", "masked", vol, false)
	}()
	waitParkedOrGone(t, "driver.(*Operator).CreateSnapshot", snapDone)
	go func() {
		defer wg.Done()
		defer close(rmDone)
		rmErr = d.Operator().RemoveSnapshot(ctx, "app-production", "old")
	}()
	waitParkedOrGone(t, "driver.(*Operator).RemoveSnapshot", rmDone)
	close(release) // the Mount goes on to make its clone

	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	select {
	case <-all:
	case <-time.After(10 * time.Second):
		t.Fatalf("deadlock: Mount, snapshot create --from and snapshot rm still waiting 10 s after the Mount was let go (the lock order is broken)\n%s", goroutines())
	}
	// snapshot create --from takes only operator volumes now (issue 21
	// item 4, operator.go): it still waits for the volume's lock in order
	// and then refuses this Docker user's volume.
	if mountErr != nil || !errors.Is(snapErr, names.ErrInvalid) || !strings.Contains(fmt.Sprint(snapErr), "not an operator volume") || rmErr != nil {
		t.Fatalf("Mount: %v; snapshot create --from: %v (want the refusal of a Docker user's volume); snapshot rm: %v", mountErr, snapErr, rmErr)
	}
	if _, ok := d.st.RegisteredSnapshot("app-production", "masked"); ok {
		t.Fatal("masked was registered from a Docker user's volume")
	}
	if _, ok := d.st.RegisteredSnapshot("app-production", "old"); ok {
		t.Fatal("old is still registered after snapshot rm")
	}
}

// The order is checked where locks are taken: a volume's lock under
// refs.gc, a second volume's lock, or gc under a source's lock is refused
// at once with ErrLockOrder instead of waiting.
func TestLockOrderIsEnforced(t *testing.T) {
	d, _, _ := newTestDriver(t)
	ctx := context.Background()
	gctx, done, err := d.refs.cloning(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.lockVolume(gctx, "app-production"); !errors.Is(err, ErrLockOrder) || !strings.Contains(err.Error(), `"app-production"`) {
		t.Fatalf("a volume's lock under refs.gc: %v, want ErrLockOrder naming the volume", err)
	}
	done()
	vctx, unlock, err := d.lockVolume(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.lockVolume(vctx, "b"); !errors.Is(err, ErrLockOrder) {
		t.Fatalf("a second volume's lock: %v, want ErrLockOrder", err)
	}
	g2, done2, err := d.refs.collecting(vctx) // volume, then gc: in order
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.refs.cloning(g2); !errors.Is(err, ErrLockOrder) {
		t.Fatalf("gc twice: %v, want ErrLockOrder", err)
	}
	done2()
	unlock()
}

// Every lock wait ends with its request's budget, with an error that names
// the volume and says it waited behind another operation.
func TestLockWaitsEndWithTheBudget(t *testing.T) {
	d, _, _ := newTestDriver(t)
	d.cfg.OpTimeout = 200 * time.Millisecond
	d.cfg.MountTimeout = 200 * time.Millisecond
	_, unlock, err := d.lockVolume(context.Background(), "app-production@now+x")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = d.Mount(&volume.MountRequest{Name: "app-production@now+x", ID: "1"})
	if !errors.Is(err, ErrLockTimeout) || !strings.Contains(err.Error(), `"app-production@now+x"`) || !strings.Contains(err.Error(), "another operation") {
		t.Fatalf("Mount behind a held lock: %v", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("Mount waited %v on a 200ms budget", el)
	}
	unlock()
	// refs.gc held for writing (a collection that does not end): a clone
	// waits only as long as its budget.
	_, done, err := d.refs.collecting(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Mount(&volume.MountRequest{Name: "app-production@now+x", ID: "1"})
	if !errors.Is(err, ErrLockTimeout) || !strings.Contains(err.Error(), `"app-production@now+x"`) {
		t.Fatalf("Mount behind a collection: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := d.Operator().RemoveSnapshot(ctx, "app-production", "nope"); !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("snapshot rm behind a collection: %v", err)
	}
	done()
	if _, err := d.Mount(&volume.MountRequest{Name: "app-production@now+x", ID: "1"}); err != nil {
		t.Fatalf("Mount once the collection ended: %v", err)
	}
}
