package test

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/snapvol/snapvol/test/dockerd"
)

// adminTry runs the snapvol CLI against the plugin like admin, returning
// the error instead of failing: for commands that must be refused.
func (a *attackBed) adminTry(args ...string) (string, error) {
	cmd := exec.Command(HostBinary(a.t), append([]string{"--state-dir", a.p.StateDir}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// operatorVolume is volume name as snapvol ls --json shows it; ok is
// false when it is not listed.
func (a *attackBed) operatorVolume(name string) (v map[string]any, ok bool) {
	a.t.Helper()
	var vols []map[string]any
	if err := json.Unmarshal([]byte(a.admin("ls", "--json")), &vols); err != nil {
		a.t.Fatal(err)
	}
	for _, v := range vols {
		if v["name"] == name {
			return v, true
		}
	}
	return nil, false
}

// Issue 21, item 5: operator volumes were a raw-production tap for every
// Docker user. With the masking recipe of 65aeefa (snapvol volume create
// mask-work --from app-production@now, a masker mounting mask-work) and
// SOURCES=app-production@masked*, ordinary containers in the managed
// plugin, on both engines:
//
//   - squat: a Docker user makes mask-work first (the operator is refused,
//     told why), or takes the operator's with docker volume create;
//   - mount during masking: docker run -v mask-work read raw production;
//   - swap: docker volume rm mask-work between docker rm masker and
//     snapshot create --from, then a volume of the user's own;
//   - snapshot create --from a Docker user's clone, holding what they
//     wrote, became app-production@masked;
//   - after IDLE_TTL reaped the operator's clone, every Mount of its name
//     made a fresh raw @now clone.
//
// The recipe's --secret volume is the masker's: mountable by its random
// name whatever SOURCES says, and never remade after reaping.
func TestAttackOperatorVolumes(t *testing.T) {
	dockerd.ForEachEngine(t, func(t *testing.T, eng dockerd.Engine) {
		const (
			prod    = "app-production"
			content = "raw production rows: ada@example.com\n"
			idle    = 40 * time.Second
		)
		a := newAttackBed(t, eng, "POOL_SIZE=1G", "SOURCES="+prod+"@masked*", "IDLE_TTL="+idle.String())
		a.production(prod, content, "masked")
		read := []string{"sh", "-c", "cat /data/data/rows 2>&1; true"}
		run := func(args ...string) (string, error) {
			all := append(append([]string{"run", "--rm"}, a.containerArgs()...), args...)
			return a.d.Docker(append(append(all, dockerd.Image), read...)...)
		}
		noRaw := func(what, out string, err error) {
			t.Helper()
			if strings.Contains(out, "ada@example.com") || err != nil && strings.Contains(err.Error(), "ada@example.com") {
				t.Fatalf("%s read raw production:\n%s %v", what, out, err)
			}
		}

		// The recipe's masker volume, made first so the reaper takes it
		// while the rest runs: its random name mounts it under SOURCES.
		secret := strings.TrimSpace(a.admin("volume", "create", "mask", "--from", prod+"@now", "--secret"))
		if !strings.HasPrefix(secret, "mask-") || len(secret) != len("mask-")+32 {
			t.Fatalf("snapvol volume create --secret printed %q, want mask-<32 hex>", secret)
		}
		made := time.Now()
		if out, err := run("--volume-driver", "snapvol", "-v", secret+":/data"); err != nil || out != content {
			t.Fatalf("the masker on the secret volume: %q, %v", out, err)
		}
		if out := a.d.MustDocker("volume", "ls", "-q"); strings.Contains(out, secret) {
			t.Fatalf("docker volume ls shows the secret name:\n%s", out)
		}

		// Squat: a Docker user takes the name first; the operator's create
		// is refused, saying so (whatever is in there is the user's).
		a.d.MustDocker("volume", "create", "-d", "snapvol", "mask-work")
		out, err := a.adminTry("volume", "create", "mask-work", "--from", prod+"@now")
		if err == nil || !strings.Contains(out, "Docker users made it") {
			t.Fatalf("operator create of a name a Docker user made: %v\n%s", err, out)
		}
		a.d.MustDocker("volume", "rm", "mask-work")

		// The operator's volume, without an opt-in.
		a.admin("volume", "create", "mask-work", "--from", prod+"@now")
		workMade := time.Now()
		// Take-over: docker volume create of its name is refused.
		if _, err := a.d.Docker("volume", "create", "-d", "snapvol", "mask-work"); err == nil || !strings.Contains(err.Error(), "belongs to the operator") {
			t.Fatalf("docker volume create -d snapvol mask-work over the operator's: %v", err)
		}
		// Mount during masking: through snapvol refused; without a driver
		// Docker's local driver answers, with nothing of production's.
		out, err = run("--volume-driver", "snapvol", "-v", "mask-work:/data")
		noRaw("docker run --volume-driver snapvol -v mask-work", out, err)
		if err == nil || !strings.Contains(err.Error(), "belongs to the operator") {
			t.Fatalf("docker run --volume-driver snapvol -v mask-work: %v\n%s", err, out)
		}
		out, err = run("-v", "mask-work:/data")
		noRaw("docker run -v mask-work", out, err)
		if drv := strings.TrimSpace(a.d.MustDocker("volume", "inspect", "-f", "{{.Driver}}", "mask-work")); drv != "local" {
			t.Fatalf("docker run -v mask-work (no driver) got a %s volume, want Docker's local one", drv)
		}
		a.d.MustDocker("volume", "rm", "mask-work") // the local one
		// Swap: the operator's volume cannot be removed through Docker.
		if _, err := a.d.Docker("volume", "rm", "mask-work"); err == nil {
			t.Fatal("docker volume rm mask-work removed something")
		}
		if v, ok := a.operatorVolume("mask-work"); !ok || v["kind"] != "operator" || v["state"] != "materialized" {
			t.Fatalf("the operator's mask-work after Docker's attempts: %v (listed %v)", v, ok)
		}
		// snapshot create --from a Docker user's clone, holding poison.
		a.d.MustDocker("volume", "create", "-d", "snapvol", "-o", "from="+prod, "-o", "ref=masked", "ci-work")
		if out, err := a.run([]string{"--volume-driver", "snapvol", "-v", "ci-work:/data"}, "echo poison > /data/data/rows && sync"); err != nil {
			t.Fatalf("writing the Docker user's clone: %v\n%s", err, out)
		}
		out, err = a.adminTry("snapshot", "create", prod, "masked", "--from", "ci-work", "--replace")
		if err == nil || !strings.Contains(out, "not an operator volume") {
			t.Fatalf("snapshot create --from a Docker user's clone: %v\n%s", err, out)
		}
		if out, err := run("--volume-driver", "snapvol", "-v", prod+"@masked+each:/data"); err != nil || out != content {
			t.Fatalf("CI's clone of app-production@masked after the refused --from: %q, %v (want production's rows, never the poison)", out, err)
		}
		// The operator's own --from still works.
		a.admin("snapshot", "create", prod, "checked", "--from", "mask-work")
		if el := time.Since(workMade); el > idle-5*time.Second {
			t.Logf("the mask-work steps took %v of the %v IDLE_TTL", el.Round(time.Second), idle)
		}

		a.d.MustDocker("volume", "rm", "ci-work")

		// Reaping: wait for the reaper to take both clones, then a Mount
		// of either name makes nothing.
		deadline := made.Add(idle + 60*time.Second)
		for _, name := range []string{secret, "mask-work"} {
			for {
				v, ok := a.operatorVolume(name)
				if !ok {
					t.Fatalf("%s is gone from snapvol ls", name)
				}
				if v["state"] == "not materialized" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s was not reaped %v after it was made (IDLE_TTL %v): %v", name, time.Since(made).Round(time.Second), idle, v)
				}
				time.Sleep(time.Second)
			}
		}
		out, err = run("--volume-driver", "snapvol", "-v", secret+":/data")
		noRaw("a Mount of the reaped secret volume", out, err)
		if err == nil || !strings.Contains(err.Error(), "recreate it") {
			t.Fatalf("a Mount of the reaped secret volume: %v\n%s", err, out)
		}
		out, err = run("--volume-driver", "snapvol", "-v", "mask-work:/data")
		noRaw("a Mount of the reaped mask-work", out, err)
		if err == nil {
			t.Fatalf("a Mount of the reaped mask-work succeeded:\n%s", out)
		}
		if left := a.poolEntries("clones"); len(left) != 0 {
			t.Fatalf("clones after the refused Mounts of reaped volumes: %q", left)
		}
		for _, name := range []string{secret, "mask-work"} {
			a.admin("volume", "rm", name)
		}
		a.checkVolume(prod, content, "at the end")
	})
}
