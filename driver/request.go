package driver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
)

// One request, from where it enters the driver to its answer. It is made
// once, where it enters (a Docker VolumeDriver handler: enter; an operator
// API call: enterOperator), and travels in the context, so everything
// below takes ctx and reads from it what it needs: its budget (the
// context's deadline), who sent it (Caller, caller.go), its logger (every
// line carries req=ID, op and volume, so one request's lines can be picked
// out of a busy log) and the step it is at.
//
// Docker gives a request 30 s and shows nothing while it waits, so a Docker
// request still running after SlowAfter is logged with the step it is at,
// and again every SlowAfter until it ends: whoever reads the plugin's log
// sees which backend call the time goes to.

type requestKey struct{}

type request struct {
	op, volume string
	caller     Caller
	log        *logrus.Entry
	start      time.Time

	// The step the request is at, formatted only if a report needs it.
	mu     sync.Mutex
	format string
	args   []any
	since  time.Time
}

// newRequest is request op on volume sent by c, with a new request id.
func (d *Driver) newRequest(op, volume string, c Caller) *request {
	var b [6]byte
	_, _ = rand.Read(b[:])
	now := time.Now()
	return &request{
		op: op, volume: volume, caller: c, start: now, format: "starting", since: now,
		log: d.log.WithFields(logrus.Fields{"req": hex.EncodeToString(b[:]), "op": op, "volume": volume}),
	}
}

// requestOf is the request of ctx, nil for work that is not a request's
// (reconcile, the reaper, schedules).
func requestOf(ctx context.Context) *request {
	rq, _ := ctx.Value(requestKey{}).(*request)
	return rq
}

// step records what the request of ctx does next (a no-op outside a
// request).
func step(ctx context.Context, format string, args ...any) {
	rq := requestOf(ctx)
	if rq == nil {
		return
	}
	rq.mu.Lock()
	rq.format, rq.args, rq.since = format, args, time.Now()
	rq.mu.Unlock()
}

// at is the step the request is at and since when.
func (rq *request) at() (string, time.Time) {
	rq.mu.Lock()
	defer rq.mu.Unlock()
	return fmt.Sprintf(rq.format, rq.args...), rq.since
}

// logOf is the logger of the request of ctx, or the driver's for work that
// is not a request's.
func (d *Driver) logOf(ctx context.Context) *logrus.Entry {
	if rq := requestOf(ctx); rq != nil {
		return rq.log
	}
	return logrus.NewEntry(d.log)
}

// callerOf is who sent the request of ctx (CallerUnknown outside one).
func callerOf(ctx context.Context) Caller {
	if rq := requestOf(ctx); rq != nil {
		return rq.caller
	}
	return CallerUnknown
}

// budget is how long Docker request op may take: OpTimeout, shared by every
// backend call it makes, or MountTimeout for the two that make clones.
func (d *Driver) budget(op string) time.Duration {
	if (op == "create" || op == "mount") && d.cfg.MountTimeout > 0 {
		return d.cfg.MountTimeout
	}
	return d.cfg.OpTimeout
}

// enter starts Docker request op on volume, sent by c: its budget, its
// progress report if it runs long, and Drain accounting. The returned func
// ends all three and logs one line with the volume, duration and outcome
// (*err).
func (d *Driver) enter(op, volume string, c Caller, err *error) (context.Context, func()) {
	rq := d.newRequest(op, volume, c)
	ctx, cancel := context.WithTimeout(context.Background(), d.budget(op))
	ctx = context.WithValue(ctx, requestKey{}, rq)
	d.inflight.Add(1)
	w := d.watch(rq)
	return ctx, func() {
		defer d.inflight.Done()
		w.stop()
		cancel()
		e := rq.log.WithField("ms", time.Since(rq.start).Milliseconds())
		if *err != nil {
			e.WithError(*err).Warn(op + " failed")
			return
		}
		e.Info(op)
	}
}

// operatorBudget bounds an operator's request as OpTimeout's default
// bounds Docker's: a command waits no longer than a Docker request would.
const operatorBudget = 25 * time.Second

// enterOperator starts operator request op on volume (or source), within
// parent (the admin connection's: a command that goes away cancels it).
// The operator holds no mount: CallerOperator (caller.go).
func (d *Driver) enterOperator(parent context.Context, op, volume string) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(parent, operatorBudget)
	return context.WithValue(ctx, requestKey{}, d.newRequest(op, volume, CallerOperator)), cancel
}

// slowWatch logs a request that runs long; stop ends it.
type slowWatch struct {
	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

// watch reports rq every SlowAfter until stopped.
func (d *Driver) watch(rq *request) *slowWatch {
	w := &slowWatch{}
	fire := func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.stopped {
			return
		}
		at, since := rq.at()
		rq.log.WithFields(logrus.Fields{
			"step":    at,
			"elapsed": time.Since(rq.start).Round(time.Millisecond).String(),
			"in_step": time.Since(since).Round(time.Millisecond).String(),
		}).Warn(rq.op + " still running: " + at)
		w.t.Reset(d.cfg.SlowAfter)
	}
	w.mu.Lock()
	w.t = time.AfterFunc(d.cfg.SlowAfter, fire)
	w.mu.Unlock()
	return w
}

func (w *slowWatch) stop() {
	w.mu.Lock()
	w.stopped = true
	w.t.Stop()
	w.mu.Unlock()
}

// As is the VolumeDriver API as caller c sends it (the socket's peer,
// caller.go): Mount, Unmount and Remove count and judge mounts by c. The
// Driver's own methods are As(CallerUnknown)'s.
func (d *Driver) As(c Caller) volume.Driver { return docker{d, c} }

// docker is the VolumeDriver API of one caller: the Docker requests enter
// here.
type docker struct {
	d      *Driver
	caller Caller
}

func (a docker) Create(req *volume.CreateRequest) (err error) {
	ctx, end := a.d.enter("create", req.Name, a.caller, &err)
	defer end()
	return a.d.create(ctx, req)
}

func (a docker) Mount(req *volume.MountRequest) (_ *volume.MountResponse, err error) {
	ctx, end := a.d.enter("mount", req.Name, a.caller, &err)
	defer end()
	return a.d.mount(ctx, req)
}

func (a docker) Unmount(req *volume.UnmountRequest) (err error) {
	ctx, end := a.d.enter("unmount", req.Name, a.caller, &err)
	defer end()
	return a.d.unmount(ctx, req)
}

func (a docker) Remove(req *volume.RemoveRequest) (err error) {
	ctx, end := a.d.enter("remove", req.Name, a.caller, &err)
	defer end()
	return a.d.removeVolume(ctx, req.Name)
}

// Get, List, Path and Capabilities answer from the index alone: no budget,
// no backend, no caller.

func (a docker) Get(req *volume.GetRequest) (*volume.GetResponse, error) { return a.d.Get(req) }
func (a docker) List() (*volume.ListResponse, error)                     { return a.d.List() }
func (a docker) Path(req *volume.PathRequest) (*volume.PathResponse, error) {
	return a.d.Path(req)
}
func (a docker) Capabilities() *volume.CapabilitiesResponse { return a.d.Capabilities() }
