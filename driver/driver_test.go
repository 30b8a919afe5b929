package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/storage/memory"
)

func newTestDriver(t testing.TB) (*Driver, *memory.Backend, *store.Store) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "snapvol.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	b := memory.New()
	log := logrus.New()
	log.SetOutput(io.Discard)
	d := New(Config{Backend: b, Store: st, DataRoot: t.TempDir(), LatestMaxAge: time.Minute, IdleTTL: time.Hour, Claim: true, Log: log})
	if err := d.Create(&volume.CreateRequest{Name: "app-production"}); err != nil {
		t.Fatal(err)
	}
	return d, b, st
}

func TestTargetsAreDerivedAndDistinct(t *testing.T) {
	d, _, _ := newTestDriver(t)
	seen := map[string]string{}
	for _, n := range []string{"a@latest", "a_latest", "snap:a@latest", "a@latest+x", "a@latest+each"} {
		for _, id := range []string{"", "1"} {
			tg := d.target(n, id)
			if !isTargetName(filepath.Base(tg)) {
				t.Fatalf("target %s of %q is not recognised as the plugin's", tg, n)
			}
			if filepath.Dir(tg) != d.cfg.DataRoot {
				t.Fatalf("target %s of %q escapes DATA_ROOT", tg, n)
			}
			if prev, ok := seen[tg]; ok {
				t.Fatalf("target %s shared by %q and %q", tg, prev, n+"/"+id)
			}
			seen[tg] = n + "/" + id
		}
	}
}

func TestConcurrentLatestSharesOneSnapshot(t *testing.T) {
	d, b, _ := newTestDriver(t)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := d.Mount(&volume.MountRequest{Name: "app-production@latest+j" + string(rune('a'+i%26)) + string(rune('a'+i/26)), ID: "x"})
			errs <- err
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := b.Count(storage.KindSnapshot); n != 1 {
		t.Fatalf("32 concurrent @latest jobs took %d snapshots, want 1", n)
	}
	if n := b.Count(storage.KindClone); n != 32 {
		t.Fatalf("%d clones, want 32", n)
	}
}

func TestBackendFailureLeavesNothing(t *testing.T) {
	d, b, st := newTestDriver(t)
	b.SetFail(errors.New("pool on fire"))
	_, err := d.Mount(&volume.MountRequest{Name: "app-production@now+x", ID: "1"})
	if err == nil || !strings.Contains(err.Error(), "app-production@now+x") || !strings.Contains(err.Error(), "pool on fire") {
		t.Fatalf("mount error = %v; want the volume name and the cause", err)
	}
	if _, ok := st.Get("app-production@now+x"); ok {
		t.Fatalf("a failed claimed mount left a record")
	}
	if err := d.Create(&volume.CreateRequest{Name: "fresh"}); err == nil {
		t.Fatalf("create with a failing backend succeeded")
	}
	if _, ok := st.Get("fresh"); ok {
		t.Fatalf("a failed create left a record")
	}
	b.SetFail(nil)
	if n := b.Count(storage.KindClone); n != 0 {
		t.Fatalf("%d clones left", n)
	}
}

func TestStatusKeysAndRFC3339(t *testing.T) {
	d, _, _ := newTestDriver(t)
	if _, err := d.Mount(&volume.MountRequest{Name: "app-production@latest", ID: "1"}); err != nil {
		t.Fatal(err)
	}
	r, err := d.Get(&volume.GetRequest{Name: "app-production@latest"})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"source", "ref", "snapshot", "snapshot_time", "state", "mounts", "expires"} {
		if _, ok := r.Volume.Status[k]; !ok {
			t.Errorf("Status lacks %q", k)
		}
	}
	for _, v := range []string{r.Volume.CreatedAt, r.Volume.Status["snapshot_time"].(string)} {
		if _, err := time.Parse(time.RFC3339, v); err != nil {
			t.Errorf("%q is not RFC 3339", v)
		}
	}
}

func TestReapKeepsRecordAndCollectsSnapshots(t *testing.T) {
	d, b, st := newTestDriver(t)
	now := time.Now()
	d.cfg.Now = func() time.Time { return now }
	name := "app-production@latest+r"
	if _, err := d.Mount(&volume.MountRequest{Name: name, ID: "1"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Unmount(&volume.UnmountRequest{Name: name, ID: "1"}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Hour)
	d.Reap()
	if err := d.sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, ok := st.Get(name)
	if !ok || r.Attachment("") != nil {
		t.Fatalf("after reaping: record %v, clone %v; want record kept, clone gone", ok, r)
	}
	if n := b.Count(storage.KindClone) + b.Count(storage.KindSnapshot); n != 0 {
		t.Fatalf("%d clones/snapshots left after reaping an old idle clone", n)
	}
}

// FuzzHandlers sends arbitrary bodies to every VolumeDriver endpoint: no
// panic, a JSON answer to every decodable request, and nothing outside DATA_ROOT is mounted.
func FuzzHandlers(f *testing.F) {
	for _, s := range []string{`{"Name":"app-production@latest","ID":"1"}`, `{"Name":"../../etc@latest"}`, `{"Name":null}`, `[]`, `{"Name":"a","Opts":{"from":"app-production"}}`, "\x00", `{"Name":"` + strings.Repeat("a", 5000) + `"}`} {
		f.Add(0, s)
	}
	d, b, _ := newTestDriver(f)
	// The real handler on a real unix socket, as Docker talks to it.
	sock := filepath.Join(f.TempDir(), "p.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { l.Close() })
	go volume.NewHandler(d).Serve(l)
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	paths := []string{"Create", "Remove", "Mount", "Unmount", "Get", "List", "Path", "Capabilities"}
	f.Fuzz(func(t *testing.T, which int, body string) {
		p := paths[(which%len(paths)+len(paths))%len(paths)]
		resp, err := client.Post("http://plugin/VolumeDriver."+p, "application/json", bytes.NewBufferString(body))
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusBadRequest:
			// The protocol library rejects undecodable bodies itself.
		case http.StatusOK, http.StatusInternalServerError:
			if !json.Valid(data) {
				t.Fatalf("%s answered %d with non-JSON %q", p, resp.StatusCode, data)
			}
		default:
			t.Fatalf("%s answered HTTP %d: %q", p, resp.StatusCode, data)
		}
		for target := range b.Mounts() {
			if filepath.Dir(target) != d.cfg.DataRoot {
				t.Fatalf("mounted outside DATA_ROOT: %s", target)
			}
		}
	})
}

// Remove collects a plugin snapshot nothing uses any more, keeps the young
// newest one for @latest, and in that steady state does not scan the pool.
func TestRemoveCollectsWithoutScanningWhenNothingToCollect(t *testing.T) {
	d, b, _ := newTestDriver(t)
	lifecycle := func(name string, mount bool) {
		t.Helper()
		if mount {
			if _, err := d.Mount(&volume.MountRequest{Name: name, ID: "1"}); err != nil {
				t.Fatal(err)
			}
			return
		}
		if err := d.Unmount(&volume.UnmountRequest{Name: name, ID: "1"}); err != nil {
			t.Fatal(err)
		}
		if err := d.Remove(&volume.RemoveRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	lifecycle("app-production@latest+a", true) // takes snapshot 1
	lifecycle("app-production@now+b", true)    // takes snapshot 2, the newest
	lifecycle("app-production@latest+a", false)
	if n := b.Count(storage.KindSnapshot); n != 1 {
		t.Fatalf("%d snapshots after removing the only user of the older one, want 1", n)
	}
	owned := b.OwnedCalls()
	lifecycle("app-production@now+b", false)
	lifecycle("app-production@latest+c", true) // reuses snapshot 2
	lifecycle("app-production@latest+c", false)
	if n := b.Count(storage.KindSnapshot); n != 1 {
		t.Fatalf("%d snapshots, want the newest kept for @latest", n)
	}
	if n := b.OwnedCalls() - owned; n != 0 {
		t.Fatalf("Remove listed the whole pool %d times with nothing to collect", n)
	}
}

func TestIsTargetNameLeavesOtherDirectoriesAlone(t *testing.T) {
	for _, n := range []string{"lost+found", "data", "backup-2026", "x-0123456789AB", "x-0123456789a", "a.b-0123456789ab"} {
		if isTargetName(n) {
			t.Errorf("%q taken for a plugin mount point", n)
		}
	}
}

// Options the backend could not apply fail docker volume create, naming
// the volume, and record nothing, instead of failing every later Mount.
func TestCreateRefusesOptionsTheBackendCannotApply(t *testing.T) {
	d, _, st := newTestDriver(t)
	err := d.Create(&volume.CreateRequest{Name: "ci-2", Options: map[string]string{"from": "app-production", "tier": "fast"}})
	if !errors.Is(err, names.ErrInvalid) || !strings.Contains(err.Error(), `"ci-2"`) || !strings.Contains(err.Error(), "tier") {
		t.Fatalf("create of a clone volume with tier=: %v; want ErrInvalid naming the volume and the option", err)
	}
	if _, ok := st.Get("ci-2"); ok {
		t.Fatal("a record was made for the refused create")
	}
	if err := d.Create(&volume.CreateRequest{Name: "data", Options: map[string]string{"tier": "fast"}}); err != nil {
		t.Fatalf("create of a regular volume with tier=: %v", err)
	}
}
