package fleet

// The CI host's side: replica sources pulled from a registry, each layer
// received, verified and made visible in one step (fleet.go holds the
// Fleet and the production host's push).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/storage"
)

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
	return len(f.visibleOf(context.Background(), source)) > 0
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
	ctx, cancel := f.bounded(ctx)
	defer cancel()
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
	r, err := openRepo(ctx, repo, f.cfg.RegistryConfig)
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
		if len(tags) > MaxTags {
			return fmt.Errorf("%w %s: the repository has %d tags, more than the %d a pull of every tag takes: name the tag (snapvol pull %s@TAG)", ErrRegistry, repo, len(tags), MaxTags, source)
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
	f.retireUnshown(ctx, src)
	f.failpoint("pull:pruned")
	f.cfg.Streams.DropReplicaParts(source)
	return nil
}

// MaxTags is the most tags a pull of every tag of a repository (snapvol
// pull SOURCE, the first @latest) takes: each is a version received and
// kept, so a registry holder pushing thousands of tags would make the CI
// host receive thousands within one request.
const MaxTags = 64

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
	f.failpoint("pull:manifest")
	layers := a.manifest.Layers
	tip := layers[len(layers)-1]
	pt := PulledTag{Tag: tag, Digest: a.desc.Digest.String(), UUID: tip.Annotations[AnnotationUUID]}
	pt.Time, _ = time.Parse(time.RFC3339Nano, tip.Annotations[AnnotationTime])
	vis, err := f.visible(ctx, src)
	if err != nil {
		return pt, err
	}
	if vis[tag] == pt.UUID {
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
		if err := f.applyLayer(ctx, r, repo, source, tag, l); err != nil {
			return pt, err
		}
		pt.Applied++
		pt.Bytes += l.Size
	}
	err = f.cfg.Driver.RegisterPulled(ctx, src, tag, pt.Time, func(ctx context.Context) (storage.Object, error) {
		labels := storage.NamedSnapshotLabels(source, tag, "")
		labels[labelReceived] = pt.UUID
		labels[labelReceivedTime] = pt.Time.UTC().Format(time.RFC3339Nano)
		snap, err := f.cfg.Streams.PublishReplica(ctx, src, pt.UUID, labels)
		if err == nil {
			f.failpoint("pull:published")
		}
		return snap, err
	})
	if err != nil {
		return pt, err
	}
	f.failpoint("pull:registered")
	pt.New = true
	f.cfg.Log.WithFields(logrus.Fields{"audit": "replica pulled", "source": source, "tag": tag, "repository": repo.String(),
		"digest": pt.Digest, "uuid": pt.UUID, "applied": pt.Applied, "bytes": pt.Bytes}).Info("replica pulled")
	return pt, nil
}

// applyLayer fetches layer l, receives it into UUID.part, verifies it
// against its digest and only then commits it (renames it to UUID).
func (f *Fleet) applyLayer(ctx context.Context, r *remote.Repository, repo Repo, source, tag string, l ocispec.Descriptor) error {
	u := l.Annotations[AnnotationUUID]
	fail := func(err error) error {
		f.cfg.Streams.DropReplicaParts(source)
		return fmt.Errorf("%w %s: tag %s: applying layer %s (snapshot %s): %w", ErrRegistry, repo, tag, l.Digest, u, err)
	}
	rc, err := r.Fetch(ctx, l)
	if err != nil {
		return explain(repo, "fetching layer "+l.Digest.String(), err)
	}
	defer rc.Close()
	f.failpoint("pull:fetched")
	v := newVerified(rc, l)
	rd := &onFirstRead{r: v, f: func() { f.failpoint("pull:receiving") }}
	err = f.cfg.Streams.ReceiveReplica(ctx, source, u, rd)
	if err != nil && rd.err != nil && !errors.Is(rd.err, io.EOF) {
		// The download broke (btrfs receive only saw a short stream):
		// that is the registry's failure, and what to fix.
		f.cfg.Streams.DropReplicaParts(source)
		return explain(repo, fmt.Sprintf("tag %s: fetching layer %s", tag, l.Digest), rd.err)
	}
	if err != nil {
		return fail(err)
	}
	f.failpoint("pull:received")
	if err := v.check(); err != nil {
		return fail(fmt.Errorf("the layer does not match its digest (cut short, or changed in the registry): %w", err))
	}
	f.failpoint("pull:verified")
	if err := f.cfg.Streams.CommitReplica(source, u); err != nil {
		return fail(err)
	}
	f.failpoint("pull:committed")
	return nil
}

// Labels of the snapshot a pulled version is made visible as.
const (
	// labelReceived is the sender's UUID of the version.
	labelReceived = "snapvol.received-uuid"
	// labelReceivedTime is the time of the snapshot on the production
	// host (the layer's io.snapvol.time): what SOURCE@TAG's age is.
	labelReceivedTime = "snapvol.received-time"
)

// visible is tag -> sender UUID of the versions of src pulled here: the
// store's registrations (SOURCE@TAG of kind pulled) and the labels of the
// snapshots they name, so it cannot disagree with what clones get.
func (f *Fleet) visible(ctx context.Context, src storage.Object) (map[string]string, error) {
	snaps, err := f.cfg.Streams.Snapshots(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("listing the pulled versions of %q: %w", src.Name, err)
	}
	out := map[string]string{}
	for _, s := range snaps {
		tag, u := s.Labels[storage.LabelRegistered], s.Labels[labelReceived]
		if tag == "" || u == "" {
			continue
		}
		if reg, ok := f.cfg.Driver.PulledVersion(src.Name, tag); ok && reg.Object == s.ID {
			out[tag] = u
		}
	}
	return out, nil
}

// visibleOf is visible for source by name ("" error-free: empty).
func (f *Fleet) visibleOf(ctx context.Context, source string) map[string]string {
	src, err := f.cfg.Driver.ReplicaSource(ctx, source)
	if err != nil {
		return map[string]string{}
	}
	vis, err := f.visible(ctx, src)
	if err != nil {
		return map[string]string{}
	}
	return vis
}

// onFirstWrite calls f before the first write to w.
type onFirstWrite struct {
	w    io.Writer
	f    func()
	done bool
}

func (o *onFirstWrite) Write(p []byte) (int, error) {
	n, err := o.w.Write(p)
	if !o.done && n > 0 {
		o.done = true
		o.f()
	}
	return n, err
}

// onFirstRead calls f after the first read from r that returned data,
// and keeps the first error a read returned.
type onFirstRead struct {
	r    io.Reader
	f    func()
	done bool
	err  error
}

func (o *onFirstRead) Read(p []byte) (int, error) {
	n, err := o.r.Read(p)
	if !o.done && n > 0 {
		o.done = true
		o.f()
	}
	if err != nil && o.err == nil {
		o.err = err
	}
	return n, err
}
