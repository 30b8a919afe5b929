package osdserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libopenstorage/openstorage/api"
	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/mountpoint"
	"github.com/snapvol/snapvol/test/osdserver"
)

// client speaks raw HTTP and JSON to the server, as any client would.
type client struct {
	t    *testing.T
	base string
	auth string // Authorization header, "" for none
	hc   *http.Client
}

func newClient(t *testing.T, srv *osdserver.Server) *client {
	t.Helper()
	return &client{t: t, base: srv.Endpoint(), hc: &http.Client{Timeout: 30 * time.Second}}
}

func (c *client) with(auth string) *client { d := *c; d.auth = auth; return &d }

type reply struct {
	code int
	hdr  http.Header
	body string
}

func (c *client) try(ctx context.Context, method, path, body string) (reply, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("User-Agent", "osdserver-test/1")
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(data)}, err
}

func (c *client) do(method, path, body string) reply {
	c.t.Helper()
	r, err := c.try(context.Background(), method, path, body)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// want checks status and exact body.
func (c *client) want(method, path, body string, code int, want string) reply {
	c.t.Helper()
	r := c.do(method, path, body)
	if r.code != code || r.body != want {
		c.t.Fatalf("%s %s %s\n= %d %q\nwant %d %q", method, path, body, r.code, r.body, code, want)
	}
	return r
}

// wantText checks a text error: http.Error's shape.
func (c *client) wantText(method, path, body string, code int, msg string) {
	c.t.Helper()
	r := c.want(method, path, body, code, msg+"\n")
	if ct := r.hdr.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		c.t.Fatalf("%s %s: Content-Type %q, want text/plain", method, path, ct)
	}
}

func decode[T any](t *testing.T, r reply) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatalf("decoding %q: %v", r.body, err)
	}
	return v
}

func (c *client) create(name string, labels map[string]string, spec string) string {
	c.t.Helper()
	lj, _ := json.Marshal(labels)
	r := c.do("POST", "/v1/osd-volumes", fmt.Sprintf(`{"locator":{"name":%q,"volume_labels":%s},"spec":%s}`, name, lj, spec))
	resp := decode[map[string]any](c.t, r)
	id, _ := resp["id"].(string)
	if r.code != 200 || id == "" {
		c.t.Fatalf("create %s: %d %s", name, r.code, r.body)
	}
	return id
}

func (c *client) snap(parent, name string, readonly bool, labels map[string]string) reply {
	c.t.Helper()
	lj, _ := json.Marshal(labels)
	return c.do("POST", "/v1/osd-snapshot", fmt.Sprintf(`{"id":%q,"locator":{"name":%q,"volume_labels":%s},"readonly":%v}`, parent, name, lj, readonly))
}

func snapID(t *testing.T, r reply) string {
	t.Helper()
	var resp struct {
		R struct {
			ID string `json:"id"`
			V  *struct {
				Error string `json:"error"`
			} `json:"volume_response"`
		} `json:"volume_create_response"`
	}
	if err := json.Unmarshal([]byte(r.body), &resp); err != nil || r.code != 200 || resp.R.ID == "" {
		t.Fatalf("snap = %d %s", r.code, r.body)
	}
	return resp.R.ID
}

// inspect returns the volume as raw JSON, decoded into a map.
func (c *client) inspect(id string) map[string]any {
	c.t.Helper()
	r := c.do("GET", "/v1/osd-volumes/"+id, "")
	vols := decode[[]map[string]any](c.t, r)
	if r.code != 200 || len(vols) != 1 {
		c.t.Fatalf("inspect %s = %d %s", id, r.code, r.body)
	}
	return vols[0]
}

func specOf(v map[string]any) map[string]any { s, _ := v["spec"].(map[string]any); return s }

func labelsOf(v map[string]any) map[string]any {
	l, _ := v["locator"].(map[string]any)
	m, _ := l["volume_labels"].(map[string]any)
	return m
}

func set(c *client, id, body string) reply {
	c.t.Helper()
	return c.do("PUT", "/v1/osd-volumes/"+id, body)
}

const spec1G = `{"size":1073741824,"ha_level":1}`

func TestRoutesAndShapes(t *testing.T) {
	srv := osdserver.ForTest(t, osdserver.Config{})
	c := newClient(t, srv)
	c.want("GET", "/osd-volumes/versions", "", 200, "[\"v1\"]\n")
	// The path clients built for versions hits inspect: 200 [].
	c.want("GET", "/v1/osd-volumes/versions", "", 200, "[]\n")
	for _, p := range []string{"/v1/osd-volumes/stats/1", "/v1/osd-snapshot/restore/1", "/v1/volumes", "/", "/v1/osd-volumes/"} {
		c.wantText("GET", p, "", 404, "404 page not found")
	}
	c.want("PATCH", "/v1/osd-volumes/1", "", 405, "")
	c.want("DELETE", "/v1/osd-volumes", "", 405, "")
	// A body that does not decode: 400 text.
	if r := c.do("POST", "/v1/osd-volumes", "{"); r.code != 400 || !strings.HasSuffix(r.body, "\n") {
		t.Fatalf("bad body = %d %q", r.code, r.body)
	}
	// JSON answers carry no explicit Content-Type: net/http sniffs text.
	r := c.want("GET", "/v1/osd-volumes", "", 200, "[]\n")
	if ct := r.hdr.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Fatalf("JSON answer Content-Type %q", ct)
	}

	// Recording, injected status, Stop and Restart.
	reqs := srv.Requests()
	last := reqs[len(reqs)-1]
	if last.Method != "GET" || last.Path != "/v1/osd-volumes" || last.UserAgent != "osdserver-test/1" || last.Auth {
		t.Fatalf("last request recorded as %+v", last)
	}
	c.with("Bearer x").do("GET", "/v1/osd-volumes", "")
	if reqs := srv.Requests(); !reqs[len(reqs)-1].Auth {
		t.Fatal("Authorization not recorded")
	}
	c.do("GET", "/v1/osd-volumes?Name=a", "")
	if reqs := srv.Requests(); reqs[len(reqs)-1].Query != "Name=a" {
		t.Fatalf("query recorded as %q", reqs[len(reqs)-1].Query)
	}
	srv.SetStatus(503)
	c.wantText("GET", "/v1/osd-volumes", "", 503, "injected failure: HTTP 503")
	srv.SetStatus(0)
	srv.Stop()
	if _, err := c.try(context.Background(), "GET", "/v1/osd-volumes", ""); err == nil {
		t.Fatal("a stopped server answered")
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	c.want("GET", "/v1/osd-volumes", "", 200, "[]\n")
	srv.SetDelay(300 * time.Millisecond)
	start := time.Now()
	c.do("GET", "/v1/osd-volumes", "")
	if time.Since(start) < 300*time.Millisecond {
		t.Fatal("SetDelay did not delay")
	}
	srv.SetDelay(0)
}

func TestUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "pxd.sock")
	srv := osdserver.ForTest(t, osdserver.Config{Listen: "unix://" + sock})
	if srv.Endpoint() != "unix://"+sock {
		t.Fatalf("Endpoint = %s", srv.Endpoint())
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	c := &client{t: t, base: "http://pxd", hc: hc}
	c.want("GET", "/osd-volumes/versions", "", 200, "[\"v1\"]\n")
}

func TestCreate(t *testing.T) {
	srv := osdserver.ForTest(t, osdserver.Config{})
	c := newClient(t, srv)
	r := c.do("POST", "/v1/osd-volumes", `{"locator":{"name":"a","volume_labels":{"app":"x"}},"spec":{"size":1073741824,"ha_level":2,"volume_labels":{"tier":"gold"}}}`)
	id := decode[map[string]any](t, r)["id"].(string)
	if want := fmt.Sprintf("{\"id\":%q,\"volume_response\":{}}\n", id); r.code != 200 || r.body != want {
		t.Fatalf("create = %d %q, want %q", r.code, r.body, want)
	}
	v := c.inspect(id)
	// Locator labels are copied into the spec, spec labels into the locator.
	if sl := specOf(v)["volume_labels"].(map[string]any); sl["app"] != "x" || sl["tier"] != "gold" {
		t.Fatalf("spec labels %v", sl)
	}
	if l := labelsOf(v); l["app"] != "x" || l["tier"] != "gold" {
		t.Fatalf("locator labels %v", l)
	}

	// Idempotent by name (and by ID).
	c.want("POST", "/v1/osd-volumes", `{"locator":{"name":"a"},"spec":{"size":1073741824,"ha_level":2}}`, 200,
		fmt.Sprintf("{\"id\":%q,\"volume_response\":{}}\n", id))
	c.want("POST", "/v1/osd-volumes", fmt.Sprintf(`{"locator":{"name":%q},"spec":{"size":1073741824,"ha_level":2}}`, id), 200,
		fmt.Sprintf("{\"id\":%q,\"volume_response\":{}}\n", id))
	c.want("POST", "/v1/osd-volumes", `{"locator":{"name":"a"},"spec":{"size":2147483648,"ha_level":2}}`, 200,
		`{"volume_response":{"error":"rpc error: code = AlreadyExists desc = Existing volume has a size of 1073741824 which differs from requested size of 2147483648"}}`+"\n")
	c.want("POST", "/v1/osd-volumes", `{"locator":{"name":"a"},"spec":{"size":1073741824,"ha_level":2,"shared":true}}`, 200,
		`{"volume_response":{"error":"rpc error: code = AlreadyExists desc = Existing volume has shared=false while request is asking for shared=true"}}`+"\n")
	clone := snapID(t, c.snap(id, "a-clone", false, nil))
	c.want("POST", "/v1/osd-volumes", `{"locator":{"name":"a-clone"},"spec":{"size":1073741824,"ha_level":2}}`, 200,
		`{"volume_response":{"error":"rpc error: code = AlreadyExists desc = Existing volume has conflicting parent value"}}`+"\n")

	// source.parent is ignored: a plain new volume.
	r = c.do("POST", "/v1/osd-volumes", fmt.Sprintf(`{"locator":{"name":"b"},"source":{"parent":%q},"spec":%s}`, clone, spec1G))
	b := decode[map[string]any](t, r)["id"].(string)
	if src, _ := c.inspect(b)["source"].(map[string]any); src["parent"] != nil {
		t.Fatalf("create with source.parent made a child: %v", src)
	}
	if len(srv.SnapEnumerate([]string{clone}, nil)) != 0 {
		t.Fatal("create with source.parent snapshotted the parent")
	}

	// Fake driver and SDK checks.
	c.want("POST", "/v1/osd-volumes", `{"locator":{"name":"z"},"spec":{"ha_level":1}}`, 200,
		`{"volume_response":{"error":"rpc error: code = Internal desc = Failed to create volume: Volume size cannot be zero"}}`+"\n")
	c.want("POST", "/v1/osd-volumes", `{"locator":{"name":"z"},"spec":{"size":1}}`, 200,
		`{"volume_response":{"error":"rpc error: code = Internal desc = Failed to create volume: HA level cannot be zero"}}`+"\n")
	c.want("POST", "/v1/osd-volumes", `{"spec":{"size":1,"ha_level":1}}`, 200,
		`{"volume_response":{"error":"rpc error: code = InvalidArgument desc = Must supply a unique name"}}`+"\n")

	// A nil spec crashes the real handler: the connection drops.
	if r, err := c.try(context.Background(), "POST", "/v1/osd-volumes", `{"locator":{"name":"nospec"}}`); err == nil {
		t.Fatalf("create without spec answered %d %q", r.code, r.body)
	}
	if _, ok := srv.ByName("nospec"); ok {
		t.Fatal("create without spec made a volume")
	}
	// The Go helper keeps working for test setup.
	if _, err := srv.Create(&api.VolumeLocator{Name: "prod"}, nil, &api.VolumeSpec{Size: 1 << 30, HaLevel: 2}); err != nil {
		t.Fatal(err)
	}
	if v, ok := srv.ByName("prod"); !ok || v.Spec.HaLevel != 2 {
		t.Fatalf("ByName(prod) = %v, %v", v, ok)
	}
}

func TestInspectAndEnumerate(t *testing.T) {
	srv := osdserver.ForTest(t, osdserver.Config{})
	c := newClient(t, srv)
	a := c.create("a", map[string]string{"k": "1"}, spec1G)
	bID := c.create("b", map[string]string{"k": "2"}, spec1G)
	c.want("GET", "/v1/osd-volumes/404404", "", 200, "[]\n")
	c.want("GET", "/v1/osd-volumes?VolumeID=404404", "", 200, "[]\n")
	vols := decode[[]map[string]any](t, c.do("GET", "/v1/osd-volumes?VolumeID=404404&VolumeID="+bID, ""))
	if len(vols) != 1 || vols[0]["id"] != bID {
		t.Fatalf("VolumeID enumerate = %v", vols)
	}
	vols = decode[[]map[string]any](t, c.do("GET", "/v1/osd-volumes?Name=a", ""))
	if len(vols) != 1 || vols[0]["id"] != a {
		t.Fatalf("Name enumerate = %v", vols)
	}
	vols = decode[[]map[string]any](t, c.do("GET", `/v1/osd-volumes?Label={"k":"2"}`, ""))
	if len(vols) != 1 || vols[0]["id"] != bID {
		t.Fatalf("Label enumerate = %v", vols)
	}
	// The id query parameter does not exist: a full enumerate.
	if vols := decode[[]map[string]any](t, c.do("GET", "/v1/osd-volumes?id="+a, "")); len(vols) != 2 {
		t.Fatalf("?id= enumerate = %v", vols)
	}
	c.wantText("GET", "/v1/osd-snapshot?VolumeID=404404", "", 400,
		"Failed to enumerate snaps: rpc error: code = NotFound desc = Volume id 404404 not found")
	c.want("GET", "/v1/osd-snapshot?VolumeID="+a, "", 200, "[]\n")
	s := snapID(t, c.snap(a, "a-snap", true, map[string]string{"s": "1"}))
	snaps := decode[[]map[string]any](t, c.do("GET", "/v1/osd-snapshot?VolumeID="+a, ""))
	if len(snaps) != 1 || snaps[0]["id"] != s {
		t.Fatalf("snapEnumerate = %v", snaps)
	}
	if snaps := decode[[]map[string]any](t, c.do("GET", `/v1/osd-snapshot?Label={"s":"2"}`, "")); len(snaps) != 0 {
		t.Fatalf("snapEnumerate by label = %v", snaps)
	}
}

func TestSetSpecAndLabels(t *testing.T) {
	srv := osdserver.ForTest(t, osdserver.Config{})
	c := newClient(t, srv)
	id := c.create("v", map[string]string{"keep": "1", "drop": "1"},
		`{"size":1073741824,"ha_level":2,"cos":3,"snapshot_interval":60,"sticky":true,"journal":true,"queue_depth":4,"auto_fstrim":true,"nodiscard":false,"bogus":1}`)
	sp := specOf(c.inspect(id))
	if sp["journal"] != true || sp["queue_depth"] != 4.0 || sp["auto_fstrim"] != true {
		t.Fatalf("extra spec keys not kept: %v", sp)
	}
	if _, ok := sp["nodiscard"]; ok {
		t.Fatalf("a zero extra key is served: %v", sp)
	}
	if _, ok := sp["bogus"]; ok {
		t.Fatalf("a key the real VolumeSpec lacks is served: %v", sp)
	}
	if got := srv.ExtraSpec(id); got["journal"] != true || got["queue_depth"] != 4.0 {
		t.Fatalf("ExtraSpec = %v", got)
	}

	// A client that round-trips the spec through v1.0.0's types: the
	// extra keys arrive as zero and are applied (journal reset), the
	// guarded zero fields are not, auto_fstrim is not in the update.
	var got []struct {
		Spec *api.VolumeSpec `json:"spec"`
	}
	if err := json.Unmarshal([]byte(c.do("GET", "/v1/osd-volumes/"+id, "").body), &got); err != nil || len(got) != 1 {
		t.Fatal(got, err)
	}
	v1 := got[0]
	v1.Spec.Size = 2 << 30
	v1.Spec.Cos = 0
	v1.Spec.HaLevel = 0
	v1.Spec.SnapshotInterval = math.MaxUint32
	v1.Spec.Sticky = false
	sent, _ := json.Marshal(v1.Spec)
	r := set(c, id, fmt.Sprintf(`{"locator":{"name":"renamed","volume_labels":{"drop":"","new":"2"}},"spec":%s}`, sent))
	out := decode[map[string]map[string]any](t, r)
	if _, ok := out["volume_response"]; r.code != 200 || ok || out["volume"]["id"] != id {
		t.Fatalf("set = %d %s", r.code, r.body)
	}
	sp = specOf(out["volume"])
	if _, ok := sp["journal"]; ok {
		t.Fatalf("journal survived a round-trip through v1.0.0 types: %v", sp)
	}
	if _, ok := sp["queue_depth"]; ok {
		t.Fatalf("queue_depth survived: %v", sp)
	}
	if sp["auto_fstrim"] != true || sp["size"] != float64(2<<30) || sp["cos"] != 3.0 || sp["ha_level"] != 2.0 || sp["snapshot_interval"] != 60.0 {
		t.Fatalf("after set spec = %v", sp)
	}
	if _, ok := sp["sticky"]; ok {
		t.Fatalf("sticky=false not applied: %v", sp)
	}
	l := out["volume"]["locator"].(map[string]any)
	if l["name"] != "v" {
		t.Fatalf("REST v1 renamed the volume: %v", l)
	}
	if lb := l["volume_labels"].(map[string]any); lb["keep"] != "1" || lb["new"] != "2" || lb["drop"] != nil {
		t.Fatalf("labels after set = %v", lb)
	}

	// Size 0 is ignored; a sent extra key is applied.
	set(c, id, `{"spec":{"size":0,"ha_level":2,"journal":true}}`)
	if sp := specOf(c.inspect(id)); sp["size"] != float64(2<<30) || sp["journal"] != true {
		t.Fatalf("spec = %v", sp)
	}
	// SetExtraSpec for setup.
	if err := srv.SetExtraSpec(id, map[string]any{"sharedv4": true, "journal": nil}); err != nil {
		t.Fatal(err)
	}
	if sp := specOf(c.inspect(id)); sp["sharedv4"] != true || sp["journal"] != nil {
		t.Fatalf("after SetExtraSpec spec = %v", sp)
	}
	if err := srv.SetExtraSpec(id, map[string]any{"size": 1}); err == nil {
		t.Fatal("SetExtraSpec took a v1.0.0 key")
	}

	// A missing volume: 400 text without an action; with a detach, the
	// update is skipped and the detach succeeds.
	c.wantText("PUT", "/v1/osd-volumes/404404", `{"spec":{"size":1}}`, 400,
		"rpc error: code = NotFound desc = Volume id 404404 not found")
	c.want("PUT", "/v1/osd-volumes/404404", `{"spec":{"size":1},"action":{"attach":1}}`, 200, "{\"volume\":{}}\n")
}

func TestDelete(t *testing.T) {
	srv := osdserver.ForTest(t, osdserver.Config{})
	c := newClient(t, srv)
	c.want("DELETE", "/v1/osd-volumes/404404", "", 200, "{}\n")
	id := c.create("v", nil, spec1G)
	set(c, id, `{"action":{"attach":2}}`)
	if r := c.do("DELETE", "/v1/osd-volumes/"+id, ""); !strings.Contains(r.body, "Failed to delete volume "+id+": Volume is attached") {
		t.Fatalf("delete of an attached volume = %s", r.body)
	}
	set(c, id, `{"action":{"attach":1}}`)
	c.want("DELETE", "/v1/osd-volumes/"+id, "", 200, "{}\n")
	c.want("GET", "/v1/osd-volumes/"+id, "", 200, "[]\n")
}

func TestSnapshotsAndClones(t *testing.T) {
	srv := osdserver.ForTest(t, osdserver.Config{MaxSnapshots: 2})
	c := newClient(t, srv)
	id := c.create("v", map[string]string{"app": "x"}, `{"size":1073741824,"ha_level":1,"journal":true}`)
	s := snapID(t, c.snap(id, "v-snap", true, map[string]string{"snap": "1"}))
	sv := c.inspect(s)
	if l := labelsOf(sv); len(l) != 1 || l["snap"] != "1" {
		t.Fatalf("snapshot labels %v, want exactly the request's", l)
	}
	if sv["readonly"] != true || specOf(sv)["journal"] != true {
		t.Fatalf("snapshot = %v", sv)
	}
	cl := snapID(t, c.snap(s, "v-clone", false, map[string]string{"mine": "1", "snap": "2"}))
	cv := c.inspect(cl)
	if l := labelsOf(cv); len(l) != 2 || l["snap"] != "2" || l["mine"] != "1" {
		t.Fatalf("clone labels %v, want the request's merged over the parent's", l)
	}
	if cv["readonly"] == true || cv["source"].(map[string]any)["parent"] != s {
		t.Fatalf("clone = %v", cv)
	}
	// Clone is idempotent by name.
	if again := snapID(t, c.snap(s, "v-clone", false, nil)); again != cl {
		t.Fatalf("clone again = %s, want %s", again, cl)
	}
	c.want("POST", "/v1/osd-snapshot", `{"id":"404404","locator":{"name":"x"},"readonly":true}`, 200,
		`{"volume_create_response":{"volume_response":{"error":"rpc error: code = NotFound desc = Volume id 404404 not found"}}}`+"\n")
	c.want("POST", "/v1/osd-snapshot", `{"id":"404404","locator":{"name":"x"}}`, 200,
		`{"volume_create_response":{"volume_response":{"error":"rpc error: code = NotFound desc = Volume id 404404 not found"}}}`+"\n")
	if r, err := c.try(context.Background(), "POST", "/v1/osd-snapshot", fmt.Sprintf(`{"id":%q,"readonly":true}`, id)); err == nil {
		t.Fatalf("snap without a locator answered %d %q", r.code, r.body)
	}
	// The snapshot limit.
	snapID(t, c.snap(id, "v-snap2", true, nil))
	c.want("POST", "/v1/osd-snapshot", fmt.Sprintf(`{"id":%q,"locator":{"name":"v-snap3"},"readonly":true}`, id), 200,
		fmt.Sprintf(`{"volume_create_response":{"volume_response":{"error":"rpc error: code = Internal desc = Failed to create snapshot: volume %s already has 2 snapshots: there is an implementation limit of 2 snapshots per volume"}}}`+"\n", id))
	// The Go helper keeps the labels it is given.
	gcl, err := srv.Snapshot(s, false, &api.VolumeLocator{Name: "go-clone", VolumeLabels: map[string]string{"go": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	if l := labelsOf(c.inspect(gcl)); l["go"] != "1" {
		t.Fatalf("Go Snapshot labels %v", l)
	}
}

func TestActions(t *testing.T) {
	srv := osdserver.ForTest(t, osdserver.Config{})
	c := newClient(t, srv)
	id := c.create("v", nil, spec1G)
	dir := srv.MountDir(t)
	wantVolAndErr(t, set(c, id, `{"action":{"mount":2,"mount_path":""}}`), id, "Invalid mount path")
	if r := set(c, id, fmt.Sprintf(`{"action":{"mount":2,"mount_path":%q}}`, dir)); !strings.Contains(r.body, `"error":"rpc error: code = Internal desc = Failed to mount volume `+id+`: Volume is detached"`) {
		t.Fatalf("mount of a detached volume = %s", r.body)
	}
	r := set(c, id, fmt.Sprintf(`{"action":{"attach":2,"mount":2,"mount_path":%q}}`, dir))
	out := decode[map[string]map[string]any](t, r)
	if out["volume_response"] != nil || out["volume"]["attached_on"] != "node-1" {
		t.Fatalf("attach+mount = %s", r.body)
	}
	if !mountpoint.IsMountPoint(dir) {
		t.Fatal("not mounted")
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(srv.DataPath(id), "f")); err != nil {
		t.Fatalf("data not in the pool: %v", err)
	}
	// Detach of a mounted volume needs UNMOUNT_BEFORE_DETACH.
	if r := set(c, id, `{"action":{"attach":1}}`); !strings.Contains(r.body, "Failed to detach volume "+id) {
		t.Fatalf("detach of a mounted volume = %s", r.body)
	}
	wantVolAndErr(t, set(c, id, `{"action":{"mount":1}}`), id, "rpc error: code = InvalidArgument desc = Invalid Mount Path")
	set(c, id, fmt.Sprintf(`{"action":{"mount":1,"mount_path":%q}}`, dir))
	if mountpoint.IsMountPoint(dir) {
		t.Fatal("still mounted")
	}
	set(c, id, `{"action":{"attach":1}}`)
	if v := c.inspect(id); v["attached_on"] != nil {
		t.Fatalf("still attached: %v", v)
	}

	// Missing volumes.
	c.want("PUT", "/v1/osd-volumes/404404", `{"action":{"attach":1}}`, 200, "{\"volume\":{}}\n")
	c.want("PUT", "/v1/osd-volumes/404404", `{"action":{"attach":2}}`, 200,
		`{"volume":{},"volume_response":{"error":"rpc error: code = NotFound desc = Volume id 404404 not found"}}`+"\n")
	c.want("PUT", "/v1/osd-volumes/404404", fmt.Sprintf(`{"action":{"mount":2,"mount_path":%q}}`, dir), 200,
		`{"volume":{},"volume_response":{"error":"rpc error: code = NotFound desc = Volume id 404404 not found"}}`+"\n")
	c.want("PUT", "/v1/osd-volumes/404404", fmt.Sprintf(`{"action":{"mount":1,"mount_path":%q}}`, dir), 200,
		`{"volume":{},"volume_response":{"error":"rpc error: code = Internal desc = Failed to unmount volume 404404: Key not found"}}`+"\n")

	// A read-only snapshot is mounted read-only.
	s := snapID(t, c.snap(id, "v-snap", true, nil))
	sdir := srv.MountDir(t)
	if r := set(c, s, fmt.Sprintf(`{"action":{"attach":2,"mount":2,"mount_path":%q}}`, sdir)); strings.Contains(r.body, "volume_response") {
		t.Fatalf("mount of the snapshot = %s", r.body)
	}
	if err := os.WriteFile(filepath.Join(sdir, "g"), []byte("x"), 0o644); !errors.Is(err, unix.EROFS) {
		t.Fatalf("write into a read-only snapshot: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(sdir, "f")); err != nil || string(b) != "x" {
		t.Fatalf("snapshot data: %q %v", b, err)
	}
	set(c, s, fmt.Sprintf(`{"action":{"attach":1,"mount":1,"mount_path":%q},"options":{"UNMOUNT_BEFORE_DETACH":"true"}}`, sdir))
	if mountpoint.IsMountPoint(sdir) {
		t.Fatal("UNMOUNT_BEFORE_DETACH left the snapshot mounted")
	}
}

func TestNoAttach(t *testing.T) {
	srv := osdserver.ForTest(t, osdserver.Config{NoAttach: true})
	c := newClient(t, srv)
	id := c.create("v", nil, spec1G)
	if r := set(c, id, `{"action":{"attach":2}}`); !strings.Contains(r.body, `"error":"rpc error: code = Internal desc = failed  to attach volume: Operation not supported"`) {
		t.Fatalf("attach = %s", r.body)
	}
	if r := set(c, id, `{"action":{"attach":1}}`); !strings.Contains(r.body, `"error":"rpc error: code = Internal desc = Failed to detach volume `+id+`: Operation not supported"`) {
		t.Fatalf("detach = %s", r.body)
	}
	dir := srv.MountDir(t)
	if r := set(c, id, fmt.Sprintf(`{"action":{"mount":2,"mount_path":%q}}`, dir)); strings.Contains(r.body, "volume_response") {
		t.Fatalf("mount = %s", r.body)
	}
	if !mountpoint.IsMountPoint(dir) {
		t.Fatal("not mounted")
	}
	set(c, id, fmt.Sprintf(`{"action":{"mount":1,"mount_path":%q}}`, dir))
}

func TestAuth(t *testing.T) {
	srv := osdserver.ForTest(t, osdserver.Config{Token: "good"})
	anon := newClient(t, srv)
	user := anon.with("Bearer good")
	private := user.create("private", nil, spec1G)
	public := anon.create("public", nil, spec1G)
	if o := specOf(user.inspect(private))["ownership"].(map[string]any); o["owner"] == "" {
		t.Fatalf("ownership %v", o)
	}
	anon.want("GET", "/osd-volumes/versions", "", 200, "[\"v1\"]\n")
	user.with("Bearer wrong").want("GET", "/osd-volumes/versions", "", 200, "[\"v1\"]\n")

	unauth := "rpc error: code = Unauthenticated desc = Invalid or missing authentication token"
	denied := "rpc error: code = PermissionDenied desc = Unable to authenticate token"
	issuer := "rpc error: code = Unauthenticated desc = evil is not a trusted issuer"
	for _, tc := range []struct{ auth, msg string }{{"Basic Z29vZA==", unauth}, {"good", unauth}, {"Bearer wrong", denied}, {"bearer iss:evil:x", issuer}} {
		b := anon.with(tc.auth)
		b.want("POST", "/v1/osd-volumes", `{"locator":{"name":"n"},"spec":{"size":1,"ha_level":1}}`, 200,
			fmt.Sprintf(`{"volume_response":{"error":%q}}`+"\n", tc.msg))
		b.want("DELETE", "/v1/osd-volumes/"+public, "", 200, fmt.Sprintf(`{"error":%q}`+"\n", tc.msg))
		b.want("POST", "/v1/osd-snapshot", fmt.Sprintf(`{"id":%q,"locator":{"name":"s"},"readonly":true}`, public), 200,
			fmt.Sprintf(`{"volume_create_response":{"volume_response":{"error":%q}}}`+"\n", tc.msg))
		b.wantText("GET", "/v1/osd-volumes", "", 500, tc.msg)
		b.wantText("GET", "/v1/osd-volumes/"+public, "", 404, tc.msg)
		b.wantText("GET", "/v1/osd-volumes?VolumeID="+public, "", 400, "Failed to inspect volumeID: "+tc.msg)
		b.wantText("GET", "/v1/osd-snapshot", "", 400, "Failed to enumerate snaps: "+tc.msg)
		b.wantText("PUT", "/v1/osd-volumes/"+public, `{"spec":{"size":1}}`, 400, tc.msg)
		b.want("PUT", "/v1/osd-volumes/"+public, `{"action":{"attach":2}}`, 200,
			fmt.Sprintf(`{"volume":{},"volume_response":{"error":%q}}`+"\n", tc.msg))
	}
	// The bearer scheme is case-insensitive.
	user.with("BEARER good").inspect(private)

	// A guest and a private volume.
	access := "rpc error: code = PermissionDenied desc = Access denied to volume " + private
	anon.wantText("GET", "/v1/osd-volumes/"+private, "", 404, access)
	anon.wantText("GET", "/v1/osd-volumes?VolumeID="+private, "", 400, "Failed to inspect volumeID: "+access)
	vols := decode[[]map[string]any](t, anon.do("GET", "/v1/osd-volumes", ""))
	if len(vols) != 1 || vols[0]["id"] != public {
		t.Fatalf("guest enumerate = %v", vols)
	}
	if vols := decode[[]map[string]any](t, user.do("GET", "/v1/osd-volumes", "")); len(vols) != 2 {
		t.Fatalf("user enumerate = %v", vols)
	}
	anon.want("PUT", "/v1/osd-volumes/"+private, `{"action":{"attach":2}}`, 200,
		fmt.Sprintf(`{"volume":{},"volume_response":{"error":%q}}`+"\n", access))
	anon.want("DELETE", "/v1/osd-volumes/"+private, "", 200, fmt.Sprintf(`{"error":%q}`+"\n", access))
	anon.want("POST", "/v1/osd-volumes", `{"locator":{"name":"private"},"spec":{"size":1073741824,"ha_level":1}}`, 200,
		`{"volume_response":{"error":"rpc error: code = PermissionDenied desc = Volume private already exists and is owned by another user"}}`+"\n")
	// Guests' volumes are public; a user's clone of one is the user's.
	user.inspect(public)
	cl := snapID(t, user.snap(public, "public-clone", false, nil))
	anon.wantText("GET", "/v1/osd-volumes/"+cl, "", 404, "rpc error: code = PermissionDenied desc = Access denied to volume "+cl)
	user.want("DELETE", "/v1/osd-volumes/"+cl, "", 200, "{}\n")
	user.want("DELETE", "/v1/osd-volumes/"+private, "", 200, "{}\n")

	// No token configured: any header is let through, volumes are public.
	srv.SetToken("")
	anon.with("Bearer whatever").inspect(public)
}

func TestSlowOperationsFollowTheRequestContext(t *testing.T) {
	srv := osdserver.ForTest(t, osdserver.Config{})
	c := newClient(t, srv)
	id := c.create("v", nil, spec1G)
	srv.SetSlow("attach", time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.try(ctx, "PUT", "/v1/osd-volumes/"+id, `{"action":{"attach":2}}`); err == nil {
		t.Fatal("the slow attach answered within 200ms")
	}
	time.Sleep(1500 * time.Millisecond)
	if v := c.inspect(id); v["attached_on"] != nil {
		t.Fatalf("an abandoned attach was applied: %v", v)
	}
	start := time.Now()
	if r := set(c, id, `{"action":{"attach":2}}`); strings.Contains(r.body, "volume_response") || time.Since(start) < time.Second {
		t.Fatalf("slow attach = %s after %v", r.body, time.Since(start))
	}
	srv.SetSlow("attach", 0)
	set(c, id, `{"action":{"attach":1}}`)

	srv.SetSlow("snapshot", time.Second)
	srv.SetSlow("delete", time.Second)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if _, err := c.try(ctx2, "POST", "/v1/osd-snapshot", fmt.Sprintf(`{"id":%q,"locator":{"name":"s"},"readonly":true}`, id)); err == nil {
		t.Fatal("the slow snapshot answered within 200ms")
	}
	ctx3, cancel3 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel3()
	if _, err := c.try(ctx3, "DELETE", "/v1/osd-volumes/"+id, ""); err == nil {
		t.Fatal("the slow delete answered within 200ms")
	}
	time.Sleep(1500 * time.Millisecond)
	if _, ok := srv.ByName("s"); ok {
		t.Fatal("an abandoned snapshot was taken")
	}
	c.inspect(id) // not deleted
}

// wantVolAndErr checks a VolumeSetResponse carrying the volume and an
// action's error.
func wantVolAndErr(t *testing.T, r reply, id, msg string) {
	t.Helper()
	var out struct {
		Volume struct {
			ID string `json:"id"`
		} `json:"volume"`
		R *struct {
			Error string `json:"error"`
		} `json:"volume_response"`
	}
	if err := json.Unmarshal([]byte(r.body), &out); err != nil || r.code != 200 || out.Volume.ID != id || out.R == nil || out.R.Error != msg {
		t.Fatalf("set = %d %q; want the volume and error %q", r.code, r.body, msg)
	}
}

// TestDeleteParent: the SDK's Delete, over the fake driver, deletes a
// volume that has snapshots and clones; they stay, readable, with a
// source.parent naming a volume that is gone.
func TestDeleteParent(t *testing.T) {
	srv := osdserver.ForTest(t, osdserver.Config{})
	c := newClient(t, srv)
	id := c.create("v", nil, spec1G)
	if err := os.WriteFile(filepath.Join(srv.DataPath(id), "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := snapID(t, c.snap(id, "v-snap", true, nil))
	cl := snapID(t, c.snap(s, "v-clone", false, nil))
	c.want("DELETE", "/v1/osd-volumes/"+id, "", 200, "{}\n")
	c.want("GET", "/v1/osd-volumes/"+id, "", 200, "[]\n")
	c.want("DELETE", "/v1/osd-volumes/"+s, "", 200, "{}\n")
	cv := c.inspect(cl)
	if cv["source"].(map[string]any)["parent"] != s {
		t.Fatalf("the clone's parent = %v; want the deleted snapshot's ID", cv["source"])
	}
	if b, err := os.ReadFile(filepath.Join(srv.DataPath(cl), "f")); err != nil || string(b) != "x" {
		t.Fatalf("the clone's data after its parents went: %q %v", b, err)
	}
	// Listing the children of a volume that is gone: the SDK checks the
	// volume first.
	c.wantText("GET", "/v1/osd-snapshot?VolumeID="+id, "", 400,
		"Failed to enumerate snaps: rpc error: code = NotFound desc = Volume id "+id+" not found")
	c.want("DELETE", "/v1/osd-volumes/"+cl, "", 200, "{}\n")
}

// TestUsersGroupsAndAdmins: api/ownership.go over the SDK's checks. A
// user reads another's volume through a group ACL, snapshots it (the
// snapshot keeps the volume's ownership) and clones it (the clone is
// re-owned to the user); it may delete its clone, not its snapshot,
// which only the owner or an admin may delete.
func TestUsersGroupsAndAdmins(t *testing.T) {
	srv := osdserver.ForTest(t, osdserver.Config{Token: "admin-token", Users: map[string]osdserver.User{
		"dba-token": {Name: "dba", Groups: []string{"db"}},
		"ci-token":  {Name: "ci", Groups: []string{"builders", "ci"}},
		"eve-token": {Name: "eve"},
	}})
	anon := newClient(t, srv)
	admin, dba, ci, eve := anon.with("Bearer admin-token"), anon.with("Bearer dba-token"), anon.with("Bearer ci-token"), anon.with("Bearer eve-token")
	prod := dba.create("app-production", nil, spec1G)
	if err := srv.SetOwnership(prod, osdserver.Ownership{Owner: "dba", Groups: map[string]osdserver.Access{"ci": osdserver.Read}}); err != nil {
		t.Fatal(err)
	}
	access := "rpc error: code = PermissionDenied desc = Access denied to volume " + prod
	eve.wantText("GET", "/v1/osd-volumes/"+prod, "", 404, access)
	if vols := decode[[]map[string]any](t, eve.do("GET", "/v1/osd-volumes?Name=app-production", "")); len(vols) != 0 {
		t.Fatalf("eve lists %v", vols)
	}
	if vols := decode[[]map[string]any](t, ci.do("GET", "/v1/osd-volumes?Name=app-production", "")); len(vols) != 1 {
		t.Fatalf("ci lists %v; want production, through the group ACL", vols)
	}
	admin.inspect(prod)

	s := snapID(t, ci.snap(prod, "ci-snap", true, map[string]string{"snapvol": "1"}))
	if o, _ := srv.OwnershipOf(s); o.Owner != "dba" || o.Groups["ci"] != osdserver.Read {
		t.Fatalf("the snapshot's ownership = %+v; want production's", o)
	}
	cl := snapID(t, ci.snap(s, "ci-clone", false, nil))
	if o, _ := srv.OwnershipOf(cl); o.Owner != "ci" || o.Groups != nil {
		t.Fatalf("the clone's ownership = %+v; want ci's, without ACLs", o)
	}
	// Read access is not write access: no update, no attach.
	ci.wantText("PUT", "/v1/osd-volumes/"+prod, `{"locator":{"volume_labels":{"x":"1"}}}`, 400, "rpc error: code = PermissionDenied desc = Cannot update volume")
	wantVolAndErr(t, set(ci, s, `{"action":{"attach":2}}`), s, "rpc error: code = PermissionDenied desc = Access denied to volume "+s)
	ci.want("DELETE", "/v1/osd-volumes/"+s, "", 200,
		fmt.Sprintf(`{"error":"rpc error: code = PermissionDenied desc = Cannot delete volume %s"}`+"\n", s))
	ci.want("DELETE", "/v1/osd-volumes/"+prod, "", 200,
		fmt.Sprintf(`{"error":"rpc error: code = PermissionDenied desc = Cannot delete volume %s"}`+"\n", prod))
	ci.want("DELETE", "/v1/osd-volumes/"+cl, "", 200, "{}\n")
	// An admin (the group "*") may; so may the owner.
	admin.want("DELETE", "/v1/osd-volumes/"+s, "", 200, "{}\n")
	dba.want("DELETE", "/v1/osd-volumes/"+prod, "", 200, "{}\n")

	// Collaborators, by name and "*", with write access.
	v := dba.create("shared", nil, spec1G)
	if err := srv.SetOwnership(v, osdserver.Ownership{Owner: "dba", Collaborators: map[string]osdserver.Access{"eve": osdserver.Write}}); err != nil {
		t.Fatal(err)
	}
	if r := set(eve, v, `{"locator":{"volume_labels":{"x":"1"}}}`); r.code != 200 || strings.Contains(r.body, "volume_response") {
		t.Fatalf("a collaborator with write access updating = %d %s", r.code, r.body)
	}
	ci.wantText("GET", "/v1/osd-volumes/"+v, "", 404, "rpc error: code = PermissionDenied desc = Access denied to volume "+v)
}

// TestMountsInItsOwnNamespace: the server mounts in a mount namespace of
// its own, as Portworx in its container: below MountRoot its mounts show
// on the host; anywhere else they are made, reported, and not seen.
func TestMountsInItsOwnNamespace(t *testing.T) {
	srv := osdserver.ForTest(t, osdserver.Config{})
	c := newClient(t, srv)
	id := c.create("v", nil, spec1G)
	if err := os.WriteFile(filepath.Join(srv.DataPath(id), "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	set(c, id, `{"action":{"attach":2}}`)
	shared, elsewhere := srv.MountDir(t), t.TempDir()
	for _, dir := range []string{shared, elsewhere} {
		if r := set(c, id, fmt.Sprintf(`{"action":{"mount":2,"mount_path":%q}}`, dir)); strings.Contains(r.body, "volume_response") {
			t.Fatalf("mount at %s = %s", dir, r.body)
		}
	}
	if paths := c.inspect(id)["attach_path"].([]any); len(paths) != 2 {
		t.Fatalf("attach_path = %v; want both", paths)
	}
	if b, err := os.ReadFile(filepath.Join(shared, "f")); err != nil || string(b) != "x" || !mountpoint.IsMountPoint(shared) {
		t.Fatalf("below MountRoot the host sees %q, %v", b, err)
	}
	if mountpoint.IsMountPoint(elsewhere) {
		t.Fatalf("the server's mount at %s shows in the host's namespace", elsewhere)
	}
	if _, err := os.Stat(filepath.Join(elsewhere, "f")); !os.IsNotExist(err) {
		t.Fatalf("the host sees the volume's data at %s: %v", elsewhere, err)
	}
	for _, dir := range []string{shared, elsewhere} {
		set(c, id, fmt.Sprintf(`{"action":{"mount":1,"mount_path":%q}}`, dir))
	}
	if mountpoint.IsMountPoint(shared) {
		t.Fatal("the unmount did not reach the host")
	}
	set(c, id, `{"action":{"attach":1}}`)
}

// TestOtherPorts: what Portworx's other ports answer an HTTP/1 client:
// the SDK's gRPC port an HTTP/2 SETTINGS frame, then the connection
// closes; the gossip port closes without a word.
func TestOtherPorts(t *testing.T) {
	srv := osdserver.ForTest(t, osdserver.Config{})
	hc := &http.Client{Timeout: 10 * time.Second}
	// net/http reads the frame as a malformed status line, or, when it
	// comes before the request is written, as an unsolicited response.
	if resp, err := hc.Get(srv.SDKEndpoint() + "/osd-volumes/versions"); err == nil {
		t.Fatalf("the gRPC-looking port answered HTTP %d", resp.StatusCode)
	}
	_, err := hc.Get(srv.GossipEndpoint() + "/osd-volumes/versions")
	if err == nil || !(errors.Is(err, io.EOF) || errors.Is(err, unix.ECONNRESET)) {
		t.Fatalf("the gossip-looking port: %v; want the connection closed without an answer", err)
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.SDKEndpoint(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 9)
	if _, err := io.ReadFull(conn, buf); err != nil || buf[3] != 4 {
		t.Fatalf("the first frame: % x, %v; want a SETTINGS frame (type 4) before the client says anything", buf, err)
	}
}
