package test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/snapvol/snapvol/test/dockerd"
)

// upgradeRig is a private dockerd, a registry and docs/operating.md's upgrade
// commands with the test's registry, state directory and versions in.
type upgradeRig struct {
	t        *testing.T
	d        *dockerd.Daemon
	registry string
	state    string
}

// sh runs a documentation line with the rig's values in, from the repository
// root (make), against the private engine.
func (u *upgradeRig) sh(line string, subst ...string) (string, error) {
	u.t.Helper()
	r := strings.NewReplacer(append([]string{"127.0.0.1:5000", u.registry, "/srv/snapvol", u.state}, subst...)...)
	line = r.Replace(line)
	u.t.Logf("$ %s", line)
	cmd := u.d.Command("bash", "-c", "set -o pipefail; "+line)
	cmd.Dir = RepoRoot()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v\n%s", line, err, out)
	}
	return string(out), nil
}

func (u *upgradeRig) mustSh(line string, subst ...string) string {
	u.t.Helper()
	out, err := u.sh(line, subst...)
	if err != nil {
		u.t.Fatal(err)
	}
	return out
}

func (u *upgradeRig) docker(args ...string) string {
	u.t.Helper()
	return u.d.MustDocker(args...)
}

func (u *upgradeRig) run(args ...string) string {
	u.t.Helper()
	a := append([]string{"run", "--rm", "--network", "none"}, args...)
	return strings.TrimSpace(u.docker(a...))
}

// fixture: a production volume with data, a clone with data that a
// running container holds (mounted once), and one with data that no
// container holds.
func (u *upgradeRig) fixture() {
	u.t.Helper()
	img := dockerd.Image
	u.docker("volume", "create", "-d", "snapvol", "app-production")
	u.run("-v", "app-production:/data", img, "sh", "-c", "echo prod > /data/p")
	u.run("--volume-driver", "snapvol", "-v", "app-production@latest+idle:/data", img, "sh", "-c", "cat /data/p > /dev/null && echo idle > /data/i")
	u.docker("run", "-d", "--network", "none", "--name", "holder", "--volume-driver", "snapvol", "-v", "app-production@latest+up:/data", img,
		"sh", "-c", "echo cloned > /data/c; sleep 3600")
	deadline := time.Now().Add(30 * time.Second)
	for strings.TrimSpace(u.docker("exec", "holder", "cat", "/data/c")) != "cloned" {
		if time.Now().After(deadline) {
			u.t.Fatal("the holder container did not write its clone")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type volState struct {
	names  []string
	mounts map[string]float64
}

func (u *upgradeRig) volumes() volState {
	u.t.Helper()
	s := volState{mounts: map[string]float64{}}
	for _, n := range strings.Fields(u.docker("volume", "ls", "-q", "--filter", "driver=snapvol:latest")) {
		s.names = append(s.names, n)
		var vols []struct{ Status map[string]any }
		if err := json.Unmarshal([]byte(u.docker("volume", "inspect", n)), &vols); err != nil || len(vols) != 1 {
			u.t.Fatalf("docker volume inspect %s: %v", n, err)
		}
		m, _ := vols[0].Status["mounts"].(float64)
		s.mounts[n] = m
	}
	sort.Strings(s.names)
	return s
}

// check: every volume, record, clone, byte and mount count is as the
// fixture left it, and the clone the container holds is still live.
func (u *upgradeRig) check(want volState, what string) {
	u.t.Helper()
	img := dockerd.Image
	got := u.volumes()
	if strings.Join(got.names, " ") != strings.Join(want.names, " ") {
		u.t.Fatalf("%s: volumes %v, want %v", what, got.names, want.names)
	}
	for n, m := range want.mounts {
		if got.mounts[n] != m {
			u.t.Errorf("%s: volume %s counts %v mounts, want %v", what, n, got.mounts[n], m)
		}
	}
	if got := u.docker("exec", "holder", "cat", "/data/c"); strings.TrimSpace(got) != "cloned" {
		u.t.Errorf("%s: the running container reads %q from its clone", what, got)
	}
	u.docker("exec", "holder", "sh", "-c", "echo still-writable >> /data/x")
	if got := u.run("-v", "app-production:/data", img, "cat", "/data/p"); got != "prod" {
		u.t.Errorf("%s: production holds %q", what, got)
	}
	if got := u.run("--volume-driver", "snapvol", "-v", "app-production@latest+idle:/data", img, "cat", "/data/i"); got != "idle" {
		u.t.Errorf("%s: the idle clone holds %q", what, got)
	}
}

// pluginLogSince is dockerd's log from byte offset from on.
func (u *upgradeRig) logSince(from int) string {
	l := u.d.Log()
	if from > len(l) {
		return ""
	}
	return l[from:]
}

// enableRefused enables the plugin and waits until dockerd's log since
// from holds every want (the plugin's refusal).
func (u *upgradeRig) enableRefused(from int, want ...string) {
	u.t.Helper()
	out, err := u.d.Docker("plugin", "enable", "snapvol")
	u.t.Logf("docker plugin enable snapvol: %v %s", err, out)
	deadline := time.Now().Add(60 * time.Second)
	for {
		log := u.logSince(from)
		missing := ""
		for _, w := range want {
			if !strings.Contains(log, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			u.t.Fatalf("the plugin's refusal does not say %q; dockerd's log since the upgrade:\n%s", missing, lastLines(log, 40))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := u.d.Docker("volume", "ls"); err != nil {
		u.t.Logf("docker volume ls: %v", err)
	}
	// Docker keeps restarting the refused plugin; disable it to set it.
	out, err = u.d.Docker("plugin", "disable", "-f", "snapvol")
	u.t.Logf("docker plugin disable -f snapvol: %v %s (Docker: enabled=%s)", err, out, u.enabled())
}

// enabled is what Docker says of the plugin.
func (u *upgradeRig) enabled() string {
	out, err := u.d.Docker("plugin", "inspect", "--format", "{{.Enabled}}", "snapvol")
	if err != nil {
		return err.Error()
	}
	return strings.TrimSpace(out)
}

// enableAfterRefusal runs the documented enable after a refused start and
// waits until the plugin serves.
func (u *upgradeRig) enableAfterRefusal(from int, line string, subst ...string) {
	u.t.Helper()
	out, err := u.sh(line, subst...)
	u.t.Logf("enable after the refusal: %v %s (Docker: enabled=%s)", err, out, u.enabled())
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(u.logSince(from), "snapvol ready") {
		if time.Now().After(deadline) {
			u.t.Fatalf("the plugin did not start after its settings were set again; dockerd's log:\n%s", lastLines(u.logSince(from), 30))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// hostState lists /var/lib/snapvol, the default state.source, which a
// plugin upgraded without its settings is given.
func hostState(t *testing.T) (list string, cleanup func()) {
	t.Helper()
	const dir = "/var/lib/snapvol"
	made := false
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		made = true
	}
	ls := func() string {
		out, _ := exec.Command("ls", "-la", "--time-style=full-iso", dir).CombinedOutput()
		return string(out)
	}
	return ls(), func() {
		if made {
			_ = os.Remove(dir) // only if still empty
		}
	}
}

// docs/operating.md, Upgrade and rollback, on each engine: install from a registry,
// upgrade to a newer build, and back; volumes, clones, data and mount
// counts stay. An upgrade without the settings set again refuses to
// start, naming them, and writes nothing to the default state.
func TestUpgradeFromRegistry(t *testing.T) {
	dockerd.Require(t)
	RequireTool(t, "make", "make")
	registry := StartRegistry(t)
	lines := docBlock(t, "managed", "upgrade").Commands()
	if len(lines) != 8 || lines[0] != "mkdir -p /srv/snapvol" {
		t.Fatalf("docs/operating.md's upgrade block has %d commands, this test knows 8, mkdir -p /srv/snapvol first:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	dockerd.ForEachEngine(t, func(t *testing.T, eng dockerd.Engine) {
		d := dockerd.Start(t, dockerd.Options{Engine: &eng})
		u := &upgradeRig{t: t, d: d, registry: registry, state: filepath.Join(d.Dir, "state-upgrade")}
		// Each engine pushes its own tags: the second engine must not pull
		// what the first pushed.
		v1, v2 := "v1-"+eng.Key, "v2-"+eng.Key
		tags := []string{"VERSION=v1", "VERSION=" + v1, "snapvol:v1", "snapvol:" + v1, "VERSION=v2", "VERSION=" + v2, "snapvol:v2", "snapvol:" + v2}
		u.mustSh(lines[0], tags...) // mkdir -p the state directory
		u.mustSh(lines[1], tags...) // make push v1
		u.mustSh(lines[2], tags...) // docker plugin install v1
		u.fixture()
		want := u.volumes()
		t.Logf("before the upgrade: %v, mounts %v", want.names, want.mounts)

		mark := len(d.Log())
		for _, l := range lines[3:] { // push v2, disable, upgrade, set, enable
			u.mustSh(l, tags...)
		}
		u.check(want, "after the upgrade to "+v2)
		if log := u.logSince(mark); !strings.Contains(log, "snapvol ready") || !strings.Contains(log, "version="+v2) {
			t.Errorf("no ready line naming %s in dockerd's log:\n%s", v2, lastLines(log, 30))
		}

		// An upgrade (here the rollback to v1) without setting the
		// settings again: refused, naming them; nothing written to the
		// default state.
		before, cleanup := hostState(t)
		defer cleanup()
		mark = len(d.Log())
		u.mustSh(lines[4], tags...)                                                 // disable
		u.mustSh(strings.Replace(lines[5], "snapvol:v2", "snapvol:v1", 1), tags...) // upgrade back to v1
		u.enableRefused(mark, "refusing to start", "state.source="+u.state, "POOL_SIZE=2G", "docker plugin set snapvol")
		if after, _ := hostState(t); after != before {
			t.Errorf("the refused plugin changed the default state directory:\nbefore\n%s\nafter\n%s", before, after)
		}
		// Set again, as the refusal says: the rollback works.
		mark = len(d.Log())
		u.mustSh(lines[6], tags...)
		u.enableAfterRefusal(mark, lines[7], tags...)
		u.check(want, "after the rollback to "+v1)
		u.docker("rm", "-f", "holder")
	})
}

// PreArchitectureCommit is this repository's main before the architecture
// change (schema 1, the snapshot/ backends): the state an installed
// snapvol of that time wrote is what an upgrade must carry forward.
const PreArchitectureCommit = "b1149bd"

// oldBundle builds the managed plugin bundle of commit from git (git
// archive, then that tree's own make plugin), once into the test cache.
func oldBundle(t *testing.T, commit string) string {
	t.Helper()
	full, err := exec.Command("git", "-C", RepoRoot(), "rev-parse", commit+"^{commit}").Output()
	if err != nil {
		t.Fatalf("commit %s is not in this repository's history: %v", commit, err)
	}
	id := strings.TrimSpace(string(full))
	cache := filepath.Join(dockerd.CacheDir(), "snapvol-"+id[:12], "plugin")
	if _, err := os.Stat(filepath.Join(cache, "rootfs", "snapvol")); err == nil {
		return cache
	}
	src := t.TempDir()
	start := time.Now()
	archive := exec.Command("bash", "-c", fmt.Sprintf("git -C %q archive %s | tar -x -C %q", RepoRoot(), id, src))
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v\n%s", commit, err, out)
	}
	build := exec.Command("make", "-C", src, "plugin")
	build.Env = append(os.Environ(), "SNAPVOL_ROOT_TESTS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make plugin at %s: %v\n%s", commit, err, out)
	}
	if err := os.MkdirAll(filepath.Dir(cache), 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.RemoveAll(cache)
	if out, err := exec.Command("cp", "-a", filepath.Join(src, "build", "plugin"), cache).CombinedOutput(); err != nil {
		t.Fatalf("caching the bundle: %v\n%s", err, out)
	}
	t.Logf("built the plugin of %s in %v", commit, time.Since(start).Round(time.Second))
	return cache
}

// The state main wrote before the architecture change, upgraded to this
// build: the schema 1 records are migrated to schema 2 and every volume,
// clone, byte and mount count is there. Rolled back, the old build refuses
// the newer schema naming both versions; upgraded again, nothing is lost.
func TestUpgradeFromPreArchitectureMain(t *testing.T) {
	dockerd.Require(t)
	RequireTool(t, "make", "make")
	old, err := exec.Command("git", "-C", RepoRoot(), "show", PreArchitectureCommit+":driver/store/store.go").Output()
	if err != nil || !strings.Contains(string(old), "const SchemaVersion = 1") {
		t.Fatalf("%s's store is not schema 1: %v", PreArchitectureCommit, err)
	}
	bundle := oldBundle(t, PreArchitectureCommit)
	registry := StartRegistry(t)
	dockerd.ForEachEngine(t, func(t *testing.T, eng dockerd.Engine) {
		d := dockerd.Start(t, dockerd.Options{Engine: &eng})
		u := &upgradeRig{t: t, d: d, registry: registry, state: filepath.Join(d.Dir, "state-old")}
		if err := os.MkdirAll(u.state, 0o700); err != nil {
			t.Fatal(err)
		}
		oldRef := registry + "/snapvol:" + PreArchitectureCommit + "-" + eng.Key
		newVersion := "new-" + eng.Key
		newRef := registry + "/snapvol:" + newVersion
		u.docker("plugin", "create", oldRef, bundle)
		u.docker("plugin", "push", oldRef)
		u.docker("plugin", "rm", oldRef)
		u.docker("plugin", "install", "--alias", "snapvol", "--grant-all-permissions", oldRef, "state.source="+u.state, "POOL_SIZE=2G")
		u.fixture()
		want := u.volumes()
		t.Logf("on %s: %v, mounts %v", PreArchitectureCommit, want.names, want.mounts)

		upgrade := func(ref string) {
			if u.enabled() == "true" { // a refused plugin is disabled already
				u.mustSh("docker plugin disable -f snapvol")
			}
			u.mustSh("docker plugin upgrade --grant-all-permissions --skip-remote-check snapvol " + ref)
			u.mustSh("docker plugin set snapvol state.source=/srv/snapvol POOL_SIZE=2G")
		}
		u.mustSh("make push REGISTRY=127.0.0.1:5000 VERSION=" + newVersion)
		upgrade(newRef)
		mark := len(d.Log())
		u.mustSh("docker plugin enable snapvol")
		u.check(want, "after the upgrade from "+PreArchitectureCommit)
		if log := u.logSince(mark); !strings.Contains(log, "version="+newVersion) {
			t.Errorf("the new build did not start; dockerd's log:\n%s", lastLines(log, 30))
		}

		// Rollback: the old build refuses the migrated state, naming both
		// schema versions.
		upgrade(oldRef)
		mark = len(d.Log())
		u.enableRefused(mark, "has version 2", "reads version 1")
		// Forward again: nothing was lost.
		upgrade(newRef)
		mark = len(d.Log())
		u.enableAfterRefusal(mark, "docker plugin enable snapvol")
		u.check(want, "after rolling back to "+PreArchitectureCommit+" and upgrading again")
		u.docker("rm", "-f", "holder")
	})
}
