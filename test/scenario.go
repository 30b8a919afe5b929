package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// SocketScenario is the core acceptance scenario over the real socket,
// shared by every backend: env selects the backend, clones lists the
// plugin-made clones the backend still holds.
func SocketScenario(t *testing.T, env map[string]string, clones func(p *Plugin) []string) {
	p := StartPlugin(t, env)

	// Production: a plain volume holding the guestbook.
	if err := p.Create("app-production", nil); err != nil {
		t.Fatalf("create app-production: %v", err)
	}
	prod := p.MustMount("app-production", "prod-ctr")
	WriteTree(t, prod, Guestbook)
	prodSum := TreeSum(t, prod)

	// app-production@latest mounts at its own path with the same data.
	if err := p.Create("app-production@latest", nil); err != nil {
		t.Fatalf("create app-production@latest: %v", err)
	}
	ci := p.MustMount("app-production@latest", "ci-1")
	if ci == prod {
		t.Fatalf("clone mounted at the source's path %s", ci)
	}
	if got := TreeSum(t, ci); got != prodSum {
		t.Fatalf("clone content differs from production")
	}
	if got := ReadFile(t, filepath.Join(ci, "guestbook/0003.txt")); !strings.Contains(got, "\xff") {
		t.Fatalf("the malformed UTF-8 entry did not reach the clone: %q", got)
	}

	// Writes and deletes in the clone never reach the source.
	WriteTree(t, ci, map[string]string{"guestbook/0001.txt": "overwritten by a test\n", "new.txt": "x"})
	if err := os.RemoveAll(filepath.Join(ci, "guestbook/0002.txt")); err != nil {
		t.Fatal(err)
	}
	if got := TreeSum(t, prod); got != prodSum {
		t.Fatalf("a write in the clone reached production")
	}

	// A tagged name is a separate, pristine clone of the same source.
	tagged := p.MustMount("snap:app-production@latest+t2", "ci-2")
	if tagged == ci {
		t.Fatalf("+t2 shares the clone's mount point")
	}
	if got := TreeSum(t, tagged); got != prodSum {
		t.Fatalf("+t2 clone is not pristine: it sees another clone's writes")
	}

	// Get reports the Status; List has every volume.
	v, err := p.Get("app-production@latest")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	for _, k := range []string{"source", "ref", "snapshot", "snapshot_time", "state", "mounts", "expires", "created"} {
		if _, ok := v.Status[k]; !ok {
			t.Errorf("Get Status lacks %q: %v", k, v.Status)
		}
	}
	if v.Status["source"] != "app-production" || v.Status["state"] != "materialized" {
		t.Errorf("Get Status = %v", v.Status)
	}
	vols, err := p.List()
	if err != nil || len(vols) != 3 {
		t.Fatalf("list = %d volumes, %v; want 3", len(vols), err)
	}

	// Records and data survive a restart of the binary.
	p.Stop()
	p.Start()
	if got := TreeSum(t, prod); got != prodSum {
		t.Fatalf("production changed across a restart")
	}
	if got := ReadFile(t, filepath.Join(ci, "new.txt")); got != "x" {
		t.Fatalf("clone lost its data across a restart")
	}
	if _, err := p.Get("app-production@latest"); err != nil {
		t.Fatalf("get after restart: %v", err)
	}
	if mp, err := p.Path("app-production@latest"); err != nil || mp != ci {
		t.Fatalf("path after restart = %q, %v; want %s", mp, err, ci)
	}

	// Remove deletes the clone's storage.
	before := len(clones(p))
	if before != 2 {
		t.Fatalf("backend holds %d clones, want 2", before)
	}
	// A volume, plain or clone, is never removed from under a mount that
	// another running process holds (here, the test process mounted the
	// source; another client asks to remove it).
	if got := p.OtherProcess(t, "remove", "app-production"); !strings.Contains(got, "mounted") || !strings.Contains(got, "still running") {
		t.Fatalf("remove of the mounted source by another process: %q, want a refusal", got)
	}
	if err := p.Unmount("app-production@latest", "ci-1"); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove("app-production@latest"); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if _, err := os.Stat(filepath.Join(ci, "new.txt")); err == nil {
		t.Fatalf("clone data still visible at %s after remove", ci)
	}
	if got := len(clones(p)); got != 1 {
		t.Fatalf("after remove the backend holds %d clones, want 1", got)
	}
	// Docker removes a volume only when no container refers to it; a clone
	// still counted as mounted then by the remover itself (its container
	// exited while dockerd was down, and Docker never sent the Unmount)
	// goes, mount and all.
	if err := p.Remove("snap:app-production@latest+t2"); err != nil {
		t.Fatalf("remove of a clone with a mount Docker never unmounted: %v", err)
	}
	if isMountPoint(tagged) {
		t.Fatalf("%s still mounted after its volume was removed", tagged)
	}
	if got := len(clones(p)); got != 0 {
		t.Fatalf("after removing every clone the backend holds %d clones", got)
	}
	if got := TreeSum(t, prod); got != prodSum {
		t.Fatalf("production changed")
	}

	// Bad names are refused with a clear error and leave nothing behind.
	BadNames(t, p)
	if got := len(clones(p)); got != 0 {
		t.Fatalf("bad names left %d clones", got)
	}
	vols, _ = p.List()
	if len(vols) != 1 {
		t.Fatalf("bad names left records: %d volumes listed, want only app-production", len(vols))
	}
}

// BadNames sends the acceptance list of bad names and checks each error.
func BadNames(t *testing.T, p *Plugin) {
	long := strings.Repeat("a", 64)
	cases := []struct{ name, want string }{
		{"../../etc@latest", "source"},
		{"a/b@latest", "'/'"},
		{"@latest", "source is empty"},
		{"app-production@", "ref"},
		{"x@latest:y", "':'"},
		{long + "@latest", "64 characters"},
		{"app-production@latest+" + long, "tag"},
		{"no-such-source@latest", `"no-such-source"`},
		{"app-production@no-such-snap", `"no-such-snap"`},
	}
	for _, c := range cases {
		err := p.Create(c.name, nil)
		if err == nil {
			t.Errorf("create %q succeeded; want an error", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.name) {
			t.Errorf("create %q: error %q should name the volume and mention %s", c.name, err, c.want)
		}
		if _, err := p.Mount(c.name, "bad"); err == nil {
			t.Errorf("mount %q succeeded; want an error", c.name)
		}
	}
}
