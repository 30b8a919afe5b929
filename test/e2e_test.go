package test

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/snapvol/snapvol/test/dockerd"
)

// The snapvol managed plugin in a private dockerd, used the way people use
// it: docker run -v and --mount, docker volume, the README's compose files
// with Compose v2 and 1.29, plugin disable/enable and a dockerd restart
// (the Go SDK as GitLab's Docker executor calls it is TestE2EGoSDK's). On
// each engine (Debian's dockerd 20.10 and the current Docker Engine) one
// private dockerd serves the steps in order; each builds on the production
// volume the first one makes.
func TestE2EManagedPlugin(t *testing.T) {
	dockerd.Require(t)
	RequireTool(t, "losetup", "mount")
	dockerd.ForEachEngine(t, func(t *testing.T, eng dockerd.Engine) {
		start := time.Now()
		d := dockerd.Start(t, dockerd.Options{Engine: &eng})
		p := d.InstallPlugin(dockerd.Bundle(t, Binary(t)), "snapvol", "POOL_SIZE=2G", "LOG_LEVEL=debug")
		t.Logf("private dockerd %s up, busybox imported, plugin enabled in %v", eng.Version, time.Since(start).Round(time.Millisecond))
		e := &e2e{t: t, d: d, p: p}

		e.runSteps(t, []e2eStep{
			{"plugin config", e2ePluginConfig},
			{"production volume", e2eProduction},
			{"docker run -v with --volume-driver", e2eRunVolumeDriver},
			{"--mount with snap: name and tag", e2eMountTagged},
			{"docker volume create inspect ls rm", e2eVolumeCommands},
			{"the README's compose files", e2eReadmeCompose},
			{"plugin disable and enable", e2eDisableEnable},
			{"dockerd restart", e2eDockerdRestart},
		})
		// Nothing is left mounted from the pool on the host but what Docker
		// holds for running containers (none by now).
		if mounts := e.hostCloneMounts(); len(mounts) > 0 {
			t.Errorf("clone mounts left on the host after every container stopped:\n%s", strings.Join(mounts, "\n"))
		}
		t.Logf("%s on %s took %v", t.Name(), eng.Version, time.Since(start).Round(time.Millisecond))
	})
}

type e2e struct {
	t       *testing.T
	d       *dockerd.Daemon
	p       *dockerd.Plugin
	prodSum string // production's checksum, taken when it was written
}

const e2eProd = "app-production"

// e2eStep is one step of an end-to-end test.
type e2eStep struct {
	name string
	fn   func(t *testing.T, e *e2e)
}

// runSteps runs steps in order as subtests of t, logging how long each
// took, and stops at the first that fails: the later steps build on it.
func (e *e2e) runSteps(t *testing.T, steps []e2eStep) {
	for _, s := range steps {
		start := time.Now()
		ok := t.Run(s.name, func(t *testing.T) { e.t = t; s.fn(t, e) })
		t.Logf("step %q took %v", s.name, time.Since(start).Round(time.Millisecond))
		if !ok {
			t.Fatalf("step %q failed; the later steps build on it", s.name)
		}
	}
	e.t = t
}

// with is e for a subtest t of a step.
func (e *e2e) with(t *testing.T) *e2e {
	c := *e
	c.t = t
	return &c
}

// run runs a busybox container with --network none and the given docker
// run arguments before the image, and returns its stdout.
func (e *e2e) run(args []string, script string) string {
	e.t.Helper()
	out, err := e.tryRun(args, script)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *e2e) tryRun(args []string, script string) (string, error) {
	a := append([]string{"run", "--rm", "--network", "none"}, args...)
	a = append(a, dockerd.Image, "sh", "-c", script)
	return e.d.Docker(a...)
}

// tree reads every regular file under /data of a container with args.
func (e *e2e) tree(args ...string) map[string]string {
	e.t.Helper()
	a := append([]string{"run", "--rm", "--network", "none"}, args...)
	a = append(a, dockerd.Image, "tar", "-c", "-C", "/data", ".")
	out, err := e.d.Docker(a...)
	if err != nil {
		e.t.Fatal(err)
	}
	files := map[string]string{}
	tr := tar.NewReader(strings.NewReader(out))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			e.t.Fatalf("reading the container's tar: %v", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			e.t.Fatal(err)
		}
		files[strings.TrimPrefix(h.Name, "./")] = string(b)
	}
	return files
}

// pool is the plugin's btrfs pool, seen through its mount namespace.
func (e *e2e) pool() string {
	e.t.Helper()
	pool, err := e.p.Pool()
	if err != nil {
		e.t.Fatal(err)
	}
	return pool
}

// prodTree is production's checksum, read straight from the pool (no
// container, so no Mount call that could change anything).
func (e *e2e) prodTree() string {
	e.t.Helper()
	return TreeSum(e.t, filepath.Join(e.pool(), "volumes", e2eProd))
}

func (e *e2e) checkProduction() {
	e.t.Helper()
	if got := e.prodTree(); got != e.prodSum {
		e.t.Fatalf("production changed: checksum %s, want %s", got, e.prodSum)
	}
}

// clones lists the clone subvolumes in the pool.
func (e *e2e) clones() []string {
	e.t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.pool(), "clones"))
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, ent := range ents {
		out = append(out, ent.Name())
	}
	return out
}

type e2eVolume struct {
	Name       string
	Driver     string
	Mountpoint string
	CreatedAt  string
	Scope      string
	Status     map[string]any
}

func (e *e2e) inspect(name string) e2eVolume {
	e.t.Helper()
	out := e.d.MustDocker("volume", "inspect", name)
	var vols []e2eVolume
	if err := json.Unmarshal([]byte(out), &vols); err != nil || len(vols) != 1 {
		e.t.Fatalf("docker volume inspect %s: %v\n%s", name, err, out)
	}
	return vols[0]
}

// cloneObject is the clone subvolume a materialized clone volume uses.
func (e *e2e) cloneObject(name string) string {
	e.t.Helper()
	v := e.inspect(name)
	objs, _ := v.Status["objects"].([]any)
	for _, o := range objs {
		if s, _ := o.(string); strings.HasPrefix(s, "clones/") {
			return strings.TrimPrefix(s, "clones/")
		}
	}
	e.t.Fatalf("volume %s has no clone in its Status: %v", name, v.Status)
	return ""
}

func (e *e2e) volumeNames() []string {
	e.t.Helper()
	out := e.d.MustDocker("volume", "ls", "--format", "{{.Driver}} {{.Name}}")
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			if f[0] != "snapvol:latest" {
				e.t.Errorf("volume %s has driver %s, want snapvol:latest", f[1], f[0])
			}
			names = append(names, f[1])
		}
	}
	sort.Strings(names)
	return names
}

func (e *e2e) hostCloneMounts() []string {
	data, _ := os.ReadFile("/proc/thread-self/mountinfo")
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "/clones/") && strings.Contains(line, e.d.Dir) {
			out = append(out, line)
		}
	}
	return out
}

func e2eHas(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func e2ePluginConfig(t *testing.T, e *e2e) {
	var plugins []struct {
		Name    string
		Enabled bool
		Config  struct {
			Interface struct {
				Socket string
				Types  []string
			}
			Network         struct{ Type string }
			PropagatedMount string
			Linux           struct {
				Capabilities    []string
				AllowAllDevices bool
			}
		}
		Settings struct {
			Mounts []struct{ Name, Source, Destination string }
			Env    []string
		}
	}
	out := e.d.MustDocker("plugin", "inspect", "snapvol")
	if err := json.Unmarshal([]byte(out), &plugins); err != nil || len(plugins) != 1 {
		t.Fatalf("docker plugin inspect: %v\n%s", err, out)
	}
	pl := plugins[0]
	if pl.Name != "snapvol:latest" || !pl.Enabled {
		t.Errorf("plugin %q enabled=%v, want snapvol:latest enabled", pl.Name, pl.Enabled)
	}
	c := pl.Config
	if c.Interface.Socket != "snapvol.sock" || len(c.Interface.Types) != 1 || c.Interface.Types[0] != "docker.volumedriver/1.0" {
		t.Errorf("interface %+v, want docker.volumedriver/1.0 on snapvol.sock", c.Interface)
	}
	if c.PropagatedMount != "/mnt/snapvol" {
		t.Errorf("propagatedMount %q, want /mnt/snapvol (DATA_ROOT)", c.PropagatedMount)
	}
	if len(c.Linux.Capabilities) != 1 || c.Linux.Capabilities[0] != "CAP_SYS_ADMIN" {
		t.Errorf("capabilities %v, want only CAP_SYS_ADMIN", c.Linux.Capabilities)
	}
	if len(pl.Settings.Mounts) != 1 || pl.Settings.Mounts[0].Source != e.p.StateDir || pl.Settings.Mounts[0].Destination != "/var/lib/snapvol" {
		t.Errorf("mounts %+v, want the state mount from %s", pl.Settings.Mounts, e.p.StateDir)
	}
	env := strings.Join(pl.Settings.Env, " ")
	// Settings left alone are empty, meaning their defaults.
	for _, kv := range []string{"POOL_SIZE=2G", "LOG_LEVEL=debug", "BACKEND=", "CLAIM="} {
		if !strings.Contains(" "+env+" ", " "+kv+" ") {
			t.Errorf("plugin env lacks %s: %s", kv, env)
		}
	}
	// The pool file is in the host state directory, not in the rootfs.
	if _, err := os.Stat(e.p.PoolFile()); err != nil {
		t.Errorf("pool file: %v", err)
	}
	if devs, err := e.p.LoopDevices(); err != nil || len(devs) != 1 {
		t.Errorf("pool file on loop devices %v (%v), want exactly one", devs, err)
	}
}

// e2eProduction makes app-production with the guestbook, written through a
// container the way an application would.
func e2eProduction(t *testing.T, e *e2e) {
	WriteProduction(t, e.d, e2eProd)
	got := e.tree("-v", e2eProd+":/data")
	for n, want := range Guestbook {
		if got[n] != want {
			t.Errorf("production %s = %q, want %q", n, got[n], want)
		}
	}
	e.prodSum = e.prodTree()
	v := e.inspect(e2eProd)
	if v.Driver != "snapvol:latest" || v.Status["kind"] != "volume" {
		t.Errorf("production inspect: driver %s status %v", v.Driver, v.Status)
	}
}

// The seeds' flow in one command: a test suite on production data, that
// finds the row with the malformed byte, writes freely, and leaves
// production alone.
func e2eRunVolumeDriver(t *testing.T, e *e2e) {
	name := e2eProd + "@latest"
	before := e.clones()
	out := e.run([]string{"--volume-driver", "snapvol", "-v", name + ":/data"}, `
		set -e
		bad=$(grep -l "$(printf '\377')" /data/guestbook/*)
		echo "found: $bad"
		cat "$bad"
		echo "fixed by the test" > "$bad"
		rm /data/guestbook/0001.txt
		echo new > /data/guestbook/9999.txt`)
	if !strings.Contains(out, "found: /data/guestbook/0003.txt") || !strings.Contains(out, Guestbook["guestbook/0003.txt"]) {
		t.Fatalf("the test suite did not find the malformed entry byte for byte:\n%q", out)
	}
	e.checkProduction()

	// The clone kept the writes: the same name is the same clone.
	got := e.tree("--volume-driver", "snapvol", "-v", name+":/data")
	if got["guestbook/0003.txt"] != "fixed by the test\n" || got["guestbook/9999.txt"] != "new\n" || got["guestbook/0001.txt"] != "" {
		t.Errorf("second container on %s does not see the first one's writes: %v", name, got)
	}
	after := e.clones()
	if len(after) != len(before)+1 {
		t.Fatalf("clones before %v after %v: want exactly one new clone", before, after)
	}
	clone := e.cloneObject(name)
	if !e2eHas(after, clone) {
		t.Fatalf("inspect names clone %s, not in the pool: %v", clone, after)
	}
	v := e.inspect(name)
	for k, want := range map[string]any{"source": e2eProd, "ref": "latest", "state": "materialized", "mounts": float64(0)} {
		if v.Status[k] != want {
			t.Errorf("inspect %s: Status[%s] = %v, want %v (Status %v)", name, k, v.Status[k], want, v.Status)
		}
	}
	if snap, _ := v.Status["snapshot"].(string); snap == "" {
		t.Errorf("inspect %s: no snapshot in Status %v", name, v.Status)
	}
	if _, err := time.Parse(time.RFC3339, v.CreatedAt); err != nil {
		t.Errorf("CreatedAt %q is not RFC 3339: %v", v.CreatedAt, err)
	}

	// docker volume rm deletes the clone's storage.
	e.d.MustDocker("volume", "rm", name)
	if e2eHas(e.clones(), clone) {
		t.Errorf("docker volume rm %s left clone %s in the pool", name, clone)
	}
	if e2eHas(e.volumeNames(), name) {
		t.Errorf("%s still listed after docker volume rm", name)
	}
	e.checkProduction()
}

// --mount takes the design card's snap: form, which -v cannot (a colon).
// A tag makes a separate clone: it does not see another clone's writes.
func e2eMountTagged(t *testing.T, e *e2e) {
	other := e2eProd + "@latest+dirty"
	e.run([]string{"--volume-driver", "snapvol", "-v", other + ":/data"}, "rm -rf /data/guestbook; echo dirty > /data/dirt")
	name := "snap:" + e2eProd + "@latest+t"
	mount := "type=volume,src=" + name + ",dst=/data,volume-driver=snapvol"
	got := e.tree("--mount", mount)
	if len(got) != len(Guestbook) {
		t.Errorf("%s is not a pristine clone of production: %v", name, got)
	}
	for n, want := range Guestbook {
		if got[n] != want {
			t.Errorf("%s: %s = %q, want %q", name, n, got[n], want)
		}
	}
	// Writes through --mount stay in that clone too.
	e.run([]string{"--mount", mount}, "echo via-mount > /data/guestbook/0002.txt")
	if got := e.tree("--mount", mount); got["guestbook/0002.txt"] != "via-mount\n" {
		t.Errorf("write through --mount not kept: %q", got["guestbook/0002.txt"])
	}
	v := e.inspect(name)
	if v.Status["tag"] != "t" || v.Status["source"] != e2eProd {
		t.Errorf("inspect %s: Status %v, want tag t of %s", name, v.Status, e2eProd)
	}
	e.checkProduction()
	c1, c2 := e.cloneObject(name), e.cloneObject(other)
	e.d.MustDocker("volume", "rm", name, other)
	if cl := e.clones(); e2eHas(cl, c1) || e2eHas(cl, c2) {
		t.Errorf("clones %s and %s should be gone: %v", c1, c2, cl)
	}
}

func e2eVolumeCommands(t *testing.T, e *e2e) {
	// Per-volume options on a plain name (Trident style).
	job := "ci-job-4711"
	e.d.MustDocker("volume", "create", "-d", "snapvol", "-o", "from="+e2eProd, "-o", "ref=latest", "-o", "ttl=2h", job)
	v := e.inspect(job)
	if v.Driver != "snapvol:latest" || v.Scope != "local" || v.Status["state"] != "not materialized" || v.Status["source"] != e2eProd {
		t.Errorf("inspect %s before use: driver %s scope %s Status %v", job, v.Driver, v.Scope, v.Status)
	}
	if got := e.tree("-v", job+":/data"); got["guestbook/0003.txt"] != Guestbook["guestbook/0003.txt"] {
		t.Errorf("%s does not hold production's data: %v", job, got)
	}
	v = e.inspect(job)
	if v.Status["state"] != "materialized" || v.Status["mounts"] != float64(0) {
		t.Errorf("inspect %s after use: Status %v", job, v.Status)
	}
	// The design card's form with docker volume create. snapvol claims
	// grammar names (CLAIM=true): Docker's Get finds the name, so Docker
	// never calls Create, and the clone and its record are made at the
	// first mount; until then docker volume ls does not list it.
	snap := "snap:" + e2eProd + "@now"
	e.d.MustDocker("volume", "create", "-d", "snapvol", snap)
	if v := e.inspect(snap); v.Driver != "snapvol:latest" || v.Status["state"] != "not materialized" {
		t.Errorf("inspect %s before its first mount: driver %s Status %v", snap, v.Driver, v.Status)
	}
	if got := e.tree("--mount", "type=volume,src="+snap+",dst=/data"); got["schema.sql"] != Guestbook["schema.sql"] {
		t.Errorf("%s does not hold production's data: %v", snap, got)
	}
	names := e.volumeNames()
	for _, n := range []string{e2eProd, job, snap} {
		if !e2eHas(names, n) {
			t.Errorf("docker volume ls lacks %s: %v", n, names)
		}
	}
	if out := e.d.MustDocker("volume", "ls", "-q", "--filter", "driver=snapvol:latest"); !strings.Contains(out, job) {
		t.Errorf("docker volume ls --filter driver=snapvol:latest lacks %s:\n%s", job, out)
	}
	// Errors say what is wrong, at create or (for a claimed name) at mount.
	if _, err := e.d.Docker("volume", "create", "-d", "snapvol", "nosuch@latest"); err == nil || !strings.Contains(err.Error(), `"nosuch"`) {
		t.Errorf("docker volume create nosuch@latest: %v, want an error naming the source", err)
	}
	if _, err := e.tryRun([]string{"--volume-driver", "snapvol", "-v", e2eProd + "@no-such-snapshot:/data"}, "true"); err == nil || !strings.Contains(err.Error(), "no-such-snapshot") {
		t.Errorf("docker run on an unknown snapshot: %v, want an error naming it", err)
	}
	if _, err := e.d.Docker("volume", "create", "-d", "snapvol", "-o", "colour=blue", "ci-bad-opt"); err == nil || !strings.Contains(err.Error(), "colour") {
		t.Errorf("unknown option: %v, want an error naming it", err)
	}
	for _, n := range e.volumeNames() {
		if strings.Contains(n, "no-such") || n == "ci-bad-opt" || strings.HasPrefix(n, "nosuch") {
			t.Errorf("a failed create or mount left volume %s", n)
		}
	}
	clone := e.cloneObject(job)
	e.d.MustDocker("volume", "rm", job, snap)
	if e2eHas(e.clones(), clone) {
		t.Errorf("clone %s of %s left after docker volume rm", clone, job)
	}
	names = e.volumeNames()
	if e2eHas(names, job) || e2eHas(names, snap) {
		t.Errorf("removed volumes still listed: %v", names)
	}
	e.checkProduction()
}

func e2eDisableEnable(t *testing.T, e *e2e) {
	keep := "snap:" + e2eProd + "@latest+keep"
	e.d.MustDocker("volume", "create", "-d", "snapvol", keep)
	mount := "type=volume,src=" + keep + ",dst=/data"
	e.run([]string{"--mount", mount}, "echo kept > /data/kept.txt")

	// A container holds the clone while the plugin goes away and comes back.
	e.d.MustDocker("run", "-d", "--name", "holder", "--network", "none", "--mount", mount, dockerd.Image, "sleep", "600")
	defer e.d.Docker("rm", "-f", "holder")
	if v := e.inspect(keep); v.Status["mounts"] != float64(1) {
		t.Errorf("mounts with one running container: %v", v.Status["mounts"])
	}

	// (Whether Docker refuses a plain disable here depends on its
	// reference counts, which names snapvol claimed do not enter: the
	// install script checks the volumes itself, see TestE2EMakeInstall.)
	e.d.MustDocker("plugin", "disable", "-f", "snapvol")
	if out, err := e.d.Docker("exec", "holder", "cat", "/data/kept.txt"); err != nil || out != "kept\n" {
		t.Errorf("running container lost its clone while the plugin was disabled: %q %v", out, err)
	}
	e.d.MustDocker("plugin", "enable", "snapvol")

	if devs, err := e.p.LoopDevices(); err != nil || len(devs) != 1 {
		t.Errorf("after enable the pool file is on loop devices %v (%v), want the same single one", devs, err)
	}
	if out, err := e.d.Docker("exec", "holder", "sh", "-c", "cat /data/kept.txt && echo more >> /data/kept.txt"); err != nil || out != "kept\n" {
		t.Errorf("running container after enable: %q %v", out, err)
	}
	if got := e.tree("--mount", mount); got["kept.txt"] != "kept\nmore\n" {
		t.Errorf("a new container on %s after enable sees %q, want the running one's writes", keep, got["kept.txt"])
	}
	if v := e.inspect(keep); v.Status["mounts"] != float64(1) {
		t.Errorf("mount count after enable: %v, want 1 (the running container)", v.Status["mounts"])
	}
	e.d.MustDocker("rm", "-f", "holder")
	if v := e.inspect(keep); v.Status["mounts"] != float64(0) || v.Status["state"] != "materialized" {
		t.Errorf("after the container stopped: Status %v, want 0 mounts, clone kept", v.Status)
	}

	// And a disable/enable with nothing running, changing a setting on the
	// way. STATE_DIR, DATA_ROOT and SOCKET are fixed in managed mode.
	e.d.MustDocker("plugin", "disable", "-f", "snapvol")
	for _, kv := range []string{"DATA_ROOT=/elsewhere", "STATE_DIR=/tmp", "SOCKET=/x.sock"} {
		if _, err := e.d.Docker("plugin", "set", "snapvol", kv); err == nil || !strings.Contains(err.Error(), "not settable") {
			t.Errorf("docker plugin set snapvol %s: %v, want a refusal (not settable)", kv, err)
		}
	}
	e.d.MustDocker("plugin", "set", "snapvol", "LATEST_MAX_AGE=10m")
	e.d.MustDocker("plugin", "enable", "snapvol")
	if env := e.d.MustDocker("plugin", "inspect", "--format", "{{.Settings.Env}}", "snapvol"); !strings.Contains(env, "LATEST_MAX_AGE=10m") {
		t.Errorf("setting not applied: %s", env)
	}
	if got := e.tree("--mount", mount); got["kept.txt"] != "kept\nmore\n" {
		t.Errorf("%s after a second disable/enable: %q", keep, got["kept.txt"])
	}
	for _, n := range []string{e2eProd, keep} {
		if !e2eHas(e.volumeNames(), n) {
			t.Errorf("%s not listed after disable/enable", n)
		}
	}
	e.checkProduction()
}

func e2eDockerdRestart(t *testing.T, e *e2e) {
	keep := "snap:" + e2eProd + "@latest+keep"
	clone := e.cloneObject(keep)
	start := time.Now()
	e.d.Restart()
	t.Logf("dockerd restarted in %v", time.Since(start).Round(time.Millisecond))
	out := e.d.MustDocker("plugin", "inspect", "--format", "{{.Enabled}}", "snapvol")
	if strings.TrimSpace(out) != "true" {
		t.Fatalf("plugin not enabled after dockerd restart: %s", out)
	}
	names := e.volumeNames()
	for _, n := range []string{e2eProd, keep} {
		if !e2eHas(names, n) {
			t.Errorf("%s not listed after dockerd restart: %v", n, names)
		}
	}
	if got := e.tree("--mount", "type=volume,src="+keep+",dst=/data"); got["kept.txt"] != "kept\nmore\n" {
		t.Errorf("%s after dockerd restart: %q", keep, got["kept.txt"])
	}
	if c := e.cloneObject(keep); c != clone {
		t.Errorf("clone of %s changed across the restart: %s, was %s", keep, c, clone)
	}
	if devs, err := e.p.LoopDevices(); err != nil || len(devs) != 1 {
		t.Errorf("pool on loop devices %v (%v) after restart, want one", devs, err)
	}
	e.checkProduction()
	e.d.MustDocker("volume", "rm", keep)
	if e2eHas(e.clones(), clone) {
		t.Errorf("clone %s left after docker volume rm", clone)
	}
}

// make install and make uninstall against the engine DOCKER_HOST names,
// with the state directory from the make command line. The install script
// checks the plugin's volumes itself before it disables the plugin.
func TestE2EMakeInstall(t *testing.T) {
	dockerd.Require(t)
	RequireTool(t, "make", "make")
	dockerd.ForEachEngine(t, func(t *testing.T, eng dockerd.Engine) {
		d := dockerd.Start(t, dockerd.Options{Engine: &eng})
		state := filepath.Join(t.TempDir(), "state from make")
		// make install puts the command in DESTDIR/usr/local/bin, never
		// in the real /usr/local here.
		dest := t.TempDir()
		try := func(args ...string) (string, error) {
			cmd := d.Command("make", append([]string{"-C", RepoRoot(), "DESTDIR=" + dest}, args...)...)
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		make1 := func(args ...string) string {
			t.Helper()
			out, err := try(args...)
			if err != nil {
				t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			return out
		}
		enabled := func() string {
			t.Helper()
			return strings.TrimSpace(d.MustDocker("plugin", "inspect", "--format", "{{.Enabled}}", "snapvol"))
		}
		start := time.Now()
		make1("install", "STATE_DIR="+state, "PLUGIN_SETTINGS=POOL_SIZE=1G LOG_LEVEL=debug")
		t.Logf("make install took %v", time.Since(start).Round(time.Millisecond))
		out := d.MustDocker("plugin", "inspect", "--format", "{{.Name}} {{.Enabled}} {{range .Settings.Mounts}}{{.Source}}{{end}}", "snapvol")
		if want := "snapvol:latest true " + state; strings.TrimSpace(out) != want {
			t.Fatalf("after make install: %q, want %q", strings.TrimSpace(out), want)
		}
		// The command is on PATH and reaches the managed plugin: snapvol
		// version names the running plugin's build.
		bindir := filepath.Join(dest, "usr", "local", "bin")
		vcmd := exec.Command("sh", "-c", "snapvol version") // found on PATH, as an operator types it
		vcmd.Env = append(os.Environ(), "PATH="+bindir+":/usr/bin:/bin", "STATE_DIR="+state)
		if vout, err := vcmd.CombinedOutput(); err != nil || !strings.Contains(string(vout), "Client:") || !strings.Contains(string(vout), "Server:") || !strings.Contains(string(vout), "Backend:  local") {
			t.Fatalf("snapvol version from PATH after make install: %v\n%s", err, vout)
		}
		// With no volumes, a second install replaces the plugin by itself.
		if out := make1("install", "STATE_DIR="+state); !strings.Contains(out, "disabled snapvol (it had no volumes)") {
			t.Errorf("make install over a plugin without volumes:\n%s", out)
		}
		d.MustDocker("volume", "create", "-d", "snapvol", "prod")
		d.MustDocker("run", "--rm", "--network", "none", "-v", "prod:/data", dockerd.Image, "sh", "-c", "echo hello > /data/x")
		if _, err := os.Stat(filepath.Join(state, "pool.img")); err != nil {
			t.Errorf("the pool file is not in STATE_DIR: %v", err)
		}
		// With volumes, the script refuses, naming them, and leaves the
		// plugin enabled; FORCE=1 replaces it.
		out, err := try("install", "STATE_DIR="+state)
		if err == nil || !strings.Contains(out, "snapvol has 1 volume(s) in this engine: prod") || !strings.Contains(out, "FORCE=1") {
			t.Errorf("make install over a plugin with a volume: %v, want a refusal that names the volume and FORCE=1:\n%s", err, out)
		}
		if got := enabled(); got != "true" {
			t.Errorf("after the refused install the plugin is enabled=%s, want true", got)
		}
		out = make1("install", "STATE_DIR="+state, "FORCE=1")
		if !strings.Contains(out, "disabled snapvol with -f: its 1 volume(s) come back") {
			t.Errorf("make install FORCE=1 did not say what it did:\n%s", out)
		}
		out = d.MustDocker("run", "--rm", "--network", "none", "-v", "prod@latest:/data", dockerd.Image, "cat", "/data/x")
		if out != "hello\n" {
			t.Errorf("after reinstall, prod@latest holds %q", out)
		}
		// A name snapvol claimed (no driver named) counts as a volume too.
		out, err = try("uninstall")
		if err == nil || !strings.Contains(out, "snapvol has 2 volume(s)") {
			t.Errorf("make uninstall with volumes prod and prod@latest: %v, want a refusal that counts 2:\n%s", err, out)
		}
		if got := enabled(); got != "true" {
			t.Errorf("after the refused uninstall the plugin is enabled=%s, want true", got)
		}
		if _, err := os.Stat(filepath.Join(bindir, "snapvol")); err != nil {
			t.Errorf("the refused make uninstall removed the command: %v", err)
		}
		d.MustDocker("volume", "rm", "prod@latest", "prod")
		make1("uninstall")
		if _, err := os.Stat(filepath.Join(bindir, "snapvol")); !os.IsNotExist(err) {
			t.Errorf("make uninstall left %s/snapvol: %v", bindir, err)
		}
		if out, err := d.Docker("plugin", "ls", "--format", "{{.Name}}"); err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("plugins after make uninstall: %q %v", out, err)
		}
		if out := make1("uninstall"); !strings.Contains(out, "not installed") {
			t.Errorf("second make uninstall: %s", out)
		}
	})
}

// make demo's script, start to end, against a private engine it starts
// (each engine's dockerd in turn).
func TestE2EDemo(t *testing.T) {
	dockerd.Require(t)
	dockerd.ForEachEngine(t, func(t *testing.T, eng dockerd.Engine) {
		bundle := dockerd.Bundle(t, Binary(t))
		out := runDemo(t, os.Environ(), "DEMO_PRIVATE_ENGINE=1", "DEMO_DOCKERD="+eng.Dockerd, "DEMO_BUNDLE="+bundle)
		if !strings.Contains(out, "Docker "+eng.Version+" is up") {
			t.Errorf("the demo did not run dockerd %s:\n%s", eng.Version, out)
		}
	})
}

// runDemo runs demo/demo.sh with env plus settings, with a private engine
// (no engine is reachable at DOCKER_HOST), and checks what it shows.
func runDemo(t *testing.T, env []string, settings ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(RepoRoot(), "demo", "demo.sh"))
	cmd.Env = append(append(env, "DEMO_DIR="+t.TempDir(), "DOCKER_HOST=unix:///nonexistent"), settings...)
	start := time.Now()
	b, err := cmd.CombinedOutput()
	out := string(b)
	t.Logf("demo took %v", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out)
	}
	for _, want := range []string{"found", "0003.txt", "production is unchanged", "removed"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if testing.Verbose() {
		t.Logf("demo output:\n%s", out)
	}
	return out
}

// make demo on a machine with a docker client but no engine and no dockerd
// installs Debian's docker.io and goes on with a private engine. apt-get
// is a stand-in here that "installs" docker.io by making the host's dockerd
// visible in PATH, which otherwise lacks it.
func TestE2EDemoInstallsDocker(t *testing.T) {
	dockerd.Require(t)
	eng := dockerd.Debian(t)
	stub, sbin := t.TempDir(), t.TempDir()
	sbinDir := filepath.Dir(eng.Dockerd)
	ents, err := os.ReadDir(sbinDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != "dockerd" {
			if err := os.Symlink(filepath.Join(sbinDir, e.Name()), filepath.Join(sbin, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	aptLog := filepath.Join(stub, "apt-get.log")
	aptGet := `#!/bin/sh
echo "$*" >> ` + aptLog + `
case " $* " in
*" install "*" docker.io "*|*" install "*" docker.io") ln -sf ` + eng.Dockerd + ` ` + stub + `/dockerd ;;
esac
`
	if err := os.WriteFile(filepath.Join(stub, "apt-get"), []byte(aptGet), 0o755); err != nil {
		t.Fatal(err)
	}
	path := []string{stub, sbin}
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if real, err := filepath.EvalSymlinks(dir); dir != "" && (err != nil || real != sbinDir) {
			path = append(path, dir)
		}
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	env = append(env, "PATH="+strings.Join(path, string(os.PathListSeparator)))
	if out, err := exec.Command("sh", "-c", "PATH="+strings.Join(path, ":")+" command -v dockerd").CombinedOutput(); err == nil {
		t.Fatalf("dockerd is still in the test's PATH: %s", out)
	}
	out := runDemo(t, env, "DEMO_BUNDLE="+dockerd.Bundle(t, Binary(t)))
	if !strings.Contains(out, "no dockerd installed: installing Debian's docker.io") || !strings.Contains(out, "installing Debian packages: docker.io") {
		t.Errorf("the demo did not say it installs docker.io:\n%s", out)
	}
	if log := ReadFile(t, aptLog); !strings.Contains(log, "install") || !strings.Contains(log, "docker.io") {
		t.Errorf("apt-get was run with %q, want an install of docker.io", log)
	}
}
