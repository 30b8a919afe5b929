package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/snapvol/snapvol/test/dockerd"
)

// Settings that protect production survive upgrades without bricking
// deliberate changes (issue 21, item 6), in the managed plugin on both
// engines:
//   - SOURCES set back to * on purpose after SOURCES=app-production@masked*
//     is a change, not a setting Docker dropped: enable works and the raw
//     ref can be cloned;
//   - a state directory copied elsewhere and pointed at with state.source
//     serves the same volumes;
//   - a refused start (state.source pointed at an empty directory) reaches
//     the user's own commands, docker run and docker volume ls, naming the
//     host's paths, and writes nothing; set back, everything is there.
func TestManagedSettingsChangesAndRefusals(t *testing.T) {
	dockerd.Require(t)
	RequireTool(t, "losetup", "mount")
	dockerd.ForEachEngine(t, func(t *testing.T, eng dockerd.Engine) {
		d := dockerd.Start(t, dockerd.Options{Engine: &eng})
		p := d.InstallPlugin(dockerd.Bundle(t, Binary(t)), "snapvol", "POOL_SIZE=1G", "SOURCES=app-production@masked*")
		img := dockerd.Image
		run := func(args ...string) (string, error) {
			return d.Docker(append([]string{"run", "--rm", "--network", "none"}, args...)...)
		}
		mustRun := func(args ...string) string {
			t.Helper()
			out, err := run(args...)
			if err != nil {
				t.Fatalf("docker run %v: %v\n%s\ndockerd:\n%s", args, err, out, d.LogTail(30))
			}
			return out
		}
		reconfigure := func(settings ...string) (string, error) {
			t.Helper()
			d.MustDocker("plugin", "disable", "-f", "snapvol")
			d.MustDocker(append([]string{"plugin", "set", "snapvol"}, settings...)...)
			return d.Docker("plugin", "enable", "snapvol")
		}
		d.MustDocker("volume", "create", "-d", "snapvol", "app-production")
		mustRun("-v", "app-production:/data", img, "sh", "-c", "echo prod > /data/p")
		if out, err := run("--volume-driver", "snapvol", "-v", "app-production@now+raw:/data", img, "true"); err == nil {
			t.Fatalf("SOURCES=app-production@masked* let @now through: %s", out)
		}

		// SOURCES=* chosen on purpose.
		if out, err := reconfigure("SOURCES=*"); err != nil {
			t.Fatalf("docker plugin enable after docker plugin set SOURCES=*: %v\n%s\ndockerd:\n%s", err, out, d.LogTail(30))
		}
		if got := mustRun("--volume-driver", "snapvol", "-v", "app-production@now+raw:/data", img, "cat", "/data/p"); strings.TrimSpace(got) != "prod" {
			t.Errorf("a clone of production after SOURCES=* reads %q", got)
		}

		// The state copied elsewhere: docs/settings.md's block, with this
		// test's directories for /var/lib/snapvol and /srv/snapvol.
		moved := filepath.Join(d.Dir, "state-moved")
		for _, line := range docBlock(t, "managed", "state-move").Commands() {
			line = strings.NewReplacer("/var/lib/snapvol", p.StateDir, "/srv/snapvol", moved).Replace(line)
			cmd := d.Command("sh", "-c", line)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("$ %s: %v\n%s\ndockerd:\n%s", line, err, out, d.LogTail(30))
			}
		}
		if blocks, err := exec.Command("stat", "-c", "%b %B %s", filepath.Join(moved, "pool.img")).Output(); err != nil {
			t.Error(err)
		} else if f := strings.Fields(string(blocks)); len(f) != 3 || atoi(f[0])*atoi(f[1]) < atoi(f[2]) {
			t.Errorf("the copied pool file is sparse: blocks, block size, size = %v", f)
		}
		if got := mustRun("-v", "app-production:/data", img, "cat", "/data/p"); strings.TrimSpace(got) != "prod" {
			t.Errorf("production on the copied state reads %q", got)
		}

		// A refused start: state.source at an empty directory.
		empty := filepath.Join(d.Dir, "state-empty")
		if err := os.MkdirAll(empty, 0o700); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		out, err := reconfigure("state.source=" + empty)
		t.Logf("docker plugin enable on an empty state: %v %s (%v)", err, strings.TrimSpace(out), time.Since(start).Round(time.Millisecond))
		// Each command the user types says why, with the host's paths.
		for _, c := range [][]string{
			{"run", "--rm", "--network", "none", "--volume-driver", "snapvol", "-v", "app-production:/data", img, "cat", "/data/p"},
			{"volume", "create", "-d", "snapvol", "another"},
		} {
			out, err := d.Docker(c...)
			said := out
			if err != nil {
				said += err.Error()
			}
			if err == nil || !strings.Contains(said, "refusing to start") || !strings.Contains(said, empty) {
				t.Errorf("docker %s on a refused plugin: %v, want the refusal naming %s:\n%s", c[0]+" "+c[1], err, empty, said)
			}
		}
		// docker volume ls and inspect cannot say it: Docker's CLI does not
		// print the warnings a plugin's List error gives, and a Get error
		// is "no such volume" to Docker, which forgets its own record of
		// the volume (the volume is the plugin's: it is listed again below).
		if ents, _ := os.ReadDir(empty); len(ents) != 0 {
			t.Errorf("the refused plugin wrote into %s: %v", empty, dirNames(empty))
		}
		// Set back: everything is there.
		if out, err := reconfigure("state.source=" + moved); err != nil {
			t.Fatalf("enable after the refusal: %v\n%s", err, out)
		}
		if ls := d.MustDocker("volume", "ls", "--format", "{{.Driver}} {{.Name}}"); !strings.Contains(ls, "snapvol:latest app-production\n") {
			t.Errorf("docker volume ls after the refusal:\n%s", ls)
		}
		if got := mustRun("-v", "app-production:/data", img, "cat", "/data/p"); strings.TrimSpace(got) != "prod" {
			t.Errorf("production after the refusal reads %q", got)
		}
	})
}

func atoi(s string) int64 { n, _ := strconv.ParseInt(s, 10, 64); return n }
