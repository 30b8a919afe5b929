package admin

import (
	"encoding/json"
	"path/filepath"
	"strconv"
	"time"
	"unicode/utf8"
)

// The wire types of the admin API: what the snapvol command prints with
// --json. Their keys are a stable interface: every key is on every row,
// null where a row has no value (a plain volume has no source), never
// left out; times are RFC 3339 (UTC), durations whole seconds (keys end
// in _seconds). The encoders are written out (appendJSON) rather than
// left to encoding/json's omitempty and reflection: that keeps the keys
// fixed, and snapvol ls --json at 10,000 volumes fast. Decoding uses
// encoding/json and the field tags: a null leaves the zero value.

// Volume is one volume: a row of snapvol ls, and snapvol volume inspect.
//
// The tags are what decoding reads; MarshalJSON writes the same keys.
type Volume struct {
	Name string `json:"name"`
	// Kind is "volume" (a plain volume), "clone" (a clone volume Docker
	// users made) or "operator" (snapvol volume create).
	Kind string `json:"kind"`
	// Access is what Docker users may do with an operator volume: "none",
	// "docker" or "secret"; empty (null) for other kinds.
	Access string `json:"access"`
	// Source, Ref and Tag: what a clone volume clones (empty for plain
	// volumes); Each is a +each volume (every mount its own clone).
	Source string `json:"source"`
	Ref    string `json:"ref"`
	Tag    string `json:"tag"`
	Each   bool   `json:"each"`
	// Snapshot is the snapshot the newest clone was made from, at
	// SnapshotTime; empty until a clone is made.
	Snapshot     string    `json:"snapshot"`
	SnapshotTime time.Time `json:"snapshot_time"`
	Created      time.Time `json:"created"`
	AgeSeconds   int64     `json:"age_seconds"`
	Mounts       int       `json:"mounts"`
	Clones       int       `json:"clones"`
	// State is "ready", "materialized", "not materialized" or "pending
	// OP" (an interrupted operation reconcile is finishing).
	State string `json:"state"`
	// TTLSeconds is how long a clone may sit unmounted before it is
	// destroyed (0 = never); nil for plain volumes.
	TTLSeconds *int64 `json:"ttl_seconds"`
	// Expires is when an unmounted clone is destroyed; zero (null) while
	// it is mounted, for +each volumes (their clones go at unmount),
	// with no ttl, and where there is no clone.
	Expires time.Time `json:"expires"`
	// Bytes is what the volume's objects hold alone (for a clone: what it
	// wrote); nil where the backend cannot tell.
	Bytes *int64 `json:"bytes"`
}

// MarshalJSON writes every key; see the package comment.
func (v Volume) MarshalJSON() ([]byte, error) { return v.appendJSON(nil), nil }

func (v Volume) appendJSON(b []byte) []byte {
	b = append(b, '{')
	b = field(b, "name", true)
	b = appendString(b, v.Name)
	b = field(b, "kind", false)
	b = appendString(b, v.Kind)
	b = field(b, "access", false)
	b = appendStringOrNull(b, v.Access)
	b = field(b, "source", false)
	b = appendStringOrNull(b, v.Source)
	b = field(b, "ref", false)
	b = appendStringOrNull(b, v.Ref)
	b = field(b, "tag", false)
	b = appendStringOrNull(b, v.Tag)
	b = field(b, "each", false)
	b = strconv.AppendBool(b, v.Each)
	b = field(b, "snapshot", false)
	b = appendStringOrNull(b, v.Snapshot)
	b = field(b, "snapshot_time", false)
	b = appendTime(b, v.SnapshotTime)
	b = field(b, "created", false)
	b = appendTime(b, v.Created)
	b = field(b, "age_seconds", false)
	b = strconv.AppendInt(b, v.AgeSeconds, 10)
	b = field(b, "mounts", false)
	b = strconv.AppendInt(b, int64(v.Mounts), 10)
	b = field(b, "clones", false)
	b = strconv.AppendInt(b, int64(v.Clones), 10)
	b = field(b, "state", false)
	b = appendString(b, v.State)
	b = field(b, "ttl_seconds", false)
	b = appendIntOrNull(b, v.TTLSeconds)
	b = field(b, "expires", false)
	b = appendTime(b, v.Expires)
	b = field(b, "bytes", false)
	b = appendIntOrNull(b, v.Bytes)
	return append(b, '}')
}

// Snapshot is one snapshot of a source: a row of snapvol snapshot ls.
type Snapshot struct {
	Source string    `json:"source"`
	Name   string    `json:"name"`
	Time   time.Time `json:"time"`
	// Kind is "named" (snapvol snapshot create), "scheduled", "plugin"
	// (taken for @latest or @now) or "external" (made outside snapvol).
	Kind string `json:"kind"`
	// From is the clone volume it was taken of, empty (null) for the
	// source itself.
	From   string `json:"from"`
	Object string `json:"object"`
	// Clones are the volumes with a clone of it (never null).
	Clones []string `json:"clones"`
}

// MarshalJSON writes every key; see the package comment.
func (s Snapshot) MarshalJSON() ([]byte, error) {
	b := append([]byte(nil), '{')
	b = field(b, "source", true)
	b = appendString(b, s.Source)
	b = field(b, "name", false)
	b = appendString(b, s.Name)
	b = field(b, "time", false)
	b = appendTime(b, s.Time)
	b = field(b, "kind", false)
	b = appendString(b, s.Kind)
	b = field(b, "from", false)
	b = appendStringOrNull(b, s.From)
	b = field(b, "object", false)
	b = appendString(b, s.Object)
	b = field(b, "clones", false)
	b = appendStrings(b, s.Clones)
	return append(b, '}'), nil
}

// DiskUsage is snapvol df: sizes in bytes, -1 where the backend cannot
// tell.
type DiskUsage struct {
	Size      int64      `json:"size"`
	Used      int64      `json:"used"`
	Free      int64      `json:"free"`
	Reserve   int64      `json:"reserve"`
	Consumers []Consumer `json:"consumers"`
	// Pinned is what snapshots and clones keep alive of their sources'
	// data, per source and snapshot; empty where unmeasured.
	Pinned []Pinned `json:"pinned"`
	// Replicas are the replica sources (REPLICAS) and their versions
	// here; the command fills them from the fleet's route (fleet.go).
	Replicas []Replica `json:"replicas"`
}

// MarshalJSON writes empty lists as [], never null.
func (u DiskUsage) MarshalJSON() ([]byte, error) {
	type plain DiskUsage
	p := plain(u)
	if p.Consumers == nil {
		p.Consumers = []Consumer{}
	}
	if p.Pinned == nil {
		p.Pinned = []Pinned{}
	}
	if p.Replicas == nil {
		p.Replicas = []Replica{}
	}
	return json.Marshal(p)
}

// Consumer is a volume and the bytes it holds alone.
type Consumer struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"`
	Bytes int64  `json:"bytes"`
}

// Pinned is one line of snapvol df's pinned section: a source's total
// (Snapshot empty, null in JSON), or one snapshot's share of it.
type Pinned struct {
	Source   string `json:"source"`
	Snapshot string `json:"snapshot"`
	// Bytes: for a source, all of its data only snapshots and clones
	// still hold; for a snapshot, what only it and its clones hold (what
	// removing them frees).
	Bytes int64 `json:"bytes"`
	// Shared is what the snapshot holds together with other snapshots.
	Shared int64 `json:"shared"`
	// Clones are the volumes whose clones were made from the snapshot.
	Clones []string `json:"clones"`
}

// MarshalJSON writes every key; see the package comment.
func (p Pinned) MarshalJSON() ([]byte, error) {
	b := append([]byte(nil), '{')
	b = field(b, "source", true)
	b = appendString(b, p.Source)
	b = field(b, "snapshot", false)
	b = appendStringOrNull(b, p.Snapshot)
	b = field(b, "bytes", false)
	b = strconv.AppendInt(b, p.Bytes, 10)
	b = field(b, "shared", false)
	b = strconv.AppendInt(b, p.Shared, 10)
	b = field(b, "clones", false)
	b = appendStrings(b, p.Clones)
	return append(b, '}'), nil
}

// Schedule is a source's snapshot schedule.
type Schedule struct {
	Source string
	// Every is how often a snapshot is taken; Keep how many scheduled
	// snapshots are kept (the newest).
	Every time.Duration
	Keep  int
	// Last is when the last scheduled snapshot was taken (zero: none
	// yet).
	Last time.Time
	// Push is where each scheduled snapshot is pushed (REGISTRY/REPO:TAG;
	// empty: not pushed). Pushed is when a scheduled push last worked,
	// PushTried when one last started, PushError the last one's error
	// (empty once one works; the next snapshot is pushed again).
	Push      string
	Pushed    time.Time
	PushTried time.Time
	PushError string
}

// MarshalJSON writes every key; see the package comment.
func (s Schedule) MarshalJSON() ([]byte, error) {
	b := append([]byte(nil), '{')
	b = field(b, "source", true)
	b = appendString(b, s.Source)
	b = field(b, "every_seconds", false)
	b = strconv.AppendInt(b, int64(s.Every/time.Second), 10)
	b = field(b, "keep", false)
	b = strconv.AppendInt(b, int64(s.Keep), 10)
	b = field(b, "last", false)
	b = appendTime(b, s.Last)
	b = field(b, "push", false)
	b = appendStringOrNull(b, s.Push)
	b = field(b, "pushed", false)
	b = appendTime(b, s.Pushed)
	b = field(b, "push_tried", false)
	b = appendTime(b, s.PushTried)
	b = field(b, "push_error", false)
	b = appendStringOrNull(b, s.PushError)
	return append(b, '}'), nil
}

// UnmarshalJSON reads what MarshalJSON writes.
func (s *Schedule) UnmarshalJSON(data []byte) error {
	var w struct {
		Source string    `json:"source"`
		Every  int64     `json:"every_seconds"`
		Keep   int       `json:"keep"`
		Last   time.Time `json:"last"`
		Push   string    `json:"push"`
		Pushed time.Time `json:"pushed"`
		Tried  time.Time `json:"push_tried"`
		Error  string    `json:"push_error"`
	}
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	*s = Schedule{Source: w.Source, Every: time.Duration(w.Every) * time.Second, Keep: w.Keep, Last: w.Last,
		Push: w.Push, Pushed: w.Pushed, PushTried: w.Tried, PushError: w.Error}
	return nil
}

// VersionInfo is GET /v1/version: the running plugin's build.
type VersionInfo struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
	// Go is the Go release it was built with; Backend the backend it
	// serves (local, portworx).
	Go      string `json:"go"`
	Backend string `json:"backend"`
	// Started is when the plugin started.
	Started time.Time `json:"started"`
}

// AppendVolumes writes vols as the JSON array snapvol ls --json prints:
// one volume a line, so the command can copy the answer through without
// decoding it.
func AppendVolumes(b []byte, vols []Volume) []byte {
	b = append(b, '[')
	for i, v := range vols {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '\n')
		b = v.appendJSON(b)
	}
	if len(vols) > 0 {
		b = append(b, '\n')
	}
	return append(b, "]\n"...)
}

func field(b []byte, key string, first bool) []byte {
	if !first {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, key...)
	return append(b, '"', ':')
}

func appendStringOrNull(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return appendString(b, s)
}

func appendIntOrNull(b []byte, n *int64) []byte {
	if n == nil {
		return append(b, "null"...)
	}
	return strconv.AppendInt(b, *n, 10)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// appendString quotes s as a JSON string. Names are ASCII words, so the
// fast path is a copy; anything else goes through encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c >= utf8.RuneSelf {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// SocketName is the admin socket's file name in STATE_DIR.
const SocketName = "admin.sock"

// SocketPath is the admin socket of the snapvol whose state is stateDir.
func SocketPath(stateDir string) string { return filepath.Join(stateDir, SocketName) }

// Error is the body of every failed request.
type Error struct {
	Error string `json:"error"`
}

// CreateVolumeRequest is POST /v1/volumes.
type CreateVolumeRequest struct {
	Name string `json:"name"`
	From string `json:"from"`
	// Access is what Docker users may do with it: "" (nothing), "docker"
	// or "secret" (see the driver's operator.go).
	Access string `json:"access"`
}

// CreateSnapshotRequest is POST /v1/snapshots/{source}.
type CreateSnapshotRequest struct {
	Name    string `json:"name"`
	From    string `json:"from"`
	Replace bool   `json:"replace"`
}

// ScheduleRequest is PUT /v1/schedules/{source}.
type ScheduleRequest struct {
	// Every is a Go duration (1h, 30m, 1s).
	Every string `json:"every"`
	Keep  int    `json:"keep"`
	// Push is REGISTRY/REPO[:TAG] each scheduled snapshot is pushed to
	// (PUT /v1/schedules/{source}/push only; TAG defaults to scheduled).
	Push string `json:"push,omitempty"`
}
