package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Runner fleets attacked by a careless operator and broken state (not by
// hostile registry content: attack_fleet_test.go does that).

// fleetPair is a production host that pushed app-production@masked
// (marker content) to repo, and a CI host replicating it.
type fleetPair struct {
	reg, repo string
	stopReg   func()
	prod, ci  *Plugin
}

func newFleetPair(t *testing.T, marker string, ciEnv map[string]string) *fleetPair {
	t.Helper()
	reg, stop := startFleetRegistry(t, "")
	fp := &fleetPair{reg: reg, repo: reg + "/data/app-production", stopReg: stop}
	fp.prod = StartPlugin(t, map[string]string{"PUBLISH": "app-production@masked*"})
	SeedProduction(t, fp.prod)
	writeMarker(t, fp.prod, "app-production", marker)
	adminCLI(t, fp.prod, "snapshot", "create", "app-production", "masked")
	if _, out, err := push(t, fp.prod, nil, "app-production@masked", fp.repo); err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	env := map[string]string{"REPLICAS": "app-production=" + fp.repo, "PULL_EVERY": "0"}
	for k, v := range ciEnv {
		env[k] = v
	}
	fp.ci = StartPlugin(t, env)
	return fp
}

// (1) The CI host's snapvol.db deleted while replicas and a running clone
// of one exist: the start refuses (78) as for local sources, and
// docs/recover.md's snapvol recover brings back the pulled version as a
// pulled version: with the registry down afterwards, SOURCE@TAG and
// SOURCE@latest still clone the local copy, the running clone is still
// the job's, and the replica source's anchor is no Docker volume.
func TestAttackFleetStateRecoverReplicas(t *testing.T) {
	fp := newFleetPair(t, "v1", nil)
	ci := fp.ci
	adminCLI(t, ci, "pull", "app-production@masked")
	job := ci.MustMount("app-production@masked+job1", "job1")
	if readMarker(t, job) != "v1" {
		t.Fatal("job1 does not see v1")
	}
	ci.Stop()
	if err := os.Remove(filepath.Join(ci.StateDir, "snapvol.db")); err != nil {
		t.Fatal(err)
	}
	if code, log := refusedStart(t, ci); code != 78 || !strings.Contains(log, "snapvol recover") {
		t.Fatalf("start on a deleted store with replicas: exit %d, want 78 naming snapvol recover:\n%s", code, log)
	}
	env := []string{"STATE_DIR=" + ci.StateDir, "DATA_ROOT=" + ci.DataRoot}
	for k, v := range ci.Env {
		env = append(env, k+"="+v)
	}
	if out, err := cli(t, env, "recover"); err != nil {
		t.Fatalf("snapvol recover: %v\n%s", err, out)
	} else {
		t.Logf("recover:\n%s", out)
	}
	ci.Start()
	// The registry is gone: only what recover brought back serves.
	fp.stopReg()
	t.Logf("ls after recover:\n%s", adminCLI(t, ci, "ls"))
	vols, err := ci.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vols {
		if v.Name == "app-production" {
			t.Errorf("after recover the replica source's anchor is a Docker volume: %+v", v)
		}
	}
	// The job's clone is still the job's (its container's mount is gone
	// with the host-mode stop; mounting it again gives its data).
	if _, err := ci.Get("app-production@masked+job1"); err != nil {
		t.Errorf("the running clone's volume after recover: %v", err)
	}
	// The source itself is still never mountable (Docker mounts a volume
	// it lists without a Create).
	if mp, err := ci.Mount("app-production", "anchor"); err == nil {
		t.Errorf("after recover the replica source mounts writable at %s", mp)
		_ = ci.Unmount("app-production", "anchor")
	}
	for _, name := range []string{"app-production@masked+job1", "app-production@masked+job2", "app-production@latest+job3"} {
		// Docker creates before it mounts.
		if err := ci.Create(name, nil); err != nil {
			t.Errorf("create %s after recover, registry down: %v; want the local copy", name, err)
			continue
		}
		mp, err := ci.Mount(name, "after")
		if err != nil {
			t.Errorf("%s after recover, registry down: %v; want a clone of the local copy", name, err)
			continue
		}
		if got := readMarker(t, mp); got != "v1" {
			t.Errorf("%s after recover sees %q; want v1", name, got)
		}
		if err := ci.Unmount(name, "after"); err != nil {
			t.Error(err)
		}
	}
}

// (3) A host that is production and CI at once: REPLICAS names a source
// that is a local Docker volume here, with a local named snapshot of the
// tag's name. Its own containers must still mount it, and a pull must
// neither replace the local named snapshot nor collect it.
func TestAttackFleetStateReplicaNamesALocalVolume(t *testing.T) {
	fp := newFleetPair(t, "remote", nil)
	// A host with its own production volume, of the same name.
	both := StartPlugin(t, nil)
	SeedProduction(t, both)
	writeMarker(t, both, "app-production", "local")
	adminCLI(t, both, "snapshot", "create", "app-production", "masked")
	// The operator adds REPLICAS naming it (a copy-paste from another
	// host's settings).
	both.Stop()
	both.Env["REPLICAS"] = "app-production=" + fp.repo
	both.Start()
	out, perr := cli(t, nil, "--state-dir", both.StateDir, "pull", "app-production@masked")
	t.Logf("pull: %v\n%s", perr, out)
	if perr == nil {
		t.Errorf("a pull into a local Docker volume's name was accepted:\n%s", out)
	}
	// The local named snapshot still names the local data.
	mp, err := both.Mount("app-production@masked+check", "check")
	if err != nil {
		t.Fatalf("clone of the local named snapshot: %v", err)
	}
	if got := readMarker(t, mp); got != "local" {
		t.Errorf("app-production@masked now clones %q; want the local snapshot (local)", got)
	}
	if err := both.Unmount("app-production@masked+check", "check"); err != nil {
		t.Error(err)
	}
	// Production's own container still mounts its volume.
	if _, err := both.Mount("app-production", "prod-container"); err != nil {
		t.Errorf("the local volume app-production no longer mounts once REPLICAS names it: %v", err)
	} else if err := both.Unmount("app-production", "prod-container"); err != nil {
		t.Error(err)
	}
}
