package main

import (
	"context"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/admin/server"
	"github.com/snapvol/snapvol/driver"
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
		Driver: d, Streams: streams, Publish: s.Publish, Replicas: s.Replicas, PullEvery: s.PullEvery,
		RegistryConfig: s.RegistryConfig, StateDir: s.StateDir, TempDir: filepath.Join(s.StateDir, "fleet", "tmp"), Log: log,
	})
	for p, h := range f.Handlers() {
		adm.Handle(p, h)
	}
	if len(s.Replicas) == 0 {
		return func(context.Context) {}
	}
	d.SetReplicas(f)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for source, repo := range s.Replicas {
		// The volume that anchors a replica's pulled snapshots, made now
		// (no network) so its names resolve before the first pull.
		if _, err := d.ReplicaSource(ctx, source); err != nil {
			log.WithError(err).WithField("source", source).Error("replica source cannot be used")
			continue
		}
		log.WithFields(logrus.Fields{"source": source, "repository": repo.String(), "pull_every": s.PullEvery}).Info("replica source")
	}
	return f.Run
}
