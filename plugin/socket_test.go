package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/driver"
	"github.com/snapvol/snapvol/metrics"
)

// stubDriver answers every request from its name alone: "bad" fails,
// anything else succeeds with a fixed answer.
type stubDriver struct{}

func stubErr(name string) error {
	if name == "bad" {
		return fmt.Errorf("%w: %q: no such thing", driver.ErrNoSuchVolume, name)
	}
	return nil
}

func (stubDriver) Create(r *volume.CreateRequest) error { return stubErr(r.Name) }
func (stubDriver) Remove(r *volume.RemoveRequest) error { return stubErr(r.Name) }
func (stubDriver) Unmount(r *volume.UnmountRequest) error {
	return stubErr(r.Name)
}
func (stubDriver) List() (*volume.ListResponse, error) {
	return &volume.ListResponse{Volumes: []*volume.Volume{{Name: "a", CreatedAt: "2026-01-02T03:04:05Z"}}}, nil
}
func (stubDriver) Get(r *volume.GetRequest) (*volume.GetResponse, error) {
	if err := stubErr(r.Name); err != nil {
		return nil, err
	}
	return &volume.GetResponse{Volume: &volume.Volume{Name: r.Name, Mountpoint: "/m/" + r.Name, Status: map[string]any{"mounts": 1}}}, nil
}
func (stubDriver) Path(r *volume.PathRequest) (*volume.PathResponse, error) {
	if err := stubErr(r.Name); err != nil {
		return nil, err
	}
	return &volume.PathResponse{Mountpoint: "/m/" + r.Name}, nil
}
func (stubDriver) Mount(r *volume.MountRequest) (*volume.MountResponse, error) {
	if err := stubErr(r.Name); err != nil {
		return nil, err
	}
	return &volume.MountResponse{Mountpoint: "/m/" + r.Name + "/" + r.ID}, nil
}
func (stubDriver) Capabilities() *volume.CapabilitiesResponse {
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: "local"}}
}

// unixClient is an HTTP client of the unix socket at path.
func unixClient(path string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

func serveOn(t *testing.T, serve func(net.Listener) error) *http.Client {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = serve(l) }()
	t.Cleanup(func() { l.Close() })
	return unixClient(path)
}

type reply struct {
	status      int
	contentType string
	body        string
}

func call(t *testing.T, c *http.Client, method, path, body string) reply {
	t.Helper()
	req, err := http.NewRequest(method, "http://plugin"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header.Get("Content-Type"), string(data)}
}

// The VolumeDriver protocol is the helper's, byte for byte: every route,
// success, driver error, malformed and empty bodies, unknown paths.
func TestVolumeAPIMatchesHelper(t *testing.T) {
	helper := serveOn(t, volume.NewHandler(stubDriver{}).Serve)
	log := logrus.New()
	log.SetOutput(io.Discard)
	m := metrics.New(metrics.Config{})
	ours := serveOn(t, volumeServer(volumeHandler(stubDriver{}, m), log).Serve)

	routes := []string{"Create", "Remove", "Mount", "Unmount", "Path", "Get", "List", "Capabilities"}
	bodies := []string{`{"Name":"v","ID":"id1","Opts":{"a":"b"}}`, `{"Name":"bad","ID":"x"}`, `{`, ``, `[]`, `{"Name":1}`}
	n := 0
	for _, r := range routes {
		for _, b := range bodies {
			for _, method := range []string{"POST", "GET"} {
				path := "/VolumeDriver." + r
				want, got := call(t, helper, method, path, b), call(t, ours, method, path, b)
				if want != got {
					t.Errorf("%s %s %q:\n helper %+v\n ours   %+v", method, path, b, want, got)
				}
				n++
			}
		}
	}
	for _, p := range []string{"/Plugin.Activate", "/VolumeDriver.Nope", "/", "/VolumeDriver.Get/x"} {
		want, got := call(t, helper, "POST", p, "{}"), call(t, ours, "POST", p, "{}")
		if want != got {
			t.Errorf("POST %s:\n helper %+v\n ours   %+v", p, want, got)
		}
	}
	if got := requestCount(t, m, "get", "not_found"); got != 2 {
		t.Errorf("get not_found requests counted %v, want 2", got)
	}
	if got := requestCount(t, m, "create", "bad_request"); got != 8 {
		t.Errorf("create bad_request requests counted %v, want 8", got)
	}
	t.Logf("%d requests answered alike", n+4)
}

// requestCount is how many requests of op ended with outcome.
func requestCount(t *testing.T, m *metrics.Metrics, op, outcome string) uint64 {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "snapvol_request_duration_seconds" {
			continue
		}
		for _, mt := range f.GetMetric() {
			l := map[string]string{}
			for _, lp := range mt.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["op"] == op && l["outcome"] == outcome {
				return mt.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}

// A body over MaxRequestBody is refused as the helper refuses malformed
// JSON, without reading the rest; one under it is served.
func TestSocketBodyLimit(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	c := serveOn(t, volumeServer(volumeHandler(stubDriver{}, nil), log).Serve)
	big := `{"Name":"` + strings.Repeat("a", MaxRequestBody) + `"}`
	if got := call(t, c, "POST", "/VolumeDriver.Create", big); got.status != http.StatusBadRequest || !strings.Contains(got.body, "too large") {
		t.Fatalf("a %d-byte Create: %+v", len(big), got)
	}
	ok := `{"Name":"` + strings.Repeat("a", MaxRequestBody-100) + `"}`
	if got := call(t, c, "POST", "/VolumeDriver.Create", ok); got.status != http.StatusOK {
		t.Fatalf("a %d-byte Create: %+v", len(ok), got)
	}
}
