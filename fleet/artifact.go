// Package fleet carries snapshots between hosts through an OCI registry
// (DESIGN.md "Runner fleets"; docs/fleets.md): snapvol push on the
// production host publishes a named snapshot as an artifact whose layers
// are btrfs send streams, and replica sources (REPLICAS) on CI hosts pull
// them. It owns the registry (oras-go) and drives the streams through
// Streams (the local backend); the driver only registers what was pulled.
package fleet

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/driver/sources"
)

// Media types of snapvol's artifacts (docs/fleets.md).
const (
	// ArtifactType is the manifest's artifactType: one snapshot of a
	// source, its layers the chain of streams that rebuild it.
	ArtifactType = "application/vnd.snapvol.snapshot.v1"
	// LayerType is one btrfs send stream (a full one when its
	// AnnotationParent is empty, else incremental against that snapshot).
	LayerType = "application/vnd.snapvol.btrfs-send.v1"
)

// Annotations on every layer (and, for source, ref and time, on the
// manifest).
const (
	AnnotationUUID   = "io.snapvol.uuid"        // the sender's snapshot UUID the stream makes
	AnnotationParent = "io.snapvol.parent-uuid" // the snapshot it applies to ("" = full)
	AnnotationTime   = "io.snapvol.time"        // the snapshot's time, RFC 3339
	AnnotationSource = "io.snapvol.source"
	AnnotationRef    = "io.snapvol.ref"
)

// MaxChain is the most layers a manifest holds: a push that would make it
// longer sends a full stream instead, so a new CI host never replays more.
const MaxChain = 16

// ErrPublish: PUBLISH does not let that snapshot leave the host.
var ErrPublish = errors.New("not allowed by PUBLISH")

// ErrRegistry wraps every failure talking to a registry.
var ErrRegistry = errors.New("registry")

// Publish is PUBLISH: globs SOURCE@REFGLOB of the snapshots that may leave
// this host. Empty (the default) lets nothing leave.
type Publish struct{ p *sources.Policy }

// ParsePublish parses PUBLISH.
func ParsePublish(v string) (Publish, error) {
	if strings.TrimSpace(v) == "" {
		return Publish{}, nil
	}
	p, err := sources.Parse(v)
	if err != nil {
		return Publish{}, err
	}
	return Publish{p: p}, nil
}

// Allows reports whether source@ref may be pushed.
func (p Publish) Allows(source, ref string) bool { return p.p != nil && p.p.Allows(source, ref) }

func (p Publish) String() string {
	if p.p == nil {
		return ""
	}
	return p.p.String()
}

// Repo is REGISTRY/REPO: a registry host[:port] and a repository path.
type Repo struct{ Registry, Path string }

func (r Repo) String() string { return r.Registry + "/" + r.Path }

// plainHTTP: plain HTTP only to loopback registries, as Docker does.
func (r Repo) plainHTTP() bool {
	host := r.Registry
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ParseRepo parses REGISTRY/REPO[:TAG]; tag is "" when none is given.
func ParseRepo(s string) (Repo, string, error) {
	reg, rest, ok := strings.Cut(s, "/")
	if strings.Contains(reg, "@") {
		// Never echoed: it would reach the log, and a replica clone's
		// Status (registry_error) that any Docker user can inspect.
		return Repo{}, "", fmt.Errorf("%w: %s: USER:PASSWORD@ in a registry name; credentials belong in REGISTRY_CONFIG's config.json (docker login)", names.ErrInvalid, redactUserinfo(s))
	}
	if !ok || reg == "" || rest == "" || !strings.ContainsAny(reg, ".:") && reg != "localhost" {
		return Repo{}, "", fmt.Errorf("%w: %q: want REGISTRY/REPO[:TAG] with the registry's host first (registry.example.com/data/app-production:masked)", names.ErrInvalid, s)
	}
	tag := ""
	if i := strings.LastIndex(rest, ":"); i >= 0 {
		rest, tag = rest[:i], rest[i+1:]
		if why := names.CheckWord(tag); why != "" {
			return Repo{}, "", fmt.Errorf("%w: tag %q %s", names.ErrInvalid, tag, why)
		}
	}
	for _, part := range strings.Split(rest, "/") {
		if part == "" || strings.Trim(part, "abcdefghijklmnopqrstuvwxyz0123456789._-") != "" {
			return Repo{}, "", fmt.Errorf("%w: repository %q: lower-case letters, digits, . _ - and / only", names.ErrInvalid, rest)
		}
	}
	return Repo{Registry: reg, Path: rest}, tag, nil
}

// ParseReplicas parses REPLICAS: SOURCE=REGISTRY/REPO, comma-separated.
func ParseReplicas(v string) (map[string]Repo, error) {
	out := map[string]Repo{}
	for _, e := range strings.Split(v, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		src, repo, ok := strings.Cut(e, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want SOURCE=REGISTRY/REPO", e)
		}
		if why := names.CheckWord(src); why != "" {
			return nil, fmt.Errorf("%q: source %q %s", e, src, why)
		}
		r, tag, err := ParseRepo(repo)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", redactUserinfo(e), err)
		}
		if tag != "" {
			return nil, fmt.Errorf("%q: name the repository without a tag (the tag is the ref: %s@TAG)", e, src)
		}
		if _, dup := out[src]; dup {
			return nil, fmt.Errorf("%q: source %q is named twice", e, src)
		}
		out[src] = r
	}
	return out, nil
}

// redactUserinfo hides what comes before "@" in the registry part of s
// (REGISTRY/REPO or SOURCE=REGISTRY/REPO).
func redactUserinfo(s string) string {
	pre, rest := "", s
	if i := strings.Index(s, "="); i >= 0 {
		pre, rest = s[:i+1], s[i+1:]
	}
	reg, path, slash := strings.Cut(rest, "/")
	if i := strings.LastIndex(reg, "@"); i >= 0 {
		reg = "***@" + reg[i+1:]
	}
	if slash {
		return pre + reg + "/" + path
	}
	return pre + reg
}
