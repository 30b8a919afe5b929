package test

import (
	"slices"
	"strings"
	"testing"

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
