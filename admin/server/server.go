// Package server serves the operator's API of a running snapvol (package
// admin: its wire types and client): HTTP with JSON bodies over a unix
// socket in STATE_DIR (root only, 0600), which the snapvol command talks
// to. STATE_DIR is a host directory in both modes, so the host's command
// reaches the managed plugin's socket too. SOURCES does not govern it: it
// is the operator's. It is apart from package admin so that the command
// links none of the daemon (the driver, bbolt, the backends).
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/snapvol/snapvol/admin"
	"github.com/snapvol/snapvol/driver"
	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/internal/route"
	"github.com/snapvol/snapvol/metrics"
	"github.com/snapvol/snapvol/version"
)

// maxBody bounds a request body: the largest real one is a few hundred
// bytes.
const maxBody = 64 << 10

// Server serves the admin API of one driver: its Operator.
type Server struct {
	op   *driver.Operator
	http *http.Server
	// Extra handlers (e.g. /metrics) by pattern.
	extra map[string]http.Handler
	// more adds routes on this socket's wire beside the operator's.
	more []func(route.Socket)
	// What snapvol version reports of the running plugin.
	backend string
	started time.Time
}

// New returns the admin API of d, which serves backend (local, portworx).
func New(d *driver.Driver, backend string) *Server {
	return &Server{op: d.Operator(), extra: map[string]http.Handler{}, backend: backend, started: time.Now()}
}

// Handle adds a handler at pattern (before Serve).
func (s *Server) Handle(pattern string, h http.Handler) { s.extra[pattern] = h }

// Routes has add register routes (route.Handle) when Serve starts, on
// this socket's wire: the fleet's, which the plugin adds, so their bodies,
// answers and error statuses are the operator API's.
func (s *Server) Routes(add func(route.Socket)) { s.more = append(s.more, add) }

// Listen binds the socket at path, root only, replacing a stale one.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	// The socket is made 0600 from the start (not chmod'ed after), so no
	// other user can connect in between.
	old := umask(0o177)
	l, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	return l, nil
}

// Serve answers on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	mux := http.NewServeMux()
	sk := route.Socket{Mux: mux, Wire: wire{}}
	s.routes(sk)
	for _, add := range s.more {
		add(sk)
	}
	for p, h := range s.extra {
		mux.Handle(p, h)
	}
	s.http = &http.Server{
		Handler:           http.MaxBytesHandler(mux, maxBody),
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, IdleTimeout: time.Minute,
	}
	err := s.http.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// routes are the operator's API, one route a call of the Operator, which
// makes each a request of the operator (driver/request.go).
func (s *Server) routes(sk route.Socket) {
	type none = route.None
	route.Handle(sk, "GET /v1/version", "version", func(*http.Request, *none) (any, error) { return s.version(), nil })
	// snapvol ls: the array is written in one piece, one volume a line,
	// which the command copies through for --json (admin.AppendVolumes).
	route.Handle(sk, "GET /v1/volumes", "ls", func(r *http.Request, _ *none) (any, error) {
		vols := s.op.Volumes(r.Context())
		return admin.AppendVolumes(make([]byte, 0, 400*len(vols)+8), vols), nil
	})
	route.Handle(sk, "GET /v1/volumes/{name}", "volume inspect", func(r *http.Request, _ *none) (any, error) {
		return s.op.Volume(r.Context(), r.PathValue("name"))
	})
	route.Handle(sk, "POST /v1/volumes", "volume create", func(r *http.Request, req *admin.CreateVolumeRequest) (any, error) {
		return s.op.Create(r.Context(), req.Name, req.From, req.Access)
	})
	route.Handle(sk, "DELETE /v1/volumes/{name}", "volume rm", func(r *http.Request, _ *none) (any, error) {
		return nil, s.op.Remove(r.Context(), r.PathValue("name"))
	})
	route.Handle(sk, "GET /v1/df", "df", func(r *http.Request, _ *none) (any, error) { return s.op.Usage(r.Context()) })
	route.Handle(sk, "GET /v1/snapshots/{source}", "snapshot ls", func(r *http.Request, _ *none) (any, error) {
		return s.op.SnapshotsOf(r.Context(), r.PathValue("source"))
	})
	route.Handle(sk, "POST /v1/snapshots/{source}", "snapshot create", func(r *http.Request, req *admin.CreateSnapshotRequest) (any, error) {
		return s.op.CreateSnapshot(r.Context(), r.PathValue("source"), req.Name, req.From, req.Replace)
	})
	route.Handle(sk, "DELETE /v1/snapshots/{source}/{name}", "snapshot rm", func(r *http.Request, _ *none) (any, error) {
		return nil, s.op.RemoveSnapshot(r.Context(), r.PathValue("source"), r.PathValue("name"))
	})
	route.Handle(sk, "GET /v1/schedules", "schedules", func(*http.Request, *none) (any, error) { return s.op.Schedules(), nil })
	route.Handle(sk, "PUT /v1/schedules/{source}", "schedule", func(r *http.Request, req *admin.ScheduleRequest) (any, error) {
		every, err := time.ParseDuration(req.Every)
		if err != nil {
			return nil, fmt.Errorf("%w: every %q is not a duration like 1h or 30m", errBadRequest, req.Every)
		}
		return s.op.SetSchedule(r.Context(), r.PathValue("source"), every, req.Keep)
	})
	route.Handle(sk, "DELETE /v1/schedules/{source}", "schedule off", func(r *http.Request, _ *none) (any, error) {
		return nil, s.op.ClearSchedule(r.PathValue("source"))
	})
}

// Shutdown stops serving, letting requests in flight finish until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.http == nil {
		return nil
	}
	return s.http.Shutdown(ctx)
}

// wire is the admin socket's encoding (package admin): a JSON body; an
// answer as JSON (nil: 204), or as it is when it is JSON already ([]byte);
// an error as admin.Error with the status its kind gives.
type wire struct{}

func (wire) Decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		wire{}.Encode(w, nil, fmt.Errorf("%w: %v", errBadRequest, err))
		return false
	}
	return true
}

func (wire) Encode(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(status(err))
		_ = json.NewEncoder(w).Encode(admin.Error{Error: err.Error()})
		return
	}
	switch v := v.(type) {
	case nil:
		w.WriteHeader(http.StatusNoContent)
	case []byte:
		_, _ = w.Write(v)
	default:
		_ = json.NewEncoder(w).Encode(v)
	}
}

// status is the HTTP status of err, read from the one error table
// (metrics/classes.go): its class as a request's outcome, else as a
// backend error's; an operator's create of what exists is a conflict.
func status(err error) int {
	switch metrics.Outcome(err) {
	case "invalid":
		return http.StatusBadRequest
	case "not_found", "no_source":
		return http.StatusNotFound
	case "in_use":
		return http.StatusConflict
	case "unavailable":
		return http.StatusServiceUnavailable
	case "not_published":
		return http.StatusForbidden
	case "registry":
		return http.StatusBadGateway
	}
	switch metrics.ErrorClass(err) {
	case "not_found":
		return http.StatusNotFound
	case "protected":
		return http.StatusConflict
	}
	if errors.Is(err, driver.ErrExists) {
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// errBadRequest is a body or value the API cannot read: invalid, as a bad
// name is (400).
var errBadRequest error = badRequest{}

type badRequest struct{}

func (badRequest) Error() string        { return "bad request" }
func (badRequest) Is(target error) bool { return target == names.ErrInvalid }

func (s *Server) version() admin.VersionInfo {
	v, c := version.Get()
	return admin.VersionInfo{Version: v, Commit: c, Go: runtime.Version(), Backend: s.backend, Started: s.started.UTC()}
}
