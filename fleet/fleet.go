package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/keylock"
	"github.com/snapvol/snapvol/storage"
)

// Driver is what the fleet asks of the driver (*driver.Operator).
type Driver interface {
	PublishedSnapshot(ctx context.Context, source, ref string) (src, snap storage.Object, err error)
	SnapshotByIdentity(ctx context.Context, source, id string) (storage.Object, bool)
	KeepPushed(ctx context.Context, src, snap storage.Object, tag string) error
	ReplicaSource(ctx context.Context, source string) (storage.Object, error)
	PulledVersion(source, tag string) (store.Snapshot, bool)
	RegisterPulled(ctx context.Context, src storage.Object, tag string, at time.Time, publish func(context.Context) (storage.Object, error)) error
}

// Streams is what the fleet asks of the storage (*local.Backend): btrfs
// send and receive, the received versions, and the snapshots made of them.
type Streams interface {
	SendSnapshot(ctx context.Context, id, parentID string, w io.Writer) error
	HasReplica(source, uuid string) bool
	// ReceiveReplica receives into UUID.part; CommitReplica renames it to
	// UUID once the caller verified the stream.
	ReceiveReplica(ctx context.Context, source, uuid string, r io.Reader) error
	CommitReplica(source, uuid string) error
	DropReplicaParts(source string)
	PublishReplica(ctx context.Context, src storage.Object, uuid string, labels map[string]string) (storage.Object, error)
	// PruneReplicas renames the versions not in keep to .part, which
	// DropReplicaParts deletes.
	PruneReplicas(source string, keep map[string]bool) error
	Snapshots(ctx context.Context, source storage.Object) ([]storage.Object, error)
}

// Config wires a Fleet.
type Config struct {
	Driver   Driver
	Streams  Streams // nil: the backend has no streams (portworx)
	Publish  Publish
	Replicas map[string]Repo
	// PullEvery is PULL_EVERY (0: only on snapvol pull).
	PullEvery time.Duration
	// RegistryConfig is REGISTRY_CONFIG: the directory of docker's
	// config.json ("" = docker's own).
	RegistryConfig string
	// StateDir is STATE_DIR. The fleet keeps no state of its own there:
	// which version each tag shows is the store's registrations (and the
	// labels of the snapshots they name), so the two cannot disagree.
	StateDir string
	// TempDir holds a stream while it is hashed before upload (the
	// registry needs a layer's digest before it takes it).
	TempDir string
	Log     *logrus.Logger
	// Failpoint, when set, is called at every step of Failpoints (crash
	// tests kill the plugin there).
	Failpoint func(name string)
}

// Fleet pushes and pulls.
type Fleet struct {
	cfg   Config
	locks keylock.Map // one per source: pushes and pulls of it one at a time

	mu      sync.Mutex
	checked map[string]time.Time // source: when the registry last answered a pull
	failed  map[string]error     // source: the last pull's error, nil once one works
	stop    context.Context      // Run's: ends at the plugin's shutdown (nil before Run)
}

// bounded is ctx ended also when the plugin shuts down (Run's ctx): a
// push or pull hanging on a registry would otherwise hold the shutdown
// for as long as its request waits (45 s), past the 10 s Docker gives a
// managed plugin before SIGKILL. A pull or push cut short leaves whole
// versions only (crash.go); the next one completes it.
func (f *Fleet) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	f.mu.Lock()
	stop := f.stop
	f.mu.Unlock()
	if stop == nil {
		return ctx, cancel
	}
	unhook := context.AfterFunc(stop, cancel)
	return ctx, func() { unhook(); cancel() }
}

// New returns the fleet of cfg.
func New(cfg Config) *Fleet {
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	return &Fleet{cfg: cfg, checked: map[string]time.Time{}, failed: map[string]error{}}
}

// PushResult says what a push did.
type PushResult struct {
	Repository string   `json:"repository"`
	Tag        string   `json:"tag"`
	Digest     string   `json:"digest"`
	Layers     int      `json:"layers"`
	Uploaded   []string `json:"uploaded"` // digests of the layers this push uploaded
	Bytes      int64    `json:"bytes"`    // bytes uploaded
	Full       bool     `json:"full"`     // the chain was (re)based on a full stream
}

// Push publishes snapshot source@ref as repo:tag (tag "" = ref): the chain
// the tag holds plus one incremental stream against its last snapshot when
// this host still has it and the chain is short enough, else a full
// stream alone. Layers the registry has are not uploaded; the manifest is
// pushed by digest and the tag moved last.
func (f *Fleet) Push(ctx context.Context, source, ref, repoRef string) (PushResult, error) {
	repo, tag, err := f.pushTarget(source, ref, repoRef)
	if err != nil {
		return PushResult{}, err
	}
	ctx, cancel := f.bounded(ctx)
	defer cancel()
	defer f.locks.Lock("push/" + source)()
	src, snap, err := f.cfg.Driver.PublishedSnapshot(ctx, source, ref)
	if err != nil {
		return PushResult{}, err
	}
	r, err := openRepo(ctx, repo, f.cfg.RegistryConfig)
	if err != nil {
		return PushResult{}, err
	}
	prev, had, err := fetchArtifact(ctx, r, repo, tag)
	if err != nil {
		return PushResult{}, err
	}
	res := PushResult{Repository: repo.String(), Tag: tag, Uploaded: []string{}}
	if had && tipUUID(prev) == snap.Identity {
		// The tag holds this snapshot already: nothing to send.
		res.Digest, res.Layers = prev.desc.Digest.String(), len(prev.manifest.Layers)
		return res, f.cfg.Driver.KeepPushed(ctx, src, snap, tag)
	}
	var parent storage.Object
	var layers []ocispec.Descriptor
	if had {
		parent, layers = f.pushBase(ctx, source, tag, prev)
	}
	res.Full = parent.ID == ""
	layer, size, uploaded, err := f.pushLayer(ctx, r, repo, source, ref, snap, parent)
	if err != nil {
		return res, err
	}
	layers = append(layers, layer)
	if uploaded {
		res.Uploaded, res.Bytes = append(res.Uploaded, layer.Digest.String()), size
		f.failpoint("push:uploaded")
	}
	desc, err := f.pushManifest(ctx, r, repo, tag, source, ref, snap, layers)
	if err != nil {
		return res, err
	}
	res.Digest, res.Layers = desc.Digest.String(), len(layers)
	f.keepPushed(ctx, src, snap, source, ref, res)
	return res, nil
}

// pushTarget checks a push of source@ref to repoRef may happen here and
// names the repository and tag it goes to (tag "" in repoRef = ref).
func (f *Fleet) pushTarget(source, ref, repoRef string) (Repo, string, error) {
	repo, tag, err := ParseRepo(repoRef)
	if err != nil {
		return Repo{}, "", err
	}
	if tag == "" {
		tag = ref
	}
	if !f.cfg.Publish.Allows(source, ref) {
		return Repo{}, "", fmt.Errorf("%w: %s@%s may not leave this host (PUBLISH=%q; set PUBLISH to globs SOURCE@REFGLOB of the snapshots that may, e.g. %s@masked*)", ErrPublish, source, ref, f.cfg.Publish.String(), source)
	}
	if f.cfg.Streams == nil {
		return Repo{}, "", errors.New("push: this backend cannot send snapshots (only the local btrfs backend can)")
	}
	if f.IsReplica(source) {
		// Its pulled versions' streams name the production snapshot,
		// not the one pushed: every pull of the tag would refuse it
		// until production pushed again.
		return Repo{}, "", fmt.Errorf("%w: %s is a replica source here (REPLICAS=%s=%s): push it from its production host, or take it out of REPLICAS", ErrPublish, source, source, f.cfg.Replicas[source])
	}
	return repo, tag, nil
}

// tipUUID is the snapshot UUID of an artifact's last layer.
func tipUUID(a artifact) string {
	return a.manifest.Layers[len(a.manifest.Layers)-1].Annotations[AnnotationUUID]
}

// pushBase is what the new layer of tag builds on: the snapshot the tag's
// chain ends with and the chain's layers, when the chain is short enough
// and that snapshot is the one this host pushed to the tag; else nothing
// (a full stream starts a new chain).
func (f *Fleet) pushBase(ctx context.Context, source, tag string, prev artifact) (storage.Object, []ocispec.Descriptor) {
	if len(prev.manifest.Layers) >= MaxChain {
		return storage.Object{}, nil
	}
	// Only against the snapshot this host pushed to the tag: the
	// manifest is the registry's word, and any snapshot of the source it
	// names (one PUBLISH keeps in) would be diffed out.
	p, ok := f.cfg.Driver.SnapshotByIdentity(ctx, source, tipUUID(prev))
	if !ok || !f.pushedTo(ctx, source, tag, p) {
		return storage.Object{}, nil
	}
	return p, append([]ocispec.Descriptor(nil), prev.manifest.Layers...)
}

// pushManifest pushes the manifest of layers by digest, then moves tag to it.
func (f *Fleet) pushManifest(ctx context.Context, r *remote.Repository, repo Repo, tag, source, ref string, snap storage.Object, layers []ocispec.Descriptor) (ocispec.Descriptor, error) {
	desc, err := oras.PackManifest(ctx, r, oras.PackManifestVersion1_1, ArtifactType, oras.PackManifestOptions{
		Layers: layers,
		ManifestAnnotations: map[string]string{
			AnnotationSource: source, AnnotationRef: ref, AnnotationUUID: snap.Identity,
			AnnotationTime: snap.Created.UTC().Format(time.RFC3339Nano),
		},
	})
	if err != nil {
		return desc, explain(repo, "pushing the manifest", err)
	}
	f.failpoint("push:manifest")
	if err := r.Tag(ctx, desc, tag); err != nil {
		return desc, explain(repo, "moving tag "+tag, err)
	}
	f.failpoint("push:tagged")
	return desc, nil
}

// keepPushed keeps snap as SOURCE@pushed.TAG for the next incremental
// push of the tag and logs the push.
func (f *Fleet) keepPushed(ctx context.Context, src, snap storage.Object, source, ref string, res PushResult) {
	if err := f.cfg.Driver.KeepPushed(ctx, src, snap, res.Tag); err != nil {
		// The push is whole; only the next one may have to be full.
		f.cfg.Log.WithError(err).WithFields(logrus.Fields{"source": source, "tag": res.Tag}).Warn("keeping the pushed snapshot for the next incremental push")
	}
	f.failpoint("push:kept")
	f.cfg.Log.WithFields(logrus.Fields{"audit": "snapshot pushed", "source": source, "ref": ref, "repository": res.Repository, "tag": res.Tag,
		"digest": res.Digest, "layers": res.Layers, "uploaded_bytes": res.Bytes, "full": res.Full}).Info("snapshot pushed")
}

// pushedTo reports whether p is the snapshot this host kept as
// source@pushed.TAG when it last pushed tag (Driver.KeepPushed, which
// cuts the name at 63 characters).
func (f *Fleet) pushedTo(ctx context.Context, source, tag string, p storage.Object) bool {
	name := "pushed." + tag
	if len(name) > 63 {
		name = name[:63]
	}
	_, kept, err := f.cfg.Driver.PublishedSnapshot(ctx, source, name)
	return err == nil && kept.ID == p.ID
}

// pushLayer sends snap (against parent, if any) into a temporary file
// while hashing it, and uploads it unless the registry has it.
func (f *Fleet) pushLayer(ctx context.Context, r interface {
	Exists(context.Context, ocispec.Descriptor) (bool, error)
	Push(context.Context, ocispec.Descriptor, io.Reader) error
}, repo Repo, source, ref string, snap, parent storage.Object) (ocispec.Descriptor, int64, bool, error) {
	dir := f.cfg.TempDir
	if dir == "" {
		dir = os.TempDir()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return ocispec.Descriptor{}, 0, false, err
	}
	tmp, err := os.CreateTemp(dir, "push-*.stream")
	if err != nil {
		return ocispec.Descriptor{}, 0, false, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	w := &onFirstWrite{w: io.MultiWriter(tmp, h), f: func() { f.failpoint("push:streaming") }}
	if err := f.cfg.Streams.SendSnapshot(ctx, snap.ID, parent.ID, w); err != nil {
		return ocispec.Descriptor{}, 0, false, fmt.Errorf("push %s@%s: %w", source, ref, err)
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return ocispec.Descriptor{}, 0, false, err
	}
	f.failpoint("push:streamed")
	desc := ocispec.Descriptor{
		MediaType: LayerType, Size: size,
		Digest: digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(h.Sum(nil))),
		Annotations: map[string]string{
			AnnotationUUID: snap.Identity, AnnotationParent: parent.Identity,
			AnnotationTime:   snap.Created.UTC().Format(time.RFC3339Nano),
			AnnotationSource: source, AnnotationRef: ref,
		},
	}
	if ok, err := r.Exists(ctx, desc); err != nil {
		return desc, 0, false, explain(repo, "checking for layer "+desc.Digest.String(), err)
	} else if ok {
		return desc, 0, false, nil
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return desc, 0, false, err
	}
	if err := r.Push(ctx, desc, tmp); err != nil {
		return desc, 0, false, explain(repo, "uploading layer "+desc.Digest.String(), err)
	}
	return desc, size, true, nil
}
