package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/admin"
	"github.com/snapvol/snapvol/admin/server"
	"github.com/snapvol/snapvol/driver"
	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/metrics"
	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/storage/local"
	"github.com/snapvol/snapvol/storage/portworx"
	"github.com/snapvol/snapvol/version"
)

// run is the daemon from start to SIGTERM: open the state, the backend
// and the driver; reconcile; serve the sockets; shut down.
func run(log *logrus.Logger) error {
	s, err := startSettings(log)
	if err != nil {
		return err
	}
	dm := &snapvold{s: s, log: log, sd: newNotifier(log)}
	defer dm.close()
	if err := dm.openState(); err != nil {
		return err
	}
	if err := dm.openDriver(); err != nil {
		return err
	}
	dm.reconcile()
	return dm.serve()
}

// snapvold is the plugin process's parts, opened in run's order; close
// undoes them in reverse.
type snapvold struct {
	s   Settings
	log *logrus.Logger
	sd  *notifier

	st      *store.Store
	raw     storage.Backend // the backend itself: fleet.go asks it for send and receive
	m       *metrics.Metrics
	d       *driver.Driver
	serving atomic.Bool // the driver serves requests (failpoints fire)

	closers []func()
}

// onClose has close run f, before what was registered earlier.
func (dm *snapvold) onClose(f func()) { dm.closers = append(dm.closers, f) }

func (dm *snapvold) close() {
	for i := len(dm.closers) - 1; i >= 0; i-- {
		dm.closers[i]()
	}
}

// startSettings loads the settings and the log's, and logs the start.
func startSettings(log *logrus.Logger) (Settings, error) {
	s, err := LoadSettings(environ)
	if err != nil {
		// A value that does not parse is a setting to fix, not a
		// failure a restart can get past.
		return s, refusal{err}
	}
	if err := configureLog(log, s); err != nil {
		return s, refusal{err}
	}
	v, commit := version.Get()
	log.WithFields(logrus.Fields{
		"version": v, "commit": commit, "go": runtime.Version(), "pid": os.Getpid(), "backend": s.Backend,
		"state_dir": s.StateDir, "data_root": s.DataRoot, "socket": s.Socket, "metrics_addr": s.MetricsAddr,
	}).Info("snapvol starting")
	if w := metricsUnreachable(s.MetricsAddr, managed(), net.Interfaces); w != "" {
		log.Warn(w)
	}
	return s, nil
}

// openState makes DATA_ROOT, checks STATE_DIR is this plugin's and opens
// the store in it.
func (dm *snapvold) openState() error {
	s, log := dm.s, dm.log
	// DATA_ROOT holds every volume's mount point: production's and the
	// clones CI wrote into. No other host user may enter it (Docker, as
	// root, and containers, through their own bind mounts, need not).
	if err := os.MkdirAll(s.DataRoot, 0o700); err != nil {
		return fmt.Errorf("DATA_ROOT %s: %w", s.DataRoot, err)
	}
	if err := os.Chmod(s.DataRoot, 0o700); err != nil {
		return fmt.Errorf("DATA_ROOT %s: %w", s.DataRoot, err)
	}
	// Before anything in STATE_DIR is opened or made: a plugin started on
	// the wrong state must not write to it.
	warnings, err := checkState(s, environ)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		log.Warn(w)
	}
	st, err := openStore(s)
	if err != nil {
		return err
	}
	dm.st = st
	dm.onClose(func() {
		if err := st.Close(); err != nil {
			log.WithError(err).Warn("closing the state database")
		}
	})
	stateID, err := ensureStateID(s.StateDir)
	if err != nil {
		return fmt.Errorf("STATE_DIR %s: state ID: %w", s.StateDir, err)
	}
	if err := writeMarker(s, environ, stateID); err != nil {
		return fmt.Errorf("DATA_ROOT %s: writing the state marker: %w", s.DataRoot, err)
	}
	return nil
}

// openDriver opens the backend, refuses a new state over an old pool, and
// makes the driver over the backend wrapped for metrics.
func (dm *snapvold) openDriver() error {
	s, st, log := dm.s, dm.st, dm.log
	b, err := openBackend(s, st, log)
	if err != nil {
		err = fmt.Errorf("backend %s: %w", s.Backend, err)
		if errors.Is(err, local.ErrSetting) || errors.Is(err, portworx.ErrEndpoint) || errors.Is(err, storage.ErrDenied) {
			return refusal{err}
		}
		return err
	}
	dm.onClose(func() { b.Close() })
	if err := checkFresh(s, st, b, log); err != nil {
		return err
	}

	// Before the metrics wrapper, which passes only Usager and Checker on.
	if l, ok := b.(interface{ SetLog(logrus.FieldLogger) }); ok {
		l.SetLog(log)
	}
	pinner, _ := b.(storage.Pinner)
	dm.raw = b
	dm.m = metrics.New(metrics.Config{Records: st})
	b = dm.m.Wrap(b)
	dm.m.SetBackend(b)
	dm.d = driver.New(driver.Config{
		Backend: b, Store: st, DataRoot: s.DataRoot, LatestMaxAge: s.LatestMaxAge, IdleTTL: s.IdleTTL, SupersededTTL: s.SupersededTTL, Pinner: pinner,
		Sources: s.Sources, Claim: s.Claim, Log: log, Failpoint: failpoint(log, &dm.serving), Observer: dm.m,
		MountTimeout: mountTimeout(),
	})
	return nil
}

// reconcile repairs what the last run left unfinished, within 10 s.
func (dm *snapvold) reconcile() {
	start := time.Now()
	rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := dm.d.Reconcile(rctx); err != nil {
		// Serving matters more than a clean sweep: Run retries it.
		dm.log.WithError(err).Warn("reconcile at start")
	}
	cancel()
	dm.log.WithField("ms", time.Since(start).Milliseconds()).Info("reconciled")
}

// serve serves the admin socket, METRICS_ADDR and the VolumeDriver
// socket, and runs the driver's background work, until SIGTERM or SIGINT
// (then shutdown) or until the VolumeDriver socket fails.
func (dm *snapvold) serve() error {
	s, d, log := dm.s, dm.d, dm.log
	dm.serving.Store(true)
	runFleet, err := dm.serveAdmin()
	if err != nil {
		return err
	}
	if s.MetricsAddr != "" {
		ms, err := serveMetrics(s.MetricsAddr, dm.m, log)
		if err != nil {
			return err
		}
		dm.onClose(func() { ms.Close() })
	}
	l, err := listen(s.Socket)
	if err != nil {
		return err
	}
	socketBound.Store(true)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	dm.onClose(stop)
	go d.Run(ctx)
	go runFleet(ctx)
	srv := volumeServer(volumeHandler(d, dm.m), log)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	// Ready once the socket answers as Docker will ask it first.
	if err := activate(s.Socket, 10*time.Second); err != nil {
		return fmt.Errorf("SOCKET %s does not answer Plugin.Activate: %w", s.Socket, err)
	}
	dm.sd.ready(fmt.Sprintf("serving %s; %d volumes", s.Socket, dm.st.Len()))
	go dm.sd.watchdog(ctx, func(wctx context.Context) error { return activateCtx(wctx, s.Socket) })
	v, commit := version.Get()
	log.WithFields(logrus.Fields{"socket": s.Socket, "version": v, "commit": commit}).Info("snapvol ready")

	select {
	case <-ctx.Done():
		dm.shutdown(srv)
		return nil
	case err := <-served:
		return fmt.Errorf("serving %s: %w", s.Socket, err)
	}
}

// serveAdmin serves the admin socket (with /metrics) and the fleet's
// routes on it; it returns the fleet's background work.
func (dm *snapvold) serveAdmin() (runFleet func(context.Context), err error) {
	s, log := dm.s, dm.log
	// The admin socket first: it is bound with a umask, before anything
	// else runs that makes files.
	al, err := server.Listen(admin.SocketPath(s.StateDir))
	if err != nil {
		return nil, err
	}
	adm := server.New(dm.d, s.Backend)
	adm.Handle("GET /metrics", dm.m.Handler())
	runFleet = startFleet(s, dm.d, dm.raw, adm, log)
	go func() {
		if err := adm.Serve(al); err != nil {
			log.WithError(err).Error("admin socket")
		}
	}()
	dm.onClose(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = adm.Shutdown(sctx)
		os.Remove(admin.SocketPath(s.StateDir))
	})
	return runFleet, nil
}

// shutdown stops the VolumeDriver socket, letting requests in flight
// finish their bbolt writes, then waits for the driver's work to drain.
func (dm *snapvold) shutdown(srv *http.Server) {
	dm.sd.stopping()
	dm.log.Info("snapvol shutting down")
	// No new requests; those in flight finish their bbolt writes.
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	_ = srv.Shutdown(sctx)
	cancel()
	os.Remove(dm.s.Socket)
	dm.d.Drain(20 * time.Second)
}
