package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/driver"
	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/metrics"
	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/storage/memory"
)

type rig struct {
	m   *metrics.Metrics
	d   *driver.Driver
	mem *memory.Backend
	st  *store.Store
	now time.Time
}

func newRig(t *testing.T) *rig {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "snapvol.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := &rig{mem: memory.New(), st: st, now: time.Now()}
	r.m = metrics.New(metrics.Config{Records: st, CacheFor: time.Nanosecond})
	b := r.m.Wrap(r.mem)
	r.m.SetBackend(b)
	log := logrus.New()
	log.SetOutput(io.Discard)
	r.d = driver.New(driver.Config{
		Backend: b, Store: st, DataRoot: t.TempDir(), LatestMaxAge: time.Minute, IdleTTL: time.Hour,
		Claim: true, Log: log, Observer: r.m, Now: func() time.Time { return r.now },
	})
	if err := r.d.Create(&volume.CreateRequest{Name: "app-production"}); err != nil {
		t.Fatal(err)
	}
	return r
}

// scrape is the text exposition, as Prometheus reads it.
func (r *rig) scrape(t *testing.T) string {
	t.Helper()
	rec := httptest.NewRecorder()
	r.m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func has(t *testing.T, text string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(text, "\n"+l+"\n") {
			t.Errorf("no line %q in /metrics", l)
		}
	}
}

func TestMetricsFollowTheDriver(t *testing.T) {
	r := newRig(t)
	for i, name := range []string{"app-production@latest+a", "app-production@latest+b", "app-production@now+c"} {
		if _, err := r.d.Mount(&volume.MountRequest{Name: name, ID: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.d.Unmount(&volume.UnmountRequest{Name: "app-production@now+c", ID: "2"}); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Remove(&volume.RemoveRequest{Name: "app-production@now+c"}); err != nil {
		t.Fatal(err)
	}
	// An idle clone the reaper takes.
	if err := r.d.Unmount(&volume.UnmountRequest{Name: "app-production@latest+b", ID: "1"}); err != nil {
		t.Fatal(err)
	}
	r.now = r.now.Add(2 * time.Hour)
	r.d.Reap()
	// An orphan clone reconcile destroys.
	snaps, _ := r.mem.Owned(context.Background())
	for _, o := range snaps {
		if o.Kind == storage.KindSnapshot {
			if _, err := r.mem.Clone(context.Background(), o, storage.CloneLabels("gone", "app-production"), nil); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if err := r.d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	text := r.scrape(t)
	has(t, text,
		"snapvol_clone_make_duration_seconds_count 3",
		"snapvol_clone_destroy_duration_seconds_count 2",
		`snapvol_reaped_clones_total{reason="idle"} 1`,
		`snapvol_reconcile_repairs_total{repair="orphan_clone"} 1`,
		`snapvol_clones{source="app-production"} 1`,
		`snapvol_volumes{kind="clone"} 2`,
		`snapvol_volumes{kind="volume"} 1`,
		"snapvol_mounts 1",
		`snapvol_snapshots{kind="plugin",source="app-production"} 1`,
		"snapvol_backend_up 1",
	)
	if !strings.Contains(text, `snapvol_build_info{commit="`) || !strings.Contains(text, "process_resident_memory_bytes") {
		t.Errorf("no build info or process metrics in:\n%s", text)
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", text)
	}
}

func TestBackendErrorsAndAvailability(t *testing.T) {
	r := newRig(t)
	r.mem.FailNext("Clone", fmt.Errorf("clone: %w", syscall.EDQUOT))
	if _, err := r.d.Mount(&volume.MountRequest{Name: "app-production@latest", ID: "1"}); err == nil {
		t.Fatal("mount succeeded through a failing clone")
	}
	r.mem.FailAlways("Owned", fmt.Errorf("%w: connection refused", storage.ErrUnavailable))
	text := r.scrape(t)
	has(t, text,
		`snapvol_backend_errors_total{call="clone",error="no_space"} 1`,
		`snapvol_no_space_errors_total{call="clone"} 1`,
		"snapvol_backend_up 0",
		"snapvol_backend_scrape_errors 1",
	)
	// The scrape's own failed read is counted in the next one.
	if text = r.scrape(t); !strings.Contains(text, `snapvol_backend_errors_total{call="owned",error="unavailable"} `) {
		t.Errorf("the failed Owned calls are not counted:\n%s", text)
	}
	r.mem.FailAlways("Owned", nil)
	has(t, r.scrape(t), "snapvol_backend_up 1")
}

type usagerBackend struct{ *memory.Backend }

func (usagerBackend) Usage(context.Context) (storage.PoolUsage, error) {
	return storage.PoolUsage{Size: 100, Used: 60, Free: 40, Reserve: 10}, nil
}

func (usagerBackend) ObjectUsage(context.Context) (map[string]storage.ObjectUsage, error) {
	return map[string]storage.ObjectUsage{"a": {Bytes: 99, Limit: 100}, "b": {Bytes: 10, Limit: 100}, "c": {Bytes: 5}}, nil
}

type checkerBackend struct{ *memory.Backend }

func (checkerBackend) Health(context.Context) error {
	return fmt.Errorf("%w: pool /p is read-only: I/O error", storage.ErrUnhealthy)
}

type bothBackend struct {
	usagerBackend
	checkerBackend
	*memory.Backend
}

// Wrap keeps exactly the optional interfaces the backend has.
func TestWrapPassesOptionalInterfacesThrough(t *testing.T) {
	m := metrics.New(metrics.Config{})
	mem := memory.New()
	for _, c := range []struct {
		b          storage.Backend
		usage, chk bool
	}{
		{mem, false, false}, {usagerBackend{mem}, true, false}, {checkerBackend{mem}, false, true},
		{bothBackend{usagerBackend{mem}, checkerBackend{mem}, mem}, true, true},
	} {
		w := m.Wrap(c.b)
		_, u := w.(storage.Usager)
		_, k := w.(storage.Checker)
		if u != c.usage || k != c.chk {
			t.Errorf("%T wrapped: Usager %v Checker %v, want %v %v", c.b, u, k, c.usage, c.chk)
		}
	}
	var nilM *metrics.Metrics
	if nilM.Wrap(mem) != storage.Backend(mem) {
		t.Error("a nil Metrics wraps")
	}
}

func TestPoolBytesQuotaAndHealth(t *testing.T) {
	mem := memory.New()
	m := metrics.New(metrics.Config{})
	m.SetBackend(m.Wrap(bothBackend{usagerBackend{mem}, checkerBackend{mem}, mem}))
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	has(t, rec.Body.String(),
		`snapvol_pool_bytes{kind="size"} 100`, `snapvol_pool_bytes{kind="used"} 60`,
		`snapvol_pool_bytes{kind="free"} 40`, `snapvol_pool_bytes{kind="reserve"} 10`,
		"snapvol_clones_at_limit 1", "snapvol_backend_healthy 0", "snapvol_backend_up 1",
	)
}

// Every optional interface package storage declares must be passed
// through by Wrap (the driver finds them by type assertion, and a wrapper
// that hid one would switch a feature off): a new one fails this test
// until backend.go handles it.
func TestWrapKnowsEveryOptionalInterface(t *testing.T) {
	src, err := os.ReadFile("backend.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, "../storage", func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range pkgs {
		for _, f := range p.Files {
			ast.Inspect(f, func(node ast.Node) bool {
				ts, ok := node.(*ast.TypeSpec)
				if !ok {
					return true
				}
				if _, isIface := ts.Type.(*ast.InterfaceType); !isIface || ts.Name.Name == "Backend" || !ts.Name.IsExported() {
					return true
				}
				n++
				if !strings.Contains(string(src), "storage."+ts.Name.Name+")") {
					t.Errorf("storage.%s is an optional backend interface metrics.Wrap does not pass through", ts.Name.Name)
				}
				return true
			})
		}
	}
	if n == 0 {
		t.Fatal("found no optional interfaces in ../storage; is the path right?")
	}
}

func TestErrorClass(t *testing.T) {
	for err, want := range map[error]string{
		fmt.Errorf("x: %w", storage.ErrUnavailable): "unavailable",
		context.DeadlineExceeded:                    "timeout",
		fmt.Errorf("x: %w", syscall.ENOSPC):         "no_space",
		fmt.Errorf("x: %w", storage.ErrNoSpace):     "no_space",
		errors.New("boom"):                          "other",
	} {
		if got := metrics.ErrorClass(err); got != want {
			t.Errorf("ErrorClass(%v) = %s, want %s", err, got, want)
		}
	}
}
