package test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/libopenstorage/openstorage/api"

	"github.com/snapvol/snapvol/mountpoint"
	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/test/osdserver"
)

// The portworx backend over the real socket, against the test OpenStorage
// server (real HTTP, real btrfs underneath, real bind mounts).

const pxToken = "ci-secret-token"

// pxEnv is the plugin's environment for the server srv, with a
// PX_MOUNT_DIR of the test's own: snapvol on the host and the test server
// see it alike, as Portworx and a host snapvol see /var/lib/osd/mounts.
func pxEnv(t *testing.T, srv *osdserver.Server, extra map[string]string) map[string]string {
	env := map[string]string{
		"BACKEND": "portworx", "PX_ENDPOINT": srv.Endpoint(), "PX_DRIVER": "pxd", "PX_TOKEN": pxToken,
		"PX_MOUNT_DIR": pxMountDir(t, srv),
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// pxMountDir is a temporary PX_MOUNT_DIR for srv, below its MountRoot:
// the server mounts in a namespace of its own, as Portworx in its
// container, and its mounts show on the host only there, as Portworx's
// under /var/lib/osd/mounts. When the test ends (after the plugin stops,
// before srv does) the server unmounts what it still has mounted there,
// as Portworx would on a clone's delete, and the directory goes if only
// empty directories are left in it: it is never walked into through a
// mount.
func pxMountDir(t *testing.T, srv *osdserver.Server) string {
	t.Helper()
	dir, err := os.MkdirTemp(srv.MountRoot(), "pxmounts-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, v := range srv.Volumes() {
			for _, p := range v.AttachPath {
				if strings.HasPrefix(p, dir+"/") {
					if err := srv.Unmount(v.Id, p); err != nil {
						t.Logf("the server's mount at %s: %v", p, err)
					}
				}
			}
		}
		if err := mountpoint.RemoveEmptyTree(dir); err != nil {
			t.Logf("left %s in place: %v", dir, err)
		}
	})
	return dir
}

// pxObjects lists the server's clones and snapshots the plugin made, as
// their labels say (storage.KindOf).
func pxObjects(srv *osdserver.Server) (clones, snaps []*api.Volume) {
	for _, v := range srv.Volumes() {
		switch k, _ := storage.KindOf(v.GetLocator().GetVolumeLabels()); k {
		case storage.KindClone:
			clones = append(clones, v)
		case storage.KindSnapshot:
			snaps = append(snaps, v)
		}
	}
	return clones, snaps
}

func pxCloneIDs(srv *osdserver.Server) []string {
	clones, _ := pxObjects(srv)
	var ids []string
	for _, c := range clones {
		ids = append(ids, c.Id)
	}
	return ids
}

// checkPXLeftovers: no clone the plugin made, at most one snapshot it
// took per source (the one @latest may reuse).
func checkPXLeftovers(t *testing.T, srv *osdserver.Server) {
	t.Helper()
	clones, snaps := pxObjects(srv)
	for _, c := range clones {
		t.Errorf("plugin clone left on the server: %s (%s) labels %v", c.Locator.Name, c.Id, c.Locator.VolumeLabels)
	}
	per := map[string]int{}
	for _, s := range snaps {
		per[s.Locator.VolumeLabels[storage.LabelSource]]++
	}
	for src, n := range per {
		if n > 1 {
			t.Errorf("%d plugin snapshots of %q kept, want at most 1", n, src)
		}
	}
}

// pxProduction makes app-production on the server directly, as pxctl
// would, holding the guestbook, and returns its ID and checksum.
func pxProduction(t *testing.T, srv *osdserver.Server) (string, string) {
	t.Helper()
	id, err := srv.Create(&api.VolumeLocator{Name: "app-production"}, nil, &api.VolumeSpec{Size: 1 << 30, HaLevel: 2, Cos: api.CosType_HIGH})
	if err != nil {
		t.Fatal(err)
	}
	WriteTree(t, srv.DataPath(id), Guestbook)
	return id, TreeSum(t, srv.DataPath(id))
}

// checkSourceUntouched: the source exists with its data, and no request
// ever changed it (set, attach, mount or delete addressed to its ID).
func checkSourceUntouched(t *testing.T, srv *osdserver.Server, id, sum string) {
	t.Helper()
	if got := TreeSum(t, srv.DataPath(id)); got != sum {
		t.Errorf("the source's data changed")
	}
	if _, ok := srv.ByName("app-production"); !ok {
		t.Errorf("the source is gone from the server")
	}
	for _, r := range srv.Requests() {
		if (r.Method == "PUT" || r.Method == "DELETE") && strings.HasSuffix(r.Path, "/"+id) {
			t.Errorf("the plugin sent %s %s to the source", r.Method, r.Path)
		}
	}
}

func TestPortworxSocketScenario(t *testing.T) {
	srv := osdserver.ForTest(t, osdserver.Config{Token: pxToken})
	SocketScenario(t, pxEnv(t, srv, nil), func(*Plugin) []string { return pxCloneIDs(srv) })
	checkPXLeftovers(t, srv)
	prod, ok := srv.ByName("app-production")
	if !ok {
		t.Fatalf("the source is gone from the server")
	}
	// The scenario's production was made through the plugin; it holds the
	// guestbook still, and only the user's own mount ever wrote it.
	if got := ReadFile(t, filepath.Join(srv.DataPath(prod.Id), "guestbook/0003.txt")); got != Guestbook["guestbook/0003.txt"] {
		t.Errorf("production's guestbook changed: %q", got)
	}
	for _, r := range srv.Requests() {
		if r.UserAgent != "pxd/v1" || !r.Auth {
			t.Errorf("%s %s: User-Agent %q auth %v", r.Method, r.Path, r.UserAgent, r.Auth)
			break
		}
	}
}

// TestPortworxCloneKinds runs every kind of name against a production the
// plugin did not make, with a snapshot a Portworx schedule took, then
// checks what is left on the server.
func TestPortworxCloneKinds(t *testing.T) {
	srv := osdserver.ForTest(t, osdserver.Config{Token: pxToken})
	prodID, prodSum := pxProduction(t, srv)
	if _, err := srv.Snapshot(prodID, true, &api.VolumeLocator{Name: "nightly"}); err != nil {
		t.Fatal(err)
	}
	p := StartPlugin(t, pxEnv(t, srv, nil))

	use := func(name, mountID string, opts map[string]string) string {
		t.Helper()
		if err := p.Create(name, opts); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		mp := p.MustMount(name, mountID)
		if got := TreeSum(t, mp); got != prodSum {
			t.Fatalf("%s: clone content differs from production", name)
		}
		WriteTree(t, mp, map[string]string{"guestbook/0001.txt": "changed by " + name + "\n"})
		return mp
	}
	done := func(name, mountID string) {
		t.Helper()
		if err := p.Unmount(name, mountID); err != nil {
			t.Fatalf("unmount %s: %v", name, err)
		}
		if err := p.Remove(name); err != nil {
			t.Fatalf("remove %s: %v", name, err)
		}
	}

	// @latest reuses the schedule's fresh snapshot rather than taking one.
	use("app-production@latest", "c1", nil)
	v, _ := p.Get("app-production@latest")
	if v == nil || v.Status["snapshot"] != "nightly" {
		t.Errorf("@latest used snapshot %v, want the schedule's nightly", v)
	}
	done("app-production@latest", "c1")

	use("app-production@nightly+a", "c2", nil)
	done("app-production@nightly+a", "c2")

	use("app-production@now", "c3", nil)
	done("app-production@now", "c3")

	// +each: one clone per mount ID, destroyed at its unmount.
	if err := p.Create("app-production@latest+each", nil); err != nil {
		t.Fatal(err)
	}
	m1 := p.MustMount("app-production@latest+each", "e1")
	m2 := p.MustMount("app-production@latest+each", "e2")
	if m1 == m2 {
		t.Fatalf("+each mounts share %s", m1)
	}
	WriteTree(t, m1, map[string]string{"only-in-e1": "x"})
	if _, err := os.Stat(filepath.Join(m2, "only-in-e1")); err == nil {
		t.Fatalf("+each clones share data")
	}
	if n := len(pxCloneIDs(srv)); n != 2 {
		t.Fatalf("+each made %d clones on the server, want 2", n)
	}
	for _, id := range []string{"e1", "e2"} {
		if err := p.Unmount("app-production@latest+each", id); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(pxCloneIDs(srv)); n != 0 {
		t.Fatalf("+each clones left after their unmounts: %d", n)
	}
	if err := p.Remove("app-production@latest+each"); err != nil {
		t.Fatal(err)
	}

	// A plain name with -o: OpenStorage spec keys land on the clone.
	opts := map[string]string{"from": "app-production", "ref": "now", "repl": "1", "io_priority": "low"}
	use("ci-job-4711", "c4", opts)
	clones, _ := pxObjects(srv)
	if len(clones) != 1 || clones[0].Spec.HaLevel != 1 || clones[0].Spec.Cos != api.CosType_LOW {
		t.Fatalf("clone for -o repl=1 io_priority=low: %+v", clones)
	}
	done("ci-job-4711", "c4")
	// An option a clone cannot take, or a bad value, fails the create
	// itself, not every Mount after it.
	for _, bad := range []map[string]string{{"fs": "xfs"}, {"io_priority": "warp"}} {
		bad["from"] = "app-production"
		if err := p.Create("bad-opts", bad); err == nil || !strings.Contains(err.Error(), "bad-opts") {
			t.Fatalf("create with %v: %v; want a refusal naming the volume", bad, err)
		}
	}
	if err := p.Create("bad-key", map[string]string{"from": "app-production", "parent": "x"}); err == nil || !strings.Contains(err.Error(), "parent") {
		t.Fatalf("create with parent=: %v; want an unknown-option error", err)
	}

	checkPXLeftovers(t, srv)
	checkSourceUntouched(t, srv, prodID, prodSum)
	if _, ok := srv.ByName("nightly"); !ok {
		t.Errorf("the schedule's snapshot was deleted")
	}
	if vols, err := p.List(); err != nil || len(vols) != 0 {
		t.Errorf("records left: %v, %v", vols, err)
	}
}

// TestPortworxServerDown: with the server stopped, hung, or refusing the
// token, Create and Mount fail inside Docker's 30 s with an error that
// says why, leave no record and no half-made clone, and Get and List
// keep answering from the index.
func TestPortworxServerDown(t *testing.T) {
	srv := osdserver.ForTest(t, osdserver.Config{Token: pxToken})
	prodID, prodSum := pxProduction(t, srv)
	p := StartPlugin(t, pxEnv(t, srv, nil))
	if err := p.Create("app-production@latest", nil); err != nil {
		t.Fatal(err)
	}

	within := func(what string, limit time.Duration, f func() error) error {
		t.Helper()
		start := time.Now()
		err := f()
		took := time.Since(start)
		if err == nil {
			t.Fatalf("%s succeeded; want an error", what)
		}
		if took > limit {
			t.Errorf("%s took %s, over %s", what, took.Round(time.Millisecond), limit)
		}
		t.Logf("%s: failed in %s: %v", what, took.Round(time.Millisecond), err)
		return err
	}
	noRecord := func(name string) {
		t.Helper()
		vols, err := p.List()
		if err != nil {
			t.Fatalf("list while the server is down: %v", err)
		}
		if hasVolume(vols, name) {
			t.Errorf("a record of %q was left", name)
		}
	}
	notMaterialized := func() {
		t.Helper()
		v, err := p.Get("app-production@latest")
		if err != nil {
			t.Fatalf("get while the server is down: %v", err)
		}
		if v.Status["state"] != "not materialized" || v.Status["pending"] != nil {
			t.Errorf("after a failed mount: status %v", v.Status)
		}
	}

	for _, c := range []struct {
		name  string
		limit time.Duration
		down  func()
		up    func()
		want  string
	}{
		{"stopped", 5 * time.Second, srv.Stop, func() { mustDo(t, srv.Restart()) }, "PX_ENDPOINT"},
		{"hung", 30 * time.Second, func() { srv.SetDelay(time.Hour) }, func() { srv.SetDelay(0) }, "did not answer"},
		{"wrong token", 5 * time.Second, func() { srv.SetToken("rotated") }, func() { srv.SetToken(pxToken) }, "PX_TOKEN"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.down()
			defer c.up()
			for _, check := range []error{
				within("create app-production@now+"+c.name, c.limit, func() error { return p.Create("app-production@now+x", nil) }),
				within("mount app-production@latest", c.limit, func() error { _, err := p.Mount("app-production@latest", "m"); return err }),
				within("mount a claimed name", c.limit, func() error { _, err := p.Mount("app-production@latest+claimed", "m"); return err }),
			} {
				if !strings.Contains(check.Error(), c.want) {
					t.Errorf("error %q does not say %q", check, c.want)
				}
			}
			noRecord("app-production@now+x")
			noRecord("app-production@latest+claimed")
			notMaterialized()
			if _, err := p.Get("app-production@latest"); err != nil {
				t.Errorf("Get of an existing volume failed while the server is down: %v", err)
			}
		})
	}
	if clones, _ := pxObjects(srv); len(clones) != 0 {
		t.Fatalf("failed attempts left clones on the server: %d", len(clones))
	}

	// Back up: the same volume works.
	mp := p.MustMount("app-production@latest", "m")
	if got := TreeSum(t, mp); got != prodSum {
		t.Fatalf("clone after recovery differs from production")
	}
	if err := p.Unmount("app-production@latest", "m"); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove("app-production@latest"); err != nil {
		t.Fatal(err)
	}
	checkPXLeftovers(t, srv)
	checkSourceUntouched(t, srv, prodID, prodSum)
}

// TestPortworxRemoveWhileDown: a Remove that cannot reach the server
// fails fast, naming the volume, and the volume stays whole so it can be
// removed once the server is back. A start's sweep destroys clones of this
// instance no record owns, and leaves other instances' clones alone.
func TestPortworxRemoveWhileDown(t *testing.T) {
	srv := osdserver.ForTest(t, osdserver.Config{Token: pxToken})
	prodID, prodSum := pxProduction(t, srv)
	p := StartPlugin(t, pxEnv(t, srv, nil))
	mustDo(t, p.Create("app-production@latest", nil))
	p.MustMount("app-production@latest", "m")
	mustDo(t, p.Unmount("app-production@latest", "m"))
	srv.Stop()
	start := time.Now()
	err := p.Remove("app-production@latest")
	if err == nil || time.Since(start) > 5*time.Second || !strings.Contains(err.Error(), "app-production@latest") {
		t.Fatalf("remove while down: %v after %s; want an error naming the volume", err, time.Since(start))
	}
	if _, err := p.Get("app-production@latest"); err != nil {
		t.Fatalf("Get after a failed remove: %v", err)
	}
	mustDo(t, srv.Restart())
	if err := p.Remove("app-production@latest"); err != nil {
		t.Fatalf("remove with the server back: %v", err)
	}
	if n := len(pxCloneIDs(srv)); n != 0 {
		t.Fatalf("%d clones left after the remove", n)
	}

	// Orphans: one clone of this instance without a record, one of another.
	// The instance ID is in the plugin's database; its snapshot carries it.
	snaps := srv.SnapEnumerate([]string{prodID}, nil)
	if len(snaps) == 0 {
		t.Fatal("no snapshot of production")
	}
	id := snaps[0].GetLocator().GetVolumeLabels()[storage.LabelInstance]
	if id == "" {
		t.Fatalf("the plugin's snapshot %s carries no %s", snaps[0].Id, storage.LabelInstance)
	}
	orphan := func(instance string) string {
		cid, err := srv.Snapshot(snaps[0].Id, false, &api.VolumeLocator{Name: "orphan-" + instance, VolumeLabels: map[string]string{
			storage.LabelOwner: "1", storage.LabelVolume: "gone@latest", storage.LabelSource: "app-production", storage.LabelInstance: instance,
		}})
		mustDo(t, err)
		return cid
	}
	mine, theirs := orphan(id), orphan("ffffffffffffffff")

	p.Stop()
	p.Start()
	left := map[string]bool{}
	for _, c := range pxCloneIDs(srv) {
		left[c] = true
	}
	if left[mine] || !left[theirs] || len(left) != 1 {
		t.Fatalf("after the start's sweep the server holds clones %s; want only the other instance's", describeVols(func() []*api.Volume {
			c, _ := pxObjects(srv)
			return c
		}()))
	}
	mustDo(t, srv.Delete(theirs))
	checkPXLeftovers(t, srv)
	checkSourceUntouched(t, srv, prodID, prodSum)
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func describeVols(vols []*api.Volume) string {
	var s []string
	for _, v := range vols {
		s = append(s, fmt.Sprintf("%s(%s)", v.GetLocator().GetName(), v.Id))
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}
