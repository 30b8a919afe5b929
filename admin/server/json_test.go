package server

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/admin"
	"github.com/snapvol/snapvol/driver"
	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/storage/memory"
)

// rawGet returns the decoded JSON body of GET path on the admin socket.
func rawGet(t *testing.T, sock, path string, v any) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	resp, err := c.Get("http://snapvol" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", path, resp.Status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v\n%s", path, err, body)
	}
}

func keys(m map[string]any) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ",")
}

// The --json rows of ls, snapshot ls and df have every key on every row:
// a plain volume's row has the keys of a clone's, with null where it has
// no value (the old rows left source, ref, snapshot and expires out);
// times are RFC 3339 and durations whole seconds.
func TestJSONRowsHaveEveryKey(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "snapvol.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := logrus.New()
	log.SetOutput(io.Discard)
	d := driver.New(driver.Config{Backend: memory.New(), Store: st, DataRoot: t.TempDir(), LatestMaxAge: time.Minute, IdleTTL: time.Hour, Claim: true, Log: log})
	if err := d.Create(&volume.CreateRequest{Name: "app-production"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(&volume.CreateRequest{Name: "app-production@latest+ci"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Mount(&volume.MountRequest{Name: "app-production@latest+ci", ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Unmount(&volume.UnmountRequest{Name: "app-production@latest+ci", ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	sock := admin.SocketPath(dir)
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := New(d, "memory")
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())
	c := admin.NewClient(sock)
	if _, err := c.CreateSnapshot("app-production", "nightly", "", false); err != nil {
		t.Fatal(err)
	}

	var vols []map[string]any
	rawGet(t, sock, "/v1/volumes", &vols)
	if len(vols) != 2 {
		t.Fatalf("ls: %d rows, want 2: %v", len(vols), vols)
	}
	byName := map[string]map[string]any{}
	for _, v := range vols {
		byName[v["name"].(string)] = v
	}
	plain, clone := byName["app-production"], byName["app-production@latest+ci"]
	if plain == nil || clone == nil {
		t.Fatalf("ls rows: %v", vols)
	}
	if keys(plain) != keys(clone) {
		t.Fatalf("a plain volume's keys differ from a clone's:\n plain %s\n clone %s", keys(plain), keys(clone))
	}
	for _, k := range []string{"name", "kind", "access", "source", "ref", "tag", "each", "snapshot", "snapshot_time", "created", "age_seconds", "mounts", "clones", "state", "ttl_seconds", "expires", "bytes"} {
		if _, ok := plain[k]; !ok {
			t.Errorf("ls --json has no %q: %v", k, plain)
		}
	}
	for _, k := range []string{"access", "source", "ref", "tag", "snapshot", "snapshot_time", "ttl_seconds", "expires"} {
		if plain[k] != nil {
			t.Errorf("a plain volume's %s is %v, want null", k, plain[k])
		}
	}
	if clone["source"] != "app-production" || clone["ref"] != "latest" || clone["tag"] != "ci" || clone["state"] != "materialized" || clone["ttl_seconds"] != float64(3600) {
		t.Errorf("the clone's row: %v", clone)
	}
	for _, k := range []string{"created", "expires", "snapshot_time"} {
		s, _ := clone[k].(string)
		if _, err := time.Parse(time.RFC3339, s); err != nil {
			t.Errorf("the clone's %s %v is not RFC 3339: %v", k, clone[k], err)
		}
	}
	if _, ok := clone["age_seconds"].(float64); !ok {
		t.Errorf("age_seconds %v is not a number of seconds", clone["age_seconds"])
	}

	var snaps []map[string]any
	rawGet(t, sock, "/v1/snapshots/app-production", &snaps)
	if len(snaps) < 2 {
		t.Fatalf("snapshot ls: %v", snaps)
	}
	for _, s := range snaps[1:] {
		if keys(s) != keys(snaps[0]) {
			t.Errorf("snapshot ls rows differ in keys: %s vs %s", keys(s), keys(snaps[0]))
		}
	}
	for _, s := range snaps {
		if _, ok := s["from"]; !ok || s["from"] != nil {
			t.Errorf("a snapshot of the source itself: from is %v (present %v), want null", s["from"], ok)
		}
	}

	var df map[string]any
	rawGet(t, sock, "/v1/df", &df)
	for _, k := range []string{"size", "used", "free", "reserve", "consumers", "pinned"} {
		if v, ok := df[k]; !ok || v == nil {
			t.Errorf("df --json: %q is %v (present %v)", k, v, ok)
		}
	}

	if err := c.ClearSchedule("app-production"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetSchedule("app-production", 90*time.Minute, 4); err != nil {
		t.Fatal(err)
	}
	var scheds []map[string]any
	rawGet(t, sock, "/v1/schedules", &scheds)
	if len(scheds) != 1 || scheds[0]["every_seconds"] != float64(5400) || scheds[0]["keep"] != float64(4) {
		t.Fatalf("schedules: %v", scheds)
	}
	if _, ok := scheds[0]["last"]; !ok {
		t.Errorf("a schedule without last: %v", scheds[0])
	}

	// The typed client reads the same rows back.
	typed, err := c.Volumes()
	if err != nil || len(typed) != 2 {
		t.Fatalf("client ls: %v %v", typed, err)
	}
	one, err := c.Volume("app-production@latest+ci")
	if err != nil || one.Source != "app-production" || one.TTLSeconds == nil || *one.TTLSeconds != 3600 || one.Expires.IsZero() {
		t.Fatalf("client volume inspect: %+v %v", one, err)
	}
}
