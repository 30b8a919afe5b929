package fleet

// Crash safety of push and pull (docs/fleets.md, "A push or pull cut
// short"): the steps a crash test may kill the plugin at, and what the
// next start repairs.
//
// A push changes the registry only: layers first, then the manifest by
// digest, the tag last, so a push killed anywhere leaves the tag at the
// version before or (killed after the tag moved) at the new one, and
// always naming a manifest whose layers are there. On this host it leaves
// at most a stream file under TempDir (deleted at the next start) and
// SOURCE@pushed.TAG one push behind (the next push repairs it).
//
// A pull changes this host only, in steps each of which leaves a state
// the next start turns into a whole one: a layer is received into
// replicas/SOURCE/UUID.part, verified, and renamed to replicas/SOURCE/UUID;
// the version becomes visible when its snapshot is registered as
// SOURCE@TAG (one store write); versions no tag shows are renamed to .part
// and deleted. At start, Reconcile deletes every .part, registers a
// version whose snapshot was made but not registered (the crash came
// between the two; the snapshot is whole and verified), and deletes the
// received versions no tag shows.

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/storage"
)

// Failpoints are the steps of a push and a pull at which a crash test may
// kill the plugin (SNAPVOL_FAILPOINT, like driver.Failpoints):
// test/fleet_crash_test.go kills at each one and checks the registry and
// this host after a restart.
var Failpoints = []string{
	// push
	"push:streaming", // the btrfs send stream half written to the temporary file
	"push:streamed",  // the stream hashed into the temporary file, nothing uploaded
	"push:uploaded",  // the layer uploaded, no manifest names it
	"push:manifest",  // the manifest pushed by digest, the tag not moved
	"push:tagged",    // the tag moved, SOURCE@pushed.TAG not yet moved to this snapshot
	"push:kept",      // SOURCE@pushed.TAG moved, the push not yet answered
	// pull
	"pull:manifest",   // the tag's manifest read, nothing fetched
	"pull:fetched",    // a layer's fetch answered, nothing received
	"pull:receiving",  // btrfs receive into UUID.part under way
	"pull:received",   // UUID.part received, its digest not yet verified
	"pull:verified",   // UUID.part verified, not renamed
	"pull:committed",  // renamed to replicas/SOURCE/UUID, no snapshot of it
	"pull:published",  // its snapshot made, not registered as SOURCE@TAG
	"pull:registered", // SOURCE@TAG moved, old versions not collected
	"pull:pruned",     // versions no tag shows renamed to .part, not deleted
}

var knownFailpoint = func() map[string]bool {
	m := map[string]bool{}
	for _, f := range Failpoints {
		m[f] = true
	}
	return m
}()

func (f *Fleet) failpoint(name string) {
	if !knownFailpoint[name] {
		panic("fleet: failpoint " + name + " is not in Failpoints")
	}
	if f.cfg.Failpoint != nil {
		f.cfg.Failpoint(name)
	}
}

// Reconcile repairs what a push or pull the last run did not finish left
// on this host, before the fleet serves: stream files under TempDir, and
// for each replica source unfinished receives and retired versions
// (.part), a version made but not registered (registered now), and
// received versions no tag shows.
func (f *Fleet) Reconcile(ctx context.Context) {
	if f.cfg.TempDir != "" {
		ents, _ := os.ReadDir(f.cfg.TempDir)
		for _, e := range ents {
			if err := os.RemoveAll(filepath.Join(f.cfg.TempDir, e.Name())); err != nil {
				f.cfg.Log.WithError(err).Warn("deleting a stream file an unfinished push left")
				continue
			}
			f.cfg.Log.WithField("file", e.Name()).Info("deleted a stream file an unfinished push left")
		}
	}
	if f.cfg.Streams == nil {
		return
	}
	sources := make([]string, 0, len(f.cfg.Replicas))
	for s := range f.cfg.Replicas {
		sources = append(sources, s)
	}
	sort.Strings(sources)
	for _, source := range sources {
		if err := f.reconcileReplica(ctx, source); err != nil {
			f.cfg.Log.WithError(err).WithField("source", source).Warn("repairing what an unfinished pull left (the next pull repairs it)")
		}
	}
}

func (f *Fleet) reconcileReplica(ctx context.Context, source string) error {
	defer f.locks.Lock("pull/" + source)()
	f.cfg.Streams.DropReplicaParts(source)
	src, err := f.cfg.Driver.ReplicaSource(ctx, source)
	if err != nil {
		return err
	}
	snaps, err := f.cfg.Streams.Snapshots(ctx, src)
	if err != nil {
		return err
	}
	// The newest snapshot made of each tag's versions: when it is newer
	// than the one registered (or none is), the crash came between
	// making it and registering it. It was made only of a received and
	// verified version, so it is whole: register it, as the pull would
	// have.
	newest := map[string]storage.Object{}
	for _, s := range snaps {
		tag := s.Labels[storage.LabelRegistered]
		if s.Labels[labelReceived] == "" || tag == "" {
			continue
		}
		if cur, ok := newest[tag]; !ok || s.Created.After(cur.Created) {
			newest[tag] = s
		}
	}
	for tag, s := range newest {
		reg, ok := f.cfg.Driver.PulledVersion(source, tag)
		if ok && (reg.Object == s.ID || !s.Created.After(createdOf(snaps, reg.Object))) {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, s.Labels[labelReceivedTime])
		if err != nil {
			at = s.Created
		}
		made := s
		if err := f.cfg.Driver.RegisterPulled(ctx, src, tag, at, func(context.Context) (storage.Object, error) { return made, nil }); err != nil {
			return err
		}
		f.cfg.Log.WithFields(logrus.Fields{"audit": "replica pulled", "source": source, "tag": tag, "uuid": s.Labels[labelReceived], "snapshot": s.ID}).Info("registered the version an unfinished pull made")
	}
	f.retireUnshown(ctx, src)
	f.cfg.Streams.DropReplicaParts(source)
	return nil
}

// createdOf is the time of snapshot id among snaps (zero if it is not).
func createdOf(snaps []storage.Object, id string) time.Time {
	for _, s := range snaps {
		if s.ID == id {
			return s.Created
		}
	}
	return time.Time{}
}

// retireUnshown moves the received versions of src that no tag shows out
// of the way (to .part, deleted by DropReplicaParts): what no tag's newest
// version is will never be a parent again.
func (f *Fleet) retireUnshown(ctx context.Context, src storage.Object) {
	vis, err := f.visible(ctx, src)
	if err != nil {
		f.cfg.Log.WithError(err).WithField("source", src.Name).Warn("listing the versions tags show; nothing deleted")
		return
	}
	keep := map[string]bool{}
	for _, u := range vis {
		keep[u] = true
	}
	if err := f.cfg.Streams.PruneReplicas(src.Name, keep); err != nil {
		f.cfg.Log.WithError(err).WithField("source", src.Name).Warn("deleting received versions no tag needs")
	}
}
