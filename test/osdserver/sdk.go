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

// caller is who an SDK call runs as.
type caller struct {
	authOn bool     // the SDK's security is on (a token is configured)
	user   string   // the authenticated user; "" for a guest or with auth off
	groups []string // the user's groups claim
	err    error    // the interceptor's refusal, returned by every SDK call
}

// admin is api.IsAdminByUser: a user in the group "*" (api.AdminGroup);
// everyone, with the security off.
func (c caller) admin() bool {
	if !c.authOn {
		return true
	}
	for _, g := range c.groups {
		if g == "*" {
			return true
		}
	}
	return false
}

// callerOf is api/server/sdk/server_interceptors.go sdkGrpcServer.auth,
// fed the Authorization header as REST annotateContext passes it on:
//   - no header: a guest (auth.IsGuest), role system.guest, no username;
//   - a header that is not "bearer <token>" (scheme case-insensitive):
//     Unauthenticated "Invalid or missing authentication token";
//   - a token naming an issuer the server does not trust ("iss:<name>:..."
//     stands for a JWT with that iss claim): Unauthenticated
//     "<name> is not a trusted issuer";
//   - Config.Token: AdminUser; a token of Config.Users: that user;
//   - any other token (bad signature, expired): PermissionDenied
//     "Unable to authenticate token".
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
		return caller{authOn: true, user: AdminUser.Name, groups: AdminUser.Groups}
	}
	if u, ok := s.cfg.Users[t]; ok && u.Name != "" {
		return caller{authOn: true, user: u.Name, groups: u.Groups}
	}
	if rest, ok := strings.CutPrefix(t, "iss:"); ok {
		name, _, _ := strings.Cut(rest, ":")
		return caller{authOn: true, err: rpcErr(codeUnauthenticated, "%s is not a trusted issuer", name)}
	}
	return caller{authOn: true, err: rpcErr(codePermissionDenied, "Unable to authenticate token")}
}

// permitted is api.Volume.IsPermitted → Ownership.IsPermittedByContext
// (api/ownership.go): with the security off everything is; a volume
// without an owner is public; otherwise a caller without a username (a
// guest) never is, and a user is if it owns the volume, is an admin
// (IsUserAllowedByGroup), belongs to a group the ACLs give at least that
// access (the first of its groups listed decides, then "*"), or is a
// collaborator with at least that access (by name, then "*").
func permitted(e *entry, c caller, want Access) bool {
	o := e.own
	if !c.authOn || o.Owner == "" {
		return true
	}
	if c.user == "" {
		return false
	}
	if o.Owner == c.user || c.admin() {
		return true
	}
	if len(o.Groups) > 0 {
		for _, g := range c.groups {
			if a, ok := o.Groups[g]; ok {
				return a >= want
			}
		}
		if a, ok := o.Groups["*"]; ok {
			return a >= want
		}
	}
	if a, ok := o.Collaborators[c.user]; ok {
		return a >= want
	}
	if a, ok := o.Collaborators["*"]; ok {
		return a >= want
	}
	return false
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

// accessLocked is VolumeServer.Inspect's lookup and ownership check
// (Ownership_Read): "Volume id X not found", then "Access denied to
// volume X". The caller holds s.mu.
func (s *Server) accessLocked(c caller, id string) (*entry, error) {
	return s.accessForLocked(c, id, Read)
}

// accessForLocked is checkAccessForVolumeId (api/server/sdk/utils.go) for
// the access want: the mount and attach calls (volume_node_ops.go) ask
// Ownership_Write. The caller holds s.mu.
func (s *Server) accessForLocked(c caller, id string, want Access) (*entry, error) {
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
	if !permitted(e, c, want) {
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

func (s *Server) checkAccess(c caller, id string) error { return s.checkAccessFor(c, id, Read) }

func (s *Server) checkAccessFor(c caller, id string, want Access) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.accessForLocked(c, id, want)
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
// unless the caller lacks Ownership_Admin on it or it differs in size,
// shared or parent.
func existingLocked(e *entry, c caller, name string, spec *api.VolumeSpec, parent string) (string, error) {
	if !permitted(e, c, Admin) {
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
	id, err := s.createLocked(loc, spec, extra, Ownership{Owner: c.user})
	if err != nil {
		return "", rpcErr(codeInternal, "Failed to create volume: %v", err)
	}
	return id, nil
}

// sdkClone is VolumeServer.Clone → create with Source.Parent: the driver
// copies the parent (the fake driver's Snapshot passes the parent's
// spec, labels included; a Portworx clone carries its parent's labels),
// and the labels the REST request carried, which the snapshot handler
// passes on as SdkVolumeCloneRequest.AdditionalLabels (openstorage
// commit 78a53252, PWX-38585, 2024-09), are merged over the parent's. An
// authenticated caller who does not own the parent gets the clone
// re-owned, without the parent's ACLs (Spec.GetCloneCreatorOwnership →
// OwnershipSetUsernameFromContext(ctx, nil)); a guest's clone (of a
// public parent, the only kind it may read) is public.
func (s *Server) sdkClone(ctx context.Context, c caller, parentID, name string, labels map[string]string) (string, error) {
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
	merged := copyLabels(parent.vol.GetLocator().GetVolumeLabels())
	for k, v := range labels {
		merged[k] = v
	}
	id, err := s.snapshotLocked(parentID, false, &api.VolumeLocator{Name: name, VolumeLabels: merged})
	if err != nil {
		return "", rpcErr(codeInternal, "unable to create snapshot: %s", err)
	}
	if c.authOn && s.vols[id].own.Owner != c.user {
		s.vols[id].own = Ownership{Owner: c.user}
	}
	return id, nil
}

// sdkSnapshotCreate is VolumeServer.SnapshotCreate (volume_snapshot.go):
// a read-only snapshot labelled exactly with the request's labels, owned
// as its parent, ACLs and all (no ownership adjustment): a non-admin
// who may read another user's volume takes snapshots it may read, not
// delete.
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
// volume is not found, return OK to be idempotent"); the caller must be
// able to read it (Inspect), then "Only the owner or the admin can
// delete" (IsPermitted(Ownership_Admin): PermissionDenied "Cannot delete
// volume X"); driver refusals are "Failed to delete volume X: <err>"
// (Internal).
func (s *Server) sdkDelete(ctx context.Context, c caller, id string) error {
	err := s.checkAccess(c, id)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := s.checkAccessFor(c, id, Admin); err != nil {
		var r *rpcError
		if errors.As(err, &r) && r.code == codePermissionDenied {
			return rpcErr(codePermissionDenied, "Cannot delete volume %v", id)
		}
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

// sdkUpdate is VolumeServer.Update fed by REST volumeSet: the caller
// must read the volume (Inspect), then write it (PermissionDenied "Cannot
// update volume"); labels (sent only when non-empty) merged by the
// driver, and the spec converted by getVolumeUpdateSpec (see
// applySpecUpdate).
func (s *Server) sdkUpdate(c caller, id string, labels map[string]string, spec *api.VolumeSpec, sentExtra map[string]json.RawMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.accessLocked(c, id)
	if err != nil {
		return err
	}
	if !permitted(e, c, Write) {
		return rpcErr(codePermissionDenied, "Cannot update volume")
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

// attachOptions is pkg/options NewVolumeAttachOptions: what the attach
// reads of the options api/server/volume.go volumeSet hands it.
type attachOptions struct {
	secretName    string // SECRET_NAME (OptionsSecret): the secret's name in the secret store
	secretKey     string // SECRET_KEY (OptionsSecretKey): the key within a Kubernetes secret named SECRET_NAME
	secretContext string // SECRET_CONTEXT (OptionsSecretContext): e.g. a Kubernetes secret's namespace
}

func newAttachOptions(opts map[string]string) attachOptions {
	return attachOptions{secretName: opts["SECRET_NAME"], secretKey: opts["SECRET_KEY"], secretContext: opts["SECRET_CONTEXT"]}
}

// sdkAttach is VolumeServer.Attach (volume_node_ops.go), which asks
// Ownership_Write of the caller.
func (s *Server) sdkAttach(ctx context.Context, c caller, id string, opts map[string]string) error {
	if err := s.checkAccessFor(c, id, Write); err != nil {
		return err
	}
	// Portworx needs a volume's per-volume secret on every attach ("you
	// need to provide that key for every create and attach command",
	// docs.portworx.com, key management, per-volume secret), by name:
	// SECRET_NAME, which OpenStorage's own Docker plugin
	// (api/server/docker.go attachOptionsFromSpec) and CSI driver
	// (csi/node.go) fill with the spec's secret_key (Passphrase). A
	// SECRET_KEY alone names no secret. Portworx's wording of the refusal
	// is not public: this one is made up.
	ao := newAttachOptions(opts)
	s.mu.Lock()
	e, ok := s.vols[id]
	if ok && e.vol.GetSpec().GetEncrypted() && e.vol.GetSpec().GetPassphrase() != "" && ao.secretName != e.vol.GetSpec().GetPassphrase() {
		s.mu.Unlock()
		return rpcErr(codeInternal, "failed  to attach volume: volume %s is encrypted with a per-volume secret and the attach did not name it (SECRET_NAME)", id)
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

// sdkDetach is VolumeServer.Detach (Ownership_Write): a NotFound from the
// access check or the driver is ignored, so detaching a missing volume
// succeeds.
func (s *Server) sdkDetach(ctx context.Context, c caller, id string, unmountBeforeDetach bool) error {
	err := s.checkAccessFor(c, id, Write)
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

// sdkMount is VolumeServer.Mount (Ownership_Write).
func (s *Server) sdkMount(ctx context.Context, c caller, id, path string) error {
	if err := s.checkAccessFor(c, id, Write); err != nil {
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
	if err := s.checkAccessFor(c, id, Write); err != nil && !isNotFound(err) {
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
		if !labelsMatch(e.vol.GetLocator().GetVolumeLabels(), labels) || !permitted(e, c, Read) {
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
		if labelsMatch(e.vol.GetLocator().GetVolumeLabels(), labels) && permitted(e, c, Read) {
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
// spec.ownership (owner, and acls.groups and acls.collaborators, the
// access types as numbers).
func volJSON(e *entry) json.RawMessage {
	data, _ := json.Marshal(e.vol)
	if len(e.extra) == 0 && e.own.Owner == "" {
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
	if e.own.Owner != "" {
		own := map[string]any{"owner": e.own.Owner}
		if len(e.own.Groups) > 0 || len(e.own.Collaborators) > 0 {
			acls := map[string]any{}
			if len(e.own.Groups) > 0 {
				acls["groups"] = e.own.Groups
			}
			if len(e.own.Collaborators) > 0 {
				acls["collaborators"] = e.own.Collaborators
			}
			own["acls"] = acls
		}
		spec["ownership"], _ = json.Marshal(own)
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
