package clients

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/snapvol/snapvol/test"
	"github.com/snapvol/snapvol/test/dockerd"
)

// GitLab Runner's Docker executor, replayed through the Docker Go SDK: the
// calls it makes for a job, with the names it uses. runnerJob holds one
// job's containers and volumes.
type runnerJob struct {
	t      *testing.T
	ctx    context.Context
	cli    *client.Client
	job    string // CI_JOB_ID
	driver string // volume_driver in config.toml ("" = unset)
	// prefix is the job's container name prefix: the project's unique name
	// and a random part ("runner-TOKEN-project-ID-concurrent-N-RANDOM").
	prefix     string
	containers []string // created, removed at the end of the job
	temporary  []string // volumes removed at the end of the job
}

// runnerUniqueName is what the runner calls a project's unique name:
// runner-<short token>-project-<project id>-concurrent-<slot>.
const runnerUniqueName = "runner-t3x9k2mq-project-123456789-concurrent-0"

func newRunnerJob(t *testing.T, ctx context.Context, cli *client.Client, job, driver string) *runnerJob {
	r := &runnerJob{t: t, ctx: ctx, cli: cli, job: job, driver: driver, prefix: runnerUniqueName + "-" + randomHex(8)}
	t.Cleanup(func() { r.end(context.Background()) })
	return r
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func md5Hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

func (r *runnerJob) labels(kv ...string) map[string]string {
	l := map[string]string{"com.gitlab.gitlab-runner.job.id": r.job, "com.gitlab.gitlab-runner.project.id": "123456789"}
	for i := 0; i+1 < len(kv); i += 2 {
		l["com.gitlab.gitlab-runner."+kv[i]] = kv[i+1]
	}
	return l
}

// cacheVolume is the runner's volumes manager making a volume for a path
// without a source (`volumes = ["/cache"]`, and /builds): VolumeCreate
// named <unique name>-cache-<md5 of the path>, with "-protected" on a
// protected ref, and the driver and options of volume_driver and
// volume_driver_ops; then a short-lived container (no volume driver) that
// opens the volume's permissions. A reusable volume (configured in
// volumes) is named after the project and kept for the next job; the
// temporary one (/builds, for git clone) has the job's random part and is
// removed at the end of the job, with force.
func (r *runnerJob) cacheVolume(dest string, reusable bool) string {
	r.t.Helper()
	base := runnerUniqueName
	if !reusable {
		base = r.prefix
	}
	name := base + "-cache-" + md5Hex(dest) + "-protected"
	v, err := r.cli.VolumeCreate(r.ctx, volume.CreateOptions{
		Name:   name,
		Driver: r.driver,
		Labels: r.labels("destination", dest, "protected", "true", "reusable", fmt.Sprint(reusable), "type", "cache"),
	})
	if err != nil {
		r.t.Fatalf("VolumeCreate %s (%d characters) with driver %q: %v", name, len(name), r.driver, err)
	}
	if v.Name != name {
		r.t.Fatalf("VolumeCreate %s: got volume %q", name, v.Name)
	}
	if !reusable {
		r.temporary = append(r.temporary, name)
	}
	// The permission container: the helper image runs cache-init on it.
	c, err := r.cli.ContainerCreate(r.ctx, &container.Config{
		Image:  dockerd.Image,
		Cmd:    []string{"sh", "-c", "chmod 0777 /gitlab-runner-cache-init"},
		Labels: r.labels("type", "cache-init"),
	}, &container.HostConfig{
		Binds:       []string{name + ":/gitlab-runner-cache-init"},
		NetworkMode: "none",
		LogConfig:   container.LogConfig{Type: "json-file"},
	}, nil, nil, name+"-set-permission-"+randomHex(8))
	if err != nil {
		r.t.Fatalf("creating the permission container of %s: %v", name, err)
	}
	defer r.cli.ContainerRemove(r.ctx, c.ID, container.RemoveOptions{Force: true})
	if err := r.cli.ContainerStart(r.ctx, c.ID, container.StartOptions{}); err != nil {
		r.t.Fatalf("starting the permission container of %s: %v", name, err)
	}
	if code := r.wait(c.ID); code != 0 {
		r.t.Fatalf("the permission container of %s exited %d", name, code)
	}
	return name
}

func (r *runnerJob) wait(id string) int64 {
	r.t.Helper()
	waitC, errC := r.cli.ContainerWait(r.ctx, id, container.WaitConditionNotRunning)
	select {
	case res := <-waitC:
		return res.StatusCode
	case err := <-errC:
		r.t.Fatal(err)
	}
	return -1
}

// service creates and starts a service container: the job's Binds, never a
// volume driver (the runner sets none on services), running script.
func (r *runnerJob) service(name string, binds []string, script string) string {
	r.t.Helper()
	c, err := r.cli.ContainerCreate(r.ctx, &container.Config{
		Image:  dockerd.Image,
		Cmd:    []string{"sh", "-c", script},
		Labels: r.labels("type", "service", "service", name),
	}, &container.HostConfig{
		RestartPolicy: container.RestartPolicy{Name: "no"},
		NetworkMode:   "none",
		Binds:         binds,
		LogConfig:     container.LogConfig{Type: "json-file"},
	}, nil, nil, r.prefix+"-"+name+"-0")
	if err != nil {
		r.t.Fatalf("creating the service container with Binds %v and no volume driver: %v", binds, err)
	}
	r.containers = append(r.containers, c.ID)
	if err := r.cli.ContainerStart(r.ctx, c.ID, container.StartOptions{}); err != nil {
		r.t.Fatalf("starting the service container: %v", err)
	}
	return c.ID
}

// container is the helper ("predefined", for get_sources, caches and
// artifacts) or the build container: created once per job (after removing
// any of the same name) with the job's Binds and volume_driver, inspected,
// then attached to and started once per stage (see stage).
func (r *runnerJob) container(kind string, binds []string) string {
	r.t.Helper()
	name := r.prefix + "-" + kind
	_ = r.cli.ContainerRemove(r.ctx, name, container.RemoveOptions{RemoveVolumes: true, Force: true})
	c, err := r.cli.ContainerCreate(r.ctx, &container.Config{
		Image:        dockerd.Image,
		Cmd:          []string{"sh"},
		AttachStdin:  true,
		AttachStdout: true,
		AttachStderr: true,
		OpenStdin:    true,
		StdinOnce:    true,
		Labels:       r.labels("type", kind),
	}, &container.HostConfig{
		RestartPolicy: container.RestartPolicy{Name: "no"},
		NetworkMode:   "none",
		Binds:         binds,
		VolumeDriver:  r.driver,
		LogConfig:     container.LogConfig{Type: "json-file"},
	}, nil, nil, name)
	if err != nil {
		r.t.Fatalf("creating the %s container with Binds %v and volume driver %q: %v", kind, binds, r.driver, err)
	}
	r.containers = append(r.containers, c.ID)
	inspected, err := r.cli.ContainerInspect(r.ctx, c.ID)
	if err != nil {
		r.t.Fatal(err)
	}
	if inspected.HostConfig.VolumeDriver != r.driver {
		r.t.Fatalf("%s container has volume driver %q, want %q", kind, inspected.HostConfig.VolumeDriver, r.driver)
	}
	return c.ID
}

// stage runs one stage's script in a job container: attach, start, the
// script on stdin, wait. A start is a new mount ID to Docker.
func (r *runnerJob) stage(id, script string) (string, int64) {
	r.t.Helper()
	hj, err := r.cli.ContainerAttach(r.ctx, id, container.AttachOptions{Stream: true, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		r.t.Fatal(err)
	}
	defer hj.Close()
	if err := r.cli.ContainerStart(r.ctx, id, container.StartOptions{}); err != nil {
		r.t.Fatalf("starting container %s: %v", id[:12], err)
	}
	var stdout, stderr bytes.Buffer
	copied := make(chan error, 1)
	go func() { _, err := stdcopy.StdCopy(&stdout, &stderr, hj.Reader); copied <- err }()
	if _, err := io.Copy(hj.Conn, strings.NewReader(script)); err != nil {
		r.t.Fatal(err)
	}
	if err := hj.CloseWrite(); err != nil {
		r.t.Fatal(err)
	}
	code := r.wait(id)
	select {
	case <-copied:
	case <-time.After(10 * time.Second):
		r.t.Errorf("container %s: the output stream did not end", id[:12])
	}
	if stderr.Len() > 0 {
		r.t.Logf("container %s stderr: %s", id[:12], stderr.String())
	}
	return stdout.String(), code
}

// end is the runner's cleanup: every container removed with RemoveVolumes
// and Force (named volumes stay), then the temporary volumes removed with
// force.
func (r *runnerJob) end(ctx context.Context) {
	for _, id := range r.containers {
		if err := r.cli.ContainerRemove(ctx, id, container.RemoveOptions{RemoveVolumes: true, Force: true}); err != nil && !errdefs.IsNotFound(err) {
			r.t.Errorf("removing container %s: %v", id[:12], err)
		}
	}
	r.containers = nil
	for _, v := range r.temporary {
		if err := r.cli.VolumeRemove(ctx, v, true); err != nil && !errdefs.IsNotFound(err) {
			r.t.Errorf("removing the temporary volume %s: %v", v, err)
		}
	}
	r.temporary = nil
}

// gitLabExecutor replays a job with a service for a runner whose
// config.toml has volumes = ["app-production@latest+each:/var/lib/cassandra"]
// and no volume_driver. The runner's volumes manager turns a "source:dest"
// entry into a bind string as is; every container of the job (services, the
// helper and the build container) gets the same HostConfig.Binds; service
// containers never get a VolumeDriver, the helper and build containers get
// volume_driver (empty here). Services are created and started first; the
// helper and build containers are each created once and started once per
// stage; at the end every container is removed with RemoveVolumes and
// Force, which leaves named volumes alone.
func gitLabExecutor(t *testing.T, m *managed) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := newRunnerJob(t, ctx, m.sdk(), "4711", "")

	const dest = "/var/lib/cassandra"
	name := prod + "@latest+each"
	binds := []string{name + ":" + dest}
	before := m.clones()

	// The service: a stand-in for cassandra that writes to its data
	// directory when it starts and keeps running.
	svc := r.service("cassandra", binds, "echo service > "+dest+"/service.txt && exec sleep 600")
	m.waitForFile(svc, dest+"/service.txt", "service\n")
	if got := m.exec(svc, "cat "+dest+"/guestbook/0003.txt"); got != test.Guestbook["guestbook/0003.txt"] {
		t.Fatalf("the service container does not see production's data: %q", got)
	}
	svcClones := m.newClones(before)
	if len(svcClones) != 1 {
		t.Fatalf("the service container made clones %v, want 1", svcClones)
	}

	// get_sources in the helper container: it gets a clone of its own too.
	// With +each every stage (every start) gets a fresh clone.
	helper := r.container("predefined", binds)
	out, code := r.stage(helper, `cd `+dest+` && ls && echo helper > helper.txt`)
	if code != 0 || out != "guestbook\nschema.sql\n" {
		t.Fatalf("helper container exited %d with %q, want production's top level", code, out)
	}
	if got := m.newClones(before); len(got) != 1 || got[0] != svcClones[0] {
		t.Errorf("after the helper stage the clones are %v, want only the service's %v", got, svcClones)
	}

	build := r.container("build", binds)
	// step_script: production's data (the malformed row), nothing of the
	// service's clone, and writes of its own.
	out, code = r.stage(build, `set -e
cd `+dest+`
grep -l "$(printf '\377')" guestbook/*
if [ -e service.txt ] || [ -e helper.txt ]; then echo "sees another container's clone"; exit 3; fi
echo build > build.txt
echo changed > guestbook/0003.txt
echo stage-one-done
`)
	if code != 0 || !strings.Contains(out, "guestbook/0003.txt") || !strings.Contains(out, "stage-one-done") {
		t.Fatalf("build stage 1 exited %d: %q", code, out)
	}
	if got := m.newClones(before); len(got) != 1 || got[0] != svcClones[0] {
		t.Errorf("after the first stage the clones are %v, want only the service's %v", got, svcClones)
	}
	// The service never saw the build's writes.
	if got := m.exec(svc, "cat "+dest+"/guestbook/0003.txt; ls "+dest); got != test.Guestbook["guestbook/0003.txt"]+"guestbook\nschema.sql\nservice.txt\n" {
		t.Errorf("the service sees %q: the build container's writes reached it", got)
	}

	// after_script: the same container started again.
	out, code = r.stage(build, `cd `+dest+` && ls && cat guestbook/0003.txt`)
	if want := "guestbook\nschema.sql\n" + test.Guestbook["guestbook/0003.txt"]; code != 0 || out != want {
		t.Errorf("build stage 2 (same container restarted) exited %d with %q, want a fresh clone: %q", code, out, want)
	}

	inspected, err := r.cli.ContainerInspect(ctx, build)
	if err != nil {
		t.Fatal(err)
	}
	if len(inspected.Mounts) != 1 || inspected.Mounts[0].Name != name || inspected.Mounts[0].Driver != "snapvol:latest" || inspected.Mounts[0].Destination != dest {
		t.Errorf("build container mounts %+v, want %s from snapvol:latest at %s", inspected.Mounts, name, dest)
	}
	vol, err := r.cli.VolumeInspect(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if vol.Driver != "snapvol:latest" || vol.Status["mounts"] != float64(1) {
		t.Errorf("volume inspect with the service running: driver %s Status %v, want snapvol:latest and 1 mount", vol.Driver, vol.Status)
	}
	m.checkProduction()

	// The end of the job: every container removed, services by force.
	r.end(ctx)
	if got := m.newClones(before); len(got) != 0 {
		t.Errorf("clones %v left after the job's containers were removed", got)
	}
	vol, err = r.cli.VolumeInspect(ctx, name)
	if err != nil {
		t.Fatalf("the +each volume should still answer after the job: %v", err)
	}
	if vol.Status["state"] != "not materialized" || vol.Status["mounts"] != float64(0) {
		t.Errorf("volume after the job: Status %v, want not materialized, 0 mounts", vol.Status)
	}
	if mounts := m.pluginDataMounts(); len(mounts) > 0 {
		t.Errorf("mounts left in the plugin after the job: %v", mounts)
	}
	m.checkProduction()
	if err := r.cli.VolumeRemove(ctx, name, false); err != nil {
		t.Fatal(err)
	}
}

// gitLabVolumeDriver replays two jobs in a row of a runner whose
// config.toml has
//
//	volume_driver = "snapvol"
//	volumes = ["/cache", "app-production@latest+each:/var/lib/cassandra"]
//
// With volume_driver set the runner creates its own volumes through the
// plugin: the cache volume for /cache (kept between jobs) and, for a git
// clone, a temporary one for /builds; their names are 95 and 112
// characters long (runner-<token>-project-<id>-concurrent-<n>[-<random>]
// -cache-<md5 of the path>-protected). They are plain snapvol volumes.
// The helper and build containers get HostConfig.VolumeDriver "snapvol",
// services none; the +each name still gives every container start its
// own clone of production. At the end of each job the containers and the
// temporary volume are removed; the cache volume keeps what the first job
// wrote for the second one, and is removed at the end as the runner's
// clear-docker-cache does.
func gitLabVolumeDriver(t *testing.T, m *managed) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cli := m.sdk()
	const dest = "/var/lib/cassandra"
	each := prod + "@latest+each"
	before := m.clones()
	var cacheVol string

	job := func(n int) {
		r := newRunnerJob(t, ctx, cli, fmt.Sprint(4800+n), "snapvol")
		// createVolumes: the configured volumes in order, then the build
		// volume (createBuildVolume).
		cacheVol = r.cacheVolume("/cache", true)
		binds := []string{cacheVol + ":/cache", each + ":" + dest}
		builds := r.cacheVolume("/builds", false)
		binds = append(binds, builds+":/builds")
		if len(cacheVol) != 95 || len(builds) != 112 {
			t.Fatalf("runner volume names %d and %d characters long, want 95 and 112: %s %s", len(cacheVol), len(builds), cacheVol, builds)
		}
		for _, v := range []string{cacheVol, builds} {
			vol, err := cli.VolumeInspect(ctx, v)
			if err != nil {
				t.Fatal(err)
			}
			if vol.Driver != "snapvol:latest" || vol.Status["kind"] != "volume" || vol.Labels["com.gitlab.gitlab-runner.type"] != "cache" {
				t.Errorf("runner volume %s: driver %s Status %v labels %v, want a plain snapvol:latest volume with the runner's labels", v, vol.Driver, vol.Status, vol.Labels)
			}
		}

		svc := r.service("postgres", binds, "echo up > /tmp/up && exec sleep 600")
		m.waitForFile(svc, "/tmp/up", "up\n")
		if got := m.exec(svc, "cat "+dest+"/schema.sql; ls /cache /builds >/dev/null && echo mounted"); got != test.Guestbook["schema.sql"]+"mounted\n" {
			t.Errorf("job %d: the service container (no volume driver) sees %q", n, got)
		}

		helper := r.container("predefined", binds)
		out, code := r.stage(helper, fmt.Sprintf(`set -e
mkdir -p /builds/group/project
echo "sources of job %d" > /builds/group/project/README
ls %s
`, n, dest))
		if code != 0 || out != "guestbook\nschema.sql\n" {
			t.Fatalf("job %d: get_sources in the helper container exited %d: %q", n, code, out)
		}
		build := r.container("build", binds)
		out, code = r.stage(build, fmt.Sprintf(`set -e
ls /builds/group/project
cat /builds/group/project/README
cat /cache/from-job 2>/dev/null || echo "empty cache"
echo "job %d" > /cache/from-job
grep -l "$(printf '\377')" %s/guestbook/*
if [ -e %s/written ]; then echo "stale clone"; exit 3; fi
touch %s/written
`, n, dest, dest, dest))
		wantCache := "empty cache"
		if n > 1 {
			wantCache = fmt.Sprintf("job %d", n-1)
		}
		want := fmt.Sprintf("README\nsources of job %d\n%s\n%s/guestbook/0003.txt\n", n, wantCache, dest)
		if code != 0 || out != want {
			t.Fatalf("job %d: the build stage exited %d with %q, want %q", n, code, out, want)
		}
		m.checkProduction()

		r.end(ctx)
		if _, err := cli.VolumeInspect(ctx, builds); !errdefs.IsNotFound(err) {
			t.Errorf("job %d: the temporary volume %s after the job: %v, want not found", n, builds, err)
		}
		if got := m.newClones(before); len(got) != 0 {
			t.Errorf("job %d: clones %v left after the job", n, got)
		}
		if mounts := m.pluginDataMounts(); len(mounts) > 0 {
			t.Errorf("job %d: mounts left in the plugin after the job: %v", n, mounts)
		}
	}
	job(1)
	job(2)

	if err := cli.VolumeRemove(ctx, cacheVol, true); err != nil {
		t.Fatalf("removing the runner's cache volume: %v", err)
	}
	if m.listed(ctx, cli, cacheVol) {
		t.Errorf("the runner's cache volume is still listed after its removal")
	}
	if err := cli.VolumeRemove(ctx, each, false); err != nil {
		t.Fatal(err)
	}
	m.checkProduction()
}
