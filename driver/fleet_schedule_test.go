package driver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/snapvol/snapvol/driver/store"
)

// testPusher allows source@scheduled-* of allowed only; each Push waits
// for a result on results.
type testPusher struct {
	allowed string
	results chan error

	mu    sync.Mutex
	calls []string // source@ref repo
}

var errTestPublish = errors.New("not allowed by PUBLISH")

func (p *testPusher) CheckPush(source, ref, repo string) error {
	if source != p.allowed || !strings.HasPrefix(ref, "scheduled-") {
		return fmt.Errorf("%w: %s@%s", errTestPublish, source, ref)
	}
	return nil
}

func (p *testPusher) Push(ctx context.Context, source, ref, repo string) error {
	p.mu.Lock()
	p.calls = append(p.calls, source+"@"+ref+" "+repo)
	p.mu.Unlock()
	select {
	case err := <-p.results:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *testPusher) called() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.calls...)
}

// waitFor polls the schedule of source until ok holds (2s at most).
func waitFor(t *testing.T, st *store.Store, what string, ok func(store.Schedule) bool) store.Schedule {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		for _, sc := range st.Schedules() {
			if sc.Source == "app-production" && ok(sc) {
				return sc
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the schedule never showed %s: %+v", what, st.Schedules())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A pushed schedule: refused at once when the pusher (PUBLISH) would
// refuse its snapshots; TAG defaults to "scheduled"; each snapshot is
// pushed once taken, without the tick waiting for it; a tick while a push
// runs starts no second one; a failed push is kept in the schedule and
// the next tick's snapshot pushed; a schedule set again without --push
// pushes nothing and forgets the outcome.
func TestScheduledPushes(t *testing.T) {
	d, _, st := newTestDriver(t)
	ctx := context.Background()
	if err := d.Create(&volume.CreateRequest{Name: "other-db"}); err != nil {
		t.Fatal(err)
	}
	p := &testPusher{allowed: "app-production", results: make(chan error)}
	if _, err := d.Operator().SetPushedSchedule(ctx, "app-production", time.Second, 2, "reg.example.com/data/app"); err == nil {
		t.Fatal("a pushed schedule with no pusher was accepted")
	}
	d.SetPusher(p)
	_, err := d.Operator().SetPushedSchedule(ctx, "other-db", time.Second, 2, "reg.example.com/data/other")
	if !errors.Is(err, errTestPublish) || !strings.Contains(err.Error(), "PUBLISH must allow other-db@scheduled-*") {
		t.Fatalf("a pushed schedule the pusher refuses: %v", err)
	}
	if n := len(st.Schedules()); n != 0 {
		t.Fatalf("%d schedules after the refusals", n)
	}
	sc, err := d.Operator().SetPushedSchedule(ctx, "app-production", time.Second, 2, "127.0.0.1:5000/data/app")
	if err != nil || sc.Push != "127.0.0.1:5000/data/app:scheduled" {
		t.Fatalf("pushed schedule: %+v %v; want the push to 127.0.0.1:5000/data/app:scheduled", sc, err)
	}

	tick := func(i int) string {
		t.Helper()
		at := time.Now().Add(time.Duration(i) * time.Second).UTC()
		start := time.Now()
		d.takeScheduled(st.Schedules()[0], at)
		if el := time.Since(start); el > time.Second {
			t.Fatalf("tick %d took %v: it waited for the push", i, el)
		}
		return store.ScheduledName(at)
	}
	first := tick(0)
	waitForCalls(t, p, 1)
	tick(1) // the first push still runs: no second one
	time.Sleep(50 * time.Millisecond)
	if c := p.called(); len(c) != 1 || c[0] != "app-production@"+first+" 127.0.0.1:5000/data/app:scheduled" {
		t.Fatalf("pushes %q; want one, of %s", c, first)
	}
	p.results <- errors.New("registry 127.0.0.1:5000/data/app: connection refused")
	failed := waitFor(t, st, "the failed push", func(sc store.Schedule) bool { return sc.PushError != "" })
	if !strings.Contains(failed.PushError, "connection refused") || failed.PushTried.IsZero() || !failed.Pushed.IsZero() {
		t.Fatalf("after a failed push: %+v", failed)
	}
	third := tick(2)
	waitForCalls(t, p, 2)
	if c := p.called(); c[1] != "app-production@"+third+" 127.0.0.1:5000/data/app:scheduled" {
		t.Fatalf("the next tick pushed %q; want %s", c[1], third)
	}
	p.results <- nil
	ok := waitFor(t, st, "the push that worked", func(sc store.Schedule) bool { return sc.PushError == "" && !sc.Pushed.IsZero() })
	if ok.Last.IsZero() {
		t.Fatalf("after a push that worked: %+v", ok)
	}
	sc, err = d.Operator().SetSchedule(ctx, "app-production", time.Second, 2)
	if err != nil || sc.Push != "" || !sc.Pushed.IsZero() || sc.PushError != "" {
		t.Fatalf("the schedule set again without --push: %+v %v", sc, err)
	}
	tick(3)
	time.Sleep(50 * time.Millisecond)
	if n := len(p.called()); n != 2 {
		t.Fatalf("%d pushes after --push was dropped; want still 2", n)
	}
}

func waitForCalls(t *testing.T, p *testPusher, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for len(p.called()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d pushes started; want %d", len(p.called()), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWithPushTag(t *testing.T) {
	for in, want := range map[string]string{
		"reg.example.com/data/app":        "reg.example.com/data/app:scheduled",
		"127.0.0.1:5000/data/app":         "127.0.0.1:5000/data/app:scheduled",
		"127.0.0.1:5000/data/app:nightly": "127.0.0.1:5000/data/app:nightly",
	} {
		if got := withPushTag(in); got != want {
			t.Errorf("withPushTag(%q) = %q, want %q", in, got, want)
		}
	}
}
