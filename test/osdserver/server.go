// Package osdserver is a test OpenStorage server: the REST v1 volume API
// of github.com/libopenstorage/openstorage, served over real HTTP on
// loopback or a unix socket, and backed by real storage: snapvol's local
// btrfs backend on a loop-mounted pool file. A volume is a btrfs
// subvolume, a snapshot a read-only subvolume snapshot, a writable
// snapshot (a clone) a writable one (a read-only snapshot of a clone is
// filed in the pool under the volume the clone descends from), and Mount
// bind-mounts the subvolume at the path asked for in a mount namespace of
// the server's own, as Portworx mounts in its container's: only mounts
// under MountRoot, a directory shared with the host as Portworx shares
// /var/lib/osd/mounts, show on the host (mountns.go). So the portworx
// backend moves real data in tests, and meets a mount it cannot see.
//
// What is served over HTTP follows the current openstorage server (master),
// not the v1.0.0 module snapvol builds against:
//
//   - api/server/volume.go (type volAPI): the REST handlers, their routes,
//     query options, JSON bodies, status codes and error shapes. Each
//     handler forwards to the SDK gRPC server, so errors reach a client as
//     gRPC status strings, "rpc error: code = <Code> desc = <message>".
//   - api/server/sdk/volume_ops.go, volume_snapshot.go, volume_node_ops.go:
//     the SDK's semantics and texts (idempotent create by name, delete of
//     an unknown ID succeeds, detach of a missing volume succeeds, clones
//     made by Clone, ownership checks).
//   - api/server/sdk/server_interceptors.go: token checks and guests;
//     api/ownership.go: owners, admins (the group "*"), and access by
//     group and collaborator ACLs (Config.Users, SetOwnership).
//   - volume/drivers/fake/fake.go: driver-level checks and Set semantics
//     where the SDK leaves them to the driver.
//   - Portworx's documented limit of 64 snapshots per volume
//     (Config.MaxSnapshots).
//
// Spec fields that the current server knows but v1.0.0's api.VolumeSpec
// does not (journal, sharedv4, queue_depth, nodiscard, fp_preference,
// xattr, proxy_write, auto_fstrim, ...) are kept per volume as raw JSON
// and served inside "spec", so a client that round-trips a spec through
// v1.0.0's types sees what the real server would do with the fields it
// drops. Each behaviour names the real function it comes from in a
// comment.
//
// The Go methods (Create, Snapshot, Set, Attach, ...) are for test setup
// and inspection: they act directly on the store, without auth, ownership
// or delays, and keep simple semantics (documented on each).
//
// Failures can be injected: Stop (connection refused), SetDelay (a slow or
// hung server), SetSlow (one slow operation, abandoned if the client gives
// up), SetToken (auth as the SDK does it), SetStatus (any HTTP status for
// every request). SDKEndpoint and GossipEndpoint answer as Portworx's
// other ports do, for a PX_ENDPOINT that names the wrong one.
//
// Not served (404, as for any unknown route): stats, usedsize, requests,
// restore, quiesce, catalog, group snapshots, and the graph, cluster and
// credentials APIs.
package osdserver

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/libopenstorage/openstorage/api"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snapvol/snapvol/mountpoint"
	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/storage/local"
)

// Error texts of the OpenStorage volume package and drivers.
const (
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
	// Token, if set, turns the SDK's security on: a request that carries
	// an Authorization header must carry "Bearer <Token>" (or one of
	// Users' tokens), and one that carries none is a guest (see
	// SetToken). Token is an admin's (AdminUser, in the group "*").
	Token string
	// Users are more tokens, each a user with its groups (with Token set).
	Users map[string]User
	// Listen is host:port (default 127.0.0.1:0) or unix:///path.sock.
	Listen string
	// Node is reported as AttachedOn (default node-1).
	Node string
	// NoAttach makes the server behave like OpenStorage's filesystem
	// drivers (btrfs, vfs): attach and detach are not supported, and a
	// volume is mounted without being attached.
	NoAttach bool
	// MaxSnapshots, if not 0, is how many read-only snapshots a volume may
	// have: Portworx documents "an implementation limit of 64 snapshots
	// per volume" (docs.portworx.com/reference/cli/snapshots).
	MaxSnapshots int
}

// User is who a token authenticates: the JWT's name (or sub) and groups
// claims, as pkg/auth.UserInfo carries them. A user in the group "*" is
// an admin (api.AdminGroup), permitted everything.
type User struct {
	Name   string
	Groups []string
}

// AdminUser is the user Config.Token authenticates.
var AdminUser = User{Name: "osdserver-admin", Groups: []string{"*"}}

// Access is api.Ownership_AccessType: what an ACL entry allows, each
// level including the ones below it.
type Access int

const (
	Read  Access = 0 // Ownership_Read
	Write Access = 1 // Ownership_Write
	Admin Access = 2 // Ownership_Admin
)

// Ownership is api.Ownership: the owner and the ACLs by group and by
// user ("*" for any group or user).
type Ownership struct {
	Owner         string
	Groups        map[string]Access
	Collaborators map[string]Access
}

// Request is one request the server received.
type Request struct {
	Method, Path, Query, UserAgent string
	Auth                           bool // carried an Authorization header
}

type entry struct {
	vol *api.Volume
	obj storage.Object // the object in the local pool
	// extra holds the spec keys v1.0.0's api.VolumeSpec does not know, as
	// raw JSON, zero values left out (the real server's encoding/json
	// omits them).
	extra map[string]json.RawMessage
	// own is spec.ownership; a volume without an owner is public.
	own Ownership
}

// Server is a running test OpenStorage server.
type Server struct {
	cfg  Config
	pool *local.Backend

	mu       sync.Mutex
	vols     map[string]*entry
	token    string
	delay    time.Duration
	slow     map[string]time.Duration
	status   int
	requests []Request

	lmu      sync.Mutex
	srv      *http.Server
	network  string
	addr     string
	endpoint string

	ns        *mountNS
	mountRoot string
	others    []net.Listener // SDKEndpoint, GossipEndpoint
	sdk       string
	gossip    string
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
	s := &Server{cfg: cfg, pool: pool, vols: map[string]*entry{}, token: cfg.Token, slow: map[string]time.Duration{}}
	if strings.HasPrefix(cfg.Listen, "unix://") {
		s.network, s.addr = "unix", strings.TrimPrefix(cfg.Listen, "unix://")
	} else {
		s.network, s.addr = "tcp", cfg.Listen
	}
	if err := s.startMounts(); err != nil {
		s.unmountPool()
		return nil, err
	}
	if err := s.startOtherPorts(); err != nil {
		_ = s.Close()
		return nil, err
	}
	if err := s.Restart(); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// startMounts makes MountRoot a shared mount (bound onto itself) and
// starts the mount namespace the server mounts in (mountns.go).
func (s *Server) startMounts() error {
	s.mountRoot = filepath.Join(s.cfg.StateDir, "mounts")
	if err := os.MkdirAll(s.mountRoot, 0o755); err != nil {
		return err
	}
	if !mountpoint.IsMountPoint(s.mountRoot) {
		if err := unix.Mount(s.mountRoot, s.mountRoot, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("osdserver: binding %s: %w", s.mountRoot, err)
		}
	}
	if err := unix.Mount("", s.mountRoot, "", unix.MS_SHARED, ""); err != nil {
		_ = unix.Unmount(s.mountRoot, unix.MNT_DETACH)
		return fmt.Errorf("osdserver: making %s shared: %w", s.mountRoot, err)
	}
	ns, err := startMountNS(s.mountRoot, []string{s.pool.Root()})
	if err != nil {
		_ = unix.Unmount(s.mountRoot, unix.MNT_DETACH)
		return err
	}
	s.ns = ns
	return nil
}

// MountRoot is the directory the server shares with the host, as
// Portworx shares /var/lib/osd/mounts: what it mounts below it shows on
// the host; what it mounts anywhere else does not. PX_MOUNT_DIR belongs
// below it.
func (s *Server) MountRoot() string { return s.mountRoot }

// SDKEndpoint is a port that answers as Portworx's SDK gRPC port (9020)
// answers an HTTP/1 request: grpc-go's server transport
// (internal/transport/http2_server.go newHTTP2Server) writes its SETTINGS
// frame first, then reads the client preface and, finding an HTTP/1
// request line instead ("bogus greeting"), closes the connection.
func (s *Server) SDKEndpoint() string { return s.sdk }

// GossipEndpoint is a port that, like Portworx's gossip port (9002),
// takes a connection, reads, and closes it without an answer.
func (s *Server) GossipEndpoint() string { return s.gossip }

// grpcSettings is the SETTINGS frame grpc-go sends first: one setting,
// SETTINGS_MAX_FRAME_SIZE (5) = 16384 (http2MaxFrameLen).
var grpcSettings = []byte{0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0x40, 0}

// clientPreface is HTTP/2's connection preface (http2.ClientPreface).
const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

func (s *Server) startOtherPorts() error {
	grpcLike := func(c net.Conn) {
		_, _ = c.Write(grpcSettings)
		buf := make([]byte, len(clientPreface))
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, buf); err == nil && string(buf) == clientPreface {
			// A real HTTP/2 client: this port serves no gRPC all the same.
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			_, _ = io.Copy(io.Discard, c)
		}
	}
	gossipLike := func(c net.Conn) {
		buf := make([]byte, 1)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = c.Read(buf)
	}
	for _, p := range []struct {
		serve func(net.Conn)
		url   *string
	}{{grpcLike, &s.sdk}, {gossipLike, &s.gossip}} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		s.others = append(s.others, l)
		*p.url = "http://" + l.Addr().String()
		go func(serve func(net.Conn)) {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); serve(c) }()
			}
		}(p.serve)
	}
	return nil
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

// Close stops serving, unmounts every volume the server mounted (in its
// namespace, whence the unmounts propagate to the host's copies under
// MountRoot), ends the namespace, and unmounts MountRoot and the pool.
// Volumes are left in the pool file.
func (s *Server) Close() error {
	s.Stop()
	for _, l := range s.others {
		_ = l.Close()
	}
	s.mu.Lock()
	var errs []error
	for _, e := range s.vols {
		for _, p := range e.vol.AttachPath {
			if err := s.inNS(func() error { return unix.Unmount(p, unix.MNT_DETACH) }); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
			}
		}
		e.vol.AttachPath = nil
	}
	s.mu.Unlock()
	if s.ns != nil {
		s.ns.stop()
		s.ns = nil
	}
	for s.mountRoot != "" && mountpoint.IsMountPoint(s.mountRoot) {
		if err := unix.Unmount(s.mountRoot, unix.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", s.mountRoot, err))
			break
		}
	}
	if err := s.unmountPool(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// inNS runs fn in the server's mount namespace.
func (s *Server) inNS(fn func() error) error {
	if s.ns == nil {
		return errors.New("osdserver: closed")
	}
	return s.ns.run(fn)
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

// SetToken changes the token ("" turns the SDK's security off: every
// request is let through and every volume is public). With a token, a
// request whose Authorization header is not "Bearer <tok>" is refused,
// and one without the header is a guest, who cannot see volumes created
// by an authenticated caller (see sdk.go).
func (s *Server) SetToken(tok string) { s.mu.Lock(); s.token = tok; s.mu.Unlock() }

// SetDelay holds every request this long before answering (0: none). A
// request whose client gives up is dropped.
func (s *Server) SetDelay(d time.Duration) { s.mu.Lock(); s.delay = d; s.mu.Unlock() }

// SetSlow makes one operation requested over HTTP take d before it is
// applied (0: none). op is one of "attach", "mount", "snapshot" (a
// read-only snapshot), "clone", "detach", "unmount", "delete". If the
// request's context ends first (the client gave up), the operation is
// abandoned and not applied: the real REST handlers derive their gRPC
// context from r.Context(), so a client that disconnects cancels the call.
func (s *Server) SetSlow(op string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		delete(s.slow, op)
	} else {
		s.slow[op] = d
	}
}

// SetStatus answers every request with this HTTP status (0: normal).
func (s *Server) SetStatus(code int) { s.mu.Lock(); s.status = code; s.mu.Unlock() }

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

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

func copyLabels(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func copyExtra(m map[string]json.RawMessage) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(m))
	for k, v := range m {
		out[k] = append(json.RawMessage(nil), v...)
	}
	return out
}

func now() *timestamppb.Timestamp {
	t := time.Now()
	return &timestamppb.Timestamp{Seconds: t.Unix(), Nanos: int32(t.Nanosecond())}
}

var errNotFound = errors.New("not found")

func notFound(id string) error { return fmt.Errorf("Volume %s %w", id, errNotFound) }

func (s *Server) nameTaken(name string) bool { return s.byNameLocked(name) != nil }

func (s *Server) byNameLocked(name string) *entry {
	for _, e := range s.vols {
		if e.vol.Locator != nil && e.vol.Locator.Name == name {
			return e
		}
	}
	return nil
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

// createLocked makes an empty subvolume with the fake driver's checks
// (volume/drivers/fake/fake.go Create); the caller holds s.mu.
func (s *Server) createLocked(loc *api.VolumeLocator, spec *api.VolumeSpec, extra map[string]json.RawMessage, own Ownership) (string, error) {
	if spec.Size == 0 {
		return "", errors.New("Volume size cannot be zero")
	}
	if spec.HaLevel == 0 {
		return "", errors.New("HA level cannot be zero")
	}
	if s.nameTaken(loc.GetName()) {
		return "", fmt.Errorf("Volume with name %s already exists", loc.GetName())
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
	if v.Locator.VolumeLabels == nil {
		v.Locator.VolumeLabels = map[string]string{}
	}
	s.vols[id] = &entry{vol: v, obj: obj, extra: copyExtra(extra), own: own}
	return id, nil
}

// snapshotLocked copies the volume id, read-only or writable, naming the
// copy with loc; the copy takes the parent's spec (extra keys and
// ownership included), as the fake driver's Snapshot does. The pool can snapshot a
// volume either way, clone a read-only snapshot and take a read-only
// snapshot of a clone; the other combinations are refused as not
// supported. The caller holds s.mu.
func (s *Server) snapshotLocked(id string, readonly bool, loc *api.VolumeLocator) (string, error) {
	if loc == nil || loc.Name == "" {
		return "", errors.New("Name for snapshot must be provided")
	}
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
	if v.Locator.VolumeLabels == nil {
		v.Locator.VolumeLabels = map[string]string{}
	}
	v.State, v.AttachedOn, v.DevicePath, v.AttachPath = api.VolumeState_VOLUME_STATE_DETACHED, "", "", nil
	v.AttachedState = api.AttachState_ATTACH_STATE_EXTERNAL
	s.vols[nid] = &entry{vol: v, obj: obj, extra: copyExtra(parent.extra), own: copyOwnership(parent.own)}
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

// deleteLocked destroys a volume that is not attached, as the fake
// driver's Delete (volume/drivers/fake/fake.go) does: whether snapshots
// or clones of it exist is not asked, by the driver nor by the SDK's
// VolumeServer.Delete, so they stay, their source.parent naming a volume
// that is gone. (The volume package's ErrVolHasSnaps, "Volume has
// snapshots associated", is for drivers that refuse; the fake driver,
// and so this server, does not.) The caller holds s.mu.
func (s *Server) deleteLocked(id string) error {
	e, ok := s.vols[id]
	if !ok {
		return notFound(id)
	}
	if e.vol.State == api.VolumeState_VOLUME_STATE_ATTACHED || len(e.vol.AttachPath) > 0 {
		return fmt.Errorf("%s on %s", errAttached, e.vol.AttachedOn)
	}
	children := false
	for _, o := range s.vols {
		if o.vol.GetSource().GetParent() == id {
			children = true
		}
	}
	ctx := context.Background()
	var err error
	switch {
	case e.obj.Kind == storage.KindVolume && children:
		// The pool's RemoveVolume would take the pool snapshots of the
		// volume with it, which are its children's data here: the
		// subvolume alone goes (its label file is dropped when the pool
		// is next opened).
		err = deleteSubvolume(filepath.Join(s.pool.Root(), e.obj.ID))
	case e.obj.Kind == storage.KindVolume:
		err = s.pool.RemoveVolume(ctx, e.obj)
	default:
		err = s.pool.Delete(ctx, e.obj.ID)
	}
	if err != nil {
		return err
	}
	delete(s.vols, id)
	return nil
}

// deleteSubvolume deletes one btrfs subvolume with btrfs-progs.
func deleteSubvolume(p string) error {
	if out, err := exec.Command("btrfs", "subvolume", "delete", p).CombinedOutput(); err != nil {
		return fmt.Errorf("btrfs subvolume delete %s: %v: %s", p, err, out)
	}
	return nil
}

func (s *Server) attachLocked(id string) error {
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

func (s *Server) detachLocked(id string, unmountBeforeDetach bool) error {
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
			if err := s.unmountPathLocked(e, p); err != nil {
				return err
			}
		}
	}
	e.vol.State = api.VolumeState_VOLUME_STATE_DETACHED
	e.vol.AttachedOn, e.vol.DevicePath = "", ""
	return nil
}

func (s *Server) mountLocked(id, path string) error {
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
	// In the server's namespace: the path is looked up, and mounted on,
	// as the server sees it.
	err := s.inNS(func() error {
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
		return nil
	})
	if err != nil {
		return err
	}
	e.vol.AttachPath = append(e.vol.AttachPath, path)
	return nil
}

// unmountLocked unmounts the volume from path (every path when path is
// empty).
func (s *Server) unmountLocked(id, path string) error {
	e, ok := s.vols[id]
	if !ok {
		return notFound(id)
	}
	if path == "" {
		for _, p := range append([]string(nil), e.vol.AttachPath...) {
			if err := s.unmountPathLocked(e, p); err != nil {
				return err
			}
		}
		return nil
	}
	return s.unmountPathLocked(e, filepath.Clean(path))
}

// unmountPathLocked refuses a busy mount, as umount(2) refuses it.
func (s *Server) unmountPathLocked(e *entry, path string) error {
	if len(e.vol.AttachPath) == 0 {
		// volume/drivers/fake/fake.go Unmount.
		return fmt.Errorf("Device %s not mounted", e.vol.Id)
	}
	i := -1
	for j, p := range e.vol.AttachPath {
		if p == path {
			i = j
		}
	}
	if i < 0 {
		return fmt.Errorf("Device %s not mounted at %s", e.vol.Id, path)
	}
	// In the server's namespace; a mount gone already (EINVAL) counts
	// as unmounted.
	if err := s.inNS(func() error { return unix.Unmount(path, 0) }); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		if err == unix.EBUSY {
			return fmt.Errorf("Volume is busy: %s at %s: %v", e.vol.Id, path, err)
		}
		return fmt.Errorf("Failed to unmount %s at %s: %v", e.vol.Id, path, err)
	}
	e.vol.AttachPath = append(e.vol.AttachPath[:i], e.vol.AttachPath[i+1:]...)
	return nil
}

// Create makes a public volume: an empty subvolume, or with source.Parent
// a writable snapshot of the parent. Test-setup semantics: the locator is
// stored as given (its labels are not copied into the spec), and an
// existing name is an error. Over HTTP, create follows the SDK instead.
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
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.createLocked(loc, spec, nil, Ownership{})
}

// Snapshot copies the volume id, read-only or writable, named and
// labelled with loc as given (test-setup semantics; over HTTP a clone
// takes its parent's labels instead). The copy takes the parent's spec,
// extra spec keys and owner.
func (s *Server) Snapshot(id string, readonly bool, loc *api.VolumeLocator) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshotLocked(id, readonly, loc)
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

// Delete destroys a volume that is not attached, leaving its snapshots
// and clones with a dangling parent; an unknown ID is an error
// (test-setup semantics: over HTTP it is a success).
func (s *Server) Delete(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deleteLocked(id)
}

// Set updates the locator (name; labels merged, an empty value deletes)
// and some spec fields (test-setup semantics: size and HA level when not
// zero, replica set when given; scale, sticky, shared, snapshot interval,
// CoS, IO profile as given; spec labels when given). Over HTTP, Set
// follows the real server's getVolumeUpdateSpec instead.
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
		mergeLabels(v, loc.VolumeLabels)
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

// mergeLabels is the fake driver's Set of locator labels
// (volume/drivers/fake/fake.go Set): each key overwrites, an empty value
// deletes the key, other labels stay.
func mergeLabels(v *api.Volume, labels map[string]string) {
	if v.Locator == nil {
		v.Locator = &api.VolumeLocator{}
	}
	if v.Locator.VolumeLabels == nil {
		v.Locator.VolumeLabels = map[string]string{}
	}
	for k, val := range labels {
		if val == "" {
			delete(v.Locator.VolumeLabels, k)
		} else {
			v.Locator.VolumeLabels[k] = val
		}
	}
}

// SetExtraSpec sets spec keys that openstorage v1.0.0's api.VolumeSpec
// does not know (journal, sharedv4, queue_depth, ...) on a volume, as the
// real server would store them; a nil or zero value removes the key. A
// key v1.0.0 knows is refused: set those with Set.
func (s *Server) SetExtraSpec(id string, kv map[string]any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.vols[id]
	if !ok {
		return notFound(id)
	}
	for k, v := range kv {
		if v1SpecKeys[k] || k == "ownership" {
			return fmt.Errorf("osdserver: %s is not an extra spec key (openstorage v1.0.0 knows it, or it is ownership)", k)
		}
		data, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("osdserver: spec key %s: %w", k, err)
		}
		if e.extra == nil {
			e.extra = map[string]json.RawMessage{}
		}
		if zeroJSON(data) {
			delete(e.extra, k)
		} else {
			e.extra[k] = data
		}
	}
	return nil
}

// ExtraSpec returns the spec keys of a volume that openstorage v1.0.0's
// api.VolumeSpec does not know, decoded (nil for an unknown volume).
func (s *Server) ExtraSpec(id string) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.vols[id]
	if !ok {
		return nil
	}
	out := map[string]any{}
	for k, raw := range e.extra {
		var v any
		_ = json.Unmarshal(raw, &v)
		out[k] = v
	}
	return out
}

// SetOwnership sets a volume's spec.ownership (a zero Ownership makes it
// public), as an admin's update would.
func (s *Server) SetOwnership(id string, own Ownership) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.vols[id]
	if !ok {
		return notFound(id)
	}
	e.own = copyOwnership(own)
	return nil
}

// OwnershipOf returns a volume's spec.ownership.
func (s *Server) OwnershipOf(id string) (Ownership, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.vols[id]
	if !ok {
		return Ownership{}, false
	}
	return copyOwnership(e.own), true
}

func copyOwnership(o Ownership) Ownership {
	out := Ownership{Owner: o.Owner}
	if o.Groups != nil {
		out.Groups = map[string]Access{}
		for k, v := range o.Groups {
			out.Groups[k] = v
		}
	}
	if o.Collaborators != nil {
		out.Collaborators = map[string]Access{}
		for k, v := range o.Collaborators {
			out.Collaborators[k] = v
		}
	}
	return out
}

// Attach attaches the volume to this node; attaching again is a no-op.
func (s *Server) Attach(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attachLocked(id)
}

// Detach detaches a volume; a mounted one only with unmountBeforeDetach.
func (s *Server) Detach(id string, unmountBeforeDetach bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.detachLocked(id, unmountBeforeDetach)
}

// Mount bind-mounts the volume's subvolume at path, which must exist, in
// the server's mount namespace (visible on the host below MountRoot
// only); the volume must be attached (unless Config.NoAttach). A
// read-only snapshot is mounted read-only.
func (s *Server) Mount(id, path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mountLocked(id, path)
}

// Unmount unmounts the volume from path (every path when path is empty).
// A busy mount is refused, as umount(2) refuses it.
func (s *Server) Unmount(id, path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unmountLocked(id, path)
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
