// Package clients tests snapvol through clients other than Docker's CLI
// that need modules the main module does not: testcontainers-go here, the
// Docker Go SDK in sdk_test.go and gitlab_test.go. It is a module of its
// own (test/clients/go.mod) so that they and their dependencies stay out
// of the main go.mod; the main module's TestE2ETestcontainers
// (test/clients_test.go) and TestE2EGoSDK (test/e2e_sdk_test.go) run these
// tests, so `go test ./...` from the repository root still runs them.
package clients

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/snapvol/snapvol/test"
	"github.com/snapvol/snapvol/test/dockerd"
	"github.com/testcontainers/testcontainers-go"
	tcexec "github.com/testcontainers/testcontainers-go/exec"
)

// The block of docs/usage.md marked "managed testcontainers-go", word for
// word (TestE2ETestcontainers checks it is): the functions the test below
// calls.

// withClone mounts a clone of app-production at /data, made for this
// container alone and destroyed when it stops (+each). No driver is named:
// snapvol claims the name when Docker asks its plugins about it.
func withClone() testcontainers.CustomizeRequestOption {
	return testcontainers.WithMounts(testcontainers.VolumeMount("app-production@latest+each", "/data"))
}

// withCloneFromSnapvol is withClone with the volume driver named.
func withCloneFromSnapvol() testcontainers.CustomizeRequestOption {
	return testcontainers.WithMounts(testcontainers.ContainerMount{
		Source: testcontainers.DockerVolumeMountSource{
			Name: "app-production@latest+each",
			VolumeOptions: &mount.VolumeOptions{
				DriverConfig: &mount.Driver{Name: "snapvol"},
				// testcontainers-go (v0.45.0) adds its labels to this map: nil panics.
				Labels: map[string]string{},
			},
		},
		Target: "/data",
	})
}

// startWithClone starts image with the clone; stop it with
// testcontainers.TerminateContainer, which destroys the clone.
func startWithClone(ctx context.Context, image string, clone testcontainers.CustomizeRequestOption) (*testcontainers.DockerContainer, error) {
	return testcontainers.Run(ctx, image, clone,
		testcontainers.WithCmd("sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) { hc.NetworkMode = "none" }))
}

// End of the block.

const prod = "app-production"

// TestTestcontainers: testcontainers-go starts containers with an
// app-production@latest+each mount, with and without the driver named,
// against the managed plugin in a private dockerd. Each container gets its
// own clone of production's data; what one writes neither production nor
// the other sees; terminating a container destroys its clone.
func TestTestcontainers(t *testing.T) {
	dockerd.Require(t)
	engines := dockerd.Engines(t)
	if len(engines) > 1 {
		// testcontainers-go resolves DOCKER_HOST once per process
		// (internal/core's dockerHostOnce): one child process per engine.
		for _, eng := range engines {
			t.Run(eng.Name, func(t *testing.T) { runChild(t, eng) })
		}
		return
	}
	eng := engines[0]
	t.Run(eng.Name, func(t *testing.T) {
		t.Logf("engine %s: dockerd %s (%s)", eng.Name, eng.Version, eng.Dockerd)
		d := dockerd.Start(t, dockerd.Options{Engine: &eng})
		p := d.InstallPlugin(dockerd.Bundle(t, test.Binary(t)), "snapvol", "POOL_SIZE=1G")
		// The reaper (ryuk) needs an image from a registry; the test
		// terminates its containers itself.
		t.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
		t.Setenv("DOCKER_HOST", d.Host)
		t.Setenv("DOCKER_CONFIG", filepath.Join(d.Dir, "client"))
		test.WriteProduction(t, d, prod)
		pool, err := p.Pool()
		if err != nil {
			t.Fatal(err)
		}
		prodSum := test.TreeSum(t, filepath.Join(pool, "volumes", prod))

		for _, c := range []struct {
			name  string
			clone func() testcontainers.CustomizeRequestOption
		}{
			{"no driver named", withClone},
			{"driver named", withCloneFromSnapvol},
		} {
			t.Run(c.name, func(t *testing.T) {
				eachContainerItsClone(t, d, pool, c.clone)
				if got := test.TreeSum(t, filepath.Join(pool, "volumes", prod)); got != prodSum {
					t.Fatalf("production changed: checksum %s, want %s", got, prodSum)
				}
			})
		}
	})
}

// eachContainerItsClone starts two containers with clone, checks each
// reads production's data and keeps its own writes, and that terminating
// them destroys both clones.
func eachContainerItsClone(t *testing.T, d *dockerd.Daemon, pool string, clone func() testcontainers.CustomizeRequestOption) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	before := test.PoolClones(t, pool)
	var ctrs []*testcontainers.DockerContainer
	for i := 0; i < 2; i++ {
		ctr, err := startWithClone(ctx, dockerd.Image, clone())
		if ctr != nil {
			// Terminated below; this is for a failure on the way there.
			t.Cleanup(func() { _ = testcontainers.TerminateContainer(ctr) })
		}
		if err != nil {
			t.Fatalf("testcontainers.Run with app-production@latest+each: %v\ndockerd log:\n%s", err, d.LogTail(30))
		}
		ctrs = append(ctrs, ctr)
	}
	// Both read production's data; each writes its own id.
	for i, ctr := range ctrs {
		if got := exec1(ctx, t, ctr, "cat /data/guestbook/0001.txt"); got != test.Guestbook["guestbook/0001.txt"] {
			t.Errorf("container %d reads %q from its clone, want production's %q", i, got, test.Guestbook["guestbook/0001.txt"])
		}
		exec1(ctx, t, ctr, "echo "+ctr.GetContainerID()+" > /data/owner; rm /data/guestbook/0002.txt")
	}
	for i, ctr := range ctrs {
		if got := strings.TrimSpace(exec1(ctx, t, ctr, "cat /data/owner; ls /data/guestbook")); !strings.HasPrefix(got, ctr.GetContainerID()+"\n") || strings.Contains(got, "0002.txt") {
			t.Errorf("container %d (%s) sees %q: want its own id and its own delete (the other container's write reached its clone?)", i, ctr.GetContainerID()[:12], got)
		}
	}
	if _, err := os.Stat(filepath.Join(pool, "volumes", prod, "owner")); !os.IsNotExist(err) {
		t.Errorf("a clone's write reached production: %v", err)
	}
	made := test.NewEntries(before, test.PoolClones(t, pool))
	if len(made) != 2 {
		t.Fatalf("two containers made clones %v (pool before %v), want two: one each", made, before)
	}

	for _, ctr := range ctrs {
		if err := testcontainers.TerminateContainer(ctr); err != nil {
			t.Fatalf("terminating %s: %v", ctr.GetContainerID()[:12], err)
		}
	}
	if left := test.PoolClones(t, pool); len(test.NewEntries(before, left)) != 0 {
		t.Errorf("clones left after both containers were terminated: %v (before: %v)", left, before)
	}
}

// exec1 runs script in ctr and returns its output; a non-zero exit fails t.
func exec1(ctx context.Context, t *testing.T, ctr *testcontainers.DockerContainer, script string) string {
	t.Helper()
	code, r, err := ctr.Exec(ctx, []string{"sh", "-c", script}, tcexec.Multiplexed())
	if err != nil {
		t.Fatalf("exec %q in %s: %v", script, ctr.GetContainerID()[:12], err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if code != 0 {
		t.Fatalf("exec %q in %s exited %d: %s", script, ctr.GetContainerID()[:12], code, s)
	}
	return s
}

// runChild runs this test for one engine in a child process and passes on
// its output.
func runChild(t *testing.T, eng dockerd.Engine) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestTestcontainers$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "SNAPVOL_ENGINES="+eng.Key)
	out, err := cmd.CombinedOutput()
	t.Logf("%s:\n%s", strings.Join(cmd.Args, " "), out)
	if err != nil {
		t.Fatalf("TestTestcontainers on %s (SNAPVOL_ENGINES=%s): %v", eng.Name, eng.Key, err)
	}
}
