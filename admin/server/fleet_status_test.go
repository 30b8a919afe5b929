package server

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/snapvol/snapvol/driver"
	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/fleet"
	"github.com/snapvol/snapvol/internal/route"
	"github.com/snapvol/snapvol/metrics"
	"github.com/snapvol/snapvol/storage"
)

// fleetStatusBefore is the two tables the fleet's admin routes had before
// they were served by route.Handle on this wire: fleet/service.go's reply
// (push, pull, replicas) and plugin/fleet.go's pushedScheduleHandler
// (PUT /v1/schedules/{source}/push), which differed only in that the
// schedule's named a missing source 404.
func fleetStatusBefore(err error, schedule bool) int {
	switch {
	case errors.Is(err, names.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, fleet.ErrPublish):
		return http.StatusForbidden
	case !schedule && errors.Is(err, fleet.ErrRegistry):
		return http.StatusBadGateway
	case schedule && (errors.Is(err, driver.ErrNoSource) || errors.Is(err, storage.ErrNotFound)):
		return http.StatusNotFound
	}
	return http.StatusInternalServerError
}

// The fleet's errors get from the one error table (metrics/classes.go)
// the status their own tables gave: PUBLISH refusing a push 403, a
// registry failing 502, a bad request 400, a missing source 404 (the
// schedule's; push and pull now say 404 for it too, as every other route).
func TestFleetStatusFromTheOneTable(t *testing.T) {
	netErr := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	for _, c := range []struct {
		err      error
		schedule bool
		outcome  string
	}{
		{fmt.Errorf("%w: prod@x may not leave this host (PUBLISH=%q)", fleet.ErrPublish, ""), false, "not_published"},
		{fmt.Errorf("%w: prod@x may not leave this host (PUBLISH=%q)", fleet.ErrPublish, ""), true, "not_published"},
		{fmt.Errorf("%w r/app: listing tags: %w", fleet.ErrRegistry, netErr), false, "registry"},
		{fmt.Errorf("%w: %q: want SOURCE@REF", names.ErrInvalid, "prod"), false, "invalid"},
		{fmt.Errorf("%w: %q: want REGISTRY/REPO[:TAG]", names.ErrInvalid, "x"), true, "invalid"},
		{fmt.Errorf("%w: unexpected EOF", errBadRequest), true, "invalid"},
		{fmt.Errorf("source %q: %w", "prod", driver.ErrNoSource), true, "no_source"},
		{fmt.Errorf("source %q: %w", "prod", storage.ErrNotFound), true, "error"},
		{errors.New("this backend cannot send snapshots"), false, "error"},
		{errors.New("this backend cannot send snapshots"), true, "error"},
	} {
		if got, want := status(c.err), fleetStatusBefore(c.err, c.schedule); got != want {
			t.Errorf("%v (schedule %v): status %d, before %d", c.err, c.schedule, got, want)
		}
		if got := metrics.Outcome(c.err); got != c.outcome {
			t.Errorf("%v: outcome %q, want %q", c.err, got, c.outcome)
		}
	}
	// A pull a full pool or a deadline cut short keeps that outcome (the
	// fleet rows come after them), so the VolumeDriver socket's labels for
	// them are what they were.
	full := fmt.Errorf("%w r/app: tag t: applying layer: %w", fleet.ErrRegistry, storage.ErrNoSpace)
	if got := metrics.Outcome(full); got != "no_space" {
		t.Errorf("%v: outcome %q, want no_space", full, got)
	}
}

// A route added with Server.Routes (the fleet's) answers on the admin
// wire: the error as admin.Error JSON with the table's status.
func TestRoutesServeOnTheAdminWire(t *testing.T) {
	s := &Server{extra: map[string]http.Handler{}}
	s.Routes(func(sk route.Socket) {
		route.Handle(sk, "POST /v1/fleet/push", "push", func(*http.Request, *struct{ Snapshot string }) (any, error) {
			return nil, fmt.Errorf("%w: prod@latest may not leave this host", fleet.ErrPublish)
		})
	})
	mux := http.NewServeMux()
	sk := route.Socket{Mux: mux, Wire: wire{}}
	for _, add := range s.more {
		add(sk)
	}
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest("POST", "/v1/fleet/push", strings.NewReader(`{"Snapshot":"prod@latest"}`)))
	if want := `{"error":"not allowed by PUBLISH: prod@latest may not leave this host"}` + "\n"; w.Code != http.StatusForbidden || w.Body.String() != want {
		t.Errorf("push PUBLISH refuses: %d %q, want 403 %q", w.Code, w.Body.String(), want)
	}
}
