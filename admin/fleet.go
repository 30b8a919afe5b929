package admin

import (
	"net/http"
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

// Replica is one replica source: what each tag shows here and how old it
// is, when the registry last answered and the last pull's error.
type Replica struct {
	Source     string       `json:"source"`
	Repository string       `json:"repository"`
	Tags       []ReplicaTag `json:"tags"`
	Checked    *time.Time   `json:"checked"`
	Error      string       `json:"error"`
}

// ReplicaTag is the version of one tag pulled here.
type ReplicaTag struct {
	Tag        string    `json:"tag"`
	UUID       string    `json:"uuid"`
	Snapshot   string    `json:"snapshot"`
	Time       time.Time `json:"time"`
	AgeSeconds int64     `json:"age_seconds"`
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

// Replicas lists the replica sources.
func (c *Client) Replicas() ([]Replica, error) {
	var r []Replica
	return r, c.long().do("GET", "/v1/fleet/replicas", nil, &r)
}
