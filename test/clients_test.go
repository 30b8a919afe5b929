package test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snapvol/snapvol/test/dockerd"
)

// Clients beyond Docker's CLI (issue 24, item 4): a Swarm service and
// testcontainers-go, each running its block of docs/usage.md against the
// managed plugin in a private dockerd, on both engines.

// TestE2ESwarm runs docs/usage.md's Swarm block on a one-node swarm: two
// replicas with an app-production@latest+each mount get a clone each,
// holding production's data; each task's write stays in its own clone;
// docker service rm leaves no clone, and production is untouched.
func TestE2ESwarm(t *testing.T) {
	dockerd.Require(t)
	block := docBlock(t, "managed", "swarm-service")
	// The block is the create command, then the rm: the test checks the
	// tasks in between.
	cut := strings.Index(block.Text, "docker service rm ")
	if cut < 0 || !strings.HasPrefix(block.Text, "docker service create ") {
		t.Fatalf("%s: want `docker service create …` then `docker service rm …`, got:\n%s", block, block.Text)
	}
	create, remove := block.Text[:cut], block.Text[cut:]

	dockerd.ForEachEngine(t, func(t *testing.T, eng dockerd.Engine) {
		d := dockerd.Start(t, dockerd.Options{Engine: &eng})
		p := d.InstallPlugin(dockerd.Bundle(t, Binary(t)), "snapvol", "POOL_SIZE=1G")
		WriteProduction(t, d, e2eProd)
		pool, err := p.Pool()
		if err != nil {
			t.Fatal(err)
		}
		prodSum := TreeSum(t, filepath.Join(pool, "volumes", e2eProd))
		before := PoolClones(t, pool)

		// A one-node swarm on loopback, on a free port (2377 may be taken
		// by another test's swarm). The engine runs with --bridge=none
		// --iptables=false; swarm init still works there.
		addr := freePort(t)
		d.MustDocker("swarm", "init", "--listen-addr", addr, "--advertise-addr", addr)
		t.Cleanup(func() {
			if _, err := d.Docker("swarm", "leave", "--force"); err != nil {
				t.Errorf("leaving the swarm: %v", err)
			}
		})
		d.MustDocker("tag", dockerd.Image, "busybox")

		// docker service create waits until both tasks run.
		t.Logf("%s", create)
		out := clientsShell(t, d, block, create)
		t.Logf("docker service create:\n%s", out)
		serviceRemoved := false
		t.Cleanup(func() {
			if !serviceRemoved {
				_, _ = d.Docker("service", "rm", "ci")
			}
		})

		ids := strings.Fields(d.MustDocker("ps", "-q", "--filter", "label=com.docker.swarm.service.name=ci"))
		if len(ids) != 2 {
			t.Fatalf("service ci runs %d task containers %v, want 2\n%s", len(ids), ids, d.MustDocker("service", "ps", "--no-trunc", "ci"))
		}
		seen := map[string]bool{}
		for _, id := range ids {
			// What the task wrote, what it reads of production, and its
			// network: a task cannot have --network none, and the engine
			// has no bridge, so loopback must be all it has.
			got := d.MustDocker("exec", id, "sh", "-c", "hostname; cat /data/task; cat /data/guestbook/0001.txt; ls /sys/class/net")
			lines := strings.Split(strings.TrimSpace(got), "\n")
			if len(lines) != 4 || lines[0] != lines[1] || lines[2]+"\n" != Guestbook["guestbook/0001.txt"] || lines[3] != "lo" {
				t.Errorf("task %s: want its hostname twice (its own write), production's guestbook/0001.txt and only lo; got:\n%s", id[:12], got)
			}
			seen[lines[1]] = true
		}
		if len(seen) != 2 {
			t.Errorf("both tasks read the same /data/task %v: they share a clone", seen)
		}
		made := NewEntries(before, PoolClones(t, pool))
		if len(made) != 2 {
			t.Errorf("two tasks made clones %v, want two: one each", made)
		}
		if _, err := os.Stat(filepath.Join(pool, "volumes", e2eProd, "task")); !os.IsNotExist(err) {
			t.Errorf("a task's write reached production: %v", err)
		}

		t.Logf("%s", remove)
		clientsShell(t, d, block, remove)
		serviceRemoved = true
		// docker service rm returns at once; the tasks stop after it, and
		// each stop is the Unmount that destroys that task's clone.
		deadline := time.Now().Add(60 * time.Second)
		for {
			left := strings.Fields(d.MustDocker("ps", "-aq", "--filter", "label=com.docker.swarm.service.name=ci"))
			clones := NewEntries(before, PoolClones(t, pool))
			if len(left) == 0 && len(clones) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("60s after docker service rm: task containers %v, clones %v left", left, clones)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if got := TreeSum(t, filepath.Join(pool, "volumes", e2eProd)); got != prodSum {
			t.Errorf("production changed: checksum %s, want %s", got, prodSum)
		}
	})
}

// TestE2ETestcontainers runs the test/clients module's TestTestcontainers
// (testcontainers-go against the managed plugin, on both engines), after
// checking that it holds docs/usage.md's testcontainers block word for
// word. The module is separate so testcontainers-go stays out of the main
// go.mod; running it from here keeps `go test ./...` running it
// (modules_test.go).
func TestE2ETestcontainers(t *testing.T) {
	dockerd.Require(t)
	block := docBlock(t, "managed", "testcontainers-go")
	dir := filepath.Join(RepoRoot(), "test", "clients")
	src, err := os.ReadFile(filepath.Join(dir, "testcontainers_test.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), block.Text) {
		t.Fatalf("%s is not in test/clients/testcontainers_test.go word for word: the test must run what the documentation shows", block)
	}
	goInModule(t, dir, 20*time.Minute, "vet", "./...")
	goTestInModule(t, dir, 20*time.Minute, "TestTestcontainers")
}

// clientsShell runs script (part of block) with bash against d, the way a
// user types it, and returns its output.
func clientsShell(t *testing.T, d *dockerd.Daemon, block DocBlock, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Env = append(d.Env(), "PATH="+filepath.Dir(clientsDocker(t))+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s\nscript:\n%s\ndockerd log:\n%s", block, err, out, script, d.LogTail(30))
	}
	return string(out)
}

// clientsDocker is the docker CLI the tests use, as a path.
func clientsDocker(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath(dockerd.DockerCLI())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(p, filepath.Join(dir, "docker")); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "docker")
}
