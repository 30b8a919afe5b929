package portworx

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/libopenstorage/openstorage/api"
	"github.com/libopenstorage/openstorage/api/client"

	"github.com/snapvol/snapvol/storage"
)

// The REST paths of the OpenStorage volume API (api/server/volume.go).
const (
	apiVersion = "v1"
	volumePath = api.OsdVolumePath
	snapPath   = api.OsdSnapshotPath
)

// rest sends OpenStorage REST requests built with api/client.
//
// api/client/volume's VolumeDriver is not used directly because, in
// v1.0.0, it cannot do what the plugin must: its requests carry no bearer
// token (only "Authorization: Basic"), and they go through an http.Client
// cached per host with a 5 minute response timeout and no context, so a
// hung server would hold a Docker request far past its 30 s limit. The
// requests below are the ones that client sends — same paths, query
// options, bodies and User-Agent — built with the same api/client.Request,
// on an http.Client whose every call is bounded by a context.
type rest struct {
	endpoint  string // as configured, for messages
	base      *url.URL
	transport *http.Transport
	userAgent string
	token     string
	timeout   time.Duration
}

func newREST(endpoint, driver, token string, callTimeout, dialTimeout time.Duration) (*rest, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme == "" {
		return nil, fmt.Errorf("PX_ENDPOINT=%q: not a URL like http://127.0.0.1:9001 or unix:///var/lib/osd/driver/pxd.sock", endpoint)
	}
	dialer := &net.Dialer{Timeout: dialTimeout}
	// No response timeout here: each call's context bounds it, short for
	// questions, long for work (see call and callWork).
	tr := &http.Transport{
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}
	switch u.Scheme {
	case "unix":
		sock := u.Path
		if sock == "" {
			return nil, fmt.Errorf("PX_ENDPOINT=%q: a unix endpoint needs a socket path, e.g. unix:///var/lib/osd/driver/pxd.sock", endpoint)
		}
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", sock)
		}
		// The host part is only a placeholder once the dial is fixed.
		u = &url.URL{Scheme: "http", Host: "unix.sock", Path: "/"}
	case "http", "https":
		if u.Host == "" {
			return nil, fmt.Errorf("PX_ENDPOINT=%q: no host", endpoint)
		}
		tr.DialContext = dialer.DialContext
		if u.Path == "" {
			u.Path = "/"
		}
	default:
		return nil, fmt.Errorf("PX_ENDPOINT=%q: scheme must be http, https or unix", endpoint)
	}
	// The OpenStorage server picks the volume driver from the first word
	// of the User-Agent, as api/client/volume's clients send it.
	return &rest{endpoint: endpoint, base: u, transport: tr, userAgent: driver + "/" + apiVersion, token: token, timeout: callTimeout}, nil
}

// ctxTransport binds every request to the call's context, which
// api/client.Request cannot take itself.
type ctxTransport struct {
	ctx context.Context
	rt  http.RoundTripper
}

func (t ctxTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return t.rt.RoundTrip(r.WithContext(t.ctx))
}

// call is one question to the server (inspect, enumerate): it gets the
// per-call budget (CallTimeout), so a hung server turns into
// ErrUnavailable quickly. what names the operation and its object for
// errors; build adds the resource, instance, options and body.
func (r *rest) call(ctx context.Context, what, verb, version string, build func(*client.Request) *client.Request, out interface{}) error {
	cctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	return r.do(ctx, cctx, what, verb, version, build, out)
}

// callWork is a request that makes the server work (create, snapshot,
// clone, attach, mount, detach, unmount, update, delete): the server ties
// that work to the request, and cancels it when the request ends, so it
// gets no budget of its own but the caller's (see Backend.work), and is
// never cut off midway by the per-call budget.
func (r *rest) callWork(ctx context.Context, what, verb, version string, build func(*client.Request) *client.Request, out interface{}) error {
	return r.do(ctx, ctx, what, verb, version, build, out)
}

func (r *rest) do(ctx, cctx context.Context, what, verb, version string, build func(*client.Request) *client.Request, out interface{}) error {
	hc := &http.Client{Transport: ctxTransport{ctx: cctx, rt: r.transport}}
	req := client.NewRequest(hc, r.base, verb, version, "", r.userAgent)
	if r.token != "" {
		req.SetHeader("Authorization", "Bearer "+r.token)
	}
	start := time.Now()
	resp := build(req).Do()
	body, err := resp.Body()
	code := resp.StatusCode()
	if code == 0 {
		return r.transportError(ctx, cctx, what, err, time.Since(start))
	}
	if code < 200 || code > 299 {
		return r.classify(what, code, string(body))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s: %w: the server at PX_ENDPOINT=%s answered HTTP %d with something other than OpenStorage's JSON (%v): %.120q",
			what, ErrEndpoint, r.endpoint, code, err, body)
	}
	return nil
}

// transportError turns a request that got no HTTP answer into
// ErrUnavailable, saying whether the server was unreachable or too slow.
func (r *rest) transportError(ctx, cctx context.Context, what string, err error, took time.Duration) error {
	var uerr *url.Error
	if err == nil || !errors.As(err, &uerr) {
		// A request that could not even be built: a bug, not the network.
		return fmt.Errorf("%s: %v", what, err)
	}
	switch {
	case ctx.Err() != nil && cctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("%s: %w: the OpenStorage server at %s did not answer before the operation's deadline (%s)", what, storage.ErrUnavailable, r.endpoint, took.Round(time.Millisecond))
	case cctx.Err() != nil || isTimeout(err):
		return fmt.Errorf("%s: %w: the OpenStorage server at %s did not answer within %s; is Portworx healthy?", what, storage.ErrUnavailable, r.endpoint, took.Round(time.Millisecond))
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("%s: %w: nothing is serving the OpenStorage API at %s (PX_ENDPOINT); is Portworx running?", what, storage.ErrUnavailable, r.endpoint)
	case notHTTP1(err):
		// Something answered, in another protocol: Portworx's SDK port
		// (9020) is gRPC and opens with an HTTP/2 SETTINGS frame; a TLS
		// port answers a plain request with a TLS alert, a plain one a
		// TLS handshake with HTTP. That is a setting to fix, never an
		// outage to wait out.
		return fmt.Errorf("%s: %w: the server at PX_ENDPOINT=%s does not speak HTTP/1 (%v): %s",
			what, ErrEndpoint, r.endpoint, uerr.Err, portsHint)
	case unreachable(err):
		return fmt.Errorf("%s: %w: the OpenStorage server at %s (PX_ENDPOINT) is unreachable: %w", what, storage.ErrUnavailable, r.endpoint, uerr.Err)
	default:
		// Connected, and then no HTTP answer: closed or reset (Portworx's
		// gossip port 9002 hangs up on any HTTP request), or bytes before
		// the request was even sent (net/http's "unsolicited response":
		// a gRPC port's SETTINGS frame, when it wins the race). While
		// serving that looks the same as a server dying in the middle of
		// this request, so it is an outage here; Ping, which asks again
		// on new connections, tells the two apart (errNoAnswer).
		return fmt.Errorf("%s: %w: %w: the server at %s (PX_ENDPOINT) gave no HTTP answer: %v", what, storage.ErrUnavailable, errNoAnswer, r.endpoint, uerr.Err)
	}
}

// unreachable recognises a connection that could not be made: no route,
// no such host; refusals and timeouts are told apart before.
func unreachable(err error) bool {
	var op *net.OpError
	var dns *net.DNSError
	return errors.As(err, &dns) || errors.As(err, &op) && op.Op == "dial"
}

// probe says what the server at the endpoint sends on a new connection
// before it is asked anything, within wait: nothing (as any HTTP server),
// the first bytes (an HTTP/2 server's SETTINGS frame: a gRPC port), or
// that it closed the connection. "" when it cannot tell (https, or the
// dial failed).
func (r *rest) probe(ctx context.Context, wait time.Duration) string {
	if r.base.Scheme != "http" {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	c, err := r.transport.DialContext(ctx, "tcp", r.base.Host)
	if err != nil {
		return ""
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetReadDeadline(d)
	}
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	switch {
	case n > 0 && n >= 9 && buf[3] == 4 && buf[4] == 0:
		return fmt.Sprintf("it speaks first, with an HTTP/2 SETTINGS frame (% x), as a gRPC server does", buf[:9])
	case n > 0:
		return fmt.Sprintf("it speaks first (%q), as no HTTP/1 server does", buf[:n])
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return "it closes a new connection without a word"
	}
	return ""
}

// portsHint says where Portworx's REST v1 API is.
const portsHint = "point PX_ENDPOINT at Portworx's REST API (http://HOST:9001; 17001 on OpenShift, 9011 with operators before 1.2), not the SDK's gRPC port 9020, its REST gateway 9021 or the gossip port 9002"

// errNoAnswer marks a connection the server closed (or reset) without
// answering: an outage while serving, a wrong port if it is all a new
// connection ever gets (see Ping).
var errNoAnswer = errors.New("connection closed without an answer")

// notHTTP1 recognises an answer that is not HTTP/1: bytes net/http cannot
// read as a status line ("malformed HTTP response", an HTTP/2 frame, a
// TLS alert), HTTP to an https:// endpoint, or a TLS handshake refused.
func notHTTP1(err error) bool {
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return true
	}
	m := err.Error()
	return strings.Contains(m, "malformed HTTP") || strings.Contains(m, "server gave HTTP response to HTTPS client") ||
		strings.Contains(m, "tls: ")
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// The calls below are those of api/client/volume's volumeClient.

func (r *rest) inspect(ctx context.Context, id string) (*api.Volume, error) {
	v, _, err := r.inspectRaw(ctx, id)
	return v, err
}

// inspectRaw is inspect that also returns the volume's spec as the server
// sent it, with the fields openstorage v1.0.0's types do not know.
func (r *rest) inspectRaw(ctx context.Context, id string) (*api.Volume, map[string]json.RawMessage, error) {
	var raws []json.RawMessage
	what := fmt.Sprintf("inspecting volume %s", id)
	err := r.call(ctx, what, http.MethodGet, apiVersion, func(q *client.Request) *client.Request {
		return q.Resource(volumePath).QueryOption(api.OptVolumeID, id)
	}, &raws)
	if err != nil {
		return nil, nil, err
	}
	for _, raw := range raws {
		var v api.Volume
		var withSpec struct {
			Spec map[string]json.RawMessage `json:"spec"`
		}
		if json.Unmarshal(raw, &v) != nil || v.Id != id {
			continue
		}
		if err := json.Unmarshal(raw, &withSpec); err != nil {
			return nil, nil, fmt.Errorf("%s: %w: %v", what, ErrEndpoint, err)
		}
		if withSpec.Spec == nil {
			withSpec.Spec = map[string]json.RawMessage{}
		}
		return &v, withSpec.Spec, nil
	}
	return nil, nil, fmt.Errorf("%s: %w on the OpenStorage server", what, storage.ErrNotFound)
}

func (r *rest) enumerate(ctx context.Context, what string, locator *api.VolumeLocator, configLabels map[string]string) ([]*api.Volume, error) {
	var vols []*api.Volume
	err := r.call(ctx, what, http.MethodGet, apiVersion, func(q *client.Request) *client.Request {
		q = q.Resource(volumePath)
		if locator.Name != "" {
			q = q.QueryOption(api.OptName, locator.Name)
		}
		if len(locator.VolumeLabels) != 0 {
			q = q.QueryOptionLabel(api.OptLabel, locator.VolumeLabels)
		}
		if len(configLabels) != 0 {
			q = q.QueryOptionLabel(api.OptConfigLabel, configLabels)
		}
		return q
	}, &vols)
	return vols, err
}

func (r *rest) snapEnumerate(ctx context.Context, what string, ids []string, labels map[string]string) ([]*api.Volume, error) {
	var vols []*api.Volume
	err := r.call(ctx, what, http.MethodGet, apiVersion, func(q *client.Request) *client.Request {
		q = q.Resource(snapPath)
		for _, id := range ids {
			q = q.QueryOption(api.OptVolumeID, id)
		}
		if len(labels) != 0 {
			q = q.QueryOptionLabel(api.OptLabel, labels)
		}
		return q
	}, &vols)
	return vols, err
}

func (r *rest) create(ctx context.Context, what string, req *api.VolumeCreateRequest) (string, error) {
	var resp api.VolumeCreateResponse
	err := r.callWork(ctx, what, http.MethodPost, apiVersion, func(q *client.Request) *client.Request {
		return q.Resource(volumePath).Body(req)
	}, &resp)
	if err != nil {
		return "", err
	}
	if resp.VolumeResponse != nil && resp.VolumeResponse.Error != "" {
		return "", r.classify(what, http.StatusOK, resp.VolumeResponse.Error)
	}
	if resp.Id == "" {
		return "", fmt.Errorf("%s: the OpenStorage server returned no volume ID", what)
	}
	return resp.Id, nil
}

func (r *rest) snapshot(ctx context.Context, what string, req *api.SnapCreateRequest) (string, error) {
	var resp api.SnapCreateResponse
	err := r.callWork(ctx, what, http.MethodPost, apiVersion, func(q *client.Request) *client.Request {
		return q.Resource(snapPath).Body(req)
	}, &resp)
	if err != nil {
		return "", err
	}
	cr := resp.VolumeCreateResponse
	if cr != nil && cr.VolumeResponse != nil && cr.VolumeResponse.Error != "" {
		return "", r.classify(what, http.StatusOK, cr.VolumeResponse.Error)
	}
	if cr == nil || cr.Id == "" {
		return "", fmt.Errorf("%s: the OpenStorage server returned no snapshot ID", what)
	}
	return cr.Id, nil
}

func (r *rest) delete(ctx context.Context, what, id string) error {
	var resp api.VolumeResponse
	err := r.callWork(ctx, what, http.MethodDelete, apiVersion, func(q *client.Request) *client.Request {
		return q.Resource(volumePath).Instance(id)
	}, &resp)
	if err != nil {
		return err
	}
	if resp.Error != "" {
		return r.classify(what, http.StatusOK, resp.Error)
	}
	return nil
}

// set sends a VolumeSetRequest: attach, detach, mount, unmount or an
// update of the locator and spec.
func (r *rest) set(ctx context.Context, what, id string, req *api.VolumeSetRequest) (*api.Volume, error) {
	return r.setBody(ctx, what, id, req)
}

// setBody sends any JSON body as a VolumeSetRequest: an update built from
// the server's own JSON (see Backend.update) carries fields openstorage
// v1.0.0's types do not know.
func (r *rest) setBody(ctx context.Context, what, id string, req interface{}) (*api.Volume, error) {
	var resp api.VolumeSetResponse
	err := r.callWork(ctx, what, http.MethodPut, apiVersion, func(q *client.Request) *client.Request {
		return q.Resource(volumePath).Instance(id).Body(req)
	}, &resp)
	if err != nil {
		return nil, err
	}
	if resp.VolumeResponse != nil && resp.VolumeResponse.Error != "" {
		return nil, r.classify(what, http.StatusOK, resp.VolumeResponse.Error)
	}
	return resp.Volume, nil
}

// versions asks which API versions the server speaks; the route has no
// version prefix.
func (r *rest) versions(ctx context.Context) ([]string, error) {
	var vs []string
	err := r.call(ctx, "asking the OpenStorage server for its API versions", http.MethodGet, "", func(q *client.Request) *client.Request {
		return q.Resource(volumePath + "/versions")
	}, &vs)
	return vs, err
}
