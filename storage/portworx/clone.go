package portworx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/libopenstorage/openstorage/api"
	"github.com/libopenstorage/openstorage/api/spec"

	"github.com/snapvol/snapvol/storage"
)

// cloneName is unique in the cluster and says which instance made the
// clone, so one left without its labels (a crash between the clone and
// its labelling) is still found as this instance's (see Owned).
func (b *Backend) cloneName() string { return b.clonePrefix() + storage.RandomHex(8) }

func (b *Backend) clonePrefix() string { return "snapvol-clone-" + b.cfg.Instance + "-" }

// unlabelledClone: a writable child named exactly as this instance names
// its clones, whose labels are not its own: made, then not labelled (on
// a server that drops a clone request's labels).
// (A snapshot Portworx names after one of snapvol's clones has more to
// its name.)
func (b *Backend) unlabelledClone(v *api.Volume) bool {
	rest, ok := strings.CutPrefix(volumeName(v), b.clonePrefix())
	return ok && len(rest) == 16 && strings.Trim(rest, "0123456789abcdef") == "" &&
		parentOf(v) != "" && !v.Readonly && ownLabels(v)[storage.LabelName] == ""
}

// Clone makes a writable snapshot of snap, then labels it and applies the
// options in one update. The server gives a clone its parent's labels and
// spec: the current REST snapshot handler (api/server/volume.go
// volAPI.snap, since commit 78a53252, PWX-38585, 2024-09) passes the
// request's labels to the SDK's Clone as AdditionalLabels, merged over
// the parent's; servers before it sent Clone only the parent and the
// name, dropping the request's labels. Either way the clone carries
// labels that are not its own (production's, on a clone of a snapshot
// Portworx's schedule took), which the update blanks, and on older
// servers it lacks snapvol's until then. The labels go with the request
// all the same, so on current servers the clone is snapvol's, by its
// labels, from the moment it exists. If the update fails the clone is
// deleted, so nothing half made remains.
func (b *Backend) Clone(ctx context.Context, snap storage.Object, labels map[string]string, opts map[string]string) (storage.Object, error) {
	// Parse before making anything: a bad value fails with no clone.
	sp, err := cloneSpec(opts)
	if err != nil {
		return storage.Object{}, err
	}
	if sp != nil && sp.Size != 0 {
		if err := b.checkCloneSize(ctx, snap, sp.Size); err != nil {
			return storage.Object{}, err
		}
	}
	name := b.cloneName()
	own := b.labels(labels, name)
	specOpts := opts
	if key, ok := opts[api.SpecPassphrase]; ok {
		own[storage.LabelSecretKey] = key
		specOpts = make(map[string]string, len(opts))
		for k, v := range opts {
			if k != api.SpecPassphrase {
				specOpts[k] = v
			}
		}
	}
	b.cloning.Store(name, true)
	defer b.cloning.Delete(name)
	what := fmt.Sprintf("cloning snapshot %q", snap.Name)
	id, err := b.rest.snapshot(ctx, what, &api.SnapCreateRequest{Id: snap.ID, Readonly: false, Locator: &api.VolumeLocator{Name: name, VolumeLabels: own}})
	if errors.Is(err, storage.ErrUnavailable) || ctx.Err() != nil {
		// The server may have made the clone all the same (its driver
		// does not stop when the request does), without labels: look
		// for it by its name at the next sweep.
		b.rescan.Store(true)
	}
	if err != nil {
		return storage.Object{}, err
	}
	if err := b.finishClone(ctx, id, own, specOpts); err != nil {
		if derr := b.deleteID(ctx, "deleting the clone that could not be labelled", id); derr != nil {
			b.rescan.Store(true)
			err = fmt.Errorf("%w (and the clone %s could not be deleted: %v; the orphan sweep will retry)", err, id, derr)
		}
		return storage.Object{}, err
	}
	return storage.Object{
		ID: id, Identity: id, Name: name, Kind: storage.KindClone, Parent: snap.ID,
		Created: time.Now().UTC(), Labels: objectLabels(own),
	}, nil
}

// finishClone gives clone id exactly the labels own (labels it inherited
// are blanked: an empty value deletes a label on OpenStorage servers, and
// reads as absent everywhere in snapvol) and applies opts to its spec.
func (b *Backend) finishClone(ctx context.Context, id string, own map[string]string, opts map[string]string) error {
	v, raw, err := b.rest.inspectRaw(ctx, id)
	if err != nil {
		return err
	}
	set := copyLabels(own)
	for k := range locatorLabels(v) {
		if _, ok := set[k]; !ok {
			set[k] = ""
		}
	}
	body := map[string]interface{}{}
	if len(opts) > 0 {
		changed, userLabels, err := specChanges(v.GetSpec(), raw, opts)
		if err != nil {
			return err
		}
		for k, val := range userLabels {
			set[k] = val
		}
		if changed != nil {
			body["spec"] = changed
		}
	}
	body["locator"] = &api.VolumeLocator{Name: volumeName(v), VolumeLabels: set}
	what := fmt.Sprintf("labelling clone %s", id)
	if len(opts) > 0 {
		what = fmt.Sprintf("labelling clone %s and applying options %v", id, opts)
	}
	_, err = b.rest.setBody(ctx, what, id, body)
	return err
}

// specChanges is the spec to send so that only what opts ask for changes.
// The server applies every field of a sent spec that differs from the
// volume's (api/server/volume.go getVolumeUpdateSpec), zero values
// included, and fields openstorage v1.0.0's types do not know (journal,
// queue_depth, nodiscard, sharedv4 …) would arrive as zero if the spec
// went through those types. So the spec sent is the server's own JSON
// (raw), with only the fields opts change replaced; nil when none do.
// userLabels are the labels= option's, which go on the locator.
func specChanges(cur *api.VolumeSpec, raw map[string]json.RawMessage, opts map[string]string) (map[string]json.RawMessage, map[string]string, error) {
	before := &api.VolumeSpec{}
	if cur != nil {
		before = cur.Copy()
	}
	if before.VolumeLabels == nil {
		before.VolumeLabels = map[string]string{}
	}
	userLoc := &api.VolumeLocator{VolumeLabels: map[string]string{}}
	after, userLoc, _, err := spec.NewSpecHandler().UpdateSpecFromOpts(opts, before.Copy(), userLoc, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("clone options %v: %w", opts, err)
	}
	if err := checkUserLabels(userLoc.VolumeLabels); err != nil {
		return nil, nil, err
	}
	bm, err := fields(before)
	if err != nil {
		return nil, nil, err
	}
	am, err := fields(after)
	if err != nil {
		return nil, nil, err
	}
	out := make(map[string]json.RawMessage, len(raw))
	for k, v := range raw {
		out[k] = v
	}
	changed := false
	for k, v := range am {
		if !bytes.Equal(bm[k], v) {
			out[k], changed = v, true
		}
	}
	for k := range bm {
		if _, ok := am[k]; !ok {
			delete(out, k)
			changed = true
		}
	}
	if !changed {
		return nil, userLoc.VolumeLabels, nil
	}
	return out, userLoc.VolumeLabels, nil
}

// fields is sp as the JSON object the REST API exchanges.
func fields(sp *api.VolumeSpec) (map[string]json.RawMessage, error) {
	data, err := json.Marshal(sp)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	return m, json.Unmarshal(data, &m)
}

// checkCloneSize refuses a clone size below its snapshot's: a block
// device cannot shrink under the filesystem on it.
func (b *Backend) checkCloneSize(ctx context.Context, snap storage.Object, size uint64) error {
	sv, err := b.rest.inspect(ctx, snap.ID)
	if err != nil {
		return fmt.Errorf("clone of snapshot %q: %w", snap.Name, err)
	}
	if have := sv.GetSpec().GetSize(); size < have {
		return fmt.Errorf("option size=%d is below the size of snapshot %q (%d bytes): a Portworx clone is a volume as large as its snapshot, which can grow but not shrink", size, snap.Name, have)
	}
	return nil
}
