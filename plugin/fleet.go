package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/admin"
	"github.com/snapvol/snapvol/admin/server"
	"github.com/snapvol/snapvol/driver"
	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/fleet"
	"github.com/snapvol/snapvol/internal/route"
	"github.com/snapvol/snapvol/storage"
)

// startFleet wires runner fleets (docs/fleets.md) into a running plugin:
// the push and pull routes on the admin socket, the replica sources in the
// driver; run is the PULL_EVERY loop, until its context ends. With PUBLISH and
// REPLICAS empty (the defaults) it changes nothing a Docker user sees:
// every push is refused, and no source is a replica.
func startFleet(s Settings, d *driver.Driver, b storage.Backend, adm *server.Server, log *logrus.Logger) (run func(context.Context)) {
	streams, _ := b.(fleet.Streams) // the local backend; nil for portworx
	f := fleet.New(fleet.Config{
		Driver: d.Operator(), Streams: streams, Publish: s.Publish, Replicas: s.Replicas, PullEvery: s.PullEvery,
		RegistryConfig: s.RegistryConfig, StateDir: s.StateDir, TempDir: filepath.Join(s.StateDir, "fleet", "tmp"), Log: log,
		Failpoint: failpoint(log, fleetServing),
	})
	// What a push or pull the last run did not finish left, repaired
	// before the routes serve (fleet/crash.go).
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	f.Reconcile(rctx)
	rcancel()
	d.SetPusher(schedulePusher{f: f, publish: s.Publish, canSend: streams != nil})
	adm.Routes(func(sk route.Socket) { fleetRoutes(sk, f, d.Operator()) })
	if len(s.Replicas) == 0 {
		return f.Run // no pulls; it ends pushes in flight at the shutdown
	}
	d.SetReplicas(f)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for source, repo := range s.Replicas {
		// The volume that anchors a replica's pulled snapshots, made now
		// (no network) so its names resolve before the first pull.
		if _, err := d.Operator().ReplicaSource(ctx, source); err != nil {
			log.WithError(err).WithField("source", source).Error("replica source cannot be used")
			continue
		}
		log.WithFields(logrus.Fields{"source": source, "repository": repo.String(), "pull_every": s.PullEvery}).Info("replica source")
	}
	return f.Run
}

// fleetServing arms the fleet's failpoints: startFleet runs once the
// plugin serves, so they are never reached during reconcile at start.
var fleetServing = func() *atomic.Bool { var b atomic.Bool; b.Store(true); return &b }()

// schedulePusher is the fleet as the driver's scheduled pushes see it.
type schedulePusher struct {
	f       *fleet.Fleet
	publish fleet.Publish
	canSend bool
}

func (p schedulePusher) CheckPush(source, ref, repo string) error {
	if _, _, err := fleet.ParseRepo(repo); err != nil {
		return err
	}
	if !p.canSend {
		return errors.New("this backend cannot send snapshots (only the local btrfs backend can)")
	}
	if !p.publish.Allows(source, ref) {
		return fmt.Errorf("%w: %s@%s may not leave this host (PUBLISH=%q)", fleet.ErrPublish, source, ref, p.publish.String())
	}
	return nil
}

func (p schedulePusher) Push(ctx context.Context, source, ref, repo string) error {
	_, err := p.f.Push(ctx, source, ref, repo)
	return err
}

// fleetRoutes are the fleet's routes on the admin socket, served like the
// operator's (route.Handle on the admin wire): the status of each error
// comes from the one error table (metrics/classes.go), PUBLISH refusing a
// push being 403 and a registry failing 502.
func fleetRoutes(sk route.Socket, f *fleet.Fleet, op *driver.Operator) {
	route.Handle(sk, "POST /v1/fleet/push", "push", func(r *http.Request, req *admin.PushRequest) (any, error) {
		return f.ServePush(r.Context(), *req)
	})
	route.Handle(sk, "POST /v1/fleet/pull", "pull", func(r *http.Request, req *admin.PullRequest) (any, error) {
		return f.ServePull(r.Context(), *req)
	})
	route.Handle(sk, "GET /v1/fleet/replicas", "replicas", func(*http.Request, *route.None) (any, error) { return f.Replicas(), nil })
	// snapvol snapshot schedule SOURCE --every D --keep N --push REPO[:TAG]
	route.Handle(sk, "PUT /v1/schedules/{source}/push", "schedule push", func(r *http.Request, req *admin.ScheduleRequest) (any, error) {
		every, err := time.ParseDuration(req.Every)
		if err != nil {
			return nil, fmt.Errorf("%w: every %q is not a duration like 1h or 30m", names.ErrInvalid, req.Every)
		}
		return op.SetPushedSchedule(r.Context(), r.PathValue("source"), every, req.Keep, req.Push)
	})
}
