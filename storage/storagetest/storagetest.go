// Package storagetest is the conformance suite of storage.Backend: one
// table of named checks of the contract written in storage/backend.go,
// run against every implementation (storage/memory without root, local on
// a btrfs loop pool and portworx over test/osdserver as root), so the
// backends cannot drift apart again.
//
// A backend under test may implement the optional interfaces below; the
// checks that need one it lacks are skipped, saying why.
package storagetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/snapvol/snapvol/mountpoint"
	"github.com/snapvol/snapvol/storage"
)

// Outsider makes objects the way people and other tools do behind
// snapvol's back: a regular volume (pxctl volume create, btrfs subvolume
// create: a production volume) and a read-only snapshot of a volume
// (a Portworx schedule, pxctl snap create, btrfs subvolume snapshot -r).
type Outsider interface {
	ForeignVolume(ctx context.Context, name string) (storage.Object, error)
	ForeignSnapshot(ctx context.Context, source storage.Object, name string) (storage.Object, error)
}

// Fake is implemented by backends that hold no data (storage/memory):
// Mount records the mount, but nothing written there reaches an object.
// The checks that move data through mounts are skipped for them; for any
// other backend, a Mount must leave a real mount point at its target.
type Fake interface{ HoldsNoData() }

// MountDir is implemented by backends that mount only below a directory
// of their own (portworx: DATA_ROOT); mount targets are made there, and
// in the check's t.TempDir() otherwise.
type MountDir interface{ MountDir() string }

type check struct {
	name string
	fn   func(t *testing.T, e *env)
}

var checks = []check{
	{"Volume", testVolume},
	{"Foreign", testForeign},
	{"ForeignSnapshot", testForeignSnapshot},
	{"Snapshot", testSnapshot},
	{"SnapshotsKeyedByIdentity", testIdentity},
	{"SnapshotsOfRemovedNamesake", testHandSnapshotOutlivesSource},
	{"Clone", testClone},
	{"CloneData", testCloneData},
	{"SnapshotOf", testSnapshotOf},
	{"Delete", testDelete},
	{"Owned", testOwned},
	{"NotFound", testNotFound},
	{"Mount", testMount},
	{"UnmountKeepsFiles", testUnmountKeepsFiles},
	{"ConcurrentClones", testConcurrentClones},
	{"Usage", testUsage},
	{"Health", testHealth},
}

// Run runs every check as a subtest of t. open is called once per check
// with the subtest's t and must return a fresh, empty backend, closed and
// cleaned up (pool unmounted, server stopped) when that t ends.
func Run(t *testing.T, open func(t *testing.T) storage.Backend) {
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			b := open(t)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			t.Cleanup(cancel)
			c.fn(t, &env{t: t, b: b, ctx: ctx})
		})
	}
}

// env is what a check works with.
type env struct {
	t       *testing.T
	b       storage.Backend
	ctx     context.Context
	targets int
}

func (e *env) outsider() Outsider {
	e.t.Helper()
	o, ok := e.b.(Outsider)
	if !ok {
		e.t.Skipf("%T cannot make objects as an outsider would (storagetest.Outsider)", e.b)
	}
	return o
}

func (e *env) fake() bool {
	_, ok := e.b.(Fake)
	return ok
}

// target is a fresh path for a mount point, which does not exist yet.
func (e *env) target() string {
	e.t.Helper()
	dir := ""
	if d, ok := e.b.(MountDir); ok {
		dir = d.MountDir()
	} else {
		dir = e.t.TempDir()
	}
	if dir == "" || !filepath.IsAbs(dir) {
		e.t.Fatalf("mount directory %q is not an absolute path", dir)
	}
	e.targets++
	return filepath.Join(dir, fmt.Sprintf("target-%d", e.targets))
}

func (e *env) create(name string) storage.Object {
	e.t.Helper()
	v, err := e.b.CreateVolume(e.ctx, name, nil)
	if err != nil {
		e.t.Fatalf("CreateVolume(%q): %v", name, err)
	}
	return v
}

func (e *env) snapshot(src storage.Object) storage.Object {
	e.t.Helper()
	s, err := e.b.Snapshot(e.ctx, src, storage.SnapshotLabels(src.Name))
	if err != nil {
		e.t.Fatalf("Snapshot(%q): %v", src.Name, err)
	}
	return s
}

func (e *env) clone(snap storage.Object, volume, source string) storage.Object {
	e.t.Helper()
	c, err := e.b.Clone(e.ctx, snap, storage.CloneLabels(volume, source), nil)
	if err != nil {
		e.t.Fatalf("Clone(%q) for %q: %v", snap.Name, volume, err)
	}
	return c
}

func (e *env) mount(id, target string) {
	e.t.Helper()
	if err := e.b.Mount(e.ctx, id, target); err != nil {
		e.t.Fatalf("Mount(%s, %s): %v", id, target, err)
	}
	if !e.b.Mounted(target) {
		e.t.Fatalf("Mounted(%s) = false after Mount", target)
	}
	if !e.fake() && !mountpoint.IsMountPoint(target) {
		e.t.Fatalf("Mount(%s, %s) left no mount point there", id, target)
	}
	e.t.Cleanup(func() { _ = e.b.Unmount(context.Background(), id, target) })
}

func (e *env) unmount(id, target string) {
	e.t.Helper()
	if err := e.b.Unmount(e.ctx, id, target); err != nil {
		e.t.Fatalf("Unmount(%s, %s): %v", id, target, err)
	}
	if e.b.Mounted(target) || mountpoint.IsMountPoint(target) {
		e.t.Fatalf("%s still mounted after Unmount", target)
	}
}

func (e *env) delete(id string) {
	e.t.Helper()
	if err := e.b.Delete(e.ctx, id); err != nil {
		e.t.Fatalf("Delete(%s): %v", id, err)
	}
}

func (e *env) owned() map[string]storage.Object {
	e.t.Helper()
	objs, err := e.b.Owned(e.ctx)
	if err != nil {
		e.t.Fatalf("Owned: %v", err)
	}
	m := map[string]storage.Object{}
	for _, o := range objs {
		if _, dup := m[o.ID]; dup {
			e.t.Errorf("Owned lists %s twice", o.ID)
		}
		m[o.ID] = o
	}
	return m
}

func (e *env) snapshots(src storage.Object) []storage.Object {
	e.t.Helper()
	snaps, err := e.b.Snapshots(e.ctx, src)
	if err != nil {
		e.t.Fatalf("Snapshots(%q): %v", src.Name, err)
	}
	return snaps
}

// wantErr fails unless err wraps want and names what it is about.
func wantErr(t *testing.T, what string, err, want error, name string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s = %v; want %v", what, err, want)
		return
	}
	if name != "" && !strings.Contains(err.Error(), name) {
		t.Errorf("%s = %q; want the error to name %q", what, err, name)
	}
}

func hasLabels(got, want map[string]string) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func ids(objs []storage.Object) []string {
	out := make([]string, len(objs))
	for i, o := range objs {
		out[i] = o.ID
	}
	sort.Strings(out)
	return out
}

// writeFile writes below dir, which must be an absolute path that is not
// the root: these checks run as root.
func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	if dir == "" || !filepath.IsAbs(dir) || filepath.Clean(dir) == "/" {
		t.Fatalf("refusing to write %s below %q", name, dir)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func exists(t *testing.T, p string) bool {
	t.Helper()
	_, err := os.Stat(p)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return err == nil
}

func mkdirAll(p string) error { return os.MkdirAll(p, 0o755) }

// errOf is the error of a call that also returns a value.
func errOf[T any](_ T, err error) error { return err }
