package portworx

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/snapvol/snapvol/storage"
)

// Work Portworx may take longer over than Docker waits: attaching a large
// volume (and the fsck of its first mount) can take minutes, Docker gives
// a request 30 s (managed plugin) or 2 minutes (legacy socket), and the
// OpenStorage server cancels what a request asked for when the request
// ends (its REST handlers run the SDK call under the request's context).
// So such work runs detached from the request, bounded by WorkTimeout of
// its own: when the request's time is up it answers storage.ErrInProgress
// and the work carries on; the same request again (Docker's retry, the
// next container) joins it while it runs, and finds its result in place
// (the volume attached and mounted) once it is done.

// job is one piece of work under way.
type job struct {
	id     string // the volume it works on
	done   chan struct{}
	err    error
	cancel context.CancelFunc
	start  time.Time
}

// jobs are a Backend's jobs under way, by key.
type jobs struct {
	mu sync.Mutex
	m  map[string]*job
}

// work runs fn for volume id under key, detached from ctx, and waits for
// it as long as ctx allows. A call while the same work is under way joins
// it; once it has ended, a call starts it again, so fn must find what is
// already done (a mount that is in place) and only do the rest.
func (b *Backend) work(ctx context.Context, key, id, what string, fn func(context.Context) error) error {
	b.jobs.mu.Lock()
	if b.jobs.m == nil {
		b.jobs.m = map[string]*job{}
	}
	j := b.jobs.m[key]
	if j == nil {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.WorkTimeout)
		j = &job{id: id, done: make(chan struct{}), cancel: cancel, start: time.Now()}
		b.jobs.m[key] = j
		go func() {
			err := fn(wctx)
			cancel()
			b.jobs.mu.Lock()
			j.err = err
			if b.jobs.m[key] == j {
				delete(b.jobs.m, key)
			}
			b.jobs.mu.Unlock()
			close(j.done)
		}()
	}
	b.jobs.mu.Unlock()
	select {
	case <-j.done:
		return j.err
	case <-ctx.Done():
		return fmt.Errorf("%s: %w: the OpenStorage server has been at it for %s and carries on (for up to %s); asking again picks it up",
			what, storage.ErrInProgress, time.Since(j.start).Round(time.Second), b.cfg.WorkTimeout)
	}
}

// stopWork cancels the work under way on volume id (an unmount or delete
// supersedes a mount still being made) and waits for it to end, as long
// as ctx allows.
func (b *Backend) stopWork(ctx context.Context, id string) error {
	b.jobs.mu.Lock()
	var wait []*job
	for _, j := range b.jobs.m {
		if j.id == id {
			// Left in the map until it has ended (it removes itself), so
			// a mount asked for meanwhile joins it rather than running
			// beside its undoing.
			j.cancel()
			wait = append(wait, j)
		}
	}
	b.jobs.mu.Unlock()
	for _, j := range wait {
		select {
		case <-j.done:
		case <-ctx.Done():
			return fmt.Errorf("volume %s: %w: waiting for the work under way on it to stop", id, storage.ErrUnavailable)
		}
	}
	return nil
}
