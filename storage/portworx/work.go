package portworx

import (
	"context"
	"fmt"
	"strings"
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
// next container) joins it, or takes its result if it is done.

// job is one piece of work under way or done and not yet collected.
type job struct {
	id     string // the volume it works on
	done   chan struct{}
	err    error
	cancel context.CancelFunc
	start  time.Time
	ended  time.Time
}

// jobs are a Backend's jobs by key.
type jobs struct {
	mu sync.Mutex
	m  map[string]*job
}

// keepDone is how long a finished job's result waits to be collected.
const keepDone = 10 * time.Minute

// work runs fn for volume id under key, once, detached from ctx, and
// waits for it as long as ctx allows.
func (b *Backend) work(ctx context.Context, key, id, what string, fn func(context.Context) error) error {
	b.jobs.mu.Lock()
	if b.jobs.m == nil {
		b.jobs.m = map[string]*job{}
	}
	for k, j := range b.jobs.m {
		if !j.ended.IsZero() && time.Since(j.ended) > keepDone {
			delete(b.jobs.m, k)
		}
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
			j.err, j.ended = err, time.Now()
			b.jobs.mu.Unlock()
			close(j.done)
		}()
	}
	b.jobs.mu.Unlock()
	select {
	case <-j.done:
		b.jobs.mu.Lock()
		if b.jobs.m[key] == j {
			delete(b.jobs.m, key)
		}
		err := j.err
		b.jobs.mu.Unlock()
		return err
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
	for k, j := range b.jobs.m {
		if j.id == id || strings.Contains(k, "\x00"+id+"\x00") {
			j.cancel()
			delete(b.jobs.m, k)
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
