package keylock

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestLockExcludesPerKeyAndForgetsUnusedKeys(t *testing.T) {
	var m Map
	var wg sync.WaitGroup
	a, b, c := 0, 0, 0
	counts := map[string]*int{"a": &a, "b": &b, "c": &c} // only read concurrently
	for i := 0; i < 64; i++ {
		key := []string{"a", "b", "c"}[i%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				unlock := m.Lock(key)
				*counts[key]++ // a data race under -race if keys do not exclude
				unlock()
			}
		}()
	}
	wg.Wait()
	if a+b+c != 6400 {
		t.Fatalf("lost increments: a=%d b=%d c=%d", a, b, c)
	}
	if n := m.Len(); n != 0 {
		t.Fatalf("%d keys kept after every lock was released", n)
	}
}

func TestDifferentKeysDoNotBlockEachOther(t *testing.T) {
	var m Map
	unlockA := m.Lock("a")
	done := make(chan struct{})
	go func() { m.Lock("b")(); close(done) }()
	<-done // would hang if "b" waited for "a"
	if n := m.Len(); n != 1 {
		t.Fatalf("Len = %d with only a held, want 1", n)
	}
	unlockA()
}

// A wait ends with its context, holds nothing afterwards, and leaves the
// key to be forgotten once the holder lets go.
func TestLockCtxGivesUpWithItsContext(t *testing.T) {
	var m Map
	unlock := m.Lock("a")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := m.LockCtx(ctx, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("LockCtx on a held key: %v, want the context's deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("LockCtx waited %v past its 50ms context", d)
	}
	unlock()
	unlock() // twice is harmless
	if n := m.Len(); n != 0 {
		t.Fatalf("%d keys kept after the waiter gave up and the holder let go", n)
	}
	// The key is free again, even for a context that has ended.
	u, err := m.LockCtx(ctx, "a")
	if err != nil {
		t.Fatalf("LockCtx on a free key with an ended context: %v", err)
	}
	u()
}

// RW: readers share, a writer excludes, a queued writer holds off later
// readers until it gives up or is served, and every wait ends with its
// context.
func TestRWWaitsEndWithTheirContext(t *testing.T) {
	var rw RW
	short := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 50*time.Millisecond)
	}
	r1, err := rw.RLockCtx(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r2, err := rw.RLockCtx(context.Background()) // readers share
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := short()
	if _, err := rw.LockCtx(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("writer under readers: %v, want its deadline", err)
	}
	cancel()
	// A writer that gave up does not block later readers.
	r3, err := rw.RLockCtx(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// A writer queued behind readers holds off a later reader...
	wrote := make(chan func())
	go func() {
		w, err := rw.LockCtx(context.Background())
		if err != nil {
			t.Error(err)
		}
		wrote <- w
	}()
	waitQueued(t, &rw, 1)
	ctx, cancel = short()
	if _, err := rw.RLockCtx(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("reader behind a queued writer: %v, want its deadline", err)
	}
	cancel()
	// ...and is served once the readers go; readers queued behind it go
	// in together after it.
	readers := make(chan func(), 2)
	for i := 0; i < 2; i++ {
		go func() {
			r, err := rw.RLockCtx(context.Background())
			if err != nil {
				t.Error(err)
			}
			readers <- r
		}()
	}
	waitQueued(t, &rw, 3)
	r1()
	r2()
	r3()
	w := <-wrote
	select {
	case <-readers:
		t.Fatal("a reader got in while the writer held the lock")
	case <-time.After(20 * time.Millisecond):
	}
	w()
	(<-readers)()
	(<-readers)()
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.readers != 0 || rw.writer || len(rw.queue) != 0 {
		t.Fatalf("after everyone left: readers %d writer %v queue %d", rw.readers, rw.writer, len(rw.queue))
	}
}

func waitQueued(t *testing.T, rw *RW, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		rw.mu.Lock()
		q := len(rw.queue)
		rw.mu.Unlock()
		if q == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters queued, want %d", q, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// Many readers and writers with short contexts: whatever each gets, it
// never holds a lock it was told it did not get, and writers exclude.
func TestRWUnderContention(t *testing.T) {
	var rw RW
	var wg sync.WaitGroup
	inside := 0 // written only under the write lock; -race checks
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(j%3)*time.Millisecond)
				if i%4 == 0 {
					if w, err := rw.LockCtx(ctx); err == nil {
						inside++
						w()
					}
				} else if r, err := rw.RLockCtx(ctx); err == nil {
					_ = inside
					r()
				}
				cancel()
			}
		}(i)
	}
	wg.Wait()
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.readers != 0 || rw.writer || len(rw.queue) != 0 {
		t.Fatalf("after everyone left: readers %d writer %v queue %d", rw.readers, rw.writer, len(rw.queue))
	}
}
