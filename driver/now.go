package driver

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/snapvol/snapvol/storage"
)

// Group commit for @now (issue 20 item 6). @now promises a snapshot taken
// after the request arrived, not one of its own: so requests for one
// source that arrive while a snapshot of it is being taken all wait for
// the next one, which starts as soon as the one in flight ends, and share
// it. 32 jobs starting at once cost production two snapshot commits (the
// one in flight when they came, and theirs), not 32: each snapshot is a
// btrfs transaction commit that stalls production's fsyncs.
//
// The snapshot is taken on a goroutine of its own, not in any request, so
// a request whose budget ends stops waiting (with an error naming the
// source) without failing the others; the goroutine's deadline is the
// latest of its waiters', and a batch every waiter gave up on before it
// started is not taken. A snapshot no waiter cloned is an unused plugin
// snapshot, which collection deletes. The goroutine takes no driver lock;
// the waiters hold refs.gc for reading (they are inside cloning), so the
// snapshot cannot be collected before their clones are recorded. The
// slot's mutex is a leaf: nothing is taken while it is held.

// nowGroup is the per-source "next snapshot" slots.
type nowGroup struct {
	mu    sync.Mutex
	slots map[string]*nowSlot // by source object ID
}

// nowSlot is one source's snapshot in flight and the batch waiting for
// the next.
type nowSlot struct {
	running, next *nowBatch
}

// nowBatch is one snapshot and the requests that share it.
type nowBatch struct {
	done     chan struct{}
	snap     storage.Object
	err      error
	waiters  int       // requests still waiting (under nowGroup.mu)
	deadline time.Time // the latest waiter's (under nowGroup.mu)
}

// join records one more waiter with ctx's deadline.
func (b *nowBatch) join(ctx context.Context) {
	b.waiters++
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(time.Minute)
	}
	if dl.After(b.deadline) {
		b.deadline = dl
	}
}

// snapshot returns a snapshot of source taken after the call began: the
// next one take makes, shared with every other caller that arrives while
// the one before it is in flight. It waits at most as long as ctx allows.
func (g *nowGroup) snapshot(ctx context.Context, source storage.Object, take func(context.Context) (storage.Object, error)) (storage.Object, error) {
	g.mu.Lock()
	if g.slots == nil {
		g.slots = map[string]*nowSlot{}
	}
	s := g.slots[source.ID]
	var b *nowBatch
	switch {
	case s == nil:
		// Nothing in flight: this request's snapshot starts now.
		s = &nowSlot{}
		g.slots[source.ID] = s
		b = &nowBatch{done: make(chan struct{})}
		b.join(ctx)
		s.running = b
		go g.run(source.ID, s, take)
	default:
		// One is in flight, begun before this request: wait for the next.
		if s.next == nil {
			s.next = &nowBatch{done: make(chan struct{})}
		}
		b = s.next
		b.join(ctx)
	}
	g.mu.Unlock()

	step(ctx, "waiting for the next snapshot of %q (shared by every @now request that arrived meanwhile)", source.Name)
	select {
	case <-b.done:
		return b.snap, b.err
	case <-ctx.Done():
		g.mu.Lock()
		b.waiters--
		g.mu.Unlock()
		return storage.Object{}, fmt.Errorf("%w: gave up waiting for the next snapshot of %q (other @now requests share it): %w", ErrLockTimeout, source.Name, ctx.Err())
	}
}

// run takes the slot's snapshots until no batch waits for one.
func (g *nowGroup) run(key string, s *nowSlot, take func(context.Context) (storage.Object, error)) {
	for {
		g.mu.Lock()
		b := s.running
		waiters, deadline := b.waiters, b.deadline
		g.mu.Unlock()
		if waiters == 0 {
			b.err = fmt.Errorf("%w: every request waiting for this snapshot gave up", ErrLockTimeout)
		} else {
			ctx, cancel := context.WithDeadline(context.Background(), deadline)
			b.snap, b.err = take(ctx)
			cancel()
		}
		close(b.done)
		g.mu.Lock()
		s.running, s.next = s.next, nil
		if s.running == nil {
			delete(g.slots, key)
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
	}
}
