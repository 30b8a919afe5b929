package test

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapvol/snapvol/test/osdserver"
)

// switchable is PX_ENDPOINT as a test can turn it: the OpenStorage
// server, or what a wrong endpoint answers (a router's 404, as Portworx's
// SDK REST gateway on port 9021 does).
type switchable struct {
	url   string
	wrong atomic.Bool
}

func newSwitchable(t *testing.T, srv *osdserver.Server) *switchable {
	s := &switchable{}
	target, err := url.Parse(srv.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.wrong.Load() {
			http.Error(w, "Not Found", http.StatusNotFound)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	s.url = hs.URL
	return s
}

// TestPortworxWrongEndpoint: an endpoint that answers but is not
// OpenStorage's REST API (a router's 404, Portworx's gRPC or gossip
// port), or a token the server refuses, is found at start and named, with
// the REST port, and the plugin does not serve on it; while serving, a
// Remove whose clone cannot be deleted keeps the volume's record (a
// router's "404 page not found" once read as "already gone").
func TestPortworxWrongEndpoint(t *testing.T) {
	srv := osdserver.ForTest(t, osdserver.Config{Token: pxToken})
	_, prodSum := pxProduction(t, srv)
	sw := newSwitchable(t, srv)
	p := StartPlugin(t, pxEnv(t, srv, map[string]string{"PX_ENDPOINT": sw.url}))
	mp := p.MustMount("app-production@latest", "m")
	if got := TreeSum(t, mp); got != prodSum {
		t.Fatal("the clone differs from production")
	}
	mustDo(t, p.Unmount("app-production@latest", "m"))

	sw.wrong.Store(true)
	err := p.Remove("app-production@latest")
	if err == nil || !strings.Contains(err.Error(), "PX_ENDPOINT") || !strings.Contains(err.Error(), "app-production@latest") {
		t.Fatalf("remove through a wrong endpoint: %v; want a refusal naming the volume and PX_ENDPOINT", err)
	}
	if _, err := p.Get("app-production@latest"); err != nil {
		t.Fatalf("the record went with a failed remove: %v", err)
	}
	if n := len(pxCloneIDs(srv)); n != 1 {
		t.Fatalf("%d clones on the server; want the one still recorded", n)
	}

	// A start on it is refused, naming the setting.
	p.Stop()
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"PX_ENDPOINT": sw.url}, "PX_ENDPOINT"},
		{map[string]string{"PX_ENDPOINT": srv.Endpoint(), "PX_TOKEN": "rotated"}, "PX_TOKEN"},
		// Portworx's SDK gRPC port answers HTTP/2 frames, its gossip port
		// hangs up: wrong endpoints, not outages (issue 22 item 1).
		{map[string]string{"PX_ENDPOINT": srv.SDKEndpoint(), "PX_TOKEN": pxToken}, "9001"},
		{map[string]string{"PX_ENDPOINT": srv.GossipEndpoint(), "PX_TOKEN": pxToken}, "9001"},
	} {
		for k, v := range c.env {
			p.Env[k] = v
		}
		exited := p.Spawn()
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			p.Kill()
			t.Fatalf("%v: the plugin kept running:\n%s", c.env, p.Log())
		}
		p.Kill()
		if log := p.Log(); !strings.Contains(log, c.want) || !strings.Contains(log, "cannot be used") {
			t.Errorf("%v: the log does not say %s cannot be used:\n%s", c.env, c.want, log)
		}
	}

	// Fixed: the same volume is removed, clone and all.
	sw.wrong.Store(false)
	p.Env["PX_ENDPOINT"], p.Env["PX_TOKEN"] = sw.url, pxToken
	p.Start()
	if err := p.Remove("app-production@latest"); err != nil {
		t.Fatalf("remove with the endpoint fixed: %v", err)
	}
	checkPXLeftovers(t, srv)
}

// TestPortworxHiddenSource: with no PX_TOKEN on a secured cluster (a
// guest) or a non-admin token, a private source is hidden, not missing:
// the plugin says why and what token it needs, never "create it first",
// which the server would refuse ("already exists and is owned by another
// user").
func TestPortworxHiddenSource(t *testing.T) {
	srv := osdserver.ForTest(t, osdserver.Config{Token: pxToken, Users: map[string]osdserver.User{"ci-token": {Name: "ci", Groups: []string{"ci"}}}})
	prodID, _ := pxProduction(t, srv)
	if err := srv.SetOwnership(prodID, osdserver.Ownership{Owner: "dba"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ token, want string }{{"", "PX_TOKEN is not set"}, {"ci-token", "admin token"}} {
		p := StartPlugin(t, pxEnv(t, srv, map[string]string{"PX_TOKEN": c.token}))
		for _, name := range []string{"app-production@latest", "app-production@now+x"} {
			err := p.Create(name, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "create it first") {
				t.Errorf("token %q: create %s = %v; want the backend's hint saying %q, not \"create it first\"", c.token, name, err, c.want)
			}
		}
		p.Stop()
	}
}
