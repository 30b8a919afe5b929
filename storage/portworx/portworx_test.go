package portworx_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libopenstorage/openstorage/api"
	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/storage/portworx"
	"github.com/snapvol/snapvol/test/osdserver"
)

// env is a test OpenStorage server and a backend talking to it, mounting
// under a DATA_ROOT of its own, with a PX_MOUNT_DIR below the server's
// MountRoot, where the server's mounts show on the host as Portworx's do
// under /var/lib/osd/mounts.
type env struct {
	t        *testing.T
	srv      *osdserver.Server
	b        *portworx.Backend
	dataRoot string
	mountDir string
}

func newEnv(t *testing.T, cfg osdserver.Config, mod func(*portworx.Config)) *env {
	t.Helper()
	return newEnvWith(t, cfg, func(_ *osdserver.Server, c *portworx.Config) {
		if mod != nil {
			mod(c)
		}
	})
}

// newEnvWith is newEnv whose settings may depend on the server.
func newEnvWith(t *testing.T, cfg osdserver.Config, mod func(*osdserver.Server, *portworx.Config)) *env {
	t.Helper()
	srv := osdserver.ForTest(t, cfg)
	dataRoot := t.TempDir()
	pc := portworx.Config{
		Endpoint: srv.Endpoint(), Driver: "pxd", Token: cfg.Token,
		DataRoot: dataRoot, Instance: "0123456789abcdef",
		CallTimeout: 5 * time.Second, MountDir: srv.MountDir(t),
	}
	if mod != nil {
		mod(srv, &pc)
	}
	b, err := portworx.Open(pc)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return &env{t: t, srv: srv, b: b, dataRoot: pc.DataRoot, mountDir: pc.MountDir}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	t.Cleanup(cancel)
	return c
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// production makes app-production through the backend, with data
// written through a mount the server made, and unmounts it.
func (e *env) production() storage.Object {
	t := e.t
	c := ctx(t)
	src, err := e.b.CreateVolume(c, "app-production", nil)
	if err != nil {
		t.Fatalf("create source: %v", err)
	}
	mp := filepath.Join(e.dataRoot, "prod")
	if err := e.b.Mount(c, src.ID, mp); err != nil {
		t.Fatalf("mount source: %v", err)
	}
	writeFile(t, filepath.Join(mp, "guestbook/0001.txt"), "Alice: lovely site!\n")
	writeFile(t, filepath.Join(mp, "guestbook/0003.txt"), "Zoë \xff\xfe\n")
	if err := e.b.Unmount(c, src.ID, mp); err != nil {
		t.Fatalf("unmount source: %v", err)
	}
	return src
}

// snapClone takes a plugin snapshot of src and a clone of it for the
// Docker volume named volume, labelled as the driver labels them.
func (e *env) snapClone(src storage.Object, volume string) (snap, clone storage.Object) {
	t := e.t
	t.Helper()
	c := ctx(t)
	snap, err := e.b.Snapshot(c, src, map[string]string{storage.LabelOwner: "1", storage.LabelSource: src.Name})
	if err != nil {
		t.Fatal(err)
	}
	clone, err = e.b.Clone(c, snap, map[string]string{storage.LabelOwner: "1", storage.LabelVolume: volume, storage.LabelSource: src.Name}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return snap, clone
}

func TestCloneLifecycleMovesRealData(t *testing.T) {
	e := newEnv(t, osdserver.Config{}, nil)
	c := ctx(t)
	src := e.production()
	if src.Kind != storage.KindVolume || src.Name != "app-production" {
		t.Fatalf("source = %+v", src)
	}
	if got, err := e.b.Volume(c, "app-production"); err != nil || got.ID != src.ID {
		t.Fatalf("Volume(app-production) = %+v, %v; want ID %s", got, err, src.ID)
	}
	srcPath := e.srv.DataPath(src.ID)

	snap, err := e.b.Snapshot(c, src, map[string]string{storage.LabelOwner: "1", storage.LabelSource: "app-production"})
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	sv, ok := e.srv.ByName(snap.Name)
	if !ok || !sv.Readonly || sv.Source.Parent != src.ID {
		t.Fatalf("server snapshot = %+v; want a read-only snapshot of %s", sv, src.ID)
	}
	snaps, err := e.b.Snapshots(c, src)
	if err != nil || len(snaps) != 1 || snaps[0].ID != snap.ID || snaps[0].Created.IsZero() {
		t.Fatalf("Snapshots = %+v, %v; want the one snapshot with its creation time", snaps, err)
	}
	if got, err := e.b.SnapshotByName(c, src, snap.Name); err != nil || got.ID != snap.ID {
		t.Fatalf("SnapshotByName = %+v, %v", got, err)
	}

	labels := map[string]string{storage.LabelOwner: "1", storage.LabelVolume: "app-production@latest", storage.LabelSource: "app-production"}
	clone, err := e.b.Clone(c, snap, labels, map[string]string{"repl": "1", "io_priority": "low"})
	if err != nil {
		t.Fatalf("clone: %v", err)
	}
	cv, _ := e.srv.ByName(clone.Name)
	if cv == nil || cv.Readonly || cv.Source.Parent != snap.ID {
		t.Fatalf("server clone = %+v; want a writable snapshot of %s", cv, snap.ID)
	}
	if cv.Spec.HaLevel != 1 || cv.Spec.Cos != api.CosType_LOW {
		t.Errorf("clone spec: repl=%d cos=%v; want the options repl=1 io_priority=low applied", cv.Spec.HaLevel, cv.Spec.Cos)
	}
	if cv.Locator.VolumeLabels[storage.LabelVolume] != "app-production@latest" || cv.Locator.VolumeLabels[storage.LabelInstance] != "0123456789abcdef" {
		t.Errorf("clone labels = %v", cv.Locator.VolumeLabels)
	}

	mp := filepath.Join(e.dataRoot, "clone")
	if err := e.b.Mount(c, clone.ID, mp); err != nil {
		t.Fatalf("mount clone: %v", err)
	}
	if err := e.b.Mount(c, clone.ID, mp); err != nil {
		t.Fatalf("second mount at the same target: %v", err)
	}
	if !e.b.Mounted(mp) {
		t.Fatalf("%s is not a mount point after Mount", mp)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mp, &st); err != nil || st.Flags&unix.ST_NOSUID == 0 || st.Flags&unix.ST_NODEV == 0 {
		t.Errorf("the clone's mount flags %#x, %v; want nosuid,nodev", st.Flags, err)
	}
	if got := readFile(t, filepath.Join(mp, "guestbook/0003.txt")); got != "Zoë \xff\xfe\n" {
		t.Fatalf("clone content = %q", got)
	}
	writeFile(t, filepath.Join(mp, "guestbook/0001.txt"), "overwritten\n")
	if err := os.Remove(filepath.Join(mp, "guestbook/0003.txt")); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(srcPath, "guestbook/0001.txt")); got != "Alice: lovely site!\n" {
		t.Fatalf("a write in the clone reached the source: %q", got)
	}
	if _, err := os.Stat(filepath.Join(srcPath, "guestbook/0003.txt")); err != nil {
		t.Fatalf("a delete in the clone reached the source: %v", err)
	}

	owned, err := e.b.Owned(c)
	if err != nil || len(owned) != 3 {
		t.Fatalf("Owned = %+v, %v; want the volume, the snapshot and the clone", owned, err)
	}
	for _, o := range owned {
		want := map[string]storage.Kind{src.ID: storage.KindVolume, snap.ID: storage.KindSnapshot, clone.ID: storage.KindClone}[o.ID]
		if o.Kind != want {
			t.Errorf("Owned: %s is %s, want %s", o.Name, o.Kind, want)
		}
	}

	// Deleting the snapshot under a clone: the SDK over the fake driver
	// deletes it, and the clone, mounted, lives on with its data and a
	// parent that is gone.
	if err := e.b.Delete(c, snap.ID); err != nil {
		t.Errorf("delete of a snapshot with a clone: %v", err)
	}
	if got := readFile(t, filepath.Join(mp, "guestbook/0001.txt")); got != "overwritten\n" {
		t.Errorf("the clone reads %q after its snapshot went; want what was written to it", got)
	}
	if err := e.b.Unmount(c, clone.ID, mp); err != nil {
		t.Fatalf("unmount clone: %v", err)
	}
	if e.b.Mounted(mp) {
		t.Fatalf("%s still mounted", mp)
	}
	if _, err := os.Stat(mp); !os.IsNotExist(err) {
		t.Errorf("mount point %s left behind: %v", mp, err)
	}
	if err := e.b.Unmount(c, clone.ID, mp); err != nil {
		t.Fatalf("second unmount: %v", err)
	}
	cv, _ = e.srv.ByName(clone.Name)
	if cv.State == api.VolumeState_VOLUME_STATE_ATTACHED || len(cv.AttachPath) > 0 {
		t.Errorf("clone still attached after Unmount: %+v", cv)
	}
	if err := e.b.Delete(c, clone.ID); err != nil {
		t.Fatalf("delete clone: %v", err)
	}
	if err := e.b.Delete(c, clone.ID); err != nil {
		t.Fatalf("delete of a deleted clone: %v", err)
	}
	if err := e.b.Delete(c, snap.ID); err != nil {
		t.Fatalf("delete snapshot: %v", err)
	}
	if owned, err := e.b.Owned(c); err != nil || len(owned) != 1 || owned[0].ID != src.ID {
		t.Fatalf("Owned after deleting = %+v, %v; want only the volume", owned, err)
	}
	if err := e.b.Delete(c, src.ID); !errors.Is(err, storage.ErrProtected) {
		t.Fatalf("Delete(source) = %v; want ErrProtected", err)
	}
	if _, ok := e.srv.ByName("app-production"); !ok {
		t.Fatalf("the source is gone")
	}

	// The created volume is snapvol's to remove, with the snapshot it keeps.
	if _, err := e.b.Snapshot(c, src, map[string]string{storage.LabelOwner: "1", storage.LabelSource: "app-production"}); err != nil {
		t.Fatal(err)
	}
	if err := e.b.RemoveVolume(c, src); err != nil {
		t.Fatalf("RemoveVolume: %v", err)
	}
	if n := len(e.srv.Volumes()); n != 0 {
		t.Fatalf("server still holds %d objects: %+v", n, e.srv.Volumes())
	}
	checkRequests(t, e.srv)
}

// checkRequests: every request went to an OpenStorage route, naming the
// driver in its User-Agent as api/client/volume does.
func checkRequests(t *testing.T, srv *osdserver.Server) {
	t.Helper()
	for _, r := range srv.Requests() {
		if r.UserAgent != "pxd/v1" {
			t.Errorf("%s %s: User-Agent %q, want pxd/v1", r.Method, r.Path, r.UserAgent)
		}
		if !strings.HasPrefix(r.Path, "/v1/osd-volumes") && !strings.HasPrefix(r.Path, "/v1/osd-snapshot") && r.Path != "/osd-volumes/versions" {
			t.Errorf("request to %s %s", r.Method, r.Path)
		}
	}
}

func TestForeignObjects(t *testing.T) {
	e := newEnv(t, osdserver.Config{}, nil)
	c := ctx(t)
	// Production made by someone else (pxctl), with a schedule's
	// read-only snapshot and an old CI job's writable one.
	id, err := e.srv.Create(&api.VolumeLocator{Name: "app-production"}, nil, &api.VolumeSpec{Size: 1 << 30, HaLevel: 2})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(e.srv.DataPath(id), "data.txt"), "production\n")
	nightly, err := e.srv.Snapshot(id, true, &api.VolumeLocator{Name: "nightly"})
	if err != nil {
		t.Fatal(err)
	}
	ciOld, err := e.srv.Snapshot(id, false, &api.VolumeLocator{Name: "app-ci-test-41"})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(e.srv.DataPath(ciOld), "data.txt"), "changed by a test\n")

	src, err := e.b.Volume(c, "app-production")
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := e.b.Snapshots(c, src)
	if err != nil || len(snaps) != 1 || snaps[0].ID != nightly || snaps[0].Owned() {
		t.Fatalf("Snapshots = %+v, %v; want only the read-only nightly", snaps, err)
	}
	// A writable child never answers a ref, however it is named: what
	// was written to it is no point in time of production's.
	if s, err := e.b.SnapshotByName(c, src, "app-ci-test-41"); !errors.Is(err, storage.ErrNotFound) || !strings.Contains(fmtErr(err), "writable") {
		t.Fatalf("SnapshotByName(app-ci-test-41) = %+v, %v; want ErrNotFound saying it is writable", s, err)
	}
	if _, err := e.b.SnapshotByName(c, src, "no-such-snap"); !errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), `"no-such-snap"`) {
		t.Fatalf("SnapshotByName(no-such-snap) = %v; want ErrNotFound naming it", err)
	}
	if _, err := e.b.Volume(c, "nightly"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("a snapshot was taken for a source: %v", err)
	}
	if _, err := e.b.Volume(c, "no-such-source"); !errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), `"no-such-source"`) {
		t.Fatalf("Volume(no-such-source) = %v; want ErrNotFound naming it", err)
	}

	// A clone of the schedule's snapshot has the production data.
	clone, err := e.b.Clone(c, snaps[0], map[string]string{storage.LabelOwner: "1", storage.LabelVolume: "v", storage.LabelSource: "app-production"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(e.dataRoot, "c")
	if err := e.b.Mount(c, clone.ID, mp); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(mp, "data.txt")); got != "production\n" {
		t.Fatalf("clone of nightly reads %q", got)
	}
	if err := e.b.Unmount(c, clone.ID, mp); err != nil {
		t.Fatal(err)
	}

	// Nothing snapvol did not make is deleted, or adopted.
	for _, victim := range []string{id, nightly, ciOld} {
		if err := e.b.Delete(c, victim); !errors.Is(err, storage.ErrProtected) {
			t.Errorf("Delete(%s) = %v; want ErrProtected", victim, err)
		}
	}
	if err := e.b.RemoveVolume(c, src); !errors.Is(err, storage.ErrProtected) {
		t.Errorf("RemoveVolume(production) = %v; want ErrProtected", err)
	}
	if _, err := e.b.CreateVolume(c, "app-production", nil); err == nil || !strings.Contains(err.Error(), "not made by snapvol") {
		t.Errorf("CreateVolume over production = %v; want a refusal", err)
	}
	if err := e.b.Delete(c, clone.ID); err != nil {
		t.Fatal(err)
	}
	if got := len(e.srv.Volumes()); got != 3 {
		t.Fatalf("server holds %d objects, want the 3 it started with", got)
	}
}

func TestInstancesDoNotTouchEachOther(t *testing.T) {
	e := newEnv(t, osdserver.Config{}, nil)
	c := ctx(t)
	src := e.production()
	other, err := portworx.Open(portworx.Config{Endpoint: e.srv.Endpoint(), Driver: "pxd", DataRoot: e.dataRoot, Instance: "fedcba9876543210"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	snap, clone := e.snapClone(src, "x@latest")
	if owned, err := other.Owned(c); err != nil || len(owned) != 0 {
		t.Fatalf("another instance owns %+v, %v", owned, err)
	}
	for _, id := range []string{snap.ID, clone.ID} {
		if err := other.Delete(c, id); !errors.Is(err, storage.ErrProtected) {
			t.Errorf("another instance's Delete(%s) = %v; want ErrProtected", id, err)
		}
	}
	// Another host may still reuse the snapshot for @latest.
	if snaps, err := other.Snapshots(c, src); err != nil || len(snaps) != 1 {
		t.Errorf("another instance sees snapshots %+v, %v", snaps, err)
	}
	if _, err := other.Volume(c, clone.Name); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("a plugin clone was taken for a source: %v", err)
	}
}

func TestOptions(t *testing.T) {
	e := newEnv(t, osdserver.Config{}, nil)
	c := ctx(t)
	for _, k := range []string{"repl", "io_priority", "size", "labels", "io_profile"} {
		if !e.b.OptionKey(k) {
			t.Errorf("OptionKey(%q) = false", k)
		}
	}
	for _, k := range []string{"parent", "name", "bogus", ""} {
		if e.b.OptionKey(k) {
			t.Errorf("OptionKey(%q) = true", k)
		}
	}
	v, err := e.b.CreateVolume(c, "scratch", map[string]string{"repl": "2", "size": "2G", "io_priority": "high", "labels": "team=ci"})
	if err != nil {
		t.Fatal(err)
	}
	sv, _ := e.srv.ByName("scratch")
	if sv.Spec.HaLevel != 2 || sv.Spec.Size != 2<<30 || sv.Spec.Cos != api.CosType_HIGH || sv.Locator.VolumeLabels["team"] != "ci" {
		t.Errorf("created spec %+v labels %v", sv.Spec, sv.Locator.VolumeLabels)
	}
	if again, err := e.b.CreateVolume(c, "scratch", nil); err != nil || again.ID != v.ID {
		t.Errorf("re-creating snapvol's own volume = %+v, %v; want it back", again, err)
	}
	if _, err := e.b.CreateVolume(c, "bad", map[string]string{"io_priority": "urgent"}); err == nil || !strings.Contains(err.Error(), "io_priority") && !strings.Contains(err.Error(), "Cos") {
		t.Errorf("bad io_priority: %v", err)
	}
	if _, err := e.b.CreateVolume(c, "bad", map[string]string{"labels": "snapvol=1"}); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Errorf("reserved label: %v", err)
	}
	snap, err := e.b.Snapshot(c, v, map[string]string{storage.LabelOwner: "1", storage.LabelSource: "scratch"})
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{storage.LabelOwner: "1", storage.LabelVolume: "scratch@now", storage.LabelSource: "scratch"}
	before := len(e.srv.Volumes())
	if _, err := e.b.Clone(c, snap, labels, map[string]string{"fs": "xfs"}); err == nil || !strings.Contains(err.Error(), "fs=") {
		t.Errorf("fs= on a clone: %v; want a refusal naming it", err)
	}
	if _, err := e.b.Clone(c, snap, labels, map[string]string{"repl": "5"}); err == nil || !strings.Contains(err.Error(), "HA level") {
		t.Errorf("repl=5 on a clone: %v; want the server's refusal", err)
	}
	if _, err := e.b.Clone(c, snap, labels, map[string]string{"size": "1G"}); err == nil || !strings.Contains(err.Error(), "cannot shrink") && !strings.Contains(err.Error(), "not shrink") {
		t.Errorf("size=1G on a clone of a 2G volume: %v; want a refusal", err)
	}
	if after := len(e.srv.Volumes()); after != before {
		t.Errorf("failed clones left %d objects on the server", after-before)
	}
	// A clone grown to 3G.
	big, err := e.b.Clone(c, snap, labels, map[string]string{"size": "3G"})
	if err != nil {
		t.Fatal(err)
	}
	if vols, err := e.srv.Inspect([]string{big.ID}); err != nil || vols[0].Spec.Size != 3<<30 {
		t.Errorf("clone with size=3G: %+v, %v", vols, err)
	}
}

func TestFailures(t *testing.T) {
	e := newEnv(t, osdserver.Config{Token: "s3cret"}, func(c *portworx.Config) { c.CallTimeout = 700 * time.Millisecond })
	c := ctx(t)
	if err := e.b.Ping(c); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if _, err := e.b.CreateVolume(c, "app-production", nil); err != nil {
		t.Fatal(err)
	}

	// A wrong token: ErrDenied saying so, for every kind of call.
	bad, err := portworx.Open(portworx.Config{Endpoint: e.srv.Endpoint(), Driver: "pxd", Token: "wrong", DataRoot: e.dataRoot, Instance: "0123456789abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := bad.Volume(c, "app-production"); !errors.Is(err, storage.ErrDenied) || !strings.Contains(err.Error(), "PX_TOKEN") {
		t.Errorf("wrong token: %v; want ErrDenied naming PX_TOKEN", err)
	}
	if err := bad.Ping(c); !errors.Is(err, storage.ErrDenied) {
		t.Errorf("ping with a wrong token: %v", err)
	}
	e.srv.SetStatus(http.StatusForbidden)
	if _, err := e.b.Owned(c); !errors.Is(err, storage.ErrDenied) || !strings.Contains(err.Error(), "PX_TOKEN") {
		t.Errorf("403: %v; want ErrDenied naming PX_TOKEN", err)
	}
	e.srv.SetStatus(http.StatusInternalServerError)
	if _, err := e.b.Volume(c, "app-production"); err == nil || errors.Is(err, storage.ErrUnavailable) || errors.Is(err, storage.ErrNotFound) ||
		!strings.Contains(err.Error(), "injected failure") || !strings.Contains(err.Error(), `"app-production"`) {
		t.Errorf("500: %v; want the server's message passed on, naming the volume", err)
	}
	e.srv.SetStatus(0)

	// A slow server: ErrUnavailable after the call timeout, not later.
	e.srv.SetDelay(time.Minute)
	start := time.Now()
	_, err = e.b.Volume(c, "app-production")
	if took := time.Since(start); !errors.Is(err, storage.ErrUnavailable) || took > 3*time.Second || !strings.Contains(err.Error(), "did not answer") {
		t.Errorf("hung server: %v after %s; want ErrUnavailable within the call timeout", err, took)
	}
	// The caller's deadline is honoured too.
	short, cancel := context.WithTimeout(c, 200*time.Millisecond)
	start = time.Now()
	_, err = e.b.Volume(short, "app-production")
	cancel()
	if took := time.Since(start); !errors.Is(err, storage.ErrUnavailable) || took > time.Second {
		t.Errorf("deadline: %v after %s", err, took)
	}
	e.srv.SetDelay(0)

	// A stopped server: ErrUnavailable at once.
	e.srv.Stop()
	start = time.Now()
	_, err = e.b.Volume(c, "app-production")
	if took := time.Since(start); !errors.Is(err, storage.ErrUnavailable) || took > time.Second || !strings.Contains(err.Error(), "PX_ENDPOINT") {
		t.Errorf("stopped server: %v after %s", err, took)
	}
	if err := e.srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.b.Volume(c, "app-production"); err != nil {
		t.Errorf("after restart: %v", err)
	}

	// Nothing there at all.
	gone, err := portworx.Open(portworx.Config{Endpoint: "unix://" + filepath.Join(t.TempDir(), "none.sock"), Driver: "pxd", DataRoot: e.dataRoot, Instance: "0123456789abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gone.Volume(c, "x"); !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("no socket: %v", err)
	}
	for _, ep := range []string{"", "127.0.0.1:9001", "ftp://x", "unix://"} {
		if _, err := portworx.Open(portworx.Config{Endpoint: ep, Driver: "pxd", DataRoot: e.dataRoot, Instance: "0123456789abcdef"}); err == nil || !strings.Contains(err.Error(), "PX_ENDPOINT") {
			t.Errorf("Open(%q) = %v; want an error naming PX_ENDPOINT", ep, err)
		}
	}
}

func TestUnixSocketEndpoint(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "pxd.sock")
	e := newEnv(t, osdserver.Config{Listen: "unix://" + sock}, nil)
	if !strings.HasPrefix(e.srv.Endpoint(), "unix://") {
		t.Fatalf("endpoint %s", e.srv.Endpoint())
	}
	src := e.production()
	if _, err := e.b.Snapshot(ctx(t), src, map[string]string{storage.LabelOwner: "1", storage.LabelSource: src.Name}); err != nil {
		t.Fatal(err)
	}
}

func TestInstanceID(t *testing.T) {
	dir := t.TempDir()
	a, err := portworx.InstanceID(dir)
	if err != nil || len(a) != 16 {
		t.Fatalf("InstanceID = %q, %v", a, err)
	}
	b, err := portworx.InstanceID(dir)
	if err != nil || b != a {
		t.Fatalf("second InstanceID = %q, %v; want %q", b, err, a)
	}
	if err := os.WriteFile(filepath.Join(dir, "portworx.instance"), []byte("../x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := portworx.InstanceID(dir); err == nil {
		t.Fatalf("a corrupt instance file was accepted")
	}
}

// TestFilesystemDriver: against a driver with nothing to attach (as
// OpenStorage's btrfs and vfs drivers), mount and unmount still work.
func TestFilesystemDriver(t *testing.T) {
	e := newEnv(t, osdserver.Config{NoAttach: true}, nil)
	c := ctx(t)
	src := e.production()
	snap, clone := e.snapClone(src, "v")
	mp := filepath.Join(e.dataRoot, "c")
	if err := e.b.Mount(c, clone.ID, mp); err != nil {
		t.Fatalf("mount: %v", err)
	}
	if got := readFile(t, filepath.Join(mp, "guestbook/0001.txt")); got != "Alice: lovely site!\n" {
		t.Fatalf("clone reads %q", got)
	}
	if err := e.b.Unmount(c, clone.ID, mp); err != nil {
		t.Fatalf("unmount: %v", err)
	}
	for _, id := range []string{clone.ID, snap.ID} {
		if err := e.b.Delete(c, id); err != nil {
			t.Fatal(err)
		}
	}
}

// CheckOptions refuses at docker volume create what CreateVolume or
// Clone would refuse at the first Mount: keys a clone cannot take, bad
// values, reserved labels, parent.
func TestCheckOptions(t *testing.T) {
	var b portworx.Backend
	for _, c := range []struct {
		kind storage.Kind
		opts map[string]string
		ok   bool
	}{
		{storage.KindVolume, map[string]string{"size": "2G", "repl": "2", "io_priority": "high"}, true},
		{storage.KindVolume, map[string]string{"size": "lots"}, false},
		{storage.KindVolume, map[string]string{"labels": "snapvol=1"}, false},
		{storage.KindVolume, map[string]string{"parent": "x"}, false},
		{storage.KindClone, nil, true},
		{storage.KindClone, map[string]string{"io_priority": "high", "labels": "team=ci"}, true},
		{storage.KindClone, map[string]string{"size": "10G"}, true},
		{storage.KindClone, map[string]string{"size": "lots"}, false},
		{storage.KindClone, map[string]string{"repl": "2"}, true},
		{storage.KindClone, map[string]string{"fs": "ext4"}, false},
		{storage.KindClone, map[string]string{"labels": "snapvol.instance=x"}, false},
		{storage.KindClone, map[string]string{"io_priority": "warp"}, false},
	} {
		err := b.CheckOptions(c.kind, c.opts)
		if (err == nil) != c.ok {
			t.Errorf("CheckOptions(%s, %v) = %v, want ok=%v", c.kind, c.opts, err, c.ok)
		}
	}
}
