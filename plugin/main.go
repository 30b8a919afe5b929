// Command snapvol is the snapvol Docker volume plugin: it serves the
// VolumeDriver protocol on a unix socket, runs directly on a host (a legacy
// plugin) or as a managed plugin.
package main

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/cmd/snapvol/cli"
	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/metrics"
	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/storage/local"
	"github.com/snapvol/snapvol/storage/portworx"
)

func main() {
	// One binary: the daemon (serve, recover) with every command of
	// cmd/snapvol built in. The managed plugin's entrypoint is it with no
	// arguments; on a host it is snapvold, which snapvol execs.
	d := cli.Daemon{Serve: serve, Recover: runRecover}
	if err := cli.New(os.Stdout, os.Stderr, d).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "snapvol:", err)
		var r refusal
		if errors.As(err, &r) {
			os.Exit(exitRefused)
		}
		os.Exit(1)
	}
}

// exitRefused is the exit status of a start refused for its state or
// settings (EX_CONFIG): restarting cannot help, and the systemd unit says
// so (RestartPreventExitStatus).
const exitRefused = 78

// refusal is a start refused until the operator changes a setting.
type refusal struct{ error }

func (r refusal) Unwrap() error { return r.error }

// socketBound is set once the VolumeDriver socket is bound.
var socketBound atomic.Bool

// serve runs the plugin until SIGTERM: the managed plugin's entrypoint
// (snapvol with no arguments) and snapvol serve.
func serve() error {
	log := logrus.New()
	log.SetOutput(os.Stdout) // dockerd files a plugin's stderr as errors
	log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: time.RFC3339Nano})
	if err := run(log); err != nil {
		log.WithError(err).Error("snapvol stopped")
		if managed() && !socketBound.Load() {
			// Docker restarts a plugin that exits while it is being
			// enabled; dockerd 20.10 then cannot delete the task, and the
			// next enable fails ("id already in use") even once the
			// settings are right. So a refused plugin does not exit: it
			// serves its refusal to every Docker request (refused.go)
			// until it is stopped.
			return serveRefused(err, log)
		}
		return err
	}
	return nil
}

func openBackend(s Settings, st *store.Store, log *logrus.Logger) (storage.Backend, error) {
	switch s.Backend {
	case "portworx":
		id, err := portworxInstance(s, st)
		if err != nil {
			return nil, err
		}
		// The managed plugin sees PX_MOUNT_DIR through its pxmounts mount
		// (config.portworx.json), at a fixed destination; on the host it
		// is the same path.
		local := ""
		if managed() {
			local = portworx.ManagedMountDir
		}
		b, err := portworx.Open(portworx.Config{
			Endpoint: s.PXEndpoint, Driver: s.PXDriver, Token: s.PXToken,
			DataRoot: s.DataRoot, MountDir: s.PXMountDir, MountDirLocal: local, Instance: id,
		})
		if err != nil {
			return nil, err
		}
		if s.PXMountRootSet != "" {
			log.WithField("PX_MOUNT_ROOT", s.PXMountRootSet).Warn("PX_MOUNT_ROOT is no longer used: Portworx now mounts clones under PX_MOUNT_DIR (default /var/lib/osd/mounts, where its own plugin mounts) and snapvol binds them under DATA_ROOT; see docs/portworx.md")
		}
		host, seen := b.MountDirs()
		log.WithFields(logrus.Fields{"endpoint": s.PXEndpoint, "driver": s.PXDriver, "instance": id, "mount_dir": host, "mount_dir_local": seen}).Info("portworx backend")
		// A server that is down must not keep the plugin from serving Get
		// and List from its index, so that only reports. A server that
		// answers but is not OpenStorage's REST API, or refuses PX_TOKEN,
		// is a setting to fix: the plugin does not start on it (and so
		// never reports ready), since every clone would fail.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := b.Ping(ctx); errors.Is(err, portworx.ErrEndpoint) || errors.Is(err, storage.ErrDenied) {
			b.Close()
			return nil, fmt.Errorf("portworx: PX_ENDPOINT=%s cannot be used: %w", s.PXEndpoint, err)
		} else if err != nil {
			log.WithError(err).Warn("portworx: the OpenStorage server does not answer yet; clones cannot be made until it does")
		}
		return b, nil
	default:
		cfg := local.Config{Pool: s.Pool, StateDir: s.StateDir, PoolSize: s.PoolSize, CloneSize: s.CloneSize, Reserve: s.Reserve}
		b, err := local.Open(cfg)
		if err != nil && !s.ReserveSet && !s.Reserve.IsZero() {
			// The default reserve needs btrfs simple quotas (Linux 6.7+)
			// on a pool snapvol owns; where there are none, the plugin
			// still serves, without it, and says so. A reserve that was
			// asked for is refused instead.
			b2, err2 := local.Open(local.Config{Pool: s.Pool, StateDir: s.StateDir, PoolSize: s.PoolSize, CloneSize: s.CloneSize})
			if err2 == nil {
				log.WithError(err).Warn("POOL_RESERVE: the default reserve cannot be kept on this pool; clones may fill it. Set POOL_RESERVE=0 to silence this, or give the pool its own btrfs filesystem on Linux 6.7+")
				return b2, nil
			}
		}
		return b, err
	}
}

// portworxInstance is the instance ID the Portworx objects of this state
// are labelled with. It lives in the store, so a restored snapvol.db keeps
// owning its clones; a state from before that keeps the ID an older
// version wrote to STATE_DIR/portworx.instance, adopted on its first
// start here. That file is read, never made or removed: an older build
// rolled back to still finds the same ID in it.
func portworxInstance(s Settings, st *store.Store) (string, error) {
	legacy := ""
	if _, err := os.Stat(filepath.Join(s.StateDir, "portworx.instance")); err == nil {
		id, err := portworx.InstanceID(s.StateDir)
		if err != nil {
			return "", fmt.Errorf("instance ID in STATE_DIR %s: %w", s.StateDir, err)
		}
		legacy = id
	}
	return st.Instance(legacy)
}

// openStore opens STATE_DIR/snapvol.db, refusing (exit 78) a database
// that is damaged or is not the state STATE_DIR/snapvol.store says was
// served: serving it would panic, or start a fresh state whose sweep
// destroys the lost state's clones and snapshots.
func openStore(s Settings) (*store.Store, error) {
	path := filepath.Join(s.StateDir, "snapvol.db")
	st, err := store.OpenWith(path, store.Options{Seal: filepath.Join(s.StateDir, store.SealName)})
	switch {
	case err == nil:
		return st, nil
	case errors.Is(err, store.ErrCorrupt):
		return nil, refusal{fmt.Errorf("refusing to start: %w. Nothing was changed. Move it aside (mv %s %s.damaged) and run snapvol recover with the plugin stopped to rebuild the records from the pool (docs/recover.md)", err, path, path)}
	case errors.Is(err, store.ErrRefused), errors.Is(err, store.ErrSchema):
		return nil, refusal{fmt.Errorf("refusing to start: %w", err)}
	}
	return nil, err
}

// checkFresh vets a store this start made: a pool holding objects
// snapvol labelled belongs to a state that was lost (snapvol.db deleted
// or emptied before snapvol kept an identity file, or STATE_DIR lost
// whole), and serving a new one over it would let the sweep destroy them.
// A clean pool makes this the first start: the store is sealed, and this
// run destroys nothing (the driver asks Store.Fresh).
func checkFresh(s Settings, st *store.Store, b storage.Backend, log *logrus.Logger) error {
	if !st.Fresh() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	owned, err := b.Owned(ctx)
	if err != nil {
		return fmt.Errorf("STATE_DIR %s holds a new state database; listing the pool for objects of an older one: %w", s.StateDir, err)
	}
	if len(owned) > 0 {
		var eg []string
		for _, o := range owned {
			if len(eg) == 3 {
				break
			}
			what := string(o.Kind) + " " + o.ID
			if v := o.Labels[storage.LabelVolume]; v != "" {
				what += " of volume " + v
			}
			eg = append(eg, what)
		}
		return refusal{fmt.Errorf("refusing to start: %s holds no records, but the pool holds %d objects snapvol made (%s): their records are lost, and a new state would destroy them. Run snapvol recover with the plugin stopped to rebuild the records from the objects' labels (docs/recover.md), or restore snapvol.db and %s from a backup",
			st.Path(), len(owned), strings.Join(eg, "; "), store.SealName)}
	}
	if err := st.Seal(); err != nil {
		return fmt.Errorf("STATE_DIR %s: %w", s.StateDir, err)
	}
	log.WithFields(logrus.Fields{"store": st.ID(), "db": st.Path()}).Info("new state: first start on an empty pool; nothing is collected or destroyed in this run")
	return nil
}

// configureLog applies LOG_LEVEL and LOG_FORMAT.
func configureLog(log *logrus.Logger, s Settings) error {
	lvl, err := logrus.ParseLevel(s.LogLevel)
	if err != nil {
		return fmt.Errorf("LOG_LEVEL=%q: %w", s.LogLevel, err)
	}
	log.SetLevel(lvl)
	if s.LogFormat == "json" {
		log.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano})
	}
	return nil
}

// serveMetrics serves /metrics on addr (METRICS_ADDR) over TCP.
func serveMetrics(addr string, m *metrics.Metrics, log *logrus.Logger) (*http.Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("METRICS_ADDR %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	srv := &http.Server{
		Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: time.Minute, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: stdlog.New(log.WriterLevel(logrus.WarnLevel), "metrics: ", 0),
	}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.WithError(err).Error("metrics listener")
		}
	}()
	log.WithField("addr", l.Addr().String()).Info("serving /metrics")
	return srv, nil
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

// mountTimeout is the budget of Create and Mount: Docker waits 2 minutes
// for those on a legacy socket plugin (moby volume/drivers proxy,
// longTimeout) and 30 s on a managed plugin, whose requests go through
// the plugin client's default timeout; each keeps a margin for the answer.
func mountTimeout() time.Duration {
	if managed() {
		return 25 * time.Second
	}
	return 110 * time.Second
}
