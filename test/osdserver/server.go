// Package osdserver is a test OpenStorage server: the REST volume API of
// github.com/libopenstorage/openstorage (api/server/volume.go) — same
// routes, query options, JSON bodies and status codes — served over real
// HTTP on loopback or a unix socket, and backed by real storage: snapvol's
// local btrfs backend on a loop-mounted pool file. A volume is a btrfs
// subvolume, a snapshot a read-only subvolume snapshot, a writable
// snapshot (a clone) a writable one (a read-only snapshot of a clone is
// filed in the pool under the volume the clone descends from), and Mount bind-mounts the subvolume at
// the path asked for, in the caller's mount namespace, as Portworx mounts
// in the host's. So the portworx backend moves real data in tests.
//
// Behaviour follows the OpenStorage drivers and Portworx where they
// matter to a client: names are unique, deleting a volume that has
// snapshots or clones or is attached is refused, Inspect of an unknown ID
// is an error ("Volume ... not found"), label selectors match values.
// Failures can be injected: Stop (connection refused), SetDelay (a slow or
// hung server), SetToken (401 for a wrong bearer token), SetStatus (any
// HTTP status for every request).
//
// Not served (404, as for any unknown route): stats, usedsize, requests,
// restore, and the graph and cluster APIs.
package osdserver

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/golang/protobuf/ptypes/timestamp"
	"github.com/libopenstorage/openstorage/api"
	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/mountpoint"
	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/storage/local"
)

// Error texts of the OpenStorage volume package and drivers.
const (
	errHasSnaps     = "Volume has snapshots associated"
	errAttached     = "Volume is attached"
	errDetached     = "Volume is detached"
	errNotSupported = "Operation not supported"
)

// Config sets up a Server.
type Config struct {
	// StateDir holds the pool file (pool.img) and its mount point (pool).
	StateDir string
	// PoolSize is the pool file's size (default 512 MiB).
	PoolSize int64
	// Driver is the driver name served (default pxd).
	Driver string
	// Token, if set, is the bearer token every request must carry.
	Token string
	// Listen is host:port (default 127.0.0.1:0) or unix:///path.sock.
	Listen string
	// Node is reported as AttachedOn (default node-1).
	Node string
	// NoAttach makes the server behave like OpenStorage's filesystem
	// drivers (btrfs, vfs): attach and detach are not supported, and a
	// volume is mounted without being attached.
	NoAttach bool
}

// Request is one request the server received.
type Request struct {
	Method, Path, Query, UserAgent string
	Auth                           bool // carried an Authorization header
}

type entry struct {
	vol *api.Volume
	obj storage.Object // the object in the local pool
}

// Server is a running test OpenStorage server.
type Server struct {
	cfg  Config
	pool *local.Backend
	mux  *http.ServeMux

	mu       sync.Mutex
	vols     map[string]*entry
	token    string
	delay    time.Duration
	status   int
	requests []Request

	lmu      sync.Mutex
	srv      *http.Server
	network  string
	addr     string
	endpoint string
}

// Start opens (or creates) the pool and serves on cfg.Listen.
func Start(cfg Config) (*Server, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("osdserver: StateDir is required")
	}
	if cfg.PoolSize == 0 {
		cfg.PoolSize = 512 << 20
	}
	if cfg.Driver == "" {
		cfg.Driver = "pxd"
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Node == "" {
		cfg.Node = "node-1"
	}
	pool, err := local.Open(local.Config{StateDir: cfg.StateDir, PoolSize: cfg.PoolSize})
	if err != nil {
		return nil, fmt.Errorf("osdserver: opening the btrfs pool in %s: %w", cfg.StateDir, err)
	}
	s := &Server{cfg: cfg, pool: pool, vols: map[string]*entry{}, token: cfg.Token}
	s.routes()
	if strings.HasPrefix(cfg.Listen, "unix://") {
		s.network, s.addr = "unix", strings.TrimPrefix(cfg.Listen, "unix://")
	} else {
		s.network, s.addr = "tcp", cfg.Listen
	}
	if err := s.Restart(); err != nil {
		s.unmountPool()
		return nil, err
	}
	return s, nil
}

func (s *Server) routes() {
	m := http.NewServeMux()
	v := "/" + "v1" + "/"
	m.HandleFunc("GET /"+api.OsdVolumePath+"/versions", s.versions)
	m.HandleFunc("POST "+v+api.OsdVolumePath, s.create)
	m.HandleFunc("PUT "+v+api.OsdVolumePath+"/{id}", s.volumeSet)
	m.HandleFunc("GET "+v+api.OsdVolumePath, s.enumerate)
	m.HandleFunc("GET "+v+api.OsdVolumePath+"/{id}", s.inspect)
	m.HandleFunc("DELETE "+v+api.OsdVolumePath+"/{id}", s.delete)
	m.HandleFunc("POST "+v+api.OsdSnapshotPath, s.snap)
	m.HandleFunc("GET "+v+api.OsdSnapshotPath, s.snapEnumerate)
	s.mux = m
}

// Endpoint is the URL to give a client (PX_ENDPOINT).
func (s *Server) Endpoint() string {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	return s.endpoint
}

// Stop closes the listener and every connection: clients get connection
// refused until Restart. State and mounts are kept.
func (s *Server) Stop() {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	if s.srv != nil {
		_ = s.srv.Close()
		s.srv = nil
	}
}

// Restart serves again on the same address.
func (s *Server) Restart() error {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	if s.srv != nil {
		return nil
	}
	if s.network == "unix" {
		_ = os.Remove(s.addr)
		if err := os.MkdirAll(filepath.Dir(s.addr), 0o755); err != nil {
			return err
		}
	}
	l, err := net.Listen(s.network, s.addr)
	if err != nil {
		return fmt.Errorf("osdserver: listen %s %s: %w", s.network, s.addr, err)
	}
	if s.network == "tcp" {
		// Keep the port for later restarts.
		s.addr = l.Addr().String()
		s.endpoint = "http://" + s.addr
	} else {
		s.endpoint = "unix://" + s.addr
	}
	srv := &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 10 * time.Second}
	s.srv = srv
	go func() { _ = srv.Serve(l) }()
	return nil
}

// Close stops serving, unmounts every volume the server mounted and the
// pool. Volumes are left in the pool file.
func (s *Server) Close() error {
	s.Stop()
	s.mu.Lock()
	var errs []error
	for _, e := range s.vols {
		for _, p := range e.vol.AttachPath {
			if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
				errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
			}
		}
		e.vol.AttachPath = nil
	}
	s.mu.Unlock()
	if err := s.unmountPool(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *Server) unmountPool() error {
	mnt := s.pool.Root()
	for mountpoint.IsMountPoint(mnt) {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount pool %s: %w", mnt, err)
		}
	}
	return nil
}

// SetToken changes the bearer token required ("" turns auth off).
func (s *Server) SetToken(tok string) { s.mu.Lock(); s.token = tok; s.mu.Unlock() }

// SetDelay holds every request this long before answering (0: none). A
// request whose client gives up is dropped.
func (s *Server) SetDelay(d time.Duration) { s.mu.Lock(); s.delay = d; s.mu.Unlock() }

// SetStatus answers every request with this HTTP status (0: normal).
func (s *Server) SetStatus(code int) { s.mu.Lock(); s.status = code; s.mu.Unlock() }

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	delay, status, token := s.delay, s.status, s.token
	s.requests = append(s.requests, Request{
		Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		UserAgent: r.Header.Get("User-Agent"), Auth: r.Header.Get("Authorization") != "",
	})
	s.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if status != 0 {
		http.Error(w, fmt.Sprintf("injected failure: HTTP %d", status), status)
		return
	}
	if token != "" && !bearer(r.Header.Get("Authorization"), token) {
		http.Error(w, "Access denied, token is invalid or missing", http.StatusUnauthorized)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func bearer(h, token string) bool {
	scheme, tok, ok := strings.Cut(h, " ")
	return ok && strings.EqualFold(scheme, "bearer") && tok == token
}

// sendError is restBase.sendError: the message as text with a status.
func sendError(w http.ResponseWriter, msg string, code int) { http.Error(w, msg, code) }

func encode(w http.ResponseWriter, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (s *Server) versions(w http.ResponseWriter, _ *http.Request) {
	encode(w, []string{"v1"})
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	var req api.VolumeCreateRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		sendError(w, err.Error(), http.StatusBadRequest)
		return
	}
	id, err := s.Create(req.Locator, req.Source, req.Spec)
	encode(w, &api.VolumeCreateResponse{Id: id, VolumeResponse: &api.VolumeResponse{Error: errString(err)}})
}

func (s *Server) snap(w http.ResponseWriter, r *http.Request) {
	var req api.SnapCreateRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		sendError(w, err.Error(), http.StatusBadRequest)
		return
	}
	id, err := s.Snapshot(req.Id, req.Readonly, req.Locator)
	encode(w, &api.SnapCreateResponse{VolumeCreateResponse: &api.VolumeCreateResponse{
		Id: id, VolumeResponse: &api.VolumeResponse{Error: errString(err)},
	}})
}

func (s *Server) inspect(w http.ResponseWriter, r *http.Request) {
	vols, err := s.Inspect([]string{r.PathValue("id")})
	if err != nil {
		sendError(w, err.Error(), http.StatusNotFound)
		return
	}
	encode(w, vols)
}

func (s *Server) enumerate(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	loc := &api.VolumeLocator{}
	var configLabels map[string]string
	if v := q[api.OptName]; v != nil {
		loc.Name = v[0]
	}
	if v := q[api.OptLabel]; v != nil {
		if err := json.Unmarshal([]byte(v[0]), &loc.VolumeLabels); err != nil {
			sendError(w, "Failed to parse parse VolumeLabels: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	if v := q[api.OptConfigLabel]; v != nil {
		if err := json.Unmarshal([]byte(v[0]), &configLabels); err != nil {
			sendError(w, "Failed to parse parse configLabels: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	if ids := q[api.OptVolumeID]; ids != nil {
		vols, err := s.Inspect(ids)
		if err != nil {
			sendError(w, "Failed to inspect volumeID: "+err.Error(), http.StatusBadRequest)
			return
		}
		encode(w, vols)
		return
	}
	encode(w, s.Enumerate(loc, configLabels))
}

func (s *Server) snapEnumerate(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var labels map[string]string
	if v := q[api.OptLabel]; v != nil {
		if err := json.Unmarshal([]byte(v[0]), &labels); err != nil {
			sendError(w, "Failed to parse parse VolumeLabels: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	encode(w, s.SnapEnumerate(q[api.OptVolumeID], labels))
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	vols, _ := s.Inspect([]string{id})
	if len(vols) < 1 {
		sendError(w, fmt.Sprintf("Volume %s does not exist", id), http.StatusBadRequest)
		return
	}
	resp := &api.VolumeResponse{}
	if vols[0].Spec != nil && vols[0].Spec.Sticky {
		resp.Error = "Cannot delete a sticky volume"
	} else if err := s.Delete(id); err != nil {
		resp.Error = err.Error()
	}
	encode(w, resp)
}

// volumeSet is api/server's volumeSet: an update of locator and spec,
// then attach or detach, then mount or unmount, answered with the
// volume; a detach or unmount of a volume that does not exist succeeds.
func (s *Server) volumeSet(w http.ResponseWriter, r *http.Request) {
	var req api.VolumeSetRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		sendError(w, err.Error(), http.StatusBadRequest)
		return
	}
	id := r.PathValue("id")
	var err error
	if req.Locator != nil || req.Spec != nil {
		err = s.Set(id, req.Locator, req.Spec)
	}
	if a := req.Action; err == nil && a != nil {
		switch a.Attach {
		case api.VolumeActionParam_VOLUME_ACTION_PARAM_ON:
			err = s.Attach(id)
		case api.VolumeActionParam_VOLUME_ACTION_PARAM_OFF:
			err = s.Detach(id, a.UnmountBeforeDetach)
		}
		if err == nil {
			switch a.Mount {
			case api.VolumeActionParam_VOLUME_ACTION_PARAM_ON:
				if a.MountPath == "" {
					err = errors.New("Invalid mount path")
				} else {
					err = s.Mount(id, a.MountPath)
				}
			case api.VolumeActionParam_VOLUME_ACTION_PARAM_OFF:
				err = s.Unmount(id, a.MountPath)
			}
		}
	}
	var resp api.VolumeSetResponse
	if err == nil {
		var vols []*api.Volume
		if vols, err = s.Inspect([]string{id}); err == nil {
			resp.Volume = vols[0]
		}
	}
	if err != nil {
		off := req.Action != nil && (req.Action.Mount == api.VolumeActionParam_VOLUME_ACTION_PARAM_OFF ||
			req.Action.Attach == api.VolumeActionParam_VOLUME_ACTION_PARAM_OFF)
		if off && errors.Is(err, errNotFound) {
			resp.VolumeResponse, resp.Volume = &api.VolumeResponse{}, &api.Volume{}
		} else {
			resp.VolumeResponse = &api.VolumeResponse{Error: err.Error()}
		}
	}
	encode(w, resp)
}

var errNotFound = errors.New("not found")

func notFound(id string) error { return fmt.Errorf("Volume %s %w", id, errNotFound) }

// newID makes a Portworx-style numeric volume ID.
func newID() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(9e17))
	return fmt.Sprint(n.Int64() + 1e17)
}

// copyVol deep-copies through JSON, the only form a client ever sees.
func copyVol(v *api.Volume) *api.Volume {
	data, _ := json.Marshal(v)
	var out api.Volume
	_ = json.Unmarshal(data, &out)
	return &out
}

func now() *timestamp.Timestamp {
	t := time.Now()
	return &timestamp.Timestamp{Seconds: t.Unix(), Nanos: int32(t.Nanosecond())}
}

func (s *Server) nameTaken(name string) bool {
	for _, e := range s.vols {
		if e.vol.Locator != nil && e.vol.Locator.Name == name {
			return true
		}
	}
	return false
}

func labelsMatch(set, sel map[string]string) bool {
	for k, v := range sel {
		if got, ok := set[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func sortedVols(es []*api.Volume) []*api.Volume {
	sort.Slice(es, func(i, j int) bool { return es[i].Id < es[j].Id })
	return es
}

// Create makes a volume: an empty subvolume, or with source.Parent a
// writable snapshot of the parent (what current OpenStorage servers do).
func (s *Server) Create(loc *api.VolumeLocator, src *api.Source, spec *api.VolumeSpec) (string, error) {
	if src != nil && src.Parent != "" {
		id, err := s.Snapshot(src.Parent, false, loc)
		if err == nil && spec != nil {
			err = s.Set(id, nil, spec)
		}
		return id, err
	}
	if loc == nil || loc.Name == "" {
		return "", errors.New("Volume name cannot be empty")
	}
	if spec == nil {
		return "", errors.New("Volume spec is required")
	}
	if spec.Size == 0 {
		return "", errors.New("Volume size cannot be zero")
	}
	if spec.HaLevel < 1 || spec.HaLevel > 3 {
		return "", fmt.Errorf("HA level %d is invalid: must be 1, 2 or 3", spec.HaLevel)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nameTaken(loc.Name) {
		return "", fmt.Errorf("Volume with name %s already exists", loc.Name)
	}
	id := newID()
	obj, err := s.pool.CreateVolume(context.Background(), "v"+id, nil)
	if err != nil {
		return "", err
	}
	v := &api.Volume{
		Id: id, Source: &api.Source{}, Locator: copyVol(&api.Volume{Locator: loc}).Locator,
		Ctime: now(), Spec: copyVol(&api.Volume{Spec: spec}).Spec, Format: spec.Format,
		Status: api.VolumeStatus_VOLUME_STATUS_UP, State: api.VolumeState_VOLUME_STATE_DETACHED,
	}
	s.vols[id] = &entry{vol: v, obj: obj}
	return id, nil
}

// Snapshot copies the volume id, read-only or writable. The pool can
// snapshot a volume either way, clone a read-only snapshot and take a
// read-only snapshot of a clone; the other combinations are refused as
// not supported.
func (s *Server) Snapshot(id string, readonly bool, loc *api.VolumeLocator) (string, error) {
	if loc == nil || loc.Name == "" {
		return "", errors.New("Name for snapshot must be provided")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	parent, ok := s.vols[id]
	if !ok {
		return "", notFound(id)
	}
	if s.nameTaken(loc.Name) {
		return "", fmt.Errorf("Volume with name %s already exists", loc.Name)
	}
	ctx := context.Background()
	own := map[string]string{storage.LabelOwner: "1"} // lets the pool delete it
	var obj storage.Object
	var err error
	switch {
	case parent.obj.Kind == storage.KindVolume && readonly:
		obj, err = s.pool.Snapshot(ctx, parent.obj, own)
	case parent.obj.Kind == storage.KindVolume:
		var tmp storage.Object
		if tmp, err = s.pool.Snapshot(ctx, parent.obj, own); err == nil {
			obj, err = s.pool.Clone(ctx, tmp, own, nil)
			if derr := s.pool.Delete(ctx, tmp.ID); err == nil {
				err = derr
			}
		}
	case parent.obj.Kind == storage.KindSnapshot && !readonly:
		obj, err = s.pool.Clone(ctx, parent.obj, own, nil)
	case parent.obj.Kind == storage.KindClone && readonly:
		// Filed in the pool under the volume the clone descends from.
		var root storage.Object
		if root, err = s.rootVolumeLocked(id); err == nil {
			obj, err = s.pool.SnapshotOf(ctx, parent.obj, root, own)
		}
	default:
		return "", fmt.Errorf("%s: the test server cannot take a read-only=%v snapshot of a %s", errNotSupported, readonly, parent.obj.Kind)
	}
	if err != nil {
		return "", err
	}
	nid := newID()
	v := copyVol(parent.vol)
	v.Id, v.Source, v.Readonly, v.Ctime = nid, &api.Source{Parent: id}, readonly, now()
	v.Locator = copyVol(&api.Volume{Locator: loc}).Locator
	v.State, v.AttachedOn, v.DevicePath, v.AttachPath = api.VolumeState_VOLUME_STATE_DETACHED, "", "", nil
	s.vols[nid] = &entry{vol: v, obj: obj}
	return nid, nil
}

// rootVolumeLocked is the pool volume the object id descends from,
// through its snapshots and clones; the caller holds s.mu.
func (s *Server) rootVolumeLocked(id string) (storage.Object, error) {
	for range len(s.vols) + 1 {
		e, ok := s.vols[id]
		if !ok {
			return storage.Object{}, notFound(id)
		}
		if e.obj.Kind == storage.KindVolume {
			return e.obj, nil
		}
		id = e.vol.GetSource().GetParent()
	}
	return storage.Object{}, fmt.Errorf("volume %s: a cycle of parents", id)
}

// Inspect returns the volumes among ids that exist; none is an error.
func (s *Server) Inspect(ids []string) ([]*api.Volume, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*api.Volume
	for _, id := range ids {
		if e, ok := s.vols[id]; ok {
			out = append(out, copyVol(e.vol))
		}
	}
	if len(out) == 0 && len(ids) > 0 {
		return nil, notFound(strings.Join(ids, ","))
	}
	return out, nil
}

// Enumerate lists every volume (snapshots included, as the OpenStorage
// store does) matching the locator's name and labels and the spec labels.
func (s *Server) Enumerate(loc *api.VolumeLocator, configLabels map[string]string) []*api.Volume {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []*api.Volume{}
	for _, e := range s.vols {
		v := e.vol
		if loc != nil && loc.Name != "" && (v.Locator == nil || v.Locator.Name != loc.Name) {
			continue
		}
		if loc != nil && !labelsMatch(v.GetLocator().GetVolumeLabels(), loc.VolumeLabels) {
			continue
		}
		if !labelsMatch(v.GetSpec().GetVolumeLabels(), configLabels) {
			continue
		}
		out = append(out, copyVol(v))
	}
	return sortedVols(out)
}

// SnapEnumerate lists the volumes made from any of ids (from any volume
// when ids is empty) whose locator labels match.
func (s *Server) SnapEnumerate(ids []string, labels map[string]string) []*api.Volume {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	out := []*api.Volume{}
	for _, e := range s.vols {
		p := e.vol.GetSource().GetParent()
		if p == "" || (len(want) > 0 && !want[p]) {
			continue
		}
		if labelsMatch(e.vol.GetLocator().GetVolumeLabels(), labels) {
			out = append(out, copyVol(e.vol))
		}
	}
	return sortedVols(out)
}

// Delete destroys a volume that has no snapshots or clones and is not
// attached.
func (s *Server) Delete(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.vols[id]
	if !ok {
		return notFound(id)
	}
	for _, o := range s.vols {
		if o.vol.GetSource().GetParent() == id {
			return errors.New(errHasSnaps)
		}
	}
	if e.vol.State == api.VolumeState_VOLUME_STATE_ATTACHED || len(e.vol.AttachPath) > 0 {
		return fmt.Errorf("%s on %s", errAttached, e.vol.AttachedOn)
	}
	ctx := context.Background()
	var err error
	if e.obj.Kind == storage.KindVolume {
		err = s.pool.RemoveVolume(ctx, e.obj)
	} else {
		err = s.pool.Delete(ctx, e.obj.ID)
	}
	if err != nil {
		return err
	}
	delete(s.vols, id)
	return nil
}

// Set updates the locator (name; labels merged, an empty value deletes)
// and the spec fields an existing volume can change.
func (s *Server) Set(id string, loc *api.VolumeLocator, spec *api.VolumeSpec) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.vols[id]
	if !ok {
		return notFound(id)
	}
	v := e.vol
	if spec != nil && (spec.HaLevel < 0 || spec.HaLevel > 3) {
		return fmt.Errorf("HA level %d is invalid: must be 1, 2 or 3", spec.HaLevel)
	}
	if loc != nil {
		if loc.Name != "" && loc.Name != v.GetLocator().GetName() {
			if s.nameTaken(loc.Name) {
				return fmt.Errorf("Volume with name %s already exists", loc.Name)
			}
			v.Locator.Name = loc.Name
		}
		if v.Locator.VolumeLabels == nil {
			v.Locator.VolumeLabels = map[string]string{}
		}
		for k, val := range loc.VolumeLabels {
			if val == "" {
				delete(v.Locator.VolumeLabels, k)
			} else {
				v.Locator.VolumeLabels[k] = val
			}
		}
	}
	if spec != nil {
		if v.Spec == nil {
			v.Spec = &api.VolumeSpec{}
		}
		if spec.Size != 0 {
			v.Spec.Size = spec.Size
		}
		if spec.HaLevel != 0 {
			v.Spec.HaLevel = spec.HaLevel
		}
		if spec.ReplicaSet != nil {
			v.Spec.ReplicaSet = spec.ReplicaSet
		}
		v.Spec.Cos = spec.Cos
		v.Spec.IoProfile = spec.IoProfile
		v.Spec.Scale = spec.Scale
		v.Spec.Sticky = spec.Sticky
		v.Spec.Shared = spec.Shared
		v.Spec.SnapshotInterval = spec.SnapshotInterval
		if spec.VolumeLabels != nil {
			v.Spec.VolumeLabels = spec.VolumeLabels
		}
	}
	return nil
}

// Attach attaches the volume to this node; attaching again is a no-op.
func (s *Server) Attach(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.vols[id]
	if !ok {
		return notFound(id)
	}
	if s.cfg.NoAttach {
		return errors.New(errNotSupported)
	}
	e.vol.State = api.VolumeState_VOLUME_STATE_ATTACHED
	e.vol.AttachedOn = s.cfg.Node
	e.vol.AttachedState = api.AttachState_ATTACH_STATE_EXTERNAL
	e.vol.DevicePath = "/dev/pxd/pxd" + id
	return nil
}

// Detach detaches a volume; a mounted one only with unmountBeforeDetach.
func (s *Server) Detach(id string, unmountBeforeDetach bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.vols[id]
	if !ok {
		return notFound(id)
	}
	if s.cfg.NoAttach {
		return errors.New(errNotSupported)
	}
	if len(e.vol.AttachPath) > 0 {
		if !unmountBeforeDetach {
			return fmt.Errorf("Volume %s is mounted at %s; unmount it before detaching", id, strings.Join(e.vol.AttachPath, ", "))
		}
		for _, p := range append([]string(nil), e.vol.AttachPath...) {
			if err := s.unmountLocked(e, p); err != nil {
				return err
			}
		}
	}
	e.vol.State = api.VolumeState_VOLUME_STATE_DETACHED
	e.vol.AttachedOn, e.vol.DevicePath = "", ""
	return nil
}

// Mount bind-mounts the volume's subvolume at path, which must exist;
// the volume must be attached.
func (s *Server) Mount(id, path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.vols[id]
	if !ok {
		return notFound(id)
	}
	if e.vol.State != api.VolumeState_VOLUME_STATE_ATTACHED && !s.cfg.NoAttach {
		return errors.New(errDetached)
	}
	path = filepath.Clean(path)
	for _, p := range e.vol.AttachPath {
		if p == path {
			return nil
		}
	}
	st, err := os.Stat(path)
	if err != nil || !st.IsDir() {
		return fmt.Errorf("mount path %s is not a directory: %v", path, err)
	}
	flags := uintptr(unix.MS_BIND)
	if err := unix.Mount(filepath.Join(s.pool.Root(), e.obj.ID), path, "", flags, ""); err != nil {
		return fmt.Errorf("Failed to mount %s at %s: %v", id, path, err)
	}
	if e.vol.Readonly {
		if err := unix.Mount("", path, "", flags|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			_ = unix.Unmount(path, unix.MNT_DETACH)
			return fmt.Errorf("Failed to mount %s read-only at %s: %v", id, path, err)
		}
	}
	e.vol.AttachPath = append(e.vol.AttachPath, path)
	return nil
}

// Unmount unmounts the volume from path (every path when path is empty).
// A busy mount is refused, as umount(2) refuses it.
func (s *Server) Unmount(id, path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.vols[id]
	if !ok {
		return notFound(id)
	}
	if path == "" {
		for _, p := range append([]string(nil), e.vol.AttachPath...) {
			if err := s.unmountLocked(e, p); err != nil {
				return err
			}
		}
		return nil
	}
	return s.unmountLocked(e, filepath.Clean(path))
}

func (s *Server) unmountLocked(e *entry, path string) error {
	i := -1
	for j, p := range e.vol.AttachPath {
		if p == path {
			i = j
		}
	}
	if i < 0 {
		return fmt.Errorf("Device %s not mounted at %s", e.vol.Id, path)
	}
	if err := unix.Unmount(path, 0); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		if err == unix.EBUSY {
			return fmt.Errorf("Volume is busy: %s at %s: %v", e.vol.Id, path, err)
		}
		return fmt.Errorf("Failed to unmount %s at %s: %v", e.vol.Id, path, err)
	}
	e.vol.AttachPath = append(e.vol.AttachPath[:i], e.vol.AttachPath[i+1:]...)
	return nil
}

// Volumes returns every volume, snapshots and clones included.
func (s *Server) Volumes() []*api.Volume { return s.Enumerate(nil, nil) }

// ByName returns the volume named name.
func (s *Server) ByName(name string) (*api.Volume, bool) {
	vols := s.Enumerate(&api.VolumeLocator{Name: name}, nil)
	if len(vols) != 1 {
		return nil, false
	}
	return vols[0], true
}

// DataPath is the directory holding a volume's data in the pool.
func (s *Server) DataPath(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.vols[id]
	if !ok {
		return ""
	}
	return filepath.Join(s.pool.Root(), e.obj.ID)
}
