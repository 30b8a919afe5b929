package tick_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapvol/snapvol/internal/tick"
)

// Every calls f repeatedly, not before one interval has passed, and
// returns once ctx ends; nothing calls f after it returned.
func TestEveryCallsUntilCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls atomic.Int32
	var first atomic.Int64
	start := time.Now()
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		tick.Every(ctx, 10*time.Millisecond, func() {
			if calls.Add(1) == 1 {
				first.Store(int64(time.Since(start)))
			}
			if calls.Load() == 3 {
				cancel()
			}
		})
	}()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("Every did not return after its context ended")
	}
	n := calls.Load()
	if n < 3 {
		t.Errorf("f was called %d times before Every returned; want 3 or more", n)
	}
	if d := time.Duration(first.Load()); d < 10*time.Millisecond {
		t.Errorf("first call after %v; want one interval (10ms) at least", d)
	}
	time.Sleep(50 * time.Millisecond)
	if m := calls.Load(); m != n {
		t.Errorf("f was called %d times after Every returned", m-n)
	}
}

// With its context already ended Every returns at once.
func TestEveryEndedContextReturns(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		tick.Every(ctx, time.Hour, func() { t.Error("f was called") })
	}()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("Every did not return with its context ended")
	}
}
