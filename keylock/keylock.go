// Package keylock holds one mutex per key (a volume, a source), made on
// first use and forgotten when nobody holds or waits for it, so a plugin
// that has seen 10,000 names does not keep 10,000 idle mutexes; and RW, a
// reader/writer lock. Every wait can end with a context (LockCtx, RLockCtx),
// so a request that waits behind another never outlives its own budget.
package keylock

import (
	"context"
	"sync"
)

// Map is a set of mutexes by key. The zero value is ready to use.
type Map struct {
	mu    sync.Mutex
	locks map[string]*entry
}

type entry struct {
	// token holds one value while the key is locked. A channel, not a
	// sync.Mutex, so a wait can be abandoned; Go queues blocked senders in
	// order, so waiters are served first come, first served.
	token chan struct{}
	users int // holders and waiters
}

// Lock locks key's mutex and returns the func that unlocks it. It waits as
// long as it takes: for code that is not serving a request (the backends'
// own bookkeeping). Requests use LockCtx.
func (m *Map) Lock(key string) (unlock func()) {
	unlock, _ = m.LockCtx(context.Background(), key)
	return unlock
}

// LockCtx locks key's mutex, waiting at most until ctx ends, and returns
// the func that unlocks it (safe to call more than once). When ctx ends
// first it returns ctx.Err() and holds nothing. A free key is taken even
// if ctx has already ended.
func (m *Map) LockCtx(ctx context.Context, key string) (unlock func(), err error) {
	e := m.join(key)
	select {
	case e.token <- struct{}{}:
	default:
		select {
		case e.token <- struct{}{}:
		case <-ctx.Done():
			m.leave(key, e)
			return nil, ctx.Err()
		}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-e.token
			m.leave(key, e)
		})
	}, nil
}

func (m *Map) join(key string) *entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.locks == nil {
		m.locks = map[string]*entry{}
	}
	e, ok := m.locks[key]
	if !ok {
		e = &entry{token: make(chan struct{}, 1)}
		m.locks[key] = e
	}
	e.users++
	return e
}

func (m *Map) leave(key string, e *entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e.users--
	if e.users == 0 {
		delete(m.locks, key)
	}
}

// Len is how many keys are held or waited for.
func (m *Map) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.locks)
}

// RW is a reader/writer lock whose waits end with a context. Waiters are
// served in the order they came: a writer waiting keeps later readers
// waiting (as sync.RWMutex does, so readers cannot starve a writer), and a
// writer that gives up lets the readers behind it in at once. The zero
// value is unlocked.
type RW struct {
	mu      sync.Mutex
	readers int  // holding for reading
	writer  bool // holding for writing
	queue   []*waiter
}

type waiter struct {
	write bool
	ready chan struct{} // closed when granted
}

// RLockCtx locks rw for reading, waiting at most until ctx ends, and
// returns the func that unlocks it (safe to call more than once). When ctx
// ends first it returns ctx.Err() and holds nothing.
func (rw *RW) RLockCtx(ctx context.Context) (unlock func(), err error) {
	if err := rw.acquire(ctx, false); err != nil {
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { rw.release(false) }) }, nil
}

// LockCtx locks rw for writing, waiting at most until ctx ends, and
// returns the func that unlocks it (safe to call more than once). When ctx
// ends first it returns ctx.Err() and holds nothing.
func (rw *RW) LockCtx(ctx context.Context) (unlock func(), err error) {
	if err := rw.acquire(ctx, true); err != nil {
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { rw.release(true) }) }, nil
}

func (rw *RW) acquire(ctx context.Context, write bool) error {
	rw.mu.Lock()
	if len(rw.queue) == 0 && rw.free(write) {
		rw.take(write)
		rw.mu.Unlock()
		return nil
	}
	w := &waiter{write: write, ready: make(chan struct{})}
	rw.queue = append(rw.queue, w)
	rw.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	rw.mu.Lock()
	defer rw.mu.Unlock()
	select {
	case <-w.ready:
		// Granted while giving up: hand it back.
		rw.put(write)
	default:
		for i, q := range rw.queue {
			if q == w {
				rw.queue = append(rw.queue[:i], rw.queue[i+1:]...)
				break
			}
		}
	}
	// Whoever waited behind w may go now.
	rw.grant()
	return ctx.Err()
}

func (rw *RW) free(write bool) bool {
	if write {
		return !rw.writer && rw.readers == 0
	}
	return !rw.writer
}

func (rw *RW) take(write bool) {
	if write {
		rw.writer = true
	} else {
		rw.readers++
	}
}

func (rw *RW) put(write bool) {
	if write {
		rw.writer = false
	} else {
		rw.readers--
	}
}

func (rw *RW) release(write bool) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	rw.put(write)
	rw.grant()
}

// grant hands the lock to the waiters at the head of the queue it is free
// for: one writer, or every reader up to the next writer. rw.mu is held.
func (rw *RW) grant() {
	for len(rw.queue) > 0 {
		w := rw.queue[0]
		if !rw.free(w.write) {
			return
		}
		rw.take(w.write)
		close(w.ready)
		rw.queue = rw.queue[1:]
		if w.write {
			return
		}
	}
}
