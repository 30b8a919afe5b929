// The attack suite: what hostile CI containers do to harm production or
// the host through snapvol, each attack a test that failed on the code it
// was found on and must never pass again. New attacks go here (a function
// in this file or in an attack_*_test.go beside it): through Docker, in
// the managed plugin on both engines (attackBed), with ordinary
// containers: --network none, no capability at all, no new privileges.
// What the containers run is test/attacker (one subcommand per primitive).

package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snapvol/snapvol/test/dockerd"
)

// pluginPool is where the managed plugin mounts its pool, in its own
// mount namespace: what a path a container plants must name to aim at it.
const pluginPool = "/var/lib/snapvol/pool"

// attackBed is a private engine with the managed plugin installed, and
// the attacker program at hand for its containers.
type attackBed struct {
	t        *testing.T
	d        *dockerd.Daemon
	p        *dockerd.Plugin
	attacker string // the attacker binary on the host
}

// newAttackBed starts eng with the managed plugin installed with settings
// (KEY=VALUE).
func newAttackBed(t *testing.T, eng dockerd.Engine, settings ...string) *attackBed {
	t.Helper()
	start := time.Now()
	d := dockerd.Start(t, dockerd.Options{Engine: &eng})
	p := d.InstallPlugin(dockerd.Bundle(t, Binary(t)), "snapvol", settings...)
	t.Logf("dockerd %s and the plugin up in %v", eng.Version, time.Since(start).Round(time.Millisecond))
	return &attackBed{t: t, d: d, p: p, attacker: attackerBinary(t)}
}

var attackerBuild struct {
	once sync.Once
	path string
	err  error
}

// attackerBinary is test/attacker built static into bin/, once per run.
func attackerBinary(t testing.TB) string {
	t.Helper()
	b := &attackerBuild
	b.once.Do(func() {
		root := RepoRoot()
		b.path = filepath.Join(root, "bin", "attacker")
		cmd := exec.Command("go", "build", "-o", b.path, "./test/attacker")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("building bin/attacker: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// admin runs the snapvol CLI against the plugin's admin socket (in its
// STATE_DIR on the host), as the operator would.
func (a *attackBed) admin(args ...string) string {
	a.t.Helper()
	cmd := exec.Command(HostBinary(a.t), append([]string{"--state-dir", a.p.StateDir}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		a.t.Fatalf("snapvol %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// containerArgs are the docker run arguments every attacking container
// gets: no network, no capability, no new privileges, the attacker at
// /attacker.
func (a *attackBed) containerArgs() []string {
	return []string{"--network", "none", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
		"-v", a.attacker + ":/attacker:ro"}
}

// run runs an attacking container to its end with the docker run
// arguments args and the shell script script; its output, or an error
// with it.
func (a *attackBed) run(args []string, script string) (string, error) {
	all := append(append([]string{"run", "--rm"}, a.containerArgs()...), args...)
	return a.d.Docker(append(all, dockerd.Image, "sh", "-c", script)...)
}

// startDetached starts the attacking container name in the background;
// finish collects it.
func (a *attackBed) startDetached(name string, args []string, cmd ...string) {
	a.t.Helper()
	all := append(append([]string{"run", "-d", "--name", name}, a.containerArgs()...), args...)
	a.d.MustDocker(append(append(all, dockerd.Image), cmd...)...)
	a.t.Cleanup(func() { _, _ = a.d.Docker("rm", "-f", name) })
}

// finish waits for the container name to end (killing it after max),
// removes it and returns its exit code and output.
func (a *attackBed) finish(name string, max time.Duration) (int, string) {
	a.t.Helper()
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
		case <-time.After(max):
			_, _ = a.d.Docker("kill", name)
		}
	}()
	code, err := a.d.Docker("wait", name)
	close(done)
	if err != nil {
		a.t.Fatalf("docker wait %s: %v", name, err)
	}
	logs, err := a.d.Docker("logs", name)
	if err != nil {
		a.t.Fatalf("docker logs %s: %v", name, err)
	}
	a.d.MustDocker("rm", "-f", name)
	var n int
	fmt.Sscan(strings.TrimSpace(code), &n)
	return n, logs
}

// pool is the plugin's pool on the host, through its mount namespace.
func (a *attackBed) pool() string {
	a.t.Helper()
	pool, err := a.p.Pool()
	if err != nil {
		a.t.Fatal(err)
	}
	if !strings.HasSuffix(pool, "/root"+pluginPool) {
		a.t.Fatalf("the plugin's pool is at %s, not %s inside it: the attacks aim at the wrong place", pool, pluginPool)
	}
	return pool
}

// poolEntries lists directory dir of the pool (volumes, clones, ...).
func (a *attackBed) poolEntries(dir string) []string {
	a.t.Helper()
	ents, err := os.ReadDir(filepath.Join(a.pool(), dir))
	if err != nil {
		a.t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// production makes the regular volume name with the file data/rows
// holding content, and registers its snapshot snap (snapvol snapshot
// create): what CI is allowed to clone.
func (a *attackBed) production(name, content, snap string) {
	a.t.Helper()
	a.d.MustDocker("volume", "create", "-d", "snapvol", name)
	out, err := a.d.Docker("run", "--rm", "--network", "none", "-v", name+":/data", dockerd.Image,
		"sh", "-c", "mkdir -p /data/data && printf %s '"+content+"' > /data/data/rows && sync")
	if err != nil {
		a.t.Fatalf("writing production: %v\n%s", err, out)
	}
	a.admin("snapshot", "create", name, snap)
	a.checkVolume(name, content, "after it was made")
}

// checkVolume fails the test unless volume name is in the pool with
// data/rows holding content.
func (a *attackBed) checkVolume(name, content, when string) {
	a.t.Helper()
	got, err := os.ReadFile(filepath.Join(a.pool(), "volumes", name, "data", "rows"))
	if err != nil || string(got) != content {
		a.t.Fatalf("%s: volume %s is damaged: data/rows = %q, %v; want %q\ndockerd log:\n%s", when, name, got, err, content, a.d.LogTail(30))
	}
}

// Issue 20, item 1: two ordinary containers made the plugin delete
// production. The first, on a +each clone, plants a subvolume d/NAME
// (NAME the production volume's) and a link e to the pool's volumes/ as
// the plugin sees it, and hands a descriptor of its clone to the second
// over a unix socket on a shared volume; the second swaps d and e with
// renameat2(RENAME_EXCHANGE) as fast as it can while the first exits and
// the plugin destroys the clone with what is inside. Deleting the nested
// subvolume by path made the plugin destroy volumes/NAME whenever the
// swap had the link in place (4 of 4 trials, after 2 to 24 runs). Rounds
// until a budget per engine; production is checked after every one.
func TestAttackNestedSubvolumeSymlinkSwap(t *testing.T) {
	dockerd.ForEachEngine(t, func(t *testing.T, eng dockerd.Engine) {
		const (
			prod    = "app-production"
			content = "production rows\n"
			rounds  = 30
			budget  = 45 * time.Second
		)
		a := newAttackBed(t, eng, "POOL_SIZE=1G", "SOURCES="+prod+"@masked*")
		a.production(prod, content, "masked")
		a.d.MustDocker("volume", "create", "shared") // Docker's local driver
		shared := []string{"-v", "shared:/shared"}
		// The second container: one for all rounds, taking each round's
		// descriptor in turn and swapping until that clone is gone.
		a.startDetached("swapper", shared, "/attacker", "swap", "/shared/sock", "d", "e", fmt.Sprint(rounds))
		plant := append([]string{"--mount", "type=volume,src=" + prod + "@masked+each,dst=/data,volume-driver=snapvol"}, shared...)
		script := "set -e; mkdir /data/d; /attacker subvol /data/d/" + prod +
			"; ln -s " + pluginPool + "/volumes /data/e; /attacker sendfd /shared/sock /data"
		start := time.Now()
		round := 0
		for round < rounds && time.Since(start) < budget {
			round++
			out, err := a.run(plant, script)
			if err != nil || !strings.Contains(out, "sent") {
				t.Fatalf("round %d: the planting container: %v\n%s", round, err, out)
			}
			// Its +each clone was destroyed at its Unmount, before docker
			// run --rm returned, with the swapper at work on it.
			a.checkVolume(prod, content, fmt.Sprintf("round %d", round))
			if left := a.poolEntries("clones"); len(left) != 0 {
				t.Fatalf("round %d: the +each clone was not deleted: clones/ holds %q\ndockerd log:\n%s", round, left, a.d.LogTail(30))
			}
		}
		elapsed := time.Since(start)
		swaps := func(logs string) (counts []int, total int) {
			for _, line := range strings.Split(logs, "\n") {
				var n int
				if _, err := fmt.Sscanf(line, "swaps %d", &n); err == nil {
					counts = append(counts, n)
					total += n
				}
			}
			return counts, total
		}
		// The swapper reports a round 200 ms after its clone is gone; when
		// the budget cut the rounds short it then waits for more, and is
		// killed once it has reported the last.
		for deadline := time.Now().Add(10 * time.Second); round < rounds && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			logs, _ := a.d.Docker("logs", "swapper")
			if c, _ := swaps(logs); len(c) >= round {
				break
			}
		}
		wait := 10 * time.Second
		if round < rounds {
			wait = 0
		}
		_, logs := a.finish("swapper", wait)
		counts, total := swaps(logs)
		if len(counts) < round {
			t.Fatalf("the swapper took %d descriptors in %d rounds:\n%s", len(counts), round, logs)
		}
		for i, n := range counts {
			if n == 0 {
				t.Fatalf("control: in round %d the swapper never swapped d and e, so nothing was attacked:\n%s", i+1, logs)
			}
		}
		a.checkVolume(prod, content, "at the end")
		if vols := a.poolEntries("volumes"); strings.Join(vols, ",") != prod {
			t.Fatalf("the pool's volumes are %q; want only %s", vols, prod)
		}
		t.Logf("%d rounds in %v, %d swaps raced the deletes", round, elapsed.Round(time.Millisecond), total)
	})
}
