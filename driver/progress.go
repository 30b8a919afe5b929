package driver

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Docker gives a request 30 s and shows nothing while it waits, so a
// request that is still running after SlowAfter is logged with the step
// it is at, and again every SlowAfter until it ends: whoever reads the
// plugin's log sees which backend call the time goes to.

type progressKey struct{}

// progress is the step one request is at, formatted only if a report
// needs it.
type progress struct {
	mu     sync.Mutex
	format string
	args   []any
	since  time.Time
}

// step records what the request of ctx does next (a no-op for a context
// that is not a request's, as in reconcile).
func step(ctx context.Context, format string, args ...any) {
	p, _ := ctx.Value(progressKey{}).(*progress)
	if p == nil {
		return
	}
	p.mu.Lock()
	p.format, p.args, p.since = format, args, time.Now()
	p.mu.Unlock()
}

func (p *progress) now() (string, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf(p.format, p.args...), p.since
}

// slowWatch logs a request that runs long; stop ends it.
type slowWatch struct {
	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

// begin starts a Docker request that may call the backend: its budget
// (OpTimeout, shared by every backend call it makes), its log line and
// Drain accounting (op), and its progress report if it runs long. The
// returned func ends all three.
func (d *Driver) begin(op, name string, err *error) (context.Context, func()) {
	ctx, cancel := context.WithTimeout(context.Background(), d.budget(op))
	ctx, log := d.withRequest(ctx, op, name)
	end := d.op(log, op, name, err)
	p := &progress{format: "starting", since: time.Now()}
	ctx = context.WithValue(ctx, progressKey{}, p)
	start := time.Now()
	w := &slowWatch{}
	fire := func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.stopped {
			return
		}
		at, since := p.now()
		log.WithFields(logrus.Fields{
			"op": op, "volume": name, "step": at,
			"elapsed": time.Since(start).Round(time.Millisecond).String(),
			"in_step": time.Since(since).Round(time.Millisecond).String(),
		}).Warn(op + " still running: " + at)
		w.t.Reset(d.cfg.SlowAfter)
	}
	w.mu.Lock()
	w.t = time.AfterFunc(d.cfg.SlowAfter, fire)
	w.mu.Unlock()
	return ctx, func() {
		w.mu.Lock()
		w.stopped = true
		w.t.Stop()
		w.mu.Unlock()
		cancel()
		end()
	}
}
