// Command snapvol is the snapvol Docker volume plugin: it serves the
// VolumeDriver protocol on a unix socket, runs directly on a host (a legacy
// plugin) or as a managed plugin.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/admin"
	"github.com/snapvol/snapvol/driver"
	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/storage/local"
	"github.com/snapvol/snapvol/storage/portworx"
	"github.com/snapvol/snapvol/version"
)

func main() {
	if err := newCLI(os.Stdout, os.Stderr).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "snapvol:", err)
		os.Exit(1)
	}
}

// serve runs the plugin until SIGTERM: the managed plugin's entrypoint
// (snapvol with no arguments) and snapvol serve.
func serve() error {
	log := logrus.New()
	log.SetOutput(os.Stdout) // dockerd files a plugin's stderr as errors
	log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: time.RFC3339Nano})
	if err := run(log); err != nil {
		log.WithError(err).Error("snapvol stopped")
		return err
	}
	return nil
}

func openBackend(s Settings, log *logrus.Logger) (storage.Backend, error) {
	switch s.Backend {
	case "portworx":
		id, err := portworx.InstanceID(s.StateDir)
		if err != nil {
			return nil, fmt.Errorf("instance ID in STATE_DIR %s: %w", s.StateDir, err)
		}
		b, err := portworx.Open(portworx.Config{
			Endpoint: s.PXEndpoint, Driver: s.PXDriver, Token: s.PXToken,
			DataRoot: s.DataRoot, MountRoot: s.PXMountRoot, Instance: id,
		})
		if err != nil {
			return nil, err
		}
		root, how := b.MountRoot()
		log.WithFields(logrus.Fields{"endpoint": s.PXEndpoint, "driver": s.PXDriver, "instance": id, "mount_root": root, "mount_root_from": how}).Info("portworx backend")
		// A server that is down must not keep the plugin from serving Get
		// and List from its index, so this only reports.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := b.Ping(ctx); err != nil {
			log.WithError(err).Warn("portworx: the OpenStorage server does not answer yet; clones cannot be made until it does")
		}
		return b, nil
	default:
		return local.Open(local.Config{Pool: s.Pool, StateDir: s.StateDir, PoolSize: s.PoolSize})
	}
}

func run(log *logrus.Logger) error {
	s, err := LoadSettings(environ)
	if err != nil {
		return err
	}
	lvl, err := logrus.ParseLevel(s.LogLevel)
	if err != nil {
		return fmt.Errorf("LOG_LEVEL=%q: %w", s.LogLevel, err)
	}
	log.SetLevel(lvl)
	v, commit := version.Get()
	log.WithFields(logrus.Fields{"version": v, "commit": commit, "backend": s.Backend, "state_dir": s.StateDir, "data_root": s.DataRoot, "socket": s.Socket}).Info("snapvol starting")

	if err := os.MkdirAll(s.DataRoot, 0o755); err != nil {
		return fmt.Errorf("DATA_ROOT %s: %w", s.DataRoot, err)
	}
	st, err := store.Open(filepath.Join(s.StateDir, "snapvol.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	b, err := openBackend(s, log)
	if err != nil {
		return fmt.Errorf("backend %s: %w", s.Backend, err)
	}
	defer b.Close()

	var serving atomic.Bool
	d := driver.New(driver.Config{
		Backend: b, Store: st, DataRoot: s.DataRoot, LatestMaxAge: s.LatestMaxAge, IdleTTL: s.IdleTTL,
		Sources: s.Sources, Claim: s.Claim, Log: log, Failpoint: failpoint(log, &serving),
	})
	start := time.Now()
	rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := d.Reconcile(rctx); err != nil {
		// Serving matters more than a clean sweep: Run retries it.
		log.WithError(err).Warn("reconcile at start")
	}
	cancel()
	log.WithField("ms", time.Since(start).Milliseconds()).Info("reconciled")

	serving.Store(true)
	// The admin socket first: it is bound with a umask, before anything
	// else runs that makes files.
	al, err := admin.Listen(admin.SocketPath(s.StateDir))
	if err != nil {
		return err
	}
	adm := admin.NewServer(d)
	go func() {
		if err := adm.Serve(al); err != nil {
			log.WithError(err).Error("admin socket")
		}
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = adm.Shutdown(sctx)
		os.Remove(admin.SocketPath(s.StateDir))
	}()
	l, err := listen(s.Socket)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go d.Run(ctx)
	served := make(chan error, 1)
	go func() { served <- volume.NewHandler(d).Serve(l) }()
	log.WithField("socket", s.Socket).Info("snapvol ready")

	select {
	case <-ctx.Done():
		log.Info("snapvol shutting down")
		l.Close()
		os.Remove(s.Socket)
		// Let operations already in flight finish their bbolt writes.
		d.Drain(20 * time.Second)
		return nil
	case err := <-served:
		return fmt.Errorf("serving %s: %w", s.Socket, err)
	}
}

// listen binds the socket, replacing a stale one left by a crash. The
// socket appears only once the driver is ready, so Docker never sees a
// half-started plugin.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("SOCKET %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// failpoint returns the crash hook of SNAPVOL_FAILPOINT (crash tests only):
// the process kills itself with SIGKILL when a request reaches that step
// (not reconcile at start, so a crash test can always restart it).
func failpoint(log *logrus.Logger, serving *atomic.Bool) func(string) {
	at := os.Getenv("SNAPVOL_FAILPOINT")
	if at == "" {
		return nil
	}
	log.WithField("failpoint", at).Warn("crash test hook armed")
	return func(name string) {
		if name == at && serving.Load() {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
}
