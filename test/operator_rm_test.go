package test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/snapvol/snapvol/test/dockerd"
)

// snapvol volume rm against the managed plugin, on both engines: a plain
// volume and production, each held by a running container that wrote a
// file, are refused (non-zero exit, a message naming the volume, who holds
// it and what to do) and the file is still there; once the container
// stops, the same command removes the volume. On 65aeefa the command
// exited 0 and the container's data was gone: in a managed plugin Docker's
// mounts and the operator's request both counted as "a caller the plugin
// cannot see", so Docker's mounts looked like the operator's own stale
// ones.
func TestE2EOperatorRmRefusesHeldVolumes(t *testing.T) {
	dockerd.Require(t)
	RequireTool(t, "losetup", "mount")
	dockerd.ForEachEngine(t, func(t *testing.T, eng dockerd.Engine) {
		d := dockerd.Start(t, dockerd.Options{Engine: &eng})
		p := d.InstallPlugin(dockerd.Bundle(t, Binary(t)), "snapvol", "POOL_SIZE=1G", "LOG_LEVEL=debug")
		snapvol := func(args ...string) (string, error) {
			return cli(t, nil, append([]string{"--state-dir", p.StateDir}, args...)...)
		}
		listed := func(name string) bool {
			t.Helper()
			out, err := snapvol("ls", "--json")
			if err != nil {
				t.Fatalf("snapvol ls: %v\n%s", err, out)
			}
			var vols []map[string]any
			if err := json.Unmarshal([]byte(out), &vols); err != nil {
				t.Fatalf("snapvol ls --json: %v\n%s", err, out)
			}
			for _, v := range vols {
				if v["name"] == name {
					return true
				}
			}
			return false
		}
		for _, name := range []string{"plainx", "app-production"} {
			t.Run(name, func(t *testing.T) {
				d.MustDocker("volume", "create", "-d", "snapvol", name)
				ctr := "holder-" + name
				t.Cleanup(func() { _, _ = d.Docker("rm", "-f", ctr) })
				d.MustDocker("run", "-d", "--name", ctr, "--network", "none", "-v", name+":/d", dockerd.Image,
					"sh", "-c", "test -d /d && echo precious > /d/precious.txt && sleep 600")
				read := func() (string, error) {
					out, err := d.Docker("exec", ctr, "cat", "/d/precious.txt")
					return strings.TrimSpace(out), err
				}
				deadline := time.Now().Add(20 * time.Second)
				for {
					if got, err := read(); err == nil && got == "precious" {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("the container never wrote /d/precious.txt")
					}
					time.Sleep(100 * time.Millisecond)
				}

				out, err := snapvol("volume", "rm", name)
				if err == nil {
					t.Fatalf("snapvol volume rm %s under a running container exited 0:\n%s", name, out)
				}
				t.Logf("snapvol volume rm %s under a running container: %v\n%s", name, err, out)
				for _, want := range []string{`"` + name + `"`, "in use", "still running", "docker volume rm " + name} {
					if !strings.Contains(out, want) {
						t.Errorf("the refusal does not say %q:\n%s", want, out)
					}
				}
				if got, err := read(); err != nil || got != "precious" {
					t.Fatalf("after the refused rm the container reads %q, %v; want its file", got, err)
				}
				if !listed(name) {
					t.Fatalf("snapvol ls no longer lists %s after a refused rm", name)
				}

				// The container stops (Docker unmounts): now it goes.
				d.MustDocker("stop", "-t", "1", ctr)
				if out, err := snapvol("volume", "rm", name); err != nil {
					t.Fatalf("snapvol volume rm %s after its container stopped: %v\n%s", name, err, out)
				}
				if listed(name) {
					t.Fatalf("snapvol ls still lists %s after its rm", name)
				}
				// Docker forgets it too (its Get now fails), and the stopped
				// container goes as usual.
				if out, err := d.Docker("volume", "inspect", name); err == nil {
					t.Errorf("docker volume inspect %s after snapvol volume rm still finds it:\n%s", name, out)
				}
				d.MustDocker("rm", ctr)
			})
		}
		if log := d.Log(); strings.Contains(log, "removing a volume with mounts no running process holds") {
			t.Errorf("the plugin dropped counted mounts as stale (dockerd log):\n%s", d.LogTail(60))
		}
	})
}
