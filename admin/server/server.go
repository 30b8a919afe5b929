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
	"github.com/snapvol/snapvol/storage"
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
	mux.HandleFunc("GET /v1/version", s.version)
	mux.HandleFunc("GET /v1/volumes", s.volumes)
	mux.HandleFunc("GET /v1/volumes/{name}", s.volume)
	mux.HandleFunc("POST /v1/volumes", s.createVolume)
	mux.HandleFunc("DELETE /v1/volumes/{name}", s.removeVolume)
	mux.HandleFunc("GET /v1/df", s.df)
	mux.HandleFunc("GET /v1/snapshots/{source}", s.snapshots)
	mux.HandleFunc("POST /v1/snapshots/{source}", s.createSnapshot)
	mux.HandleFunc("DELETE /v1/snapshots/{source}/{name}", s.removeSnapshot)
	mux.HandleFunc("GET /v1/schedules", s.schedules)
	mux.HandleFunc("PUT /v1/schedules/{source}", s.setSchedule)
	mux.HandleFunc("DELETE /v1/schedules/{source}", s.clearSchedule)
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

// Shutdown stops serving, letting requests in flight finish until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.http == nil {
		return nil
	}
	return s.http.Shutdown(ctx)
}

func reply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(status(err))
		_ = json.NewEncoder(w).Encode(admin.Error{Error: err.Error()})
		return
	}
	if v == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	_ = json.NewEncoder(w).Encode(v)
}

func status(err error) int {
	switch {
	case errors.Is(err, driver.ErrNoSuchVolume), errors.Is(err, driver.ErrNoSource), errors.Is(err, storage.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, driver.ErrInUse), errors.Is(err, driver.ErrExists), errors.Is(err, storage.ErrProtected):
		return http.StatusConflict
	case errors.Is(err, names.ErrInvalid), errors.Is(err, errBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, storage.ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

var errBadRequest = errors.New("bad request")

func decode(r *http.Request, v any) error {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		return fmt.Errorf("%w: %v", errBadRequest, err)
	}
	return nil
}

// ctx bounds an admin request: within Docker's budget like a request.
func ctx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 25*time.Second)
}

func (s *Server) version(w http.ResponseWriter, _ *http.Request) {
	v, c := version.Get()
	reply(w, admin.VersionInfo{Version: v, Commit: c, Go: runtime.Version(), Backend: s.backend, Started: s.started.UTC()}, nil)
}

// volumes is snapvol ls: the array is written in one piece, one volume a
// line, which the command copies through for --json (admin.AppendVolumes).
func (s *Server) volumes(w http.ResponseWriter, r *http.Request) {
	c, cancel := ctx(r)
	defer cancel()
	vols := s.op.Volumes(c)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(admin.AppendVolumes(make([]byte, 0, 400*len(vols)+8), vols))
}

func (s *Server) volume(w http.ResponseWriter, r *http.Request) {
	c, cancel := ctx(r)
	defer cancel()
	v, err := s.op.Volume(c, r.PathValue("name"))
	reply(w, v, err)
}

func (s *Server) createVolume(w http.ResponseWriter, r *http.Request) {
	var req admin.CreateVolumeRequest
	if err := decode(r, &req); err != nil {
		reply(w, nil, err)
		return
	}
	c, cancel := ctx(r)
	defer cancel()
	v, err := s.op.Create(c, req.Name, req.From, req.Access)
	reply(w, v, err)
}

func (s *Server) removeVolume(w http.ResponseWriter, r *http.Request) {
	c, cancel := ctx(r)
	defer cancel()
	reply(w, nil, s.op.Remove(c, r.PathValue("name")))
}

func (s *Server) df(w http.ResponseWriter, r *http.Request) {
	c, cancel := ctx(r)
	defer cancel()
	u, err := s.op.Usage(c)
	reply(w, u, err)
}

func (s *Server) snapshots(w http.ResponseWriter, r *http.Request) {
	c, cancel := ctx(r)
	defer cancel()
	v, err := s.op.SnapshotsOf(c, r.PathValue("source"))
	reply(w, v, err)
}

func (s *Server) createSnapshot(w http.ResponseWriter, r *http.Request) {
	var req admin.CreateSnapshotRequest
	if err := decode(r, &req); err != nil {
		reply(w, nil, err)
		return
	}
	c, cancel := ctx(r)
	defer cancel()
	v, err := s.op.CreateSnapshot(c, r.PathValue("source"), req.Name, req.From, req.Replace)
	reply(w, v, err)
}

func (s *Server) removeSnapshot(w http.ResponseWriter, r *http.Request) {
	c, cancel := ctx(r)
	defer cancel()
	reply(w, nil, s.op.RemoveSnapshot(c, r.PathValue("source"), r.PathValue("name")))
}

func (s *Server) schedules(w http.ResponseWriter, _ *http.Request) {
	reply(w, s.op.Schedules(), nil)
}

func (s *Server) setSchedule(w http.ResponseWriter, r *http.Request) {
	var req admin.ScheduleRequest
	if err := decode(r, &req); err != nil {
		reply(w, nil, err)
		return
	}
	every, err := time.ParseDuration(req.Every)
	if err != nil {
		reply(w, nil, fmt.Errorf("%w: every %q is not a duration like 1h or 30m", errBadRequest, req.Every))
		return
	}
	c, cancel := ctx(r)
	defer cancel()
	sc, err := s.op.SetSchedule(c, r.PathValue("source"), every, req.Keep)
	reply(w, sc, err)
}

func (s *Server) clearSchedule(w http.ResponseWriter, r *http.Request) {
	reply(w, nil, s.op.ClearSchedule(r.PathValue("source")))
}
