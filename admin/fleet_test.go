package admin

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// keysOf fails t unless data (a JSON object) has a key for every field of
// v's type, and no other; it returns the object.
func keysOf(t *testing.T, v any, data []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s: %v", data, err)
	}
	rt := reflect.TypeOf(v)
	if len(m) != rt.NumField() {
		t.Errorf("%d keys for %d fields of %s: %s", len(m), rt.NumField(), rt.Name(), data)
	}
	for i := range rt.NumField() {
		key, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		if _, ok := m[key]; !ok {
			t.Errorf("%s: MarshalJSON writes no %q: %s", rt.Name(), key, data)
		}
	}
	return m
}

// A replica row has every key, null where empty (a source with nothing
// pulled and no pull since the start), RFC 3339 times and _seconds ages;
// registry and newest are derived from repository and the tags; what is
// written reads back the same.
func TestReplicaJSONKeys(t *testing.T) {
	at := time.Date(2026, 12, 7, 0, 40, 0, 0, time.UTC)
	pulled := at.Add(time.Hour)
	age := int64(5400)
	full := Replica{Source: "app-production", Repository: "127.0.0.1:5000/data/app-production", Registry: "127.0.0.1:5000",
		Tags: []ReplicaTag{
			{Tag: "masked", UUID: "u1", Snapshot: "s1", Time: at, AgeSeconds: age},
			{Tag: "old", UUID: "u0", Snapshot: "s0", Time: at.Add(-time.Hour), AgeSeconds: age + 3600},
		},
		Checked: &pulled, Error: "registry 127.0.0.1:5000/data/app-production: connection refused", Newest: at, NewestAgeSeconds: &age}
	empty := Replica{Source: "other", Repository: "registry.example.com/other", Registry: "registry.example.com", Tags: []ReplicaTag{}}
	for _, r := range []Replica{full, empty} {
		data, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		m := keysOf(t, r, data)
		var back Replica
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, r) {
			t.Errorf("round trip of %s:\n got %+v\nwant %+v", data, back, r)
		}
		var tags []json.RawMessage
		if err := json.Unmarshal(m["tags"], &tags); err != nil || tags == nil {
			t.Errorf("tags %s: want an array, never null (%v)", m["tags"], err)
		}
		for _, tg := range tags {
			keysOf(t, ReplicaTag{}, tg)
		}
	}
	data, _ := json.Marshal(empty)
	for _, k := range []string{"pulled", "error", "newest", "newest_age_seconds"} {
		if !strings.Contains(string(data), `"`+k+`":null`) {
			t.Errorf("%s of a source with nothing pulled: want null: %s", k, data)
		}
	}
	data, _ = json.Marshal(full)
	if !strings.Contains(string(data), `"newest":"2026-12-07T00:40:00Z","newest_age_seconds":5400`) {
		t.Errorf("newest: want the newest tag's time and age: %s", data)
	}
	// What the fleet writes (no registry, no newest) gets them derived.
	fromFleet := full
	fromFleet.Registry, fromFleet.Newest, fromFleet.NewestAgeSeconds = "", time.Time{}, nil
	if a, b := mustJSON(t, fromFleet), mustJSON(t, full); a != b {
		t.Errorf("derived:\n got %s\nwant %s", a, b)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A schedule has every key, its push fields null when it pushes nowhere.
func TestScheduleJSONKeys(t *testing.T) {
	at := time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)
	for _, s := range []Schedule{
		{Source: "a", Every: time.Hour, Keep: 24},
		{Source: "b", Every: time.Second, Keep: 2, Last: at, Push: "127.0.0.1:5000/data/b:scheduled", Pushed: at.Add(-time.Second), PushTried: at, PushError: "registry 127.0.0.1:5000/data/b: connection refused"},
	} {
		data := []byte(mustJSON(t, s))
		var m map[string]json.RawMessage
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		if n := reflect.TypeOf(s).NumField(); len(m) != n {
			t.Errorf("%d keys for %d fields: %s", len(m), n, data)
		}
		for _, k := range []string{"source", "every_seconds", "keep", "last", "push", "pushed", "push_tried", "push_error"} {
			if _, ok := m[k]; !ok {
				t.Errorf("no %q: %s", k, data)
			}
		}
		if s.Push == "" && !strings.Contains(string(data), `"push":null,"pushed":null,"push_tried":null,"push_error":null`) {
			t.Errorf("a schedule that pushes nowhere: %s", data)
		}
		var back Schedule
		if err := json.Unmarshal(data, &back); err != nil || !reflect.DeepEqual(back, s) {
			t.Errorf("round trip of %s: %+v %v", data, back, err)
		}
	}
}

// snapvol df --json has "replicas", [] on a host with none.
func TestDiskUsageReplicasKey(t *testing.T) {
	if got := mustJSON(t, DiskUsage{}); !strings.Contains(got, `"replicas":[]`) {
		t.Errorf("df --json with no replica sources: %s", got)
	}
}

// Against a plugin with no fleet routes (before runner fleets) Replicas
// is empty, not an error; a route's own failure stays an error.
func TestReplicasOfAPluginWithoutFleet(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, SocketName)
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var failing atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/fleet/replicas", func(w http.ResponseWriter, _ *http.Request) {
		if !failing.Load() {
			http.NotFound(w, nil)
			return
		}
		w.WriteHeader(http.StatusInternalServerError)
		_ = json.NewEncoder(w).Encode(Error{Error: "reading the fleet state: broken"})
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	c := NewClient(sock)
	if reps, err := c.Replicas(); err != nil || reps == nil || len(reps) != 0 {
		t.Fatalf("no fleet route: %v %v; want none and no error", reps, err)
	}
	failing.Store(true)
	if _, err := c.Replicas(); err == nil || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("a failing fleet route: %v; want its error", err)
	}
}
