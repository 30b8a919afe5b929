package portworx_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libopenstorage/openstorage/api"

	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/storage/portworx"
	"github.com/snapvol/snapvol/test/osdserver"
)

// The tests in this file hold the backend to what a real OpenStorage
// server does (test/osdserver models it, handler by handler), where the
// server snapvol was first written against differed.

// TestCloneOptionsChangeOnlyWhatWasAsked: the server applies every field
// of a sent spec that differs from the volume's, and fields openstorage
// v1.0.0's types do not know arrive as zero if the spec goes through
// them. A clone made with io_priority=low must keep the rest of its
// snapshot's settings, journal and queue_depth included.
func TestCloneOptionsChangeOnlyWhatWasAsked(t *testing.T) {
	e := newEnv(t, osdserver.Config{}, nil)
	c := ctx(t)
	src := e.production()
	if err := e.srv.SetExtraSpec(src.ID, map[string]any{"journal": true, "queue_depth": 128, "nodiscard": true}); err != nil {
		t.Fatal(err)
	}
	snap, err := e.b.Snapshot(c, src, storage.SnapshotLabels(src.Name))
	if err != nil {
		t.Fatal(err)
	}
	before, _ := e.srv.Inspect([]string{snap.ID})
	clone, err := e.b.Clone(c, snap, storage.CloneLabels("v", src.Name), map[string]string{"io_priority": "low"})
	if err != nil {
		t.Fatalf("clone with io_priority=low: %v", err)
	}
	vols, err := e.srv.Inspect([]string{clone.ID})
	if err != nil {
		t.Fatal(err)
	}
	cv := vols[0]
	if cv.Spec.Cos != api.CosType_LOW {
		t.Errorf("clone cos = %v; want low", cv.Spec.Cos)
	}
	if cv.Spec.HaLevel != before[0].Spec.HaLevel || cv.Spec.Size != before[0].Spec.Size {
		t.Errorf("clone ha_level/size = %d/%d; want the snapshot's %d/%d", cv.Spec.HaLevel, cv.Spec.Size, before[0].Spec.HaLevel, before[0].Spec.Size)
	}
	extra := e.srv.ExtraSpec(clone.ID)
	if extra["journal"] != true || !numberIs(extra["queue_depth"], 128) || extra["nodiscard"] != true {
		t.Errorf("clone's settings unknown to openstorage v1.0.0 = %v; want journal, queue_depth 128 and nodiscard kept", extra)
	}
}

func numberIs(v any, n float64) bool {
	switch x := v.(type) {
	case float64:
		return x == n
	case int:
		return float64(x) == n
	}
	return false
}

// TestClonesCarrySnapvolsLabelsOnly: the server drops a clone request's
// labels and gives the clone its parent's. A clone of a snapshot Portworx
// took (carrying production's labels) must carry snapvol's labels and
// none of production's, and be found, and deleted, as snapvol's clone.
func TestClonesCarrySnapvolsLabelsOnly(t *testing.T) {
	e := newEnv(t, osdserver.Config{}, nil)
	c := ctx(t)
	src := e.production()
	// A snapshot Portworx's schedule took: production's labels.
	pxID, err := e.srv.Snapshot(src.ID, true, &api.VolumeLocator{Name: "app-production_periodic_1", VolumeLabels: map[string]string{"app": "production", "backup": "nightly"}})
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := e.b.Snapshots(c, src)
	if err != nil || len(snaps) != 1 || snaps[0].ID != pxID {
		t.Fatalf("Snapshots = %+v, %v; want Portworx's", snaps, err)
	}
	clone, err := e.b.Clone(c, snaps[0], storage.CloneLabels("ci", src.Name), nil)
	if err != nil {
		t.Fatal(err)
	}
	cv, _ := e.srv.ByName(clone.Name)
	l := cv.GetLocator().GetVolumeLabels()
	if l[storage.LabelKind] != string(storage.KindClone) || l[storage.LabelVolume] != "ci" || l[storage.LabelInstance] == "" {
		t.Errorf("clone labels %v: not snapvol's", l)
	}
	if l["app"] != "" || l["backup"] != "" {
		t.Errorf("clone labels %v: it still carries production's", l)
	}
	owned, err := e.b.Owned(c)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, o := range owned {
		if o.ID == clone.ID {
			found = o.Kind == storage.KindClone && o.Labels[storage.LabelVolume] == "ci"
		}
	}
	if !found {
		t.Errorf("Owned = %+v; want the clone as a clone of volume ci", owned)
	}
	if err := e.b.Delete(c, clone.ID); err != nil {
		t.Fatalf("delete clone: %v", err)
	}

	// A snapshot Portworx took of a volume snapvol made inherits that
	// volume's labels: it is neither snapvol's volume nor its snapshot.
	mine, err := e.b.CreateVolume(c, "scratch", nil)
	if err != nil {
		t.Fatal(err)
	}
	mv, _ := e.srv.ByName("scratch")
	inherited, err := e.srv.Snapshot(mine.ID, true, &api.VolumeLocator{Name: "scratch_periodic_1", VolumeLabels: mv.Locator.VolumeLabels})
	if err != nil {
		t.Fatal(err)
	}
	owned, err = e.b.Owned(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range owned {
		if o.ID == inherited {
			t.Errorf("Owned lists Portworx's snapshot of a snapvol volume as snapvol's %s", o.Kind)
		}
	}
	if err := e.b.Delete(c, inherited); !errors.Is(err, storage.ErrProtected) {
		t.Errorf("Delete of Portworx's snapshot = %v; want ErrProtected", err)
	}
}

// TestCloneLeftUnlabelledIsFoundAtStart: a crash between the clone and
// its labelling leaves a clone with its snapshot's labels; the next start
// finds it by its name, and the sweep can delete it.
func TestCloneLeftUnlabelledIsFoundAtStart(t *testing.T) {
	e := newEnv(t, osdserver.Config{}, nil)
	c := ctx(t)
	src := e.production()
	snap, err := e.b.Snapshot(c, src, storage.SnapshotLabels(src.Name))
	if err != nil {
		t.Fatal(err)
	}
	// What Clone's first call leaves: the server's clone, named by this
	// instance, labelled as the snapshot.
	id, err := e.srv.Snapshot(snap.ID, false, &api.VolumeLocator{Name: "snapvol-clone-0123456789abcdef-00c0ffee00c0ffee"})
	if err != nil {
		t.Fatal(err)
	}
	owned, err := e.b.Owned(c)
	if err != nil {
		t.Fatal(err)
	}
	var got *storage.Object
	for i, o := range owned {
		if o.ID == id {
			got = &owned[i]
		}
		if o.ID == snap.ID && o.Kind != storage.KindSnapshot {
			t.Errorf("the snapshot is listed as a %s", o.Kind)
		}
	}
	if got == nil || got.Kind != storage.KindClone {
		t.Fatalf("Owned = %+v; want the unlabelled clone %s as a clone", owned, id)
	}
	if err := e.b.Delete(c, id); err != nil {
		t.Fatalf("delete the unlabelled clone: %v", err)
	}
	if _, ok := e.srv.ByName("snapvol-clone-0123456789abcdef-00c0ffee00c0ffee"); ok {
		t.Error("the unlabelled clone is still on the server")
	}
}

// notOpenStorage serves what a wrong PX_ENDPOINT answers: a router's 404
// (Portworx's SDK REST gateway on 9021 answers "Not Found").
func notOpenStorage(t *testing.T, body string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, body, http.StatusNotFound)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestWrongEndpointIsNeverNotFound: a router's "404 page not found" is
// not a missing volume. Read as one, Delete reported success and the
// driver dropped the record of a clone that stayed on the server.
func TestWrongEndpointIsNeverNotFound(t *testing.T) {
	for _, body := range []string{"404 page not found", "Not Found"} {
		b, err := portworx.Open(portworx.Config{
			Endpoint: notOpenStorage(t, body), Driver: "pxd", DataRoot: t.TempDir(), Instance: "0123456789abcdef",
			CallTimeout: 5 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		c := ctx(t)
		if err := b.Delete(c, "1234"); err == nil || errors.Is(err, storage.ErrNotFound) || !errors.Is(err, portworx.ErrEndpoint) {
			t.Errorf("%q: Delete = %v; want an ErrEndpoint error, not success", body, err)
		}
		if _, err := b.Volume(c, "app-production"); errors.Is(err, storage.ErrNotFound) || !strings.Contains(fmtErr(err), "PX_ENDPOINT") {
			t.Errorf("%q: Volume = %v; want an error naming PX_ENDPOINT", body, err)
		}
		if err := b.Ping(c); !errors.Is(err, portworx.ErrEndpoint) || errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), "PX_ENDPOINT") {
			t.Errorf("%q: Ping = %v; want ErrEndpoint naming PX_ENDPOINT", body, err)
		}
		if err := b.Unmount(c, "1234", filepath.Join(t.TempDir(), "x")); errors.Is(err, storage.ErrNotFound) {
			t.Errorf("%q: Unmount = %v", body, err)
		}
		b.Close()
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestTokenCheckedAtPing: the versions route needs no token, so Ping
// checks PX_TOKEN with a call that does; the server's refusals (in the
// SDK's words, never HTTP 401) are ErrDenied naming PX_TOKEN.
func TestTokenCheckedAtPing(t *testing.T) {
	e := newEnv(t, osdserver.Config{Token: "s3cret"}, nil)
	c := ctx(t)
	if err := e.b.Ping(c); err != nil {
		t.Fatalf("ping with the right token: %v", err)
	}
	for _, tok := range []string{"wrong", ""} {
		bad, err := portworx.Open(portworx.Config{Endpoint: e.srv.Endpoint(), Driver: "pxd", Token: tok, DataRoot: t.TempDir(), Instance: "0123456789abcdef"})
		if err != nil {
			t.Fatal(err)
		}
		err = bad.Ping(c)
		if tok == "" {
			// No token: a guest, whom the server lets list public volumes.
			if _, verr := bad.Volume(c, "app-production"); verr == nil || !strings.Contains(verr.Error(), "PX_TOKEN is not set") {
				t.Errorf("guest looking up a private volume: %v; want a not-found naming PX_TOKEN", verr)
			}
		} else if !errors.Is(err, storage.ErrDenied) || !strings.Contains(err.Error(), "PX_TOKEN") {
			t.Errorf("token %q: Ping = %v; want ErrDenied naming PX_TOKEN", tok, err)
		}
		bad.Close()
	}
}

// TestSlowAttachCarriesOn: the server cancels an attach when its request
// ends. One that takes longer than the request may wait goes on in the
// background, the request answers ErrInProgress, and asking again picks
// it up instead of starting over.
func TestSlowAttachCarriesOn(t *testing.T) {
	e := newEnv(t, osdserver.Config{}, nil)
	c := ctx(t)
	src := e.production()
	_, clone := e.snapClone(src, "big")
	e.srv.SetSlow("attach", 3*time.Second)
	seen := len(e.srv.Requests())
	target := filepath.Join(e.dataRoot, "big")
	short, cancel := context.WithTimeout(c, time.Second)
	err := e.b.Mount(short, clone.ID, target)
	cancel()
	if !errors.Is(err, storage.ErrInProgress) {
		t.Fatalf("mount past its time = %v; want ErrInProgress", err)
	}
	if err := e.b.Mount(c, clone.ID, target); err != nil {
		t.Fatalf("mount again: %v", err)
	}
	if !e.b.Mounted(target) {
		t.Fatal("not mounted after the second attempt")
	}
	puts := 0
	for _, r := range e.srv.Requests()[seen:] {
		if r.Method == http.MethodPut && strings.HasSuffix(r.Path, "/"+clone.ID) {
			puts++
		}
	}
	if puts != 2 {
		t.Errorf("the server was asked %d times to change the clone; want twice, one attach and one mount (picked up, not started over)", puts)
	}
	if err := e.b.Unmount(c, clone.ID, target); err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotLimitExplained: Portworx keeps at most 64 snapshots of a
// volume; a snapshot refused at the limit says so and what to remove.
func TestSnapshotLimitExplained(t *testing.T) {
	e := newEnv(t, osdserver.Config{MaxSnapshots: 64}, nil)
	c := ctx(t)
	src := e.production()
	for i := range 64 {
		if _, err := e.srv.Snapshot(src.ID, true, &api.VolumeLocator{Name: fmt.Sprintf("px-%02d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := e.b.Snapshot(c, src, storage.SnapshotLabels(src.Name))
	if err == nil || !strings.Contains(err.Error(), "Portworx allows 64") || !strings.Contains(err.Error(), "app-production") {
		t.Fatalf("snapshot at the limit: %v; want an error saying Portworx's limit and naming the volume", err)
	}
}

// TestEncryptedSourceNeedsItsSecret: Portworx attaches a volume encrypted
// with a per-volume secret only when the attach names the secret; a clone
// made with -o secret_key=NAME is attached with it every time, and one
// made without fails saying what to give.
func TestEncryptedSourceNeedsItsSecret(t *testing.T) {
	e := newEnv(t, osdserver.Config{}, nil)
	c := ctx(t)
	id, err := e.srv.Create(&api.VolumeLocator{Name: "vault"}, nil, &api.VolumeSpec{Size: 1 << 30, HaLevel: 1, Encrypted: true, Passphrase: "key1"})
	if err != nil {
		t.Fatal(err)
	}
	src, err := e.b.Volume(c, "vault")
	if err != nil || src.ID != id {
		t.Fatalf("Volume(vault) = %+v, %v", src, err)
	}
	snap, err := e.b.Snapshot(c, src, storage.SnapshotLabels("vault"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.b.CheckOptions(storage.KindClone, map[string]string{"secret_key": "key1"}); err != nil {
		t.Fatalf("secret_key on a clone: %v", err)
	}
	plain, err := e.b.Clone(c, snap, storage.CloneLabels("ci-1", "vault"), nil)
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(e.dataRoot, "ci-1")
	if err := e.b.Mount(c, plain.ID, target); err == nil || !strings.Contains(err.Error(), "secret_key") {
		t.Fatalf("mount of an encrypted clone without its secret: %v; want a refusal saying -o secret_key", err)
	}
	if e.b.Mounted(target) {
		t.Fatal("a failed mount left a mount")
	}
	keyed, err := e.b.Clone(c, snap, storage.CloneLabels("ci-2", "vault"), map[string]string{"secret_key": "key1"})
	if err != nil {
		t.Fatal(err)
	}
	target = filepath.Join(e.dataRoot, "ci-2")
	if err := e.b.Mount(c, keyed.ID, target); err != nil {
		t.Fatalf("mount with the secret named: %v", err)
	}
	if err := e.b.Unmount(c, keyed.ID, target); err != nil {
		t.Fatal(err)
	}
	for _, o := range []storage.Object{plain, keyed} {
		if err := e.b.Delete(c, o.ID); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWorkIsNotCutOffByTheCallBudget: the per-call budget (CallTimeout)
// is for questions; a clone or mount the server takes longer over
// finishes within the request's own time instead of being cancelled
// midway, and a hung question still fails fast.
func TestWorkIsNotCutOffByTheCallBudget(t *testing.T) {
	e := newEnv(t, osdserver.Config{}, func(c *portworx.Config) { c.CallTimeout = 500 * time.Millisecond })
	c := ctx(t)
	src := e.production()
	snap, err := e.b.Snapshot(c, src, storage.SnapshotLabels(src.Name))
	if err != nil {
		t.Fatal(err)
	}
	e.srv.SetSlow("clone", 1500*time.Millisecond)
	e.srv.SetSlow("mount", 1500*time.Millisecond)
	clone, err := e.b.Clone(c, snap, storage.CloneLabels("slow", src.Name), nil)
	if err != nil {
		t.Fatalf("a clone slower than the per-call budget: %v", err)
	}
	target := filepath.Join(e.dataRoot, "slow")
	if err := e.b.Mount(c, clone.ID, target); err != nil {
		t.Fatalf("a mount slower than the per-call budget: %v", err)
	}
	if err := e.b.Unmount(c, clone.ID, target); err != nil {
		t.Fatal(err)
	}
	e.srv.SetDelay(time.Hour)
	start := time.Now()
	if _, err := e.b.Volume(c, src.Name); !errors.Is(err, storage.ErrUnavailable) || time.Since(start) > 5*time.Second {
		t.Errorf("a hung lookup: %v after %s; want ErrUnavailable within the call budget", err, time.Since(start))
	}
	e.srv.SetDelay(0)
}

// TestOtherPortsAreWrongEndpoints: PX_ENDPOINT at Portworx's SDK gRPC
// port (9020, an HTTP/2 SETTINGS frame for an answer) or at its gossip
// port (the connection closed unanswered) is a setting to fix, refused at
// start naming PX_ENDPOINT and the REST port; only a port where nothing
// answers at all is an outage to wait out.
func TestOtherPortsAreWrongEndpoints(t *testing.T) {
	srv := osdserver.ForTest(t, osdserver.Config{})
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nothing := "http://" + closed.Addr().String()
	closed.Close()
	for _, c := range []struct {
		name, endpoint string
		wrong          bool
	}{
		{"the SDK's gRPC port", srv.SDKEndpoint(), true},
		{"the gossip port", srv.GossipEndpoint(), true},
		{"a port nothing listens on", nothing, false},
	} {
		b, err := portworx.Open(portworx.Config{Endpoint: c.endpoint, Driver: "pxd", DataRoot: t.TempDir(), Instance: "0123456789abcdef", CallTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		pctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = b.Ping(pctx)
		cancel()
		b.Close()
		switch {
		case c.wrong && (!errors.Is(err, portworx.ErrEndpoint) || errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), "PX_ENDPOINT") || !strings.Contains(err.Error(), "9001")):
			t.Errorf("%s: Ping = %v; want ErrEndpoint, not an outage, naming PX_ENDPOINT and the REST port 9001", c.name, err)
		case !c.wrong && (!errors.Is(err, storage.ErrUnavailable) || errors.Is(err, portworx.ErrEndpoint)):
			t.Errorf("%s: Ping = %v; want ErrUnavailable", c.name, err)
		}
		t.Logf("%s: %v", c.name, err)
	}
}

// TestHiddenSourceCarriesTheHint: a private source is hidden from a guest
// (no PX_TOKEN) and from a user who may not read it; the not-found error
// says so, as a hint the driver shows in place of "create it first".
func TestHiddenSourceCarriesTheHint(t *testing.T) {
	e := newEnv(t, osdserver.Config{Token: "s3cret", Users: map[string]osdserver.User{"ci-token": {Name: "ci"}}}, nil)
	c := ctx(t)
	e.production()
	for _, tc := range []struct{ token, want string }{{"", "PX_TOKEN is not set"}, {"ci-token", "admin token"}} {
		b, err := portworx.Open(portworx.Config{Endpoint: e.srv.Endpoint(), Driver: "pxd", Token: tc.token, DataRoot: t.TempDir(), Instance: "0123456789abcdef"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = b.Volume(c, "app-production")
		b.Close()
		var h interface{ Hint() string }
		if !errors.Is(err, storage.ErrNotFound) || !errors.As(err, &h) || !strings.Contains(h.Hint(), tc.want) {
			t.Errorf("token %q: Volume = %v; want ErrNotFound with a hint saying %q", tc.token, err, tc.want)
		}
	}
}

// TestOnlyReadOnlySnapshotsAnswerARef: a writable child of production,
// whatever its name and labels (anyone with pxctl can write both), is
// neither @NAME nor a candidate for @latest.
func TestOnlyReadOnlySnapshotsAnswerARef(t *testing.T) {
	e := newEnv(t, osdserver.Config{}, nil)
	c := ctx(t)
	src := e.production()
	// A raw writable clone of production, named like a masked snapshot
	// and labelled like one of snapvol's.
	forged := storage.TakenSnapshotLabels(src.Name, storage.TakenPlugin, "")
	forged[storage.LabelName] = "masked-raw"
	forged[storage.LabelSourceID] = src.ID
	id, err := e.srv.Snapshot(src.ID, false, &api.VolumeLocator{Name: "masked-raw", VolumeLabels: forged})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := e.b.SnapshotByName(c, src, "masked-raw"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("SnapshotByName(masked-raw) = %+v, %v; want ErrNotFound: it is writable", s, err)
	}
	snaps, err := e.b.Snapshots(c, src)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range snaps {
		if s.ID == id {
			t.Errorf("Snapshots lists the writable %s (%s) for @latest", s.Name, s.ID)
		}
	}
}

// TestMountNotVisibleFailsLoudly: PX_MOUNT_DIR a directory the server
// (in its own mount namespace, as Portworx in its container) does not
// share with the host: it mounts and reports the mount, snapvol does not
// see it, and Mount fails naming PX_MOUNT_DIR, leaving nothing behind.
func TestMountNotVisibleFailsLoudly(t *testing.T) {
	notShared := t.TempDir()
	e := newEnv(t, osdserver.Config{}, func(c *portworx.Config) { c.MountDir = notShared })
	c := ctx(t)
	clone := serverClone(t, e)
	target := filepath.Join(e.dataRoot, "t")
	err := e.b.Mount(c, clone.ID, target)
	for _, want := range []string{"reported", "mounted at host path " + serverPathIn(notShared, "t"), "does not see it", "PX_MOUNT_DIR"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Mount under a PX_MOUNT_DIR the server does not share = %v; want an error saying %q", err, want)
		}
	}
	checkGone(t, e, clone.Name, target, serverPathIn(notShared, "t"))
}
