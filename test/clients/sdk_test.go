package clients

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/snapvol/snapvol/test"
	"github.com/snapvol/snapvol/test/dockerd"
)

// TestGoSDK drives the managed plugin through the Docker Go SDK
// (github.com/docker/docker/client, pinned in this module's go.mod), the
// way GitLab Runner's Docker executor does: a job container with a named
// clone, then two replays of a runner's jobs (gitlab_test.go), without and
// with volume_driver. On each engine one private dockerd serves the steps;
// each step starts from production as WriteProduction made it and leaves
// nothing of its own behind. The main module's TestE2EGoSDK
// (test/e2e_sdk_test.go) runs this test, so `go test ./...` from the
// repository root still does.
func TestGoSDK(t *testing.T) {
	test.RequireTool(t, "losetup", "mount")
	dockerd.ForEachEngine(t, func(t *testing.T, eng dockerd.Engine) {
		d := dockerd.Start(t, dockerd.Options{Engine: &eng})
		p := d.InstallPlugin(dockerd.Bundle(t, test.Binary(t)), "snapvol", "POOL_SIZE=1G", "LOG_LEVEL=debug")
		test.WriteProduction(t, d, prod)
		pool, err := p.Pool()
		if err != nil {
			t.Fatal(err)
		}
		m := &managed{t: t, d: d, p: p, pool: pool}
		m.prodSum = test.TreeSum(t, m.prodDir())
		for _, step := range []struct {
			name string
			fn   func(t *testing.T, m *managed)
		}{
			{"job container like GitLab's Docker executor", sdkJobContainer},
			{"GitLab Docker executor: service and build containers", gitLabExecutor},
			{"GitLab Docker executor with volume_driver", gitLabVolumeDriver},
		} {
			t.Run(step.name, func(t *testing.T) { step.fn(t, m.with(t)) })
		}
		m.checkProduction()
		// The plugin logged no warning or error: none of these calls is
		// one it should refuse or find wrong.
		for _, line := range strings.Split(d.Log(), "\n") {
			if strings.Contains(line, " plugin=") && (strings.Contains(line, "level=warning") || strings.Contains(line, "level=error")) {
				t.Errorf("plugin log: %s", line)
			}
		}
	})
}

// managed is a private dockerd with the snapvol managed plugin installed
// and production written, as one step of TestGoSDK sees it.
type managed struct {
	t       *testing.T
	d       *dockerd.Daemon
	p       *dockerd.Plugin
	pool    string // the plugin's btrfs pool, seen through its mount namespace
	prodSum string // production's checksum, taken when it was written
}

// with is m for a subtest t.
func (m *managed) with(t *testing.T) *managed {
	c := *m
	c.t = t
	return &c
}

// sdk is a Docker Go SDK client of the engine, negotiating the API
// version as GitLab Runner does (dockerd 20.10 speaks 1.41); closed at the
// end of the test.
func (m *managed) sdk() *client.Client {
	m.t.Helper()
	cli, err := client.NewClientWithOpts(client.WithHost(m.d.Host), client.WithAPIVersionNegotiation())
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { cli.Close() })
	return cli
}

func (m *managed) prodDir() string { return filepath.Join(m.pool, "volumes", prod) }

// checkProduction fails the test unless production's files are as
// written: read straight from the pool (no container, so no Mount call
// that could change anything).
func (m *managed) checkProduction() {
	m.t.Helper()
	if got := test.TreeSum(m.t, m.prodDir()); got != m.prodSum {
		m.t.Fatalf("production changed: checksum %s, want %s", got, m.prodSum)
	}
}

// clones lists the clone subvolumes in the pool.
func (m *managed) clones() []string { return test.PoolClones(m.t, m.pool) }

// newClones is what is in the pool's clones/ now and was not in before.
func (m *managed) newClones(before []string) []string {
	out := test.NewEntries(before, m.clones())
	sort.Strings(out)
	return out
}

// cloneObject is the clone subvolume a materialized clone volume uses, as
// its Status names it.
func (m *managed) cloneObject(ctx context.Context, cli *client.Client, name string) string {
	m.t.Helper()
	v, err := cli.VolumeInspect(ctx, name)
	if err != nil {
		m.t.Fatal(err)
	}
	objs, _ := v.Status["objects"].([]any)
	for _, o := range objs {
		if s, _ := o.(string); strings.HasPrefix(s, "clones/") {
			return strings.TrimPrefix(s, "clones/")
		}
	}
	m.t.Fatalf("volume %s has no clone in its Status: %v", name, v.Status)
	return ""
}

// listed reports whether VolumeList names a volume, and fails the test
// if it lists one that is not snapvol's.
func (m *managed) listed(ctx context.Context, cli *client.Client, name string) bool {
	m.t.Helper()
	vols, err := cli.VolumeList(ctx, volume.ListOptions{})
	if err != nil {
		m.t.Fatal(err)
	}
	found := false
	for _, v := range vols.Volumes {
		if v.Driver != "snapvol:latest" {
			m.t.Errorf("volume %s has driver %s, want snapvol:latest", v.Name, v.Driver)
		}
		found = found || v.Name == name
	}
	return found
}

// pluginDataMounts lists what is mounted below DATA_ROOT in the plugin.
func (m *managed) pluginDataMounts() []string { return test.PluginDataMounts(m.t, m.p) }

// exec runs a shell script in a running container.
func (m *managed) exec(id, script string) string {
	m.t.Helper()
	out, err := m.d.Docker("exec", id, "sh", "-c", script)
	if err != nil {
		m.t.Fatalf("in container %s: %v", id, err)
	}
	return out
}

// waitForFile waits until a file in a running container holds want.
func (m *managed) waitForFile(id, path, want string) {
	m.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := m.d.Docker("exec", id, "cat", path)
		if err == nil && out == want {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("container %s: %s holds %q (%v) after 30s, want %q", id[:12], path, out, err, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sdkJobContainer creates a job container through the Docker Go SDK the
// way GitLab Runner's Docker executor does: the runner's `volumes` become
// HostConfig.Binds and `volume_driver` HostConfig.VolumeDriver, the client
// negotiates the API version (dockerd 20.10 speaks 1.41), and the container
// is removed with RemoveVolumes, which removes anonymous volumes only: the
// named clone stays until someone removes it.
func sdkJobContainer(t *testing.T, m *managed) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cli := m.sdk()
	if v, err := cli.ServerVersion(ctx); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("engine %s, API %s", v.Version, cli.ClientVersion())
	}

	name := prod + "@latest+gitlab-job-4711"
	before := m.clones()
	cfg := &container.Config{
		Image:  dockerd.Image,
		Cmd:    []string{"sh", "-c", `grep -l "$(printf '\377')" /var/lib/cassandra/guestbook/* && echo job > /var/lib/cassandra/job.txt`},
		Labels: map[string]string{"com.gitlab.gitlab-runner.type": "build", "com.gitlab.gitlab-runner.job.id": "4711"},
	}
	host := &container.HostConfig{
		Binds:        []string{name + ":/var/lib/cassandra"},
		VolumeDriver: "snapvol",
		NetworkMode:  "none",
		LogConfig:    container.LogConfig{Type: "json-file"},
	}
	created, err := cli.ContainerCreate(ctx, cfg, host, nil, nil, "runner-abc-project-1-concurrent-0-build")
	if err != nil {
		t.Fatal(err)
	}
	removed := false
	defer func() {
		if !removed {
			_ = cli.ContainerRemove(context.Background(), created.ID, container.RemoveOptions{RemoveVolumes: true, Force: true})
		}
	}()
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	waitC, errC := cli.ContainerWait(ctx, created.ID, container.WaitConditionNotRunning)
	var code int64
	select {
	case r := <-waitC:
		code = r.StatusCode
	case err := <-errC:
		t.Fatal(err)
	}
	logs, err := cli.ContainerLogs(ctx, created.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if _, err := stdcopy.StdCopy(&stdout, &stderr, logs); err != nil {
		t.Fatal(err)
	}
	logs.Close()
	if code != 0 || !strings.Contains(stdout.String(), "/var/lib/cassandra/guestbook/0003.txt") {
		t.Fatalf("job container exited %d; stdout %q stderr %q", code, stdout.String(), stderr.String())
	}

	inspected, err := cli.ContainerInspect(ctx, created.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(inspected.Mounts) != 1 || inspected.Mounts[0].Name != name || inspected.Mounts[0].Driver != "snapvol:latest" {
		t.Errorf("container mounts %+v, want %s from snapvol:latest", inspected.Mounts, name)
	}
	if err := cli.ContainerRemove(ctx, created.ID, container.RemoveOptions{RemoveVolumes: true, Force: true}); err != nil {
		t.Fatal(err)
	}
	removed = true

	vol, err := cli.VolumeInspect(ctx, name)
	if err != nil {
		t.Fatalf("the named clone should outlive the job container: %v", err)
	}
	if vol.Driver != "snapvol:latest" || vol.Status["state"] != "materialized" || vol.Status["tag"] != "gitlab-job-4711" {
		t.Errorf("volume inspect through the SDK: driver %s Status %v", vol.Driver, vol.Status)
	}
	if got := len(m.clones()) - len(before); got != 1 {
		t.Errorf("the job made %d clones, want 1", got)
	}
	m.checkProduction()
	clone := m.cloneObject(ctx, cli, name)
	if err := cli.VolumeRemove(ctx, name, false); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(m.clones(), clone) {
		t.Errorf("VolumeRemove left clone %s", clone)
	}
}
