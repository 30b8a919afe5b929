package admin

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Runner fleets (docs/fleets.md): the wire types and client calls of
// snapvol push and snapvol pull.

// PushRequest is snapvol push SNAPSHOT REPOSITORY.
type PushRequest struct {
	Snapshot   string `json:"snapshot"`   // SOURCE@REF
	Repository string `json:"repository"` // REGISTRY/REPO[:TAG]
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

// PullRequest is snapvol pull SOURCE[@TAG].
type PullRequest struct {
	Source string `json:"source"`
}

// PullResult says what a pull did, a row per tag.
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
	Applied int       `json:"applied"`
	Bytes   int64     `json:"bytes"`
	New     bool      `json:"new"`
}

// Replica is one replica source (snapvol replica ls, and the replica
// sections of snapvol ls and df): what each tag shows here and how old it
// is, when a pull last worked and the last pull's error. Every key is
// written on every row (see the package comment in types.go).
type Replica struct {
	Source string `json:"source"`
	// Repository is REGISTRY/REPO (REPLICAS); Registry its registry.
	Repository string       `json:"repository"`
	Registry   string       `json:"registry"`
	Tags       []ReplicaTag `json:"tags"`
	// Checked is when a pull of the source last worked (nil: not since
	// the plugin started).
	Checked *time.Time `json:"pulled"`
	// Error is the last pull's error; empty once one works.
	Error string `json:"error"`
	// Newest is the production-side time of the newest version pulled
	// here, NewestAgeSeconds how old it is: what clones get while the
	// registry cannot be reached. Zero (null) with nothing pulled.
	Newest           time.Time `json:"newest"`
	NewestAgeSeconds *int64    `json:"newest_age_seconds"`
}

// ReplicaTag is the version of one tag pulled here.
type ReplicaTag struct {
	Tag string `json:"tag"`
	// UUID is the version's snapshot UUID on the production host;
	// Snapshot the registered snapshot's object here.
	UUID     string `json:"uuid"`
	Snapshot string `json:"snapshot"`
	// Time is when the production host took the snapshot; AgeSeconds
	// how long ago that was.
	Time       time.Time `json:"time"`
	AgeSeconds int64     `json:"age_seconds"`
}

// derived fills Registry from Repository and Newest from Tags where the
// fleet left them out.
func (r Replica) derived() Replica {
	if r.Registry == "" {
		r.Registry, _, _ = strings.Cut(r.Repository, "/")
	}
	if r.Newest.IsZero() {
		for _, t := range r.Tags {
			if t.Time.After(r.Newest) {
				age := t.AgeSeconds
				r.Newest, r.NewestAgeSeconds = t.Time, &age
			}
		}
	}
	return r
}

// MarshalJSON writes every key, null where empty.
func (r Replica) MarshalJSON() ([]byte, error) {
	r = r.derived()
	b := append([]byte(nil), '{')
	b = field(b, "source", true)
	b = appendString(b, r.Source)
	b = field(b, "repository", false)
	b = appendStringOrNull(b, r.Repository)
	b = field(b, "registry", false)
	b = appendStringOrNull(b, r.Registry)
	b = field(b, "tags", false)
	b = append(b, '[')
	for i, t := range r.Tags {
		if i > 0 {
			b = append(b, ',')
		}
		b = t.appendJSON(b)
	}
	b = append(b, ']')
	b = field(b, "pulled", false)
	if r.Checked == nil {
		b = append(b, "null"...)
	} else {
		b = appendTime(b, *r.Checked)
	}
	b = field(b, "error", false)
	b = appendStringOrNull(b, r.Error)
	b = field(b, "newest", false)
	b = appendTime(b, r.Newest)
	b = field(b, "newest_age_seconds", false)
	b = appendIntOrNull(b, r.NewestAgeSeconds)
	return append(b, '}'), nil
}

// MarshalJSON writes every key, null where empty.
func (t ReplicaTag) MarshalJSON() ([]byte, error) { return t.appendJSON(nil), nil }

func (t ReplicaTag) appendJSON(b []byte) []byte {
	b = append(b, '{')
	b = field(b, "tag", true)
	b = appendString(b, t.Tag)
	b = field(b, "uuid", false)
	b = appendStringOrNull(b, t.UUID)
	b = field(b, "snapshot", false)
	b = appendStringOrNull(b, t.Snapshot)
	b = field(b, "time", false)
	b = appendTime(b, t.Time)
	b = field(b, "age_seconds", false)
	b = strconv.AppendInt(b, t.AgeSeconds, 10)
	return append(b, '}')
}

// long is c for a push or pull: streams take longer than the minute
// other commands get.
func (c *Client) long() *Client {
	return &Client{socket: c.socket, http: &http.Client{Transport: c.http.Transport, Timeout: 2 * time.Hour}}
}

// Push publishes SOURCE@REF to REGISTRY/REPO[:TAG].
func (c *Client) Push(snapshot, repository string) (PushResult, error) {
	var r PushResult
	return r, c.long().do("POST", "/v1/fleet/push", PushRequest{Snapshot: snapshot, Repository: repository}, &r)
}

// Pull fetches a replica source now.
func (c *Client) Pull(source string) (PullResult, error) {
	var r PullResult
	return r, c.long().do("POST", "/v1/fleet/pull", PullRequest{Source: source}, &r)
}

// Replicas lists the replica sources. A plugin from before runner fleets
// has no such route (its mux answers a bare 404, never the JSON error the
// route's own failures carry): it has none, and snapvol ls and df still
// work against it while the command is upgraded first.
func (c *Client) Replicas() ([]Replica, error) {
	var r []Replica
	err := c.long().do("GET", "/v1/fleet/replicas", nil, &r)
	if err != nil && strings.HasSuffix(err.Error(), "/v1/fleet/replicas: "+notFound) {
		return []Replica{}, nil
	}
	return r, err
}

var notFound = strconv.Itoa(http.StatusNotFound) + " " + http.StatusText(http.StatusNotFound)

// SetPushedSchedule snapshots source every every, keeping keep, and
// pushes each snapshot to push (REGISTRY/REPO[:TAG]).
func (c *Client) SetPushedSchedule(source string, every time.Duration, keep int, push string) (Schedule, error) {
	var v Schedule
	return v, c.do("PUT", "/v1/schedules/"+url.PathEscape(source)+"/push", ScheduleRequest{Every: every.String(), Keep: keep, Push: push}, &v)
}

// UsageWithReplicas is snapvol df: the pool's usage and, from the fleet's
// route, the replica sources.
func (c *Client) UsageWithReplicas() (DiskUsage, error) {
	u, err := c.Usage()
	if err != nil {
		return u, err
	}
	u.Replicas, err = c.Replicas()
	return u, err
}
