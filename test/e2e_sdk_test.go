package test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/snapvol/snapvol/test/dockerd"
)

// sdk is a Docker Go SDK client of the test's engine, negotiating the API
// version as GitLab Runner does (dockerd 20.10 speaks 1.41); closed at the
// end of the test.
func (e *e2e) sdk(t *testing.T) *client.Client {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.WithHost(e.d.Host), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// e2eSDK creates a job container through the Docker Go SDK the way GitLab
// Runner's Docker executor does: the runner's `volumes` become
// HostConfig.Binds and `volume_driver` HostConfig.VolumeDriver, the client
// negotiates the API version (dockerd 20.10 speaks 1.41), and the container
// is removed with RemoveVolumes, which removes anonymous volumes only: the
// named clone stays until someone removes it.
func e2eSDK(t *testing.T, e *e2e) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cli := e.sdk(t)
	if v, err := cli.ServerVersion(ctx); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("engine %s, API %s", v.Version, cli.ClientVersion())
	}

	name := e2eProd + "@latest+gitlab-job-4711"
	before := e.clones()
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
	if got := len(e.clones()) - len(before); got != 1 {
		t.Errorf("the job made %d clones, want 1", got)
	}
	e.checkProduction()
	clone := e.cloneObject(name)
	if err := cli.VolumeRemove(ctx, name, false); err != nil {
		t.Fatal(err)
	}
	if e2eHas(e.clones(), clone) {
		t.Errorf("VolumeRemove left clone %s", clone)
	}
}
