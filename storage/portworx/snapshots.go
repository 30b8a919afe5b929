package portworx

// Snapshots: listing a source's, finding one by name, taking one, and the
// server's per-volume snapshot limit.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libopenstorage/openstorage/api"

	"github.com/snapvol/snapvol/storage"
)

// children lists the snapshots the server holds that belong to source,
// clones left out: those made from source, unless labelled as another
// source's (storage.LabelSourceID), and those made from anything else
// (a clone of source, by SnapshotOf) labelled as source's. Two listings:
// the server's parent index, and a label selector.
func (b *Backend) children(ctx context.Context, source storage.Object) ([]*api.Volume, error) {
	what := fmt.Sprintf("listing snapshots of %q", source.Name)
	vols, err := b.rest.snapEnumerate(ctx, what, []string{source.ID}, nil)
	if errors.Is(err, storage.ErrNotFound) {
		// The SDK checks the volume before listing its children
		// (SnapshotEnumerateWithFilters → checkAccessForVolumeId), so a
		// removed source's are not listed by its ID, though they may
		// live on with a dangling parent (the fake driver deletes a
		// volume that has snapshots): every snapshot, filtered here.
		var all []*api.Volume
		all, err = b.rest.snapEnumerate(ctx, what, nil, nil)
		vols = nil
		for _, v := range all {
			if v != nil && parentOf(v) == source.ID {
				vols = append(vols, v)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	ident := identity(source)
	filed, err := b.rest.snapEnumerate(ctx, what, nil, map[string]string{storage.LabelSourceID: ident})
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []*api.Volume
	for _, v := range append(vols, filed...) {
		// Filtered here too: some servers ignore or mangle the ID filter,
		// and some match label keys only.
		if v == nil || seen[v.Id] || parentOf(v) == "" || isKind(v, storage.KindClone) {
			continue
		}
		l := ownLabels(v)
		if parentOf(v) != source.ID && l[storage.LabelSourceID] == "" {
			continue
		}
		if storage.SnapshotParent(l, parentOf(v)) == ident {
			seen[v.Id] = true
			out = append(out, v)
		}
	}
	return out, nil
}

// Snapshots lists the point-in-time copies of source @latest may use:
// the read-only snapshots, whoever took them (Portworx's schedules, pxctl,
// snapvol). Writable children are never among them, whatever their labels
// say (labels are anyone's to write with pxctl): a writable snapshot or
// clone is how people ran CI on Portworx before snapvol (pxctl snap
// create, then writing to it), and anyone with pxctl or the pxd driver
// can make one and write to it, so what it holds is not the source's at
// any point in time. snapvol takes every snapshot of its own read-only.
func (b *Backend) Snapshots(ctx context.Context, source storage.Object) ([]storage.Object, error) {
	vols, err := b.children(ctx, source)
	if err != nil {
		return nil, err
	}
	var out []storage.Object
	for _, v := range vols {
		if v.Readonly {
			out = append(out, b.object(v, storage.KindSnapshot))
		}
	}
	return out, nil
}

// SnapshotByName finds the snapshot a user named in @NAME: a read-only
// snapshot of source, as Snapshots lists them. A writable child of that
// name is not one: whoever named a raw writable clone of production
// "masked-…" would otherwise hand it to CI through SOURCES=…@masked*.
func (b *Backend) SnapshotByName(ctx context.Context, source storage.Object, name string) (storage.Object, error) {
	vols, err := b.children(ctx, source)
	if err != nil {
		return storage.Object{}, err
	}
	writable := false
	for _, v := range vols {
		if volumeName(v) != name {
			continue
		}
		if v.Readonly {
			return b.object(v, storage.KindSnapshot), nil
		}
		writable = true
	}
	if writable {
		return storage.Object{}, fmt.Errorf("%q is a writable snapshot or clone of volume %q, not a read-only snapshot: anything may have been written to it since, so it cannot stand for %s at a point in time: %w", name, source.Name, source.Name, storage.ErrNotFound)
	}
	return storage.Object{}, fmt.Errorf("snapshot %q of volume %q: %w on the OpenStorage server", name, source.Name, storage.ErrNotFound)
}

func (b *Backend) Snapshot(ctx context.Context, source storage.Object, labels map[string]string) (storage.Object, error) {
	name := storage.SnapshotName(time.Now())
	loc := &api.VolumeLocator{Name: name, VolumeLabels: b.labels(storage.WithSourceID(labels, identity(source)), name)}
	what := fmt.Sprintf("taking a snapshot of %q", source.Name)
	id, err := b.rest.snapshot(ctx, what, &api.SnapCreateRequest{Id: source.ID, Readonly: true, Locator: loc})
	if err != nil {
		return storage.Object{}, b.explainSnapshotLimit(ctx, source, err)
	}
	// The server's ctime is read back by later listings; until then the
	// snapshot is as old as this call.
	return storage.Object{
		ID: id, Identity: id, Name: loc.Name, Kind: storage.KindSnapshot,
		Parent:  storage.SnapshotParent(loc.VolumeLabels, source.ID),
		Created: time.Now().UTC(), Labels: objectLabels(loc.VolumeLabels),
	}, nil
}

// snapshotLimit is Portworx's: "There is an implementation limit of 64
// snapshots per volume" (docs.portworx.com, reference/cli/snapshots).
const snapshotLimit = 64

// explainSnapshotLimit adds, to a refused snapshot of a source that holds
// Portworx's limit of snapshots, what they are and what to do: Portworx's
// own words for it are not documented, so the count is what tells.
func (b *Backend) explainSnapshotLimit(ctx context.Context, source storage.Object, err error) error {
	if errors.Is(err, storage.ErrUnavailable) || errors.Is(err, storage.ErrDenied) || errors.Is(err, storage.ErrNotFound) {
		return err
	}
	vols, lerr := b.rest.snapEnumerate(ctx, "counting snapshots", []string{source.ID}, nil)
	if lerr != nil || len(vols) < snapshotLimit {
		return err
	}
	mine := 0
	for _, v := range vols {
		if b.mine(v) {
			mine++
		}
	}
	return fmt.Errorf("%w: volume %q has %d snapshots and clones (%d of them snapvol's), and Portworx allows %d per volume: remove named or scheduled snapshots (snapvol snapshot ls/rm, schedule --keep), clones no longer needed (docker volume rm), or snapshots Portworx's own schedules keep",
		err, source.Name, len(vols), mine, snapshotLimit)
}

// SnapshotOf takes a read-only snapshot of the clone (an OpenStorage
// snapshot of the clone's volume) labelled with source's Identity, which
// files it as source's (see children). The server records the clone as
// its parent, so it keeps the clone while the snapshot exists: Delete of
// the clone is ErrBusy until the snapshot is deleted.
func (b *Backend) SnapshotOf(ctx context.Context, clone, source storage.Object, labels map[string]string) (storage.Object, error) {
	cv, err := b.rest.inspect(ctx, clone.ID)
	if err != nil {
		return storage.Object{}, fmt.Errorf("snapshot of clone %q: %w", clone.Name, err)
	}
	if !isKind(cv, storage.KindClone) || !b.mine(cv) {
		return storage.Object{}, fmt.Errorf("snapshot of %q (%s): not a clone this snapvol made", volumeName(cv), cv.Id)
	}
	sv, err := b.rest.inspect(ctx, source.ID)
	if err != nil {
		return storage.Object{}, fmt.Errorf("snapshot of clone %q as volume %q's: %w", clone.Name, source.Name, err)
	}
	if source.Identity != "" && sv.Id != source.Identity {
		return storage.Object{}, fmt.Errorf("snapshot of clone %q: volume %q is not %s: %w", clone.Name, source.Name, source.Identity, storage.ErrNotFound)
	}
	name := storage.SnapshotName(time.Now())
	loc := &api.VolumeLocator{Name: name, VolumeLabels: b.labels(storage.WithSourceID(labels, sv.Id), name)}
	what := fmt.Sprintf("taking a snapshot of clone %q for %q", clone.Name, source.Name)
	id, err := b.rest.snapshot(ctx, what, &api.SnapCreateRequest{Id: cv.Id, Readonly: true, Locator: loc})
	if err != nil {
		return storage.Object{}, err
	}
	return storage.Object{
		ID: id, Identity: id, Name: loc.Name, Kind: storage.KindSnapshot,
		Parent:  storage.SnapshotParent(loc.VolumeLabels, cv.Id),
		Created: time.Now().UTC(), Labels: objectLabels(loc.VolumeLabels),
	}, nil
}
