package test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/test/dockerd"
)

// The CI lifecycle (issue 5) and restarts under Docker (issue 6), end to
// end, on each engine: one private dockerd started with --live-restore,
// the managed plugin installed, and the way CI uses it. No step names a
// volume driver unless it says so: snapvol claims the names. The steps
// build on each other and run in this order; the plugin settings change
// on the way (SOURCES, then IDLE_TTL), so the step that shortens IDLE_TTL
// comes last. Every step checks that production is unchanged and that
// what it made is gone.
func TestE2ECILifecycle(t *testing.T) {
	dockerd.Require(t)
	RequireTool(t, "losetup", "mount")
	dockerd.ForEachEngine(t, func(t *testing.T, eng dockerd.Engine) {
		start := time.Now()
		d := dockerd.Start(t, dockerd.Options{LiveRestore: true, Engine: &eng})
		p := d.InstallPlugin(dockerd.Bundle(t, Binary(t)), "snapvol", "POOL_SIZE=2G", "LOG_LEVEL=debug")
		t.Logf("private dockerd %s (--live-restore) up, busybox imported, plugin enabled in %v", eng.Version, time.Since(start).Round(time.Millisecond))
		e := &e2e{t: t, d: d, p: p}

		e.runSteps(t, []e2eStep{
			{"production volume", e2eProduction},
			{"docker run -v with no volume driver", ciClaimedRun},
			{"+each: concurrent containers get separate clones", ciEachConcurrent},
			{"SOURCES refuses other sources", ciSourcesAllowlist},
			{"dockerd restart with --live-restore", ciLiveRestore},
			{"container exits while dockerd is down", ciExitWhileDown},
			{"IDLE_TTL reaps idle clones", ciIdleReaping},
		})
		e.checkProduction()
		if mounts := e.hostCloneMounts(); len(mounts) > 0 {
			t.Errorf("clone mounts left on the host after every container stopped:\n%s", strings.Join(mounts, "\n"))
		}
		if mounts := e.pluginDataMounts(); len(mounts) > 0 {
			t.Errorf("mounts left under DATA_ROOT in the plugin after every container stopped:\n%s", strings.Join(mounts, "\n"))
		}
		if devs, err := p.LoopDevices(); err != nil || len(devs) != 1 {
			t.Errorf("pool file on loop devices %v (%v), want exactly one", devs, err)
		}
		// The plugin logged no warning or error but the refusals asked for.
		for _, line := range strings.Split(d.Log(), "\n") {
			if !strings.Contains(line, " plugin=") || !(strings.Contains(line, "level=warning") || strings.Contains(line, "level=error")) {
				continue
			}
			if strings.Contains(line, "create failed") && strings.Contains(line, "source not allowed") ||
				strings.Contains(line, "Unmounts Docker never sent") && (strings.Contains(line, "@latest+gone") || strings.Contains(line, "@now+each")) {
				continue
			}
			t.Errorf("plugin log: %s", line)
		}
		t.Logf("TestE2ECILifecycle on %s took %v", eng.Version, time.Since(start).Round(time.Millisecond))
	})
}

// pluginDataMounts lists what is mounted below DATA_ROOT in the plugin.
func (e *e2e) pluginDataMounts() []string { return PluginDataMounts(e.t, e.p) }

// reconfigure changes plugin settings the way an operator does: Docker
// takes `docker plugin set` only on a disabled plugin, and refuses a plain
// disable while the driver has volumes.
func (e *e2e) reconfigure(settings ...string) {
	e.t.Helper()
	e.d.MustDocker("plugin", "disable", "-f", "snapvol")
	e.d.MustDocker(append([]string{"plugin", "set", "snapvol"}, settings...)...)
	e.d.MustDocker("plugin", "enable", "snapvol")
	env := e.d.MustDocker("plugin", "inspect", "--format", "{{json .Settings.Env}}", "snapvol")
	for _, kv := range settings {
		if !strings.Contains(env, `"`+kv+`"`) {
			e.t.Fatalf("setting %s not applied: %s", kv, env)
		}
	}
}

// newClones is what is in the pool's clones/ now and was not in before.
func (e *e2e) newClones(before []string) []string {
	e.t.Helper()
	var out []string
	for _, c := range e.clones() {
		if !e2eHas(before, c) {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out
}

// checkPristine fails unless files are exactly production's guestbook.
func (e *e2e) checkPristine(what string, files map[string]string) {
	e.t.Helper()
	if len(files) != len(Guestbook) {
		e.t.Errorf("%s is not a pristine clone of production: %d files, want %d: %v", what, len(files), len(Guestbook), keys(files))
	}
	for n, want := range Guestbook {
		if files[n] != want {
			e.t.Errorf("%s: %s = %q, want production's %q", what, n, files[n], want)
		}
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// containerState is a running container's process and start time.
func (e *e2e) containerState(name string) string {
	e.t.Helper()
	return strings.TrimSpace(e.d.MustDocker("inspect", "--format", "{{.State.Status}} pid={{.State.Pid}} started={{.State.StartedAt}}", name))
}

// exec runs a shell script in a running container.
func (e *e2e) exec(name, script string) string {
	e.t.Helper()
	out, err := e.d.Docker("exec", name, "sh", "-c", script)
	if err != nil {
		e.t.Fatalf("in container %s: %v", name, err)
	}
	return out
}

// ciClaimedRun: `docker run -v app-production@latest+x:/data` with no
// driver named reads production (Docker asks every plugin's Get; snapvol
// claims the name), and the volume is snapvol's, not a local one.
func ciClaimedRun(t *testing.T, e *e2e) {
	name := e2eProd + "@latest+x"
	before := e.clones()
	out, err := e.d.Docker("run", "--rm", "--network", "none", "-v", name+":/data", dockerd.Image, "cat", "/data/guestbook/0003.txt", "/data/schema.sql")
	if err != nil {
		t.Fatalf("docker run -v %s:/data with no volume driver: %v", name, err)
	}
	if want := Guestbook["guestbook/0003.txt"] + Guestbook["schema.sql"]; out != want {
		t.Fatalf("docker run -v %s read %q, want production's %q", name, out, want)
	}
	v := e.inspect(name)
	if v.Driver != "snapvol:latest" {
		t.Errorf("docker volume inspect %s: driver %q, want snapvol:latest", name, v.Driver)
	}
	for k, want := range map[string]any{"source": e2eProd, "ref": "latest", "tag": "x", "state": "materialized", "mounts": float64(0)} {
		if v.Status[k] != want {
			t.Errorf("inspect %s: Status[%s] = %v, want %v (Status %v)", name, k, v.Status[k], want, v.Status)
		}
	}
	for _, k := range []string{"source", "ref", "snapshot", "snapshot_time", "state", "mounts", "expires"} {
		if _, ok := v.Status[k]; !ok {
			t.Errorf("inspect %s: Status lacks %q: %v", name, k, v.Status)
		}
	}
	if st, _ := v.Status["snapshot_time"].(string); st == "" {
		t.Errorf("inspect %s: no snapshot_time: %v", name, v.Status)
	} else if _, err := time.Parse(time.RFC3339, st); err != nil {
		t.Errorf("inspect %s: snapshot_time %q is not RFC 3339", name, st)
	}
	// volumeNames fails the test on any volume of another driver: Docker
	// did not fall back to its local driver.
	if !e2eHas(e.volumeNames(), name) {
		t.Errorf("docker volume ls lacks %s", name)
	}
	made := e.newClones(before)
	if len(made) != 1 || e.cloneObject(name) != made[0] {
		t.Fatalf("clones made %v, want exactly the one inspect names", made)
	}
	// The claimed clone is writable and keeps writes for the same name.
	e.run([]string{"-v", name + ":/data"}, "echo scratch > /data/scratch.txt")
	if got := e.tree("-v", name+":/data"); got["scratch.txt"] != "scratch\n" {
		t.Errorf("a claimed clone did not keep a write: %v", keys(got))
	}
	e.checkProduction()
	e.d.MustDocker("volume", "rm", name)
	if cl := e.clones(); e2eHas(cl, made[0]) {
		t.Errorf("docker volume rm %s left clone %s", name, made[0])
	}
}

// ciEachConcurrent: two running containers on one +each name each have
// their own clone; a later one starts pristine; stopping them destroys
// their clones; the record stays, with nothing materialized.
func ciEachConcurrent(t *testing.T, e *e2e) {
	name := e2eProd + "@latest+each"
	before := e.clones()
	for _, c := range []string{"each-a", "each-b"} {
		e.d.MustDocker("run", "-d", "--name", c, "--network", "none", "-v", name+":/data", dockerd.Image, "sleep", "600")
		defer e.d.Docker("rm", "-f", c)
	}
	made := e.newClones(before)
	if len(made) != 2 {
		t.Fatalf("two running containers on %s made clones %v, want 2", name, made)
	}
	if v := e.inspect(name); v.Driver != "snapvol:latest" || v.Status["mounts"] != float64(2) || v.Status["clones"] != float64(2) {
		t.Errorf("inspect %s with two containers: driver %s Status %v, want 2 mounts of 2 clones", name, v.Driver, v.Status)
	}
	// Both write the same file, each deletes something else.
	e.exec("each-a", "echo written by a > /data/guestbook/0001.txt && rm /data/schema.sql && echo a > /data/only-a")
	e.exec("each-b", "echo written by b > /data/guestbook/0001.txt && rm /data/guestbook/0002.txt && echo b > /data/only-b")
	if got := e.exec("each-a", "cat /data/guestbook/0001.txt /data/guestbook/0002.txt; ls /data"); got != "written by a\n"+Guestbook["guestbook/0002.txt"]+"guestbook\nonly-a\n" {
		t.Errorf("container a sees %q: not only its own writes", got)
	}
	if got := e.exec("each-b", "cat /data/guestbook/0001.txt /data/schema.sql; ls /data"); got != "written by b\n"+Guestbook["schema.sql"]+"guestbook\nonly-b\nschema.sql\n" {
		t.Errorf("container b sees %q: not only its own writes", got)
	}
	// A later container, while both still run, starts pristine; its clone
	// goes with it (docker run --rm).
	e.checkPristine("a third container on "+name, e.tree("-v", name+":/data"))
	if got := e.newClones(before); len(got) != 2 || got[0] != made[0] || got[1] != made[1] {
		t.Errorf("after the third container exited the clones are %v, want the running two %v", got, made)
	}
	e.checkProduction()

	e.d.MustDocker("rm", "-f", "each-a")
	if got := e.newClones(before); len(got) != 1 {
		t.Errorf("after container a stopped the clones are %v, want only b's", got)
	}
	if got := e.exec("each-b", "cat /data/only-b"); got != "b\n" {
		t.Errorf("container b lost its clone when a stopped: %q", got)
	}
	e.d.MustDocker("rm", "-f", "each-b")
	if got := e.newClones(before); len(got) != 0 {
		t.Errorf("clones %v left after both +each containers stopped", got)
	}
	v := e.inspect(name)
	if v.Status["state"] != "not materialized" || v.Status["mounts"] != float64(0) {
		t.Errorf("inspect %s after its containers stopped: Status %v, want not materialized, 0 mounts", name, v.Status)
	}
	if mounts := e.pluginDataMounts(); len(mounts) > 0 {
		t.Errorf("mounts left in the plugin after the +each containers stopped: %v", mounts)
	}
	e.checkProduction()
	e.d.MustDocker("volume", "rm", name)
}

// ciSourcesAllowlist: with SOURCES=app-*, a volume called secrets stays
// out of reach: docker run prints the refusal, which names the setting,
// and nothing is cloned or snapshotted.
func ciSourcesAllowlist(t *testing.T, e *e2e) {
	e.d.MustDocker("volume", "create", "-d", "snapvol", "secrets")
	e.run([]string{"-v", "secrets:/data"}, "echo hunter2 > /data/key")
	e.reconfigure("SOURCES=app-*")
	before := e.clones()
	secretSnaps := func() []string {
		ents, _ := os.ReadDir(filepath.Join(e.pool(), "snapshots", "secrets"))
		var out []string
		for _, ent := range ents {
			out = append(out, ent.Name())
		}
		return out
	}

	// With the driver named, Docker calls Create, and docker run prints
	// snapvol's refusal.
	for _, args := range [][]string{
		{"--volume-driver", "snapvol", "-v", "secrets@latest:/data"},
		{"--mount", "type=volume,src=snap:secrets@now,dst=/data,volume-driver=snapvol"},
	} {
		out, err := e.tryRun(args, "cat /data/key")
		t.Logf("docker run %s: %v", strings.Join(args, " "), err)
		if err == nil || strings.Contains(out, "hunter2") {
			t.Fatalf("docker run %v on a source outside SOURCES succeeded: %q", args, out)
		}
		for _, want := range []string{"SOURCES", `"secrets"`, "docker plugin set snapvol"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("docker run %v: error %q does not mention %s", args, err, want)
			}
		}
	}
	if _, err := e.d.Docker("volume", "create", "-d", "snapvol", "secrets@latest+x"); err == nil || !strings.Contains(err.Error(), "SOURCES") {
		t.Errorf("docker volume create secrets@latest+x: %v, want a refusal naming SOURCES", err)
	}
	// With no driver named, snapvol does not claim the name, so Docker
	// falls back to its local driver, which rejects the name: the run fails
	// and nothing of secrets is exposed.
	out, err := e.tryRun([]string{"-v", "secrets@latest+x:/data"}, "cat /data/key")
	t.Logf("docker run -v secrets@latest+x:/data (no driver): %v", err)
	if err == nil || strings.Contains(out, "hunter2") {
		t.Fatalf("docker run -v secrets@latest+x with no driver succeeded: %q", out)
	}

	if got := e.newClones(before); len(got) != 0 {
		t.Errorf("refusals made clones %v", got)
	}
	if snaps := secretSnaps(); len(snaps) != 0 {
		t.Errorf("refusals snapshotted secrets: %v", snaps)
	}
	out = e.d.MustDocker("volume", "ls", "--format", "{{.Driver}} {{.Name}}")
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.Contains(line, "secrets@") {
			t.Errorf("a refused name became a volume: %s", line)
		}
	}
	// A source the pattern allows is still claimed with no driver.
	if got := e.run([]string{"-v", e2eProd + "@latest+allowed:/data"}, "cat /data/guestbook/0003.txt"); got != Guestbook["guestbook/0003.txt"] {
		t.Errorf("%s@latest+allowed under SOURCES=app-*: %q", e2eProd, got)
	}
	e.d.MustDocker("volume", "rm", e2eProd+"@latest+allowed")
	if got := e.newClones(before); len(got) != 0 {
		t.Errorf("clones %v left", got)
	}
	if got := e.run([]string{"-v", "secrets:/data"}, "cat /data/key"); got != "hunter2\n" {
		t.Errorf("the secrets volume itself changed: %q", got)
	}
	e.checkProduction()
}

// ciLiveRestore: containers on a +each clone and on a tagged clone keep
// running, and keep their data, while dockerd restarts with --live-restore;
// their Unmounts after the restart are handled; nothing is left behind.
func ciLiveRestore(t *testing.T, e *e2e) {
	each, tagged := e2eProd+"@latest+each", e2eProd+"@latest+live"
	before := e.clones()
	e.d.MustDocker("run", "-d", "--name", "lr-each", "--network", "none", "-v", each+":/data", dockerd.Image, "sleep", "600")
	defer e.d.Docker("rm", "-f", "lr-each")
	e.d.MustDocker("run", "-d", "--name", "lr-tag", "--network", "none", "-v", tagged+":/data", dockerd.Image, "sleep", "600")
	defer e.d.Docker("rm", "-f", "lr-tag")
	e.exec("lr-each", "echo before > /data/each.txt")
	e.exec("lr-tag", "echo before > /data/tag.txt")
	eachClone, tagClone := e.cloneObject(each), e.cloneObject(tagged)
	if got := e.newClones(before); len(got) != 2 {
		t.Fatalf("two containers made clones %v, want 2", got)
	}
	states := map[string]string{}
	for _, c := range []string{"lr-each", "lr-tag"} {
		states[c] = e.containerState(c)
		if !strings.HasPrefix(states[c], "running ") {
			t.Fatalf("container %s: %s", c, states[c])
		}
	}
	pluginPID, err := e.p.PID()
	if err != nil {
		t.Fatal(err)
	}
	mountsBefore := e.pluginDataMounts()

	start := time.Now()
	e.d.Restart()
	t.Logf("dockerd restarted with --live-restore in %v", time.Since(start).Round(time.Millisecond))
	if out := e.d.MustDocker("plugin", "inspect", "--format", "{{.Enabled}}", "snapvol"); strings.TrimSpace(out) != "true" {
		t.Fatalf("plugin not enabled after the restart: %s", out)
	}
	if pid, err := e.p.PID(); err != nil {
		t.Fatal(err)
	} else if pid != pluginPID {
		t.Logf("the plugin process was restarted too (pid %d, was %d)", pid, pluginPID)
	} else {
		t.Logf("the plugin process (pid %d) kept running across the restart", pid)
	}
	for _, c := range []string{"lr-each", "lr-tag"} {
		if got := e.containerState(c); got != states[c] {
			t.Errorf("container %s after the restart: %s, was %s (want the same process, still running)", c, got, states[c])
		}
	}
	if got := e.exec("lr-each", "cat /data/each.txt /data/guestbook/0003.txt && echo after >> /data/each.txt"); got != "before\n"+Guestbook["guestbook/0003.txt"] {
		t.Errorf("lr-each after the restart reads %q", got)
	}
	if got := e.exec("lr-tag", "cat /data/tag.txt /data/schema.sql && echo after >> /data/tag.txt"); got != "before\n"+Guestbook["schema.sql"] {
		t.Errorf("lr-tag after the restart reads %q", got)
	}
	// The writes went to the clones in the pool, which are still there.
	for obj, file := range map[string]string{eachClone: "each.txt", tagClone: "tag.txt"} {
		if got := ReadFile(t, filepath.Join(e.pool(), "clones", obj, file)); got != "before\nafter\n" {
			t.Errorf("clone %s holds %s = %q, want the container's writes", obj, file, got)
		}
	}
	for _, n := range []string{each, tagged} {
		if v := e.inspect(n); v.Status["mounts"] != float64(1) || v.Status["state"] != "materialized" {
			t.Errorf("inspect %s after the restart: Status %v, want materialized with 1 mount", n, v.Status)
		}
	}
	names := e.volumeNames()
	for _, n := range []string{e2eProd, each, tagged} {
		if !e2eHas(names, n) {
			t.Errorf("%s not listed after the restart: %v", n, names)
		}
	}
	if got := e.pluginDataMounts(); len(got) != len(mountsBefore) {
		t.Errorf("plugin mounts after the restart %v, before %v", got, mountsBefore)
	}

	// And the plugin itself restarted under the running containers: a new
	// process in a new mount namespace restores the mounts its records
	// count, so the Unmounts below find what they expect.
	e.d.MustDocker("plugin", "disable", "-f", "snapvol")
	e.d.MustDocker("plugin", "enable", "snapvol")
	if pid, err := e.p.PID(); err != nil || pid == pluginPID {
		t.Fatalf("plugin pid %d (%v) after disable/enable, was %d: want a new process", pid, err, pluginPID)
	}
	if got := e.pluginDataMounts(); len(got) != len(mountsBefore) {
		t.Errorf("plugin mounts after disable/enable %v, before %v: the counted mounts were not restored", got, mountsBefore)
	}
	if got := e.exec("lr-each", "cat /data/each.txt"); got != "before\nafter\n" {
		t.Errorf("lr-each after the plugin restart reads %q", got)
	}
	for _, n := range []string{each, tagged} {
		if v := e.inspect(n); v.Status["mounts"] != float64(1) {
			t.Errorf("inspect %s after the plugin restart: Status %v, want 1 mount", n, v.Status)
		}
	}

	// The Unmounts Docker sends when the containers stop, after the restart.
	e.d.MustDocker("stop", "-t", "1", "lr-each")
	if e2eHas(e.clones(), eachClone) {
		t.Errorf("+each clone %s left after its container stopped (the Unmount after the restart was not handled)", eachClone)
	}
	if v := e.inspect(each); v.Status["mounts"] != float64(0) || v.Status["state"] != "not materialized" {
		t.Errorf("inspect %s after its container stopped: Status %v", each, v.Status)
	}
	e.d.MustDocker("stop", "-t", "1", "lr-tag")
	if v := e.inspect(tagged); v.Status["mounts"] != float64(0) || v.Status["state"] != "materialized" {
		t.Errorf("inspect %s after its container stopped: Status %v, want materialized with 0 mounts", tagged, v.Status)
	}
	if got := e.pluginDataMounts(); len(got) != 0 {
		t.Errorf("mounts left in the plugin after both containers stopped: %v", got)
	}
	if mounts := e.hostCloneMounts(); len(mounts) > 0 {
		t.Errorf("clone mounts left on the host after both containers stopped:\n%s", strings.Join(mounts, "\n"))
	}
	// The tagged clone kept everything; a new container sees it.
	if got := e.run([]string{"-v", tagged + ":/data"}, "cat /data/tag.txt"); got != "before\nafter\n" {
		t.Errorf("a new container on %s reads %q", tagged, got)
	}
	// A stopped container started again mounts again, and unmounts.
	e.d.MustDocker("start", "lr-tag")
	if got := e.exec("lr-tag", "cat /data/tag.txt"); got != "before\nafter\n" {
		t.Errorf("lr-tag started again reads %q", got)
	}
	e.d.MustDocker("rm", "-f", "lr-each", "lr-tag")
	if v := e.inspect(tagged); v.Status["mounts"] != float64(0) {
		t.Errorf("inspect %s after rm -f: mounts %v", tagged, v.Status["mounts"])
	}
	e.d.MustDocker("volume", "rm", each, tagged)
	if got := e.newClones(before); len(got) != 0 {
		t.Errorf("clones %v left after the volumes were removed", got)
	}
	if got := e.pluginDataMounts(); len(got) != 0 {
		t.Errorf("mounts left in the plugin: %v", got)
	}
	e.checkProduction()
}

// ciExitWhileDown: with --live-restore a container can exit while dockerd
// is down (a CI job ending during a Docker upgrade). dockerd 20.10 then
// marks it exited at start without unmounting its volumes: the plugin
// never gets those Unmounts. Once the container is removed Docker lets the
// volumes be removed, and that must destroy their clones and mounts rather
// than fail on counts no Unmount will ever lower.
func ciExitWhileDown(t *testing.T, e *e2e) {
	each, gone := e2eProd+"@now+each", e2eProd+"@latest+gone"
	before := e.clones()
	e.d.MustDocker("run", "-d", "--name", "lr-gone", "--network", "none", "-v", each+":/data", "-v", gone+":/data2", dockerd.Image, "sleep", "600")
	defer e.d.Docker("rm", "-f", "lr-gone")
	e.exec("lr-gone", "echo job > /data/job.txt && echo job > /data2/job.txt")
	made := e.newClones(before)
	if len(made) != 2 {
		t.Fatalf("the container made clones %v, want 2", made)
	}
	var pid int
	if _, err := fmt.Sscan(e.d.MustDocker("inspect", "--format", "{{.State.Pid}}", "lr-gone"), &pid); err != nil || pid <= 0 {
		t.Fatalf("container pid: %v", err)
	}
	e.d.RestartAfter(func() {
		if err := unix.Kill(pid, unix.SIGKILL); err != nil {
			t.Errorf("killing the container's process %d: %v", pid, err)
			return
		}
		deadline := time.Now().Add(30 * time.Second)
		for unix.Kill(pid, 0) == nil {
			if time.Now().After(deadline) {
				t.Errorf("the container's process %d did not exit", pid)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	if st := e.containerState("lr-gone"); !strings.HasPrefix(st, "exited ") {
		t.Fatalf("container after the restart: %s, want exited", st)
	}
	for _, n := range []string{each, gone} {
		t.Logf("%s after the restart: mounts %v (Docker sent no Unmount)", n, e.inspect(n).Status["mounts"])
	}
	e.d.MustDocker("rm", "lr-gone")
	if _, err := e.d.Docker("volume", "rm", each, gone); err != nil {
		t.Errorf("docker volume rm after the container was removed: %v", err)
	}
	if got := e.newClones(before); len(got) != 0 {
		t.Errorf("clones %v left after the volumes were removed", got)
	}
	if got := e.pluginDataMounts(); len(got) != 0 {
		t.Errorf("mounts left in the plugin: %v", got)
	}
	if mounts := e.hostCloneMounts(); len(mounts) > 0 {
		t.Errorf("clone mounts left on the host:\n%s", strings.Join(mounts, "\n"))
	}
	e.checkProduction()
}

// ciIdleReaping: with IDLE_TTL=3s an unmounted clone's storage goes within
// a minute; docker volume inspect still answers; the next container gets a
// fresh clone of production.
func ciIdleReaping(t *testing.T, e *e2e) {
	e.reconfigure("IDLE_TTL=3s")
	name := e2eProd + "@latest+idle"
	before := e.clones()
	// The clone is looked at while a container holds it: once unmounted it
	// may go any time after 3s.
	e.d.MustDocker("run", "-d", "--name", "idle-writer", "--network", "none", "-v", name+":/data", dockerd.Image, "sleep", "600")
	defer e.d.Docker("rm", "-f", "idle-writer")
	e.exec("idle-writer", "echo scratch > /data/scratch.txt && rm /data/guestbook/0001.txt")
	clone := e.cloneObject(name)
	if !e2eHas(e.clones(), clone) {
		t.Fatalf("clone %s not in the pool", clone)
	}
	// A container holding a clone keeps it however long it runs.
	held := e2eProd + "@latest+held"
	e.d.MustDocker("run", "-d", "--name", "idle-holder", "--network", "none", "-v", held+":/data", dockerd.Image, "sleep", "600")
	defer e.d.Docker("rm", "-f", "idle-holder")
	heldClone := e.cloneObject(held)

	e.d.MustDocker("rm", "-f", "idle-writer")
	start := time.Now()
	for e2eHas(e.clones(), clone) {
		if time.Since(start) > time.Minute {
			t.Fatalf("idle clone %s of %s still in the pool after a minute with IDLE_TTL=3s; Status %v", clone, name, e.inspect(name).Status)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("idle clone reaped %v after its container exited", time.Since(start).Round(100*time.Millisecond))
	v := e.inspect(name)
	if v.Driver != "snapvol:latest" || v.Status["state"] != "not materialized" || v.Status["mounts"] != float64(0) || v.Status["source"] != e2eProd {
		t.Errorf("inspect %s after reaping: driver %s Status %v, want not materialized", name, v.Driver, v.Status)
	}
	if !e2eHas(e.volumeNames(), name) {
		t.Errorf("%s no longer listed after reaping; the record should stay", name)
	}
	if !e2eHas(e.clones(), heldClone) {
		t.Errorf("the clone of %s was reaped while a container uses it", held)
	}
	if got := e.exec("idle-holder", "echo still > /data/x && cat /data/x"); got != "still\n" {
		t.Errorf("the running container's clone: %q", got)
	}
	// The next container gets a fresh clone: no scratch.txt, 0001.txt back.
	e.checkPristine("the next container on "+name+" after reaping", e.tree("-v", name+":/data"))
	e.checkProduction()

	e.d.MustDocker("rm", "-f", "idle-holder")
	e.d.MustDocker("volume", "rm", name, held)
	if got := e.newClones(before); len(got) != 0 {
		t.Errorf("clones %v left after the volumes were removed", got)
	}
	// The log has the audit lines for what was made and destroyed.
	log := e.d.Log()
	for _, want := range []string{"clone made", "clone destroyed", "reaping idle clone"} {
		if !strings.Contains(log, want) {
			t.Errorf("the plugin log lacks %q", want)
		}
	}
}
