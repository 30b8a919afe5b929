package test

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snapvol/snapvol/driver"
)

// TestCrashAtEveryStep kills the plugin (SIGKILL, via SNAPVOL_FAILPOINT) at
// every step between an intent and its completion, restarts it, and checks
// that nothing is half made, nothing leaked and production is unchanged.
func TestCrashAtEveryStep(t *testing.T) {
	type step struct {
		failpoint string
		// setup runs before the crash-armed restart; op is what crashes.
		setup func(t *testing.T, p *Plugin)
		op    func(p *Plugin) error
		// after checks the state the restart must have reached.
		after func(t *testing.T, p *Plugin)
	}
	mounted := func(name, id string) func(t *testing.T, p *Plugin) {
		return func(t *testing.T, p *Plugin) { p.MustMount(name, id) }
	}
	gone := func(name string) func(t *testing.T, p *Plugin) {
		return func(t *testing.T, p *Plugin) {
			if vols, _ := p.List(); hasVolume(vols, name) {
				t.Errorf("%q still listed after its interrupted remove was finished", name)
			}
		}
	}
	freshMount := func(name string) func(t *testing.T, p *Plugin) {
		return func(t *testing.T, p *Plugin) {
			mp := p.MustMount(name, "after")
			if got := ReadFile(t, mp+"/guestbook/0001.txt"); got != Guestbook["guestbook/0001.txt"] {
				t.Errorf("clone made after the crash has wrong data: %q", got)
			}
			if err := p.Unmount(name, "after"); err != nil {
				t.Error(err)
			}
		}
	}
	// Every failpoint the driver has, and for some more than one request
	// that reaches it; a failpoint without a step here fails the test.
	steps := []step{
		{"create:intent", nil, func(p *Plugin) error { return p.Create("scratch", nil) }, nil},
		{"create:made", nil, func(p *Plugin) error { return p.Create("scratch", nil) }, nil},
		{"materialize:snapshot", nil, mountOp("app-production@now", "m"), freshMount("app-production@now")},
		{"materialize:clone", nil, mountOp("app-production@latest+x", "m"), freshMount("app-production@latest+x")},
		{"materialize:clone", nil, mountOp("app-production@latest", "m"), freshMount("app-production@latest")},
		{"materialize:mount", nil, mountOp("app-production@latest+each", "m"), freshMount("app-production@latest+each")},
		{"release:intent", mounted("app-production@latest+each", "e1"), unmountOp("app-production@latest+each", "e1"), nil},
		{"destroy:unmounted", mounted("app-production@latest+each", "e1"), unmountOp("app-production@latest+each", "e1"), nil},
		{"release:destroyed", mounted("app-production@latest+each", "e1"), unmountOp("app-production@latest+each", "e1"), nil},
		{"remove:intent", createMountUnmount("app-production@latest+r"), removeOp("app-production@latest+r"), gone("app-production@latest+r")},
		{"destroy:unmounted", createMountUnmount("app-production@latest+r"), removeOp("app-production@latest+r"), gone("app-production@latest+r")},
		{"remove:destroyed", createMountUnmount("app-production@latest+r"), removeOp("app-production@latest+r"), gone("app-production@latest+r")},
	}
	covered := map[string]bool{}
	for _, s := range steps {
		covered[s.failpoint] = true
	}
	for _, f := range driver.Failpoints {
		if !covered[f] {
			t.Errorf("failpoint %s has no crash step", f)
		}
	}
	p := StartPlugin(t, nil)
	sources := SeedProduction(t, p)
	for _, s := range steps {
		t.Run(strings.ReplaceAll(s.failpoint, ":", "_"), func(t *testing.T) {
			if !slices.Contains(driver.Failpoints, s.failpoint) {
				t.Fatalf("%s is not a driver failpoint", s.failpoint)
			}
			if s.setup != nil {
				s.setup(t, p)
			}
			p.Env["SNAPVOL_FAILPOINT"] = s.failpoint
			p.Stop()
			p.Start()
			err := s.op(p)
			if err == nil || !strings.Contains(err.Error(), "transport") {
				t.Fatalf("the plugin did not crash at %s: op returned %v", s.failpoint, err)
			}
			p.Kill()
			delete(p.Env, "SNAPVOL_FAILPOINT")
			p.Start()
			CheckLocalInvariants(t, p, sources)
			if s.after != nil {
				s.after(t, p)
			}
			CheckLocalInvariants(t, p, sources)
		})
	}
}

// SeedProduction creates app-production holding the guestbook and returns
// the checksums of the sources.
func SeedProduction(t testing.TB, p *Plugin) map[string]string {
	t.Helper()
	if err := p.Create("app-production", nil); err != nil {
		t.Fatal(err)
	}
	mp := p.MustMount("app-production", "seed")
	WriteTree(t, mp, Guestbook)
	if err := p.Unmount("app-production", "seed"); err != nil {
		t.Fatal(err)
	}
	return map[string]string{"app-production": TreeSum(t, p.Pool()+"/volumes/app-production")}
}

func mountOp(name, id string) func(p *Plugin) error {
	return func(p *Plugin) error { _, err := p.Mount(name, id); return err }
}

func unmountOp(name, id string) func(p *Plugin) error {
	return func(p *Plugin) error { return p.Unmount(name, id) }
}

func removeOp(name string) func(p *Plugin) error {
	return func(p *Plugin) error { return p.Remove(name) }
}

func createMountUnmount(name string) func(t *testing.T, p *Plugin) {
	return func(t *testing.T, p *Plugin) {
		if err := p.Create(name, nil); err != nil {
			t.Fatal(err)
		}
		p.MustMount(name, "c")
		if err := p.Unmount(name, "c"); err != nil {
			t.Fatal(err)
		}
	}
}

// Kills while reconcile at start is working: mounts to restore (as after a
// restart in a new mount namespace), an orphan clone to destroy. The plugin
// is killed again and again a few milliseconds into its start; the start
// that is let finish repairs everything.
func TestCrashDuringStartupReconcile(t *testing.T) {
	p := StartPlugin(t, nil)
	sources := SeedProduction(t, p)
	const n = 20
	for i := 0; i < n; i++ {
		p.MustMount(fmt.Sprintf("app-production@latest+c%d", i), "m")
	}
	// An orphan: a clone made and not recorded.
	p.Env["SNAPVOL_FAILPOINT"] = "materialize:mount"
	p.Stop()
	p.Start()
	if _, err := p.Mount("app-production@latest+orphan", "m"); err == nil {
		t.Fatal("the plugin did not crash at materialize:mount")
	}
	p.Kill()
	delete(p.Env, "SNAPVOL_FAILPOINT")
	if p.DataRoot == "" {
		t.Fatal("empty DATA_ROOT")
	}
	UnmountUnder(p.DataRoot) // every mount lost, counts kept
	r := rand.New(rand.NewSource(time.Now().UnixNano()))
	for i := 0; i < 15; i++ {
		p.Spawn()
		time.Sleep(time.Duration(r.Intn(40000)) * time.Microsecond)
		p.Kill()
	}
	p.Start()
	CheckLocalInvariants(t, p, sources)
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("app-production@latest+c%d", i)
		v, err := p.Get(name)
		if err != nil {
			t.Fatal(err)
		}
		if v.Mountpoint == "" || !isMountPoint(v.Mountpoint) {
			t.Errorf("%s: counted mount not restored (mountpoint %q)", name, v.Mountpoint)
		}
	}
}

// Concurrent clients, each on its own volumes, while the plugin is killed
// at random moments: after every restart nothing is half made, nothing
// leaked, and no acknowledged volume is lost.
func TestCrashUnderConcurrentClients(t *testing.T) {
	p := StartPlugin(t, map[string]string{"LOG_LEVEL": "warn"})
	sources := SeedProduction(t, p)
	const workers, rounds = 4, 12
	type state struct {
		acked    map[string]bool // created and not removed, as acknowledged
		inFlight string          // the name of the request the kill cut
	}
	ws := make([]*state, workers)
	for i := range ws {
		ws[i] = &state{acked: map[string]bool{}}
	}
	r := rand.New(rand.NewSource(time.Now().UnixNano()))
	seq := 0
	for round := 0; round < rounds && !t.Failed(); round++ {
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			seq++
			go func(w, seq int) {
				defer wg.Done()
				s := ws[w]
				s.inFlight = ""
				refs := []string{"latest", "now"}
				for i := 0; ; i++ {
					name := fmt.Sprintf("app-production@%s+w%d-%d-%d", refs[i%2], w, seq, i)
					if w == 0 {
						name = fmt.Sprintf("app-production@latest+each")
					}
					id := fmt.Sprintf("m%d", i)
					s.inFlight = name
					if err := p.Create(name, nil); err != nil {
						return
					}
					s.acked[name] = true
					if _, err := p.Mount(name, id); err != nil {
						return
					}
					if err := p.Unmount(name, id); err != nil {
						return
					}
					if w != 0 {
						if err := p.Remove(name); err != nil {
							return
						}
						delete(s.acked, name)
					}
					s.inFlight = ""
				}
			}(w, seq)
		}
		time.Sleep(time.Duration(20+r.Intn(200)) * time.Millisecond)
		p.Kill()
		wg.Wait()
		p.Start()
		CheckLocalInvariants(t, p, sources)
		vols, err := p.List()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ws {
			for name := range s.acked {
				if !hasVolume(vols, name) && name != s.inFlight {
					t.Errorf("round %d: acknowledged volume %q lost", round, name)
				}
			}
			// The cut request happened or not; the listing says which.
			if s.inFlight != "" {
				if hasVolume(vols, s.inFlight) {
					s.acked[s.inFlight] = true
				} else {
					delete(s.acked, s.inFlight)
				}
			}
		}
	}
}

// fill writes into dir until the storage refuses (ENOSPC, or EDQUOT at a
// clone's limit or the reserve), returning how much it wrote and why it
// stopped.
func fill(t *testing.T, dir string) (int64, error) {
	t.Helper()
	if dir == "" {
		t.Fatal("empty directory to fill")
	}
	f, err := os.Create(filepath.Join(dir, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*7 + 3) // not all zeros: nothing compresses it away
	}
	var n int64
	for {
		w, err := f.Write(buf)
		n += int64(w)
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			return n, err
		}
	}
}

// Crashes with the pool as full as a clone can make it: every repair still
// works, and production can still write.
func TestCrashWithAFullPool(t *testing.T) {
	p := StartPlugin(t, nil)
	sources := SeedProduction(t, p)
	mp := p.MustMount("app-production@latest+filler", "f")
	wrote, _ := fill(t, mp)
	t.Logf("the filler clone took %d MiB before the storage refused", wrote>>20)
	for _, step := range []struct {
		failpoint string
		setup     func()
		op        func() error
	}{
		{"materialize:clone", nil, func() error { _, err := p.Mount("app-production@now+x", "1"); return err }},
		{"remove:destroyed", func() { createMountUnmount("app-production@latest+r")(t, p) }, func() error { return p.Remove("app-production@latest+r") }},
		{"release:destroyed", func() { p.MustMount("app-production@latest+each", "e") }, func() error { return p.Unmount("app-production@latest+each", "e") }},
	} {
		if step.setup != nil {
			step.setup()
		}
		p.Env["SNAPVOL_FAILPOINT"] = step.failpoint
		p.Stop()
		p.Start()
		if err := step.op(); err == nil {
			// A full pool may refuse the request before the failpoint.
			t.Logf("%s: the request finished without crashing", step.failpoint)
		}
		p.Kill()
		delete(p.Env, "SNAPVOL_FAILPOINT")
		p.Start()
		CheckLocalInvariants(t, p, sources)
	}
	prod := p.MustMount("app-production", "w")
	if err := os.WriteFile(filepath.Join(prod, "after-fill.txt"), []byte("production still writes\n"), 0o644); err != nil {
		t.Fatalf("production cannot write while a clone fills the pool: %v", err)
	}
	if err := p.Unmount("app-production", "w"); err != nil {
		t.Fatal(err)
	}
	sources["app-production"] = TreeSum(t, filepath.Join(p.Pool(), "volumes", "app-production"))
	if err := p.Unmount("app-production@latest+filler", "f"); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove("app-production@latest+filler"); err != nil {
		t.Fatal(err)
	}
	CheckLocalInvariants(t, p, sources)
}

// Remove never takes a clone from under a mount another running process
// holds (the previous code deleted it under the running process); once
// that process is gone, its count is stale and the volume goes.
func TestRemoveUnderAnotherProcessMount(t *testing.T) {
	p := StartPlugin(t, nil)
	sources := SeedProduction(t, p)
	const name = "app-production@latest+held"
	stop := p.HoldMount(t, name)
	err := p.Remove(name)
	if err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("Remove under another running process's mount: %v", err)
	}
	v, gerr := p.Get(name)
	if gerr != nil || v.Mountpoint == "" || !isMountPoint(v.Mountpoint) {
		t.Fatalf("the held clone is gone or unmounted: %v %+v", gerr, v)
	}
	stop()
	if err := p.Remove(name); err != nil {
		t.Fatalf("Remove once the holder is gone: %v", err)
	}
	CheckLocalInvariants(t, p, sources)
}
