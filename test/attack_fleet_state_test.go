package test

import (
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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

// readClone creates and mounts name on p, reads its marker and unmounts
// it ("" and the error when Docker's Create or Mount fails).
func readClone(t *testing.T, p *Plugin, name string) (string, error) {
	t.Helper()
	if err := p.Create(name, nil); err != nil {
		return "", err
	}
	mp, err := p.Mount(name, "marker-reader")
	if err != nil {
		return "", err
	}
	if mp == "" {
		t.Fatalf("%s: empty mount point", name)
	}
	got := readMarker(t, mp)
	if err := p.Unmount(name, "marker-reader"); err != nil {
		t.Error(err)
	}
	return got, nil
}

// (3) REPLICAS pointed at another repository: another production's chain
// under the same source name. The next pull must not mix the two chains
// (new clones get the other production's data whole), and a clone
// running on the first chain keeps its data.
func TestAttackFleetStateReplicaRepointed(t *testing.T) {
	fp := newFleetPair(t, "first", nil)
	other := StartPlugin(t, map[string]string{"PUBLISH": "app-production@masked*"})
	SeedProduction(t, other)
	writeMarker(t, other, "app-production", "second")
	adminCLI(t, other, "snapshot", "create", "app-production", "masked")
	repo2 := fp.reg + "/data/other-production"
	if _, out, err := push(t, other, nil, "app-production@masked", repo2); err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	ci := fp.ci
	adminCLI(t, ci, "pull", "app-production@masked")
	if err := ci.Create("app-production@masked+running", nil); err != nil {
		t.Fatal(err)
	}
	running := ci.MustMount("app-production@masked+running", "running")
	holdInNamespace(t, running)
	ci.Stop()
	ci.Env["REPLICAS"] = "app-production=" + repo2
	ci.Start()
	out, err := cli(t, nil, "--state-dir", ci.StateDir, "pull", "app-production@masked")
	t.Logf("pull of the other repository: %v\n%s", err, out)
	if err == nil {
		if got, err := readClone(t, ci, "app-production@masked+new"); err != nil || got != "second" {
			t.Errorf("a new clone after the repointed pull: %q %v; want the other production's data (second)", got, err)
		}
	}
	if got, err := readClone(t, ci, "app-production@masked+running"); err != nil || got != "first" {
		t.Errorf("the running clone after REPLICAS moved: %q %v; want its own data (first)", got, err)
	}
	// The first production pushes a change: the CI host, pointed back,
	// pulls it whole.
	writeMarker(t, fp.prod, "app-production", "first-v2")
	adminCLI(t, fp.prod, "snapshot", "create", "app-production", "masked", "--replace")
	if _, out, err := push(t, fp.prod, nil, "app-production@masked", fp.repo); err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	ci.Stop()
	ci.Env["REPLICAS"] = "app-production=" + fp.repo
	ci.Start()
	if out, err := cli(t, nil, "--state-dir", ci.StateDir, "pull", "app-production@masked"); err != nil {
		t.Fatalf("pull after pointing back: %v\n%s", err, out)
	}
	if got, err := readClone(t, ci, "app-production@masked+back"); err != nil || got != "first-v2" {
		t.Errorf("a clone after pointing back: %q %v; want first-v2", got, err)
	}
}

// (4) The operator removes what the fleet keeps: SOURCE@pushed.TAG on the
// production host (the next push is a full one, not a failure), the
// pulled SOURCE@TAG and the replica source itself on the CI host (the
// next pull brings the version back; nothing the source anchors is lost).
func TestAttackFleetStateOperatorRemovesFleetSnapshots(t *testing.T) {
	fp := newFleetPair(t, "v1", nil)
	prod, ci := fp.prod, fp.ci
	out := adminCLI(t, prod, "snapshot", "ls", "app-production")
	if !strings.Contains(out, "pushed.masked") {
		t.Fatalf("no pushed.masked after a push:\n%s", out)
	}
	if out, err := cli(t, nil, "--state-dir", prod.StateDir, "snapshot", "rm", "app-production", "pushed.masked"); err != nil {
		t.Fatalf("snapshot rm of pushed.masked: %v\n%s", err, out)
	}
	writeMarker(t, prod, "app-production", "v2")
	adminCLI(t, prod, "snapshot", "create", "app-production", "masked", "--replace")
	if res, out, err := push(t, prod, nil, "app-production@masked", fp.repo); err != nil || !res.Full {
		t.Errorf("push after snapshot rm of pushed.masked: %+v %v\n%s; want a full push", res, err, out)
	}

	adminCLI(t, ci, "pull", "app-production@masked")
	if got, err := readClone(t, ci, "app-production@masked+job1"); err != nil || got != "v2" {
		t.Fatalf("CI clone: %q %v; want v2", got, err)
	}
	// The pulled version removed while a clone of it exists (refused or
	// not, the clone keeps its data and a new clone still works).
	out, err := cli(t, nil, "--state-dir", ci.StateDir, "snapshot", "rm", "app-production", "masked")
	t.Logf("snapshot rm of the pulled version (clone of it exists): %v\n%s", err, out)
	if err := ci.Remove("app-production@masked+job1"); err != nil {
		t.Fatal(err)
	}
	out, err = cli(t, nil, "--state-dir", ci.StateDir, "snapshot", "rm", "app-production", "masked")
	t.Logf("snapshot rm of the pulled version: %v\n%s", err, out)
	if got, err := readClone(t, ci, "app-production@masked+job2"); err != nil || got != "v2" {
		t.Errorf("a clone after snapshot rm of the pulled version: %q %v; want v2 (pulled again)", got, err)
	}
	out, err = cli(t, nil, "--state-dir", ci.StateDir, "volume", "rm", "app-production")
	t.Logf("volume rm of the replica source: %v\n%s", err, out)
	if err := ci.Remove("app-production"); err == nil {
		t.Log("docker volume rm of the replica source: accepted")
	} else {
		t.Logf("docker volume rm of the replica source: %v", err)
	}
	if got, err := readClone(t, ci, "app-production@masked+job2"); err != nil || got != "v2" {
		t.Errorf("the existing clone after rm of the replica source: %q %v; want v2", got, err)
	}
	if got, err := readClone(t, ci, "app-production@masked+job3"); err != nil || got != "v2" {
		t.Errorf("a new clone after rm of the replica source: %q %v; want v2", got, err)
	}
	// And the production host goes on pushing incrementally.
	writeMarker(t, prod, "app-production", "v3")
	adminCLI(t, prod, "snapshot", "create", "app-production", "masked", "--replace")
	if res, out, err := push(t, prod, nil, "app-production@masked", fp.repo); err != nil || res.Full {
		t.Errorf("the push after: %+v %v\n%s; want an incremental push", res, err, out)
	}
	adminCLI(t, ci, "pull", "app-production@masked")
	if got, err := readClone(t, ci, "app-production@masked+job4"); err != nil || got != "v3" {
		t.Errorf("a clone of v3: %q %v", got, err)
	}
}

// (6) SOURCES narrows what CI may clone: a replica source it does not
// allow is refused before anything is pulled.
func TestAttackFleetStateSourcesBeforePull(t *testing.T) {
	fp := newFleetPair(t, "v1", map[string]string{"SOURCES": "other@*"})
	err := fp.ci.Create("app-production@masked+job", nil)
	if err == nil {
		t.Fatal("SOURCES=other@* let CI clone replica source app-production")
	}
	out := adminCLI(t, fp.ci, "replica", "ls")
	if strings.Contains(out, "masked") {
		t.Errorf("a refused clone pulled the replica anyway:\n%s", out)
	}
}

// (2) REGISTRY_CONFIG's config.json garbage, empty or missing, the fleet's temp directory a
// file: a push and a pull fail naming what to fix, and work once it is
// fixed; nothing half made stays.
func TestAttackFleetStateBrokenConfig(t *testing.T) {
	cfgDir := t.TempDir()
	fp := newFleetPair(t, "v1", map[string]string{"REGISTRY_CONFIG": cfgDir})
	ci := fp.ci
	cfg := filepath.Join(cfgDir, "config.json")
	for _, c := range []struct{ what, data string }{{"garbage", "{not json"}, {"empty", ""}, {"wrong types", `{"auths":[1,2]}`}} {
		if err := os.WriteFile(cfg, []byte(c.data), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := cli(t, nil, "--state-dir", ci.StateDir, "pull", "app-production@masked")
		t.Logf("pull with a config.json %s: %v\n%s", c.what, err, out)
		if err != nil && !strings.Contains(out, cfgDir) {
			t.Errorf("pull with a config.json %s fails without naming %s:\n%s", c.what, cfgDir, out)
		}
	}
	if err := os.Remove(cfg); err != nil {
		t.Fatal(err)
	}
	// The fleet's temp directory replaced by a file on the production host.
	tmp := filepath.Join(fp.prod.StateDir, "fleet", "tmp")
	os.RemoveAll(tmp)
	if err := os.WriteFile(tmp, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	writeMarker(t, fp.prod, "app-production", "v2")
	adminCLI(t, fp.prod, "snapshot", "create", "app-production", "masked", "--replace")
	_, out, err := push(t, fp.prod, nil, "app-production@masked", fp.repo)
	t.Logf("push with the temp directory a file: %v\n%s", err, out)
	if err != nil && !strings.Contains(out, tmp) {
		t.Errorf("push with %s a file fails without naming it:\n%s", tmp, out)
	}
	os.Remove(tmp)
	if _, out, err := push(t, fp.prod, nil, "app-production@masked", fp.repo); err != nil {
		t.Fatalf("push once the temp directory is gone: %v\n%s", err, out)
	}
	adminCLI(t, ci, "pull", "app-production@masked")
	if got, err := readClone(t, ci, "app-production@masked+job"); err != nil || got != "v2" {
		t.Errorf("clone after the repairs: %q %v; want v2", got, err)
	}
}

// (2) A received version in the pool's replicas/SOURCE/UUID no longer
// whole (an operator deleted its subvolume to free space, or left a file
// beside it): the next pull receives it again and succeeds, instead of
// failing at the commit's rename for good.
func TestAttackFleetStateReceivedVersionDamaged(t *testing.T) {
	fp := newFleetPair(t, "v1", nil)
	ci := fp.ci
	adminCLI(t, ci, "pull", "app-production@masked")
	dir := filepath.Join(ci.Pool(), "replicas", "app-production")
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 {
		t.Fatalf("replicas of app-production: %v %v", ents, err)
	}
	version := filepath.Join(dir, ents[0].Name())
	if err := os.WriteFile(filepath.Join(version, "notes.txt"), []byte("operator was here"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Production moves on; the pull must replay the chain (its parent is
	// no longer whole here).
	writeMarker(t, fp.prod, "app-production", "v2")
	adminCLI(t, fp.prod, "snapshot", "create", "app-production", "masked", "--replace")
	if _, out, err := push(t, fp.prod, nil, "app-production@masked", fp.repo); err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	for i := 0; i < 2; i++ {
		if out, err := cli(t, nil, "--state-dir", ci.StateDir, "pull", "app-production@masked"); err != nil {
			t.Errorf("pull %d with a damaged received version: %v\n%s", i, err, out)
		}
	}
	if got, err := readClone(t, ci, "app-production@masked+job"); err != nil || got != "v2" {
		t.Errorf("a clone after the pull: %q %v; want v2", got, err)
	}
}

// stallProxy forwards to a registry and, once armed, stops passing what
// the registry answers after n more bytes (the connection held open, as
// a registry or network that hangs mid-download) until released.
type stallProxy struct {
	Addr    string
	armed   atomic.Int64
	stalled chan struct{}
	once    sync.Once
	release chan struct{}
}

func startStallProxy(t *testing.T, back string) *stallProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{Addr: l.Addr().String(), stalled: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(func() { l.Close(); p.Release() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, err := net.Dial("tcp", back)
				if err != nil {
					return
				}
				defer b.Close()
				go func() {
					buf := make([]byte, 32<<10)
					for {
						n, err := c.Read(buf)
						if n > 0 {
							b.Write(buf[:n])
						}
						if err != nil {
							b.Close()
							return
						}
					}
				}()
				buf := make([]byte, 16<<10)
				for {
					n, err := b.Read(buf)
					if n > 0 {
						if p.armed.Load() > 0 && p.armed.Add(-int64(n)) <= 0 {
							p.once.Do(func() { close(p.stalled) })
							<-p.release
						}
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return p
}

// Release lets held connections go on (once).
func (p *stallProxy) Release() {
	select {
	case <-p.release:
	default:
		close(p.release)
	}
}

// (5) SIGTERM while a pull hangs mid-download (snapvol pull on the admin
// socket, a first-use Create on the volume socket waiting for it): the
// shutdown is bounded (Docker kills a plugin that does not stop within
// its timeout; systemd too), and the next start's pull completes whole.
func TestAttackFleetStateSigtermMidPull(t *testing.T) {
	reg, _ := startFleetRegistry(t, "")
	px := startStallProxy(t, reg)
	prod := StartPlugin(t, map[string]string{"PUBLISH": "app-production@masked*"})
	SeedProduction(t, prod)
	mp := prod.MustMount("app-production", "bulk")
	if mp == "" {
		t.Fatal("empty mount point")
	}
	bulk := make([]byte, 16<<20)
	rand.Read(bulk)
	if err := os.WriteFile(filepath.Join(mp, "bulk.bin"), bulk, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mp, "marker.txt"), []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := prod.Unmount("app-production", "bulk"); err != nil {
		t.Fatal(err)
	}
	adminCLI(t, prod, "snapshot", "create", "app-production", "masked")
	if _, out, err := push(t, prod, nil, "app-production@masked", reg+"/data/app-production"); err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	ci := StartPlugin(t, map[string]string{"REPLICAS": "app-production=" + px.Addr + "/data/app-production", "PULL_EVERY": "0"})
	px.armed.Store(4 << 20)
	pulled := make(chan error, 1)
	go func() {
		out, err := cli(t, nil, "--state-dir", ci.StateDir, "pull", "app-production@masked")
		if err != nil {
			t.Logf("the pull cut by SIGTERM: %v\n%s", err, out)
		}
		pulled <- err
	}()
	select {
	case <-px.stalled:
	case <-time.After(60 * time.Second):
		t.Fatal("the pull never got 4 MiB into the layer")
	}
	created := make(chan error, 1)
	go func() { created <- ci.Create("app-production@masked+job", nil) }()
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	cmd, done := ci.take()
	_ = cmd.Process.Signal(os.Interrupt) // SIGINT: as SIGTERM, the harness's Stop waits 30s only
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("snapvol did not stop within 60s of the signal with a pull hanging")
	}
	took := time.Since(start)
	t.Logf("stopped %v after the signal (exit %v)", took.Round(100*time.Millisecond), cmd.ProcessState)
	if took > 10*time.Second {
		t.Errorf("shutdown with a pull hanging took %v; Docker kills a managed plugin that does not stop within 10s (a killed pull)", took.Round(100*time.Millisecond))
	}
	<-pulled
	<-created
	px.Release()
	ci.Start()
	out, err := cli(t, nil, "--state-dir", ci.StateDir, "pull", "app-production@masked")
	if err != nil {
		t.Fatalf("the pull after the restart: %v\n%s", err, out)
	}
	checkReplicas(t, ci)
	if got, err := readClone(t, ci, "app-production@masked+job2"); err != nil || got != "v1" {
		t.Errorf("a clone after the restart's pull: %q %v; want v1", got, err)
	}
}

// (5) Calls racing on one replica source: the PULL_EVERY loop (1s),
// snapvol pull, and first-use Creates and Mounts of SOURCE@TAG+each while
// production pushes new versions: every call answers, every clone holds
// one whole pushed version, and the replicas are whole at the end.
func TestAttackFleetStateRacingPulls(t *testing.T) {
	fp := newFleetPair(t, "v0", map[string]string{"PULL_EVERY": "1s"})
	prod, ci := fp.prod, fp.ci
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	note := func(f string, a ...any) { mu.Lock(); errs = append(errs, fmt.Sprintf(f, a...)); mu.Unlock() }
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if out, err := cli(t, nil, "--state-dir", ci.StateDir, "pull", "app-production@masked"); err != nil {
					note("snapvol pull: %v %s", err, out)
				}
			}
		}()
	}
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("app-production@masked+w%d-%d", w, i)
				if err := ci.Create(name, nil); err != nil {
					note("create %s: %v", name, err)
					continue
				}
				mp, err := ci.Mount(name, "job")
				if err != nil {
					note("mount %s: %v", name, err)
					continue
				}
				b, err := os.ReadFile(filepath.Join(mp, "marker.txt"))
				if err != nil || !strings.HasPrefix(string(b), "v") {
					note("%s holds %q %v; want a whole version", name, b, err)
				}
				if err := ci.Unmount(name, "job"); err != nil {
					note("unmount %s: %v", name, err)
				}
				if err := ci.Remove(name); err != nil {
					note("remove %s: %v", name, err)
				}
			}
		}()
	}
	for v := 1; v <= 5; v++ {
		writeMarker(t, prod, "app-production", fmt.Sprintf("v%d", v))
		adminCLI(t, prod, "snapshot", "create", "app-production", "masked", "--replace")
		if _, out, err := push(t, prod, nil, "app-production@masked", fp.repo); err != nil {
			t.Errorf("push v%d: %v\n%s", v, err, out)
		}
		time.Sleep(700 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	for _, e := range errs {
		t.Error(e)
	}
	adminCLI(t, ci, "pull", "app-production@masked")
	checkReplicas(t, ci)
	if got, err := readClone(t, ci, "app-production@masked+last"); err != nil || got != "v5" {
		t.Errorf("the last clone: %q %v; want v5", got, err)
	}
}

// (3) PUBLISH and REPLICAS for the same source on one host: the CI host
// pushes its pulled version back to the repository it pulls from. The
// production host's next push and the CI host's next pull still work
// (the chain may restart on a full stream), and CI clones get
// production's newest data.
func TestAttackFleetStatePublishAReplica(t *testing.T) {
	fp := newFleetPair(t, "v1", map[string]string{"PUBLISH": "app-production@masked*"})
	prod, ci := fp.prod, fp.ci
	adminCLI(t, ci, "pull", "app-production@masked")
	res, out, err := push(t, ci, nil, "app-production@masked", fp.repo)
	t.Logf("the CI host pushes its replica back: %+v %v\n%s", res, err, out)
	if err == nil {
		t.Errorf("the CI host pushed replica source app-production: %+v; want a refusal", res)
	} else if !strings.Contains(out, "REPLICAS") {
		t.Errorf("the refusal does not name REPLICAS:\n%s", out)
	}
	if out, err := cli(t, nil, "--state-dir", ci.StateDir, "pull", "app-production@masked"); err != nil {
		t.Errorf("the CI host's pull of its own push: %v\n%s", err, out)
	}
	writeMarker(t, prod, "app-production", "v2")
	adminCLI(t, prod, "snapshot", "create", "app-production", "masked", "--replace")
	if res, out, err := push(t, prod, nil, "app-production@masked", fp.repo); err != nil {
		t.Errorf("production's push after the CI host's: %+v %v\n%s", res, err, out)
	}
	if out, err := cli(t, nil, "--state-dir", ci.StateDir, "pull", "app-production@masked"); err != nil {
		t.Errorf("the CI host's pull after: %v\n%s", err, out)
	}
	if got, err := readClone(t, ci, "app-production@masked+job"); err != nil || got != "v2" {
		t.Errorf("a CI clone: %q %v; want v2", got, err)
	}
}

// (3) A source taken out of REPLICAS (another replica left, so the start
// is not refused as settings fallen back to defaults) while a clone of it
// runs: the clone keeps its data and its record through restarts and the
// sweep, the pulled versions are not destroyed, and REPLICAS naming it
// again serves it as before.
func TestAttackFleetStateReplicaRemovedFromReplicas(t *testing.T) {
	fp := newFleetPair(t, "v1", nil)
	ci := fp.ci
	adminCLI(t, ci, "pull", "app-production@masked")
	if err := ci.Create("app-production@masked+running", nil); err != nil {
		t.Fatal(err)
	}
	running := ci.MustMount("app-production@masked+running", "running")
	holdInNamespace(t, running)
	ci.Stop()
	ci.Env["REPLICAS"] = "other=" + fp.reg + "/data/other"
	ci.Start()
	ci.Stop() // a second start: the sweep collects what the first found unused
	ci.Start()
	t.Logf("ls without app-production in REPLICAS:\n%s", adminCLI(t, ci, "ls"))
	if got, err := readClone(t, ci, "app-production@masked+running"); err != nil || got != "v1" {
		t.Errorf("the running clone once its source left REPLICAS: %q %v; want v1", got, err)
	}
	// What a Docker user can do to the name now.
	err := ci.Create("app-production", nil)
	t.Logf("create of app-production once it left REPLICAS: %v", err)
	if err == nil {
		if mp, err := ci.Mount("app-production", "w"); err == nil && mp != "" {
			os.WriteFile(filepath.Join(mp, "marker.txt"), []byte("written"), 0o644)
			ci.Unmount("app-production", "w")
		}
		ci.Remove("app-production")
	}
	ci.Stop()
	ci.Env["REPLICAS"] = "app-production=" + fp.repo
	ci.Start()
	fp.stopReg()
	for _, name := range []string{"app-production@masked+again", "app-production@latest+again"} {
		if got, err := readClone(t, ci, name); err != nil || got != "v1" {
			t.Errorf("%s once REPLICAS names it again (registry down): %q %v; want v1 from the local copy", name, got, err)
		}
	}
	if got, err := readClone(t, ci, "app-production@masked+running"); err != nil || got != "v1" {
		t.Errorf("the running clone at the end: %q %v; want v1", got, err)
	}
}
