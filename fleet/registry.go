package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"syscall"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// openRepo is repo with the credentials docker login stored for its
// registry in configDir/config.json (REGISTRY_CONFIG; "" is docker's own:
// $DOCKER_CONFIG or ~/.docker), credential helpers included, and TLS as
// Docker does it: the registry's certs.d directory (certsDir) adds CA
// roots and client certificates; HTTPS, and plain HTTP only to a loopback
// registry that answers plain HTTP (loopbackPlain).
func openRepo(ctx context.Context, repo Repo, configDir string) (*remote.Repository, error) {
	r, err := remote.NewRepository(repo.String())
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrRegistry, repo, err)
	}
	transport, _, err := registryTransport(configDir, repo.Registry)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrRegistry, repo, err)
	}
	if repo.plainHTTP() {
		r.PlainHTTP = loopbackPlain(ctx, transport, repo.Registry)
	}
	var store credentials.Store
	if configDir == "" {
		store, err = credentials.NewStoreFromDocker(credentials.StoreOptions{})
	} else {
		store, err = credentials.NewStore(filepath.Join(configDir, "config.json"), credentials.StoreOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("%w %s: reading registry credentials (REGISTRY_CONFIG %q): %w", ErrRegistry, repo, configDir, err)
	}
	r.Client = &auth.Client{
		Client:     &http.Client{Transport: transport},
		Cache:      auth.NewCache(),
		Credential: credentials.Credential(store),
	}
	r.Client.(*auth.Client).SetUserAgent("snapvol")
	return r, nil
}

// loopbackPlain reports whether the loopback registry answers plain HTTP
// to HTTPS, as Docker finds out for an insecure registry: it asks /v2/
// over HTTPS and only a plain HTTP answer ("server gave HTTP response to
// HTTPS client") means plain HTTP. Anything else, a TLS registry whose
// certificate does not verify included, stays HTTPS, and the request
// that follows fails with what to fix. Unlike Docker, which accepts any
// certificate from an insecure registry, a loopback registry speaking
// TLS is verified like any other: loopback is where a local user can
// listen too.
func loopbackPlain(ctx context.Context, transport http.RoundTripper, registry string) bool {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+registry+"/v2/", nil)
	if err != nil {
		return false
	}
	resp, err := transport.RoundTrip(req)
	if err != nil {
		var te *tlsError
		return errors.As(err, &te) && te.kind == "plain"
	}
	resp.Body.Close()
	return false
}

// probeTimeout bounds loopbackPlain: a loopback registry answers at once
// or is not there (the request that follows then says so).
const probeTimeout = 10 * time.Second

// explain turns a registry failure into one that names the registry and
// repository and says what to fix.
func explain(repo Repo, what string, err error) error {
	var resp *errcode.ErrorResponse
	var te *tlsError
	switch {
	case errors.As(err, &te):
		// Before unreachable: a TLS alert is a net.OpError too.
		return fmt.Errorf("%w %s: %s: %w", ErrRegistry, repo, what, te)
	case errors.As(err, &resp) && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden):
		return fmt.Errorf("%w %s: %s: access denied (HTTP %d): log in to %s with docker login (credentials from REGISTRY_CONFIG) and check the account may read and write %s: %w", ErrRegistry, repo, what, resp.StatusCode, repo.Registry, repo.Path, err)
	case errors.Is(err, errdef.ErrNotFound):
		return fmt.Errorf("%w %s: %s: not found: %w", ErrRegistry, repo, what, err)
	case unreachable(err):
		return fmt.Errorf("%w %s: %s: the registry %s cannot be reached or broke the connection (is it running, and can this host reach it?); nothing was changed that the next attempt does not repair: %w", ErrRegistry, repo, what, repo.Registry, err)
	}
	return fmt.Errorf("%w %s: %s: %w", ErrRegistry, repo, what, err)
}

// unreachable reports whether err is the registry not answering or
// dropping the connection (refused, reset, cut short), not an answer.
func unreachable(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED)
}

// artifact is one snapvol manifest.
type artifact struct {
	desc     ocispec.Descriptor
	manifest ocispec.Manifest
}

// fetchArtifact reads the manifest tag names; ok is false when the tag
// does not exist (a first push).
func fetchArtifact(ctx context.Context, r *remote.Repository, repo Repo, tag string) (artifact, bool, error) {
	desc, rc, err := r.FetchReference(ctx, tag)
	if errors.Is(err, errdef.ErrNotFound) {
		return artifact{}, false, nil
	}
	if err != nil {
		return artifact{}, false, explain(repo, "reading tag "+tag, err)
	}
	defer rc.Close()
	data, err := content.ReadAll(rc, desc)
	if err != nil {
		return artifact{}, false, explain(repo, "reading tag "+tag, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil || m.ArtifactType != ArtifactType {
		return artifact{}, false, fmt.Errorf("%w %s: tag %s is not a snapvol artifact (artifactType %q, want %s): push snapshots to a repository of their own", ErrRegistry, repo, tag, m.ArtifactType, ArtifactType)
	}
	if err := checkChain(m.Layers); err != nil {
		return artifact{}, false, fmt.Errorf("%w %s: tag %s: %w", ErrRegistry, repo, tag, err)
	}
	return artifact{desc: desc, manifest: m}, true, nil
}

// checkChain checks layers are one chain: a full stream, then each
// incremental one applying to the snapshot the one before made.
func checkChain(layers []ocispec.Descriptor) error {
	if len(layers) == 0 {
		return errors.New("the artifact has no layers")
	}
	if len(layers) > MaxChain {
		// A push rebases before this; more is a registry making every
		// CI host run as many receives.
		return fmt.Errorf("the artifact has %d layers, more than the %d a push makes", len(layers), MaxChain)
	}
	for i, l := range layers {
		if l.MediaType != LayerType {
			return fmt.Errorf("layer %d has media type %q, want %s", i, l.MediaType, LayerType)
		}
		if l.Annotations[AnnotationUUID] == "" {
			return fmt.Errorf("layer %d names no snapshot (%s)", i, AnnotationUUID)
		}
		// The registry's words reach errors, logs and terminals: only
		// UUIDs, quoted when refused.
		if u, p := l.Annotations[AnnotationUUID], l.Annotations[AnnotationParent]; !isUUID(u) || p != "" && !isUUID(p) {
			return fmt.Errorf("layer %d names snapshot %q, parent %q: not btrfs UUIDs", i, u, p)
		}
		want := ""
		if i > 0 {
			want = layers[i-1].Annotations[AnnotationUUID]
		}
		if got := l.Annotations[AnnotationParent]; got != want {
			return fmt.Errorf("layer %d applies to %q, but the layer before makes %q: not one chain", i, got, want)
		}
	}
	return nil
}

// verified reads rc, checking what was read is desc (size and digest) once
// it has all been read (check).
type verified struct {
	rc io.ReadCloser
	v  *content.VerifyReader
}

func newVerified(rc io.ReadCloser, desc ocispec.Descriptor) *verified {
	return &verified{rc: rc, v: content.NewVerifyReader(rc, desc)}
}

func (v *verified) Read(p []byte) (int, error) { return v.v.Read(p) }

// check drains what the reader did not read and verifies the whole.
func (v *verified) check() error {
	if _, err := io.Copy(io.Discard, v.v); err != nil {
		return err
	}
	return v.v.Verify()
}

func (v *verified) Close() error { return v.rc.Close() }

// isUUID reports whether s is a UUID as btrfs prints one (lower-case).
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
		} else if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
