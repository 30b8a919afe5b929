package main

import (
	"context"
	"encoding/json"
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
	for p, h := range f.Handlers() {
		adm.Handle(p, h)
	}
	d.SetPusher(schedulePusher{f: f, publish: s.Publish, canSend: streams != nil})
	adm.Handle("PUT /v1/schedules/{source}/push", pushedScheduleHandler(d))
	if len(s.Replicas) == 0 {
		return func(context.Context) {}
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

// pushedScheduleHandler is PUT /v1/schedules/{source}/push: snapvol
// snapshot schedule SOURCE --every D --keep N --push REPO[:TAG].
func pushedScheduleHandler(d *driver.Driver) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req admin.ScheduleRequest
		err := json.NewDecoder(r.Body).Decode(&req)
		every := time.Duration(0)
		if err == nil {
			if every, err = time.ParseDuration(req.Every); err != nil {
				err = fmt.Errorf("every %q is not a duration like 1h or 30m", req.Every)
			}
		}
		var sc admin.Schedule
		if err != nil {
			err = fmt.Errorf("%w: %v", names.ErrInvalid, err)
		} else {
			ctx, cancel := context.WithTimeout(r.Context(), 25*time.Second)
			defer cancel()
			sc, err = d.Operator().SetPushedSchedule(ctx, r.PathValue("source"), every, req.Keep, req.Push)
		}
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			code := http.StatusInternalServerError
			switch {
			case errors.Is(err, names.ErrInvalid):
				code = http.StatusBadRequest
			case errors.Is(err, fleet.ErrPublish):
				code = http.StatusForbidden
			case errors.Is(err, driver.ErrNoSource), errors.Is(err, storage.ErrNotFound):
				code = http.StatusNotFound
			}
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(admin.Error{Error: err.Error()})
			return
		}
		_ = json.NewEncoder(w).Encode(sc)
	}
}
