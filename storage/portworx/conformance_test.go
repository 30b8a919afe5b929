package portworx_test

import (
	"context"
	"testing"

	"github.com/libopenstorage/openstorage/api"

	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/storage/portworx"
	"github.com/snapvol/snapvol/storage/storagetest"
	"github.com/snapvol/snapvol/test/osdserver"
)

// outsider is the backend with what pxctl and Portworx schedules do on
// the server behind snapvol's back (storagetest.Outsider), and DATA_ROOT
// for mount targets (storagetest.MountDir).
type outsider struct {
	*portworx.Backend
	srv      *osdserver.Server
	dataRoot string
}

func (o outsider) MountDir() string { return o.dataRoot }

func (o outsider) ForeignVolume(ctx context.Context, name string) (storage.Object, error) {
	if _, err := o.srv.Create(&api.VolumeLocator{Name: name}, nil, &api.VolumeSpec{Size: 1 << 30, HaLevel: 1}); err != nil {
		return storage.Object{}, err
	}
	return o.Volume(ctx, name)
}

func (o outsider) ForeignSnapshot(ctx context.Context, source storage.Object, name string) (storage.Object, error) {
	if _, err := o.srv.Snapshot(source.ID, true, &api.VolumeLocator{Name: name}); err != nil {
		return storage.Object{}, err
	}
	return o.SnapshotByName(ctx, source, name)
}

// The portworx backend keeps the contract against the test OpenStorage
// server, one fresh server and pool per check.
func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		e := newEnv(t, osdserver.Config{}, nil)
		return outsider{Backend: e.b, srv: e.srv, dataRoot: e.dataRoot}
	})
}

// Objects labelled before snapvol.kind existed are still classified as
// they were: a clone names its volume, a snapshot does not, and a created
// volume carries snapvol.created, without snapvol=1.
func TestObjectsOfEarlierVersions(t *testing.T) {
	e := newEnv(t, osdserver.Config{}, nil)
	c := ctx(t)
	const inst = "0123456789abcdef"
	vid, err := e.srv.Create(&api.VolumeLocator{Name: "scratch", VolumeLabels: map[string]string{
		storage.LabelCreated: "1", storage.LabelInstance: inst,
	}}, nil, &api.VolumeSpec{Size: 1 << 30, HaLevel: 1})
	if err != nil {
		t.Fatal(err)
	}
	sid, err := e.srv.Snapshot(vid, true, &api.VolumeLocator{Name: "snapvol-old", VolumeLabels: map[string]string{
		storage.LabelOwner: "1", storage.LabelSource: "scratch", storage.LabelInstance: inst,
	}})
	if err != nil {
		t.Fatal(err)
	}
	cid, err := e.srv.Snapshot(sid, false, &api.VolumeLocator{Name: "snapvol-clone-old", VolumeLabels: map[string]string{
		storage.LabelOwner: "1", storage.LabelVolume: "scratch@latest", storage.LabelSource: "scratch", storage.LabelInstance: inst,
	}})
	if err != nil {
		t.Fatal(err)
	}

	v, err := e.b.Volume(c, "scratch")
	if err != nil || v.ID != vid || !v.Owned() {
		t.Fatalf("Volume(scratch) = %+v, %v", v, err)
	}
	if again, err := e.b.CreateVolume(c, "scratch", nil); err != nil || again.ID != vid {
		t.Fatalf("CreateVolume of an old created volume = %+v, %v; want it back", again, err)
	}
	if _, err := e.b.Volume(c, "snapvol-clone-old"); err == nil {
		t.Fatal("an old clone was taken for a source")
	}
	snaps, err := e.b.Snapshots(c, v)
	if err != nil || len(snaps) != 1 || snaps[0].ID != sid || snaps[0].Parent != vid {
		t.Fatalf("Snapshots = %+v, %v; want the old snapshot, belonging to scratch", snaps, err)
	}
	owned, err := e.b.Owned(c)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]storage.Kind{}
	for _, o := range owned {
		kinds[o.ID] = o.Kind
	}
	if len(kinds) != 2 || kinds[sid] != storage.KindSnapshot || kinds[cid] != storage.KindClone {
		t.Fatalf("Owned kinds = %v; want %s a snapshot and %s a clone", kinds, sid, cid)
	}
	if err := e.b.Delete(c, cid); err != nil {
		t.Fatal(err)
	}
	if err := e.b.RemoveVolume(c, v); err != nil {
		t.Fatalf("RemoveVolume of an old created volume, with its old snapshot: %v", err)
	}
	if n := len(e.srv.Volumes()); n != 0 {
		t.Fatalf("server still holds %d objects", n)
	}
}
