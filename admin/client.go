package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"
)

// Client talks to the admin socket of a running snapvol.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client of the admin socket at path.
func NewClient(path string) *Client {
	return &Client{socket: path, http: &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

// ErrNotRunning means nothing answers on the admin socket.
var ErrNotRunning = errors.New("snapvol is not running")

func (c *Client) do(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, "http://snapvol"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if _, serr := os.Stat(c.socket); serr != nil {
			return fmt.Errorf("%w: no admin socket at %s (start it, or point --state-dir at its STATE_DIR)", ErrNotRunning, c.socket)
		}
		return fmt.Errorf("%w: %s does not answer: %v", ErrNotRunning, c.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e Error
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Version of the running snapvol.
func (c *Client) Version() (VersionInfo, error) {
	var v VersionInfo
	return v, c.do("GET", "/v1/version", nil, &v)
}

// Volumes lists every volume.
func (c *Client) Volumes() ([]Volume, error) {
	var v []Volume
	return v, c.do("GET", "/v1/volumes", nil, &v)
}

// CreateVolume makes an operator volume; access is "", "docker" or
// "secret" (the answer's Name is the secret name).
func (c *Client) CreateVolume(name, from, access string) (Volume, error) {
	var v Volume
	return v, c.do("POST", "/v1/volumes", CreateVolumeRequest{Name: name, From: from, Access: access}, &v)
}

// RemoveVolume removes a volume.
func (c *Client) RemoveVolume(name string) error {
	return c.do("DELETE", "/v1/volumes/"+url.PathEscape(name), nil, nil)
}

// Usage is snapvol df.
func (c *Client) Usage() (DiskUsage, error) {
	var u DiskUsage
	return u, c.do("GET", "/v1/df", nil, &u)
}

// Snapshots lists the snapshots of source.
func (c *Client) Snapshots(source string) ([]Snapshot, error) {
	var v []Snapshot
	return v, c.do("GET", "/v1/snapshots/"+url.PathEscape(source), nil, &v)
}

// CreateSnapshot registers a snapshot of source (or of from) as name.
func (c *Client) CreateSnapshot(source, name, from string, replace bool) (Snapshot, error) {
	var v Snapshot
	return v, c.do("POST", "/v1/snapshots/"+url.PathEscape(source), CreateSnapshotRequest{Name: name, From: from, Replace: replace}, &v)
}

// RemoveSnapshot deletes snapshot source@name.
func (c *Client) RemoveSnapshot(source, name string) error {
	return c.do("DELETE", "/v1/snapshots/"+url.PathEscape(source)+"/"+url.PathEscape(name), nil, nil)
}

// Schedules lists the schedules.
func (c *Client) Schedules() ([]Schedule, error) {
	var v []Schedule
	return v, c.do("GET", "/v1/schedules", nil, &v)
}

// SetSchedule snapshots source every every, keeping keep.
func (c *Client) SetSchedule(source string, every time.Duration, keep int) (Schedule, error) {
	var v Schedule
	return v, c.do("PUT", "/v1/schedules/"+url.PathEscape(source), ScheduleRequest{Every: every.String(), Keep: keep}, &v)
}

// ClearSchedule turns the schedule of source off.
func (c *Client) ClearSchedule(source string) error {
	return c.do("DELETE", "/v1/schedules/"+url.PathEscape(source), nil, nil)
}

// Metrics copies the running snapvol's metrics, in the Prometheus text
// format, to w.
func (c *Client) Metrics(w io.Writer) error {
	resp, err := c.get("/metrics", "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// MetricsHandler answers a scrape with the running snapvol's metrics: a
// host Prometheus reaches a plugin that has no network through it.
func (c *Client) MetricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := c.get("/metrics", r.Header.Get("Accept"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for _, h := range []string{"Content-Type", "Content-Encoding"} {
			if v := resp.Header.Get(h); v != "" {
				w.Header().Set(h, v)
			}
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})
}

func (c *Client) get(path, accept string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, "http://snapvol"+path, nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if _, serr := os.Stat(c.socket); serr != nil {
			return nil, fmt.Errorf("%w: no admin socket at %s (start it, or point --state-dir at its STATE_DIR)", ErrNotRunning, c.socket)
		}
		return nil, fmt.Errorf("%w: %s does not answer: %v", ErrNotRunning, c.socket, err)
	}
	return resp, nil
}

// Volume is one volume, as snapvol volume inspect shows it.
func (c *Client) Volume(name string) (Volume, error) {
	var v Volume
	return v, c.do("GET", "/v1/volumes/"+url.PathEscape(name), nil, &v)
}

// VolumesJSON copies the JSON array of every volume to w as the plugin
// wrote it (snapvol ls --json): decoding 10,000 rows only to encode them
// again would cost more than the request.
func (c *Client) VolumesJSON(w io.Writer) error {
	resp, err := c.get("/v1/volumes", "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e Error
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("GET /v1/volumes: %s", resp.Status)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// Schedule is the schedule of source; ok is false when it has none.
func (c *Client) Schedule(source string) (s Schedule, ok bool, err error) {
	all, err := c.Schedules()
	if err != nil {
		return Schedule{}, false, err
	}
	for _, s := range all {
		if s.Source == source {
			return s, true, nil
		}
	}
	return Schedule{}, false, nil
}
