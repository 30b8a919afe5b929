package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/keylock"
	"github.com/snapvol/snapvol/storage"
)

// Driver is what the fleet asks of the driver (*driver.Driver).
type Driver interface {
	PublishedSnapshot(ctx context.Context, source, ref string) (src, snap storage.Object, err error)
	SnapshotByIdentity(ctx context.Context, source, id string) (storage.Object, bool)
	KeepPushed(ctx context.Context, src, snap storage.Object, tag string) error
	ReplicaSource(ctx context.Context, source string) (storage.Object, error)
	PulledVersion(source, tag string) (store.Snapshot, bool)
	RegisterPulled(ctx context.Context, src storage.Object, tag string, at time.Time, publish func(context.Context) (storage.Object, error)) error
}

// Streams is what the fleet asks of the storage (*local.Backend): btrfs
// send and receive, and the received versions.
type Streams interface {
	SendSnapshot(ctx context.Context, id, parentID string, w io.Writer) error
	HasReplica(source, uuid string) bool
	ReceiveReplica(ctx context.Context, source, uuid string, r io.Reader) error
	DropReplicaParts(source string)
	PublishReplica(ctx context.Context, src storage.Object, uuid string, labels map[string]string) (storage.Object, error)
	PruneReplicas(source string, keep map[string]bool) error
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
	// StateDir is STATE_DIR: the fleet keeps its own small state there.
	StateDir string
	// TempDir holds a stream while it is hashed before upload (the
	// registry needs a layer's digest before it takes it).
	TempDir string
	Log     *logrus.Logger
}

// Fleet pushes and pulls.
type Fleet struct {
	cfg   Config
	locks keylock.Map // one per source: pushes and pulls of it one at a time

	mu      sync.Mutex
	checked map[string]time.Time // source: when the registry last answered a pull
	failed  map[string]error     // source: the last pull's error, nil once one works
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
	repo, tag, err := ParseRepo(repoRef)
	if err != nil {
		return PushResult{}, err
	}
	if tag == "" {
		tag = ref
	}
	if !f.cfg.Publish.Allows(source, ref) {
		return PushResult{}, fmt.Errorf("%w: %s@%s may not leave this host (PUBLISH=%q; set PUBLISH to globs SOURCE@REFGLOB of the snapshots that may, e.g. %s@masked*)", ErrPublish, source, ref, f.cfg.Publish.String(), source)
	}
	if f.cfg.Streams == nil {
		return PushResult{}, errors.New("push: this backend cannot send snapshots (only the local btrfs backend can)")
	}
	defer f.locks.Lock("push/" + source)()
	src, snap, err := f.cfg.Driver.PublishedSnapshot(ctx, source, ref)
	if err != nil {
		return PushResult{}, err
	}
	r, err := openRepo(repo, f.cfg.RegistryConfig)
	if err != nil {
		return PushResult{}, err
	}
	prev, had, err := fetchArtifact(ctx, r, repo, tag)
	if err != nil {
		return PushResult{}, err
	}
	res := PushResult{Repository: repo.String(), Tag: tag, Uploaded: []string{}}
	var layers []ocispec.Descriptor
	parent := storage.Object{}
	if had {
		last := prev.manifest.Layers[len(prev.manifest.Layers)-1]
		if last.Annotations[AnnotationUUID] == snap.Identity {
			// The tag holds this snapshot already: nothing to send.
			res.Digest, res.Layers = prev.desc.Digest.String(), len(prev.manifest.Layers)
			return res, f.cfg.Driver.KeepPushed(ctx, src, snap, tag)
		}
		if len(prev.manifest.Layers) < MaxChain {
			if p, ok := f.cfg.Driver.SnapshotByIdentity(ctx, source, last.Annotations[AnnotationUUID]); ok {
				parent, layers = p, append(layers, prev.manifest.Layers...)
			}
		}
	}
	res.Full = parent.ID == ""
	layer, size, uploaded, err := f.pushLayer(ctx, r, repo, source, ref, snap, parent)
	if err != nil {
		return res, err
	}
	if uploaded {
		res.Uploaded, res.Bytes = append(res.Uploaded, layer.Digest.String()), size
	}
	layers = append(layers, layer)
	desc, err := oras.PackManifest(ctx, r, oras.PackManifestVersion1_1, ArtifactType, oras.PackManifestOptions{
		Layers: layers,
		ManifestAnnotations: map[string]string{
			AnnotationSource: source, AnnotationRef: ref, AnnotationUUID: snap.Identity,
			AnnotationTime: snap.Created.UTC().Format(time.RFC3339Nano),
		},
	})
	if err != nil {
		return res, explain(repo, "pushing the manifest", err)
	}
	if err := r.Tag(ctx, desc, tag); err != nil {
		return res, explain(repo, "moving tag "+tag, err)
	}
	res.Digest, res.Layers = desc.Digest.String(), len(layers)
	if err := f.cfg.Driver.KeepPushed(ctx, src, snap, tag); err != nil {
		// The push is whole; only the next one may have to be full.
		f.cfg.Log.WithError(err).WithFields(logrus.Fields{"source": source, "tag": tag}).Warn("keeping the pushed snapshot for the next incremental push")
	}
	f.cfg.Log.WithFields(logrus.Fields{"audit": "snapshot pushed", "source": source, "ref": ref, "repository": repo.String(), "tag": tag,
		"digest": res.Digest, "layers": res.Layers, "uploaded_bytes": res.Bytes, "full": res.Full}).Info("snapshot pushed")
	return res, nil
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
	if err := f.cfg.Streams.SendSnapshot(ctx, snap.ID, parent.ID, io.MultiWriter(tmp, h)); err != nil {
		return ocispec.Descriptor{}, 0, false, fmt.Errorf("push %s@%s: %w", source, ref, err)
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return ocispec.Descriptor{}, 0, false, err
	}
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

// IsReplica reports whether source is a replica source (REPLICAS).
func (f *Fleet) IsReplica(source string) bool {
	_, ok := f.cfg.Replicas[source]
	return ok
}

// Ensure pulls source on first use: a version ref can resolve to that was
// pulled before is enough (the registry may be down); else it pulls now.
func (f *Fleet) Ensure(ctx context.Context, source, ref string) error {
	if !f.IsReplica(source) {
		return nil
	}
	tag := ref
	if ref == names.RefLatest {
		tag = ""
	}
	if f.pulledAny(source, tag) {
		return nil
	}
	_, err := f.Pull(ctx, source, tag)
	return err
}

// pulledAny reports whether source@tag (any tag pulled before, when tag
// is "") has a version here.
func (f *Fleet) pulledAny(source, tag string) bool {
	if tag != "" {
		_, ok := f.cfg.Driver.PulledVersion(source, tag)
		return ok
	}
	for t := range f.visible(source) {
		if _, ok := f.cfg.Driver.PulledVersion(source, t); ok {
			return true
		}
	}
	return false
}

// PullResult says what a pull did, a line per tag.
type PullResult struct {
	Source string      `json:"source"`
	Tags   []PulledTag `json:"tags"`
}

// PulledTag is one tag's pull.
type PulledTag struct {
	Tag     string    `json:"tag"`
	Digest  string    `json:"digest"`
	UUID    string    `json:"uuid"`
	Time    time.Time `json:"time"`
	Applied int       `json:"applied"` // layers received by this pull
	Bytes   int64     `json:"bytes"`   // bytes of them
	New     bool      `json:"new"`     // a new version became visible
}

// Pull fetches tag of replica source source (every tag of its repository
// when tag is ""), applies the layers this host lacks, checks them and
// makes the version visible as source@tag in one step.
func (f *Fleet) Pull(ctx context.Context, source, tag string) (PullResult, error) {
	repo, ok := f.cfg.Replicas[source]
	if !ok {
		return PullResult{}, fmt.Errorf("%w: %q is not a replica source on this host (REPLICAS=SOURCE=REGISTRY/REPO names those)", names.ErrInvalid, source)
	}
	if f.cfg.Streams == nil {
		return PullResult{}, errors.New("pull: this backend cannot receive snapshots (only the local btrfs backend can)")
	}
	defer f.locks.Lock("pull/" + source)()
	res := PullResult{Source: source, Tags: []PulledTag{}}
	err := f.pull(ctx, source, repo, tag, &res)
	f.mu.Lock()
	if err == nil {
		f.checked[source], f.failed[source] = time.Now(), nil
	} else {
		f.failed[source] = err
	}
	f.mu.Unlock()
	return res, err
}

func (f *Fleet) pull(ctx context.Context, source string, repo Repo, tag string, res *PullResult) error {
	src, err := f.cfg.Driver.ReplicaSource(ctx, source)
	if err != nil {
		return err
	}
	r, err := openRepo(repo, f.cfg.RegistryConfig)
	if err != nil {
		return err
	}
	tags := []string{tag}
	if tag == "" {
		tags = nil
		if err := r.Tags(ctx, "", func(t []string) error { tags = append(tags, t...); return nil }); err != nil {
			return explain(repo, "listing tags", err)
		}
		if len(tags) == 0 {
			return fmt.Errorf("%w %s: the repository has no tags: push one from the production host (snapvol push %s@REF %s:TAG)", ErrRegistry, repo, source, repo)
		}
		sort.Strings(tags)
	}
	f.cfg.Streams.DropReplicaParts(source)
	for _, t := range tags {
		if why := names.CheckWord(t); why != "" || !named(t) {
			continue // not a tag a ref can name
		}
		pt, err := f.pullTag(ctx, r, repo, src, t)
		if err != nil {
			return err
		}
		res.Tags = append(res.Tags, pt)
	}
	// What no tag's newest version is will never be a parent again.
	keep := map[string]bool{}
	for _, u := range f.visible(source) {
		keep[u] = true
	}
	if err := f.cfg.Streams.PruneReplicas(source, keep); err != nil {
		f.cfg.Log.WithError(err).WithField("source", source).Warn("deleting received versions no tag needs")
	}
	return nil
}

func named(ref string) bool { return ref != names.RefLatest && ref != names.RefNow }

func (f *Fleet) pullTag(ctx context.Context, r *remote.Repository, repo Repo, src storage.Object, tag string) (PulledTag, error) {
	source := src.Name
	a, ok, err := fetchArtifact(ctx, r, repo, tag)
	if err != nil {
		return PulledTag{}, err
	}
	if !ok {
		return PulledTag{}, fmt.Errorf("%w %s: tag %s does not exist: push it from the production host (snapvol push %s@%s %s:%s)", ErrRegistry, repo, tag, source, tag, repo, tag)
	}
	layers := a.manifest.Layers
	tip := layers[len(layers)-1]
	pt := PulledTag{Tag: tag, Digest: a.desc.Digest.String(), UUID: tip.Annotations[AnnotationUUID]}
	pt.Time, _ = time.Parse(time.RFC3339Nano, tip.Annotations[AnnotationTime])
	if _, ok := f.cfg.Driver.PulledVersion(source, tag); ok && f.visible(source)[tag] == pt.UUID {
		return pt, nil // this version is the one visible already
	}
	// Apply from the newest layer this host has received, or from the
	// full stream the chain starts with.
	start := 0
	for i := len(layers) - 1; i >= 0; i-- {
		if f.cfg.Streams.HasReplica(source, layers[i].Annotations[AnnotationUUID]) {
			start = i + 1
			break
		}
	}
	for _, l := range layers[start:] {
		u := l.Annotations[AnnotationUUID]
		rc, err := r.Fetch(ctx, l)
		if err != nil {
			return pt, explain(repo, "fetching layer "+l.Digest.String(), err)
		}
		v := newVerified(rc, l)
		err = f.cfg.Streams.ReceiveReplica(ctx, source, u, v)
		if err == nil {
			if verr := v.check(); verr != nil {
				err = fmt.Errorf("layer %s does not match its digest: %w", l.Digest, verr)
				_ = f.cfg.Streams.PruneReplicas(source, f.keepAllBut(source, u))
			}
		}
		v.Close()
		if err != nil {
			return pt, fmt.Errorf("%w %s: tag %s: applying layer %s (snapshot %s): %w", ErrRegistry, repo, tag, l.Digest, u, err)
		}
		pt.Applied++
		pt.Bytes += l.Size
	}
	err = f.cfg.Driver.RegisterPulled(ctx, src, tag, pt.Time, func(ctx context.Context) (storage.Object, error) {
		labels := storage.NamedSnapshotLabels(source, tag, "")
		labels[labelReceived] = pt.UUID
		return f.cfg.Streams.PublishReplica(ctx, src, pt.UUID, labels)
	})
	if err != nil {
		return pt, err
	}
	if err := f.track(source, tag, pt.UUID); err != nil {
		f.cfg.Log.WithError(err).WithField("source", source).Warn("remembering the tags pulled")
	}
	pt.New = true
	f.cfg.Log.WithFields(logrus.Fields{"audit": "replica pulled", "source": source, "tag": tag, "repository": repo.String(),
		"digest": pt.Digest, "uuid": pt.UUID, "applied": pt.Applied, "bytes": pt.Bytes}).Info("replica pulled")
	return pt, nil
}

// labelReceived is the sender's UUID of a pulled version's snapshot.
const labelReceived = "snapvol.received-uuid"

func (f *Fleet) keepAllBut(source, uuid string) map[string]bool {
	keep := map[string]bool{}
	for _, u := range f.visible(source) {
		keep[u] = u != uuid
	}
	return keep
}

// StateDir (Config.TempDir's parent is not assumed): the tags pulled of
// each source and the sender UUID each shows, in STATE_DIR/fleet/SOURCE.json.
// The driver's registry says what is visible; this says which received
// version that is, so a pull knows what it may prune and what is new.
func (f *Fleet) stateFile(source string) string {
	return filepath.Join(f.cfg.StateDir, "fleet", source+".json")
}

// visible is tag -> sender UUID of the versions of source pulled here.
func (f *Fleet) visible(source string) map[string]string {
	out := map[string]string{}
	data, err := os.ReadFile(f.stateFile(source))
	if err == nil {
		_ = json.Unmarshal(data, &out)
	}
	return out
}

func (f *Fleet) track(source, tag, uuid string) error {
	v := f.visible(source)
	v[tag] = uuid
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	p := f.stateFile(source)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}
