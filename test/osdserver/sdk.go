package osdserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/libopenstorage/openstorage/api"
)

// This file is the SDK gRPC server the REST handlers forward to
// (api/server/sdk in openstorage master): its checks, texts and codes.

// gRPC status codes, as codes.Code prints them.
const (
	codeCanceled         = "Canceled"
	codeInvalidArgument  = "InvalidArgument"
	codeNotFound         = "NotFound"
	codeAlreadyExists    = "AlreadyExists"
	codePermissionDenied = "PermissionDenied"
	codeInternal         = "Internal"
	codeUnauthenticated  = "Unauthenticated"
)

// rpcError is an SDK error as a REST handler holds it: a gRPC status
// returned through a gRPC client, whose Error() is
// "rpc error: code = <Code> desc = <message>".
type rpcError struct{ code, desc string }

func (e *rpcError) Error() string { return "rpc error: code = " + e.code + " desc = " + e.desc }

func rpcErr(code, format string, a ...any) *rpcError {
	return &rpcError{code: code, desc: fmt.Sprintf(format, a...)}
}

// isNotFound is sdk.IsErrorNotFound.
func isNotFound(err error) bool {
	var r *rpcError
	return errors.As(err, &r) && r.code == codeNotFound
}

// tokenUser is the user the configured token authenticates (the test
// server's tokens are opaque, so there is exactly one user).
const tokenUser = "osdserver-user"

// caller is who an SDK call runs as.
type caller struct {
	authOn bool   // the SDK's security is on (a token is configured)
	user   string // the authenticated user; "" for a guest or with auth off
	err    error  // the interceptor's refusal, returned by every SDK call
}

// callerOf is api/server/sdk/server_interceptors.go sdkGrpcServer.auth,
// fed the Authorization header as REST annotateContext passes it on:
//   - no header: a guest (auth.IsGuest), role system.guest, no username;
//   - a header that is not "bearer <token>" (scheme case-insensitive):
//     Unauthenticated "Invalid or missing authentication token";
//   - a token naming an issuer the server does not trust ("iss:<name>:..."
//     stands for a JWT with that iss claim): Unauthenticated
//     "<name> is not a trusted issuer";
//   - any other token but the configured one (bad signature, expired):
//     PermissionDenied "Unable to authenticate token".
func (s *Server) callerOf(r *http.Request) caller {
	s.mu.Lock()
	tok := s.token
	s.mu.Unlock()
	if tok == "" {
		return caller{}
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return caller{authOn: true}
	}
	scheme, t, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || t == "" {
		return caller{authOn: true, err: rpcErr(codeUnauthenticated, "Invalid or missing authentication token")}
	}
	if t == tok {
		return caller{authOn: true, user: tokenUser}
	}
	if rest, ok := strings.CutPrefix(t, "iss:"); ok {
		name, _, _ := strings.Cut(rest, ":")
		return caller{authOn: true, err: rpcErr(codeUnauthenticated, "%s is not a trusted issuer", name)}
	}
	return caller{authOn: true, err: rpcErr(codePermissionDenied, "Unable to authenticate token")}
}

// permitted is api.Volume.IsPermitted (api/ownership.go): a volume without
// an owner is public; an owned one only for its owner (a guest has no
// username, so never). With the security off everything is permitted.
func permitted(e *entry, c caller) bool {
	return !c.authOn || e.owner == "" || e.owner == c.user
}

// wait makes op take its SetSlow time, or gives up when ctx ends first.
func (s *Server) wait(ctx context.Context, op string) error {
	s.mu.Lock()
	d := s.slow[op]
	s.mu.Unlock()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return rpcErr(codeCanceled, "%v", ctx.Err())
	}
}

// accessLocked is VolumeServer.Inspect's lookup and ownership check (and
// checkAccessForVolumeId's): "Volume id X not found", then "Access denied
// to volume X". The caller holds s.mu.
func (s *Server) accessLocked(c caller, id string) (*entry, error) {
	if c.err != nil {
		return nil, c.err
	}
	if id == "" {
		return nil, rpcErr(codeInvalidArgument, "Must supply volume id")
	}
	e, ok := s.vols[id]
	if !ok {
		return nil, rpcErr(codeNotFound, "Volume id %s not found", id)
	}
	if !permitted(e, c) {
		return nil, rpcErr(codePermissionDenied, "Access denied to volume %s", id)
	}
	return e, nil
}

// sdkInspect is VolumeServer.Inspect: the volume as JSON.
func (s *Server) sdkInspect(c caller, id string) (json.RawMessage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.accessLocked(c, id)
	if err != nil {
		return nil, err
	}
	return volJSON(e), nil
}

func (s *Server) checkAccess(c caller, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.accessLocked(c, id)
	return err
}

// byNameOrIDLocked is pkg/util.VolumeFromName: the volume with that ID,
// else the one with that name.
func (s *Server) byNameOrIDLocked(name string) *entry {
	if e, ok := s.vols[name]; ok {
		return e
	}
	return s.byNameLocked(name)
}

// existingLocked is the idempotent branch of VolumeServer.create
// (volume_ops.go): a volume of that name exists, so its ID is the answer,
// unless it belongs to someone else or differs in size, shared or parent.
func existingLocked(e *entry, c caller, name string, spec *api.VolumeSpec, parent string) (string, error) {
	if !permitted(e, c) {
		return "", rpcErr(codePermissionDenied, "Volume %s already exists and is owned by another user", name)
	}
	if e.vol.GetSpec().GetSize() != spec.GetSize() {
		return "", rpcErr(codeAlreadyExists, "Existing volume has a size of %v which differs from requested size of %v",
			e.vol.GetSpec().GetSize(), spec.GetSize())
	}
	if e.vol.GetSpec().GetShared() != spec.GetShared() {
		return "", rpcErr(codeAlreadyExists, "Existing volume has shared=%v while request is asking for shared=%v",
			e.vol.GetSpec().GetShared(), spec.GetShared())
	}
	if e.vol.GetSource().GetParent() != parent {
		return "", rpcErr(codeAlreadyExists, "Existing volume has conflicting parent value")
	}
	return e.vol.Id, nil
}

// sdkCreate is VolumeServer.Create → create with an empty Source (the
// SdkVolumeCreateRequest has none, so a REST source.parent is dropped).
func (s *Server) sdkCreate(c caller, name string, labels map[string]string, spec *api.VolumeSpec, extra map[string]json.RawMessage) (string, error) {
	if c.err != nil {
		return "", c.err
	}
	if name == "" {
		return "", rpcErr(codeInvalidArgument, "Must supply a unique name")
	}
	if spec == nil {
		return "", rpcErr(codeInvalidArgument, "Must supply spec object")
	}
	// locator.MergeVolumeSpecLabels(spec): spec labels join the locator's.
	loc := &api.VolumeLocator{Name: name, VolumeLabels: copyLabels(labels)}
	for k, v := range spec.VolumeLabels {
		loc.VolumeLabels[k] = v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.byNameOrIDLocked(name); e != nil {
		return existingLocked(e, c, name, spec, "")
	}
	// api.OwnershipSetUsernameFromContext: a new volume belongs to the
	// authenticated caller; a guest's (or any with auth off) is public.
	id, err := s.createLocked(loc, spec, extra, c.user)
	if err != nil {
		return "", rpcErr(codeInternal, "Failed to create volume: %v", err)
	}
	return id, nil
}

// sdkClone is VolumeServer.Clone → create with Source.Parent: the clone is
// named, not labelled (REST passes only the name); the driver copies the
// parent (the fake driver's Snapshot passes the parent's spec, labels
// included; a Portworx clone carries its parent's labels), so the clone
// takes the parent's locator labels. An authenticated caller who does not
// own the parent gets the clone re-owned (Spec.GetCloneCreatorOwnership);
// a guest's clone keeps the parent's ownership.
func (s *Server) sdkClone(ctx context.Context, c caller, parentID, name string) (string, error) {
	if c.err != nil {
		return "", c.err
	}
	if name == "" {
		return "", rpcErr(codeInvalidArgument, "Must supply a uniqe name")
	}
	if parentID == "" {
		return "", rpcErr(codeInvalidArgument, "Must parent volume id")
	}
	if err := s.checkAccess(c, parentID); err != nil {
		return "", err
	}
	if err := s.wait(ctx, "clone"); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	parent, ok := s.vols[parentID]
	if !ok {
		return "", rpcErr(codeNotFound, "unable to get parent volume information: Volume %s not found", parentID)
	}
	if e := s.byNameOrIDLocked(name); e != nil {
		return existingLocked(e, c, name, parent.vol.GetSpec(), parentID)
	}
	id, err := s.snapshotLocked(parentID, false, &api.VolumeLocator{Name: name, VolumeLabels: copyLabels(parent.vol.GetLocator().GetVolumeLabels())})
	if err != nil {
		return "", rpcErr(codeInternal, "unable to create snapshot: %s", err)
	}
	if c.user != "" {
		s.vols[id].owner = c.user
	}
	return id, nil
}

// sdkSnapshotCreate is VolumeServer.SnapshotCreate (volume_snapshot.go):
// a read-only snapshot labelled exactly with the request's labels, owned
// as its parent (no ownership adjustment).
func (s *Server) sdkSnapshotCreate(ctx context.Context, c caller, volID, name string, labels map[string]string) (string, error) {
	if c.err != nil {
		return "", c.err
	}
	if volID == "" {
		return "", rpcErr(codeInvalidArgument, "Must supply volume id")
	}
	if name == "" {
		return "", rpcErr(codeInvalidArgument, "Must supply a name")
	}
	if err := s.checkAccess(c, volID); err != nil {
		return "", err
	}
	if err := s.wait(ctx, "snapshot"); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.vols[volID]; !ok {
		// The driver's kvdb.ErrNotFound.
		return "", rpcErr(codeNotFound, "Id %s not found", volID)
	}
	if max := s.cfg.MaxSnapshots; max > 0 {
		n := 0
		for _, e := range s.vols {
			if e.vol.Readonly && e.vol.GetSource().GetParent() == volID {
				n++
			}
		}
		if n >= max {
			// Portworx documents the limit, not its error text: this one
			// is made up, wrapped as SnapshotCreate wraps driver errors.
			return "", rpcErr(codeInternal, "Failed to create snapshot: volume %s already has %d snapshots: there is an implementation limit of %d snapshots per volume", volID, n, max)
		}
	}
	id, err := s.snapshotLocked(volID, true, &api.VolumeLocator{Name: name, VolumeLabels: copyLabels(labels)})
	if err != nil {
		return "", rpcErr(codeInternal, "Failed to create snapshot: %v", err)
	}
	return id, nil
}

// sdkDelete is VolumeServer.Delete: an unknown ID is a success ("If the
// volume is not found, return OK to be idempotent"); driver refusals are
// "Failed to delete volume X: <err>" (Internal).
func (s *Server) sdkDelete(ctx context.Context, c caller, id string) error {
	err := s.checkAccess(c, id)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := s.wait(ctx, "delete"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.vols[id]
	if !ok {
		return nil
	}
	if e.vol.GetSpec().GetSticky() {
		// Portworx refuses to delete a sticky volume (the v1.0.0 REST
		// handler's text).
		return rpcErr(codeInternal, "Failed to delete volume %s: Cannot delete a sticky volume", id)
	}
	if err := s.deleteLocked(id); err != nil {
		return rpcErr(codeInternal, "Failed to delete volume %s: %v", id, err)
	}
	return nil
}

// sdkUpdate is VolumeServer.Update fed by REST volumeSet: labels (sent
// only when non-empty) merged by the driver, and the spec converted by
// getVolumeUpdateSpec (see applySpecUpdate).
func (s *Server) sdkUpdate(c caller, id string, labels map[string]string, spec *api.VolumeSpec, sentExtra map[string]json.RawMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.accessLocked(c, id)
	if err != nil {
		return err
	}
	if len(labels) > 0 {
		mergeLabels(e.vol, labels)
	}
	if spec != nil {
		applySpecUpdate(e, spec, sentExtra)
	}
	return nil
}

// Extra spec keys by how api/server/volume.go getVolumeUpdateSpec (then
// sdk mergeVolumeSpecs) treats them on a Set with a spec.
var (
	// Applied whenever the sent value differs from the current one, zero
	// values included: an absent key arrives as zero and clears it.
	updateWhenDiffers = []string{"sharedv4", "journal", "nodiscard", "queue_depth", "fp_preference", "xattr", "proxy_write"}
	// Always copied, even nil.
	updateAlways = []string{"io_strategy"}
	// Copied when sent (not nil).
	updateWhenSent = []string{"export_spec", "mount_options", "sharedv4_mount_options", "sharedv4_service_spec", "sharedv4_spec", "scan_policy"}
	// The other extra keys (cascaded, placement_strategy, auto_fstrim,
	// io_throttle, readahead, ...) are not in getVolumeUpdateSpec: a Set
	// leaves them as they are.
)

// applySpecUpdate is getVolumeUpdateSpec: every field of the sent spec
// that differs from the current spec is applied, zero values included,
// except Cos (only when ≠ 0), HaLevel (only when ≠ 0), SnapshotInterval
// (only when ≠ math.MaxUint32) and Group (only when sent); Size 0 is
// ignored (the fake driver's Set); ReplicaSet when sent. Fields the
// conversion does not carry (format, block_size, volume_labels,
// ephemeral, encrypted, ...) stay.
func applySpecUpdate(e *entry, spec *api.VolumeSpec, sent map[string]json.RawMessage) {
	if e.vol.Spec == nil {
		e.vol.Spec = &api.VolumeSpec{}
	}
	cur := e.vol.Spec
	cur.Shared = spec.Shared
	cur.Passphrase = spec.Passphrase
	cur.Sticky = spec.Sticky
	cur.Scale = spec.Scale
	cur.IoProfile = spec.IoProfile
	cur.Dedupe = spec.Dedupe
	cur.SnapshotSchedule = spec.SnapshotSchedule
	if spec.Size != 0 {
		cur.Size = spec.Size
	}
	if spec.Cos != 0 {
		cur.Cos = spec.Cos
	}
	if spec.HaLevel != 0 {
		cur.HaLevel = spec.HaLevel
	}
	if spec.SnapshotInterval != math.MaxUint32 {
		cur.SnapshotInterval = spec.SnapshotInterval
	}
	if spec.Group != nil {
		cur.Group = spec.Group
	}
	if spec.ReplicaSet != nil {
		cur.ReplicaSet = spec.ReplicaSet
	}
	if e.extra == nil {
		e.extra = map[string]json.RawMessage{}
	}
	for _, k := range append(append([]string(nil), updateWhenDiffers...), updateAlways...) {
		if v, ok := sent[k]; ok {
			e.extra[k] = v
		} else {
			delete(e.extra, k)
		}
	}
	for _, k := range updateWhenSent {
		if v, ok := sent[k]; ok {
			e.extra[k] = v
		}
	}
}

// sdkAttach is VolumeServer.Attach (volume_node_ops.go).
func (s *Server) sdkAttach(ctx context.Context, c caller, id string, opts map[string]string) error {
	if err := s.checkAccess(c, id); err != nil {
		return err
	}
	// api/server/volume.go volumeSet passes the SECRET_NAME, SECRET_KEY
	// and SECRET_CONTEXT options to the attach; Portworx needs a volume's
	// per-volume secret on every attach ("you need to provide that key for
	// every create and attach command", docs.portworx.com, key management,
	// per-volume secret). Portworx's wording of the refusal is not public:
	// this one is made up.
	s.mu.Lock()
	e, ok := s.vols[id]
	if ok && e.vol.GetSpec().GetEncrypted() && e.vol.GetSpec().GetPassphrase() != "" && opts["SECRET_KEY"] != e.vol.GetSpec().GetPassphrase() {
		s.mu.Unlock()
		return rpcErr(codeInternal, "failed  to attach volume: volume %s is encrypted with a per-volume secret and the attach did not name it (SECRET_KEY)", id)
	}
	s.mu.Unlock()
	if s.cfg.NoAttach {
		return rpcErr(codeInternal, "failed  to attach volume: %s", errNotSupported)
	}
	if err := s.wait(ctx, "attach"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.attachLocked(id); err != nil {
		return rpcErr(codeInternal, "failed  to attach volume: %v", err)
	}
	return nil
}

// sdkDetach is VolumeServer.Detach: a NotFound from the access check or
// the driver is ignored, so detaching a missing volume succeeds.
func (s *Server) sdkDetach(ctx context.Context, c caller, id string, unmountBeforeDetach bool) error {
	err := s.checkAccess(c, id)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if s.cfg.NoAttach {
		return rpcErr(codeInternal, "Failed to detach volume %s: %s", id, errNotSupported)
	}
	if err := s.wait(ctx, "detach"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.detachLocked(id, unmountBeforeDetach); err != nil && !errors.Is(err, errNotFound) {
		return rpcErr(codeInternal, "Failed to detach volume %s: %v", id, err)
	}
	return nil
}

// sdkMount is VolumeServer.Mount.
func (s *Server) sdkMount(ctx context.Context, c caller, id, path string) error {
	if err := s.checkAccess(c, id); err != nil {
		return err
	}
	if err := s.wait(ctx, "mount"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.mountLocked(id, path); err != nil {
		return rpcErr(codeInternal, "Failed to mount volume %s: %v", id, err)
	}
	return nil
}

// sdkUnmount is VolumeServer.Unmount: an empty path is refused; a
// NotFound from the access check is ignored but the driver's Unmount
// still runs, and for a missing volume fails as the fake driver's does
// (its GetVol returns kvdb.ErrNotFound, "Key not found").
func (s *Server) sdkUnmount(ctx context.Context, c caller, id, path string) error {
	if c.err != nil {
		return c.err
	}
	if path == "" {
		return rpcErr(codeInvalidArgument, "Invalid Mount Path")
	}
	if err := s.checkAccess(c, id); err != nil && !isNotFound(err) {
		return err
	}
	if err := s.wait(ctx, "unmount"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.vols[id]; !ok {
		return rpcErr(codeInternal, "Failed to unmount volume %s: Key not found", id)
	}
	if err := s.unmountLocked(id, path); err != nil {
		return rpcErr(codeInternal, "Failed to unmount volume %s: %v", id, err)
	}
	return nil
}

// sdkEnumerate is VolumeServer.InspectWithFilters: the volumes matching
// name and labels that the caller may read; the others are left out
// silently.
func (s *Server) sdkEnumerate(c caller, name string, labels map[string]string) ([]json.RawMessage, error) {
	if c.err != nil {
		return nil, c.err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []json.RawMessage{}
	for _, id := range s.sortedIDsLocked() {
		e := s.vols[id]
		if name != "" && e.vol.GetLocator().GetName() != name {
			continue
		}
		if !labelsMatch(e.vol.GetLocator().GetVolumeLabels(), labels) || !permitted(e, c) {
			continue
		}
		out = append(out, volJSON(e))
	}
	return out, nil
}

// sdkSnapEnumerate is VolumeServer.SnapshotEnumerateWithFilters: with a
// volume ID, the caller must be able to read it; the snapshots (and
// clones: anything with that parent) the caller may read.
func (s *Server) sdkSnapEnumerate(c caller, volID string, labels map[string]string) ([]string, error) {
	if c.err != nil {
		return nil, c.err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if volID != "" {
		if _, err := s.accessLocked(c, volID); err != nil {
			return nil, err
		}
	}
	ids := []string{}
	for _, id := range s.sortedIDsLocked() {
		e := s.vols[id]
		p := e.vol.GetSource().GetParent()
		if p == "" || (volID != "" && p != volID) {
			continue
		}
		if labelsMatch(e.vol.GetLocator().GetVolumeLabels(), labels) && permitted(e, c) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func (s *Server) sortedIDsLocked() []string {
	ids := make([]string, 0, len(s.vols))
	for id := range s.vols {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// volJSON is a volume as the real server encodes it (encoding/json on the
// protobuf struct): v1.0.0's fields, plus the extra spec keys and
// spec.ownership.
func volJSON(e *entry) json.RawMessage {
	data, _ := json.Marshal(e.vol)
	if len(e.extra) == 0 && e.owner == "" {
		return data
	}
	var m map[string]json.RawMessage
	_ = json.Unmarshal(data, &m)
	spec := map[string]json.RawMessage{}
	if raw, ok := m["spec"]; ok {
		_ = json.Unmarshal(raw, &spec)
	}
	for k, v := range e.extra {
		spec[k] = v
	}
	if e.owner != "" {
		spec["ownership"], _ = json.Marshal(map[string]string{"owner": e.owner})
	}
	m["spec"], _ = json.Marshal(spec)
	out, _ := json.Marshal(m)
	return out
}

// v1SpecKeys are the JSON names of openstorage v1.0.0's api.VolumeSpec.
var v1SpecKeys = func() map[string]bool {
	keys := map[string]bool{}
	t := reflect.TypeOf(api.VolumeSpec{})
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			keys[name] = true
		}
	}
	return keys
}()

// extraSpecKeys are the VolumeSpec fields of openstorage master
// (api/api.pb.go) that v1.0.0 lacks, ownership aside (kept as
// entry.owner).
var extraSpecKeys = map[string]bool{
	"cascaded": true, "journal": true, "sharedv4": true, "queue_depth": true,
	"force_unsupported_fs_type": true, "nodiscard": true, "io_strategy": true,
	"placement_strategy": true, "storage_policy": true, "export_spec": true,
	"fp_preference": true, "xattr": true, "scan_policy": true, "mount_options": true,
	"sharedv4_mount_options": true, "proxy_write": true, "proxy_spec": true,
	"sharedv4_service_spec": true, "sharedv4_spec": true, "auto_fstrim": true,
	"io_throttle": true, "number_of_chunks": true, "readahead": true,
	"topology_requirement": true,
}

// pickExtra keeps the extra spec keys of a sent spec, zero values left
// out (decoded into the real struct they are zero, and encoding/json
// omits them). Keys the real VolumeSpec does not have are dropped, as its
// decoder drops them.
func pickExtra(spec map[string]json.RawMessage) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for k, v := range spec {
		if extraSpecKeys[k] && !zeroJSON(v) {
			out[k] = append(json.RawMessage(nil), v...)
		}
	}
	return out
}

// zeroJSON reports a JSON value that decodes to a zero scalar or nil.
func zeroJSON(v []byte) bool {
	t := string(bytes.TrimSpace(v))
	switch t {
	case "", "null", "false", `""`:
		return true
	}
	if f, err := strconv.ParseFloat(t, 64); err == nil && f == 0 {
		return true
	}
	return false
}
