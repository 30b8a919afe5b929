package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapvol/snapvol/admin"
	"github.com/snapvol/snapvol/fleet"
)

// Crash safety of push and pull (issue 23 item 4; docs/fleets.md "A push
// or pull cut short"): the real snapvol daemon is killed (SIGKILL, via
// SNAPVOL_FAILPOINT) at every step of a push and of a pull, the registry
// is killed in the middle of a layer, and after each the registry and both
// hosts must each hold one whole version and the next push or pull must
// complete.

// fleetRegistry is a distribution/v3 registry on loopback behind a TCP
// proxy of the test's own: the proxy's address is the registry snapvol
// knows, so the registry process can be killed after a given number of
// bytes of a layer went through and started again on the same storage.
type fleetRegistry struct {
	t        *testing.T
	Addr     string // what snapvol talks to (the proxy)
	back     string // the registry process's own address
	dir      string
	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	armed    atomic.Int64 // bytes left before the kill (0: not armed)
	upstream atomic.Bool  // count what snapvol sends (a push), else what it receives
	fired    atomic.Bool
	killed   chan struct{}
}

func startCrashRegistry(t *testing.T) *fleetRegistry {
	t.Helper()
	r := &fleetRegistry{t: t, dir: t.TempDir(), back: freeLoopback(t)}
	config := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n  secret: snapvol-test\n",
		filepath.Join(r.dir, "data"), r.back)
	if err := os.WriteFile(filepath.Join(r.dir, "config.yml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.Addr = l.Addr().String()
	go r.proxy(l)
	t.Cleanup(func() {
		l.Close()
		r.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(r.dir, "registry.log"))
			t.Logf("registry log:\n%s", lastLines(string(b), 40))
		}
	})
	r.Start()
	return r
}

func freeLoopback(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Start starts the registry process (again) on its storage and waits for
// it to answer through the proxy.
func (r *fleetRegistry) Start() {
	r.t.Helper()
	logf, err := os.OpenFile(filepath.Join(r.dir, "registry.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		r.t.Fatal(err)
	}
	cmd := exec.Command(RegistryBinary(r.t), "serve", filepath.Join(r.dir, "config.yml"))
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	r.mu.Lock()
	r.cmd, r.done = cmd, done
	r.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + r.Addr + "/v2/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(30 * time.Millisecond)
	}
	r.t.Fatalf("the registry did not answer on %s within 30s", r.Addr)
}

// Kill kills the registry process (SIGKILL) and waits for it to be gone.
func (r *fleetRegistry) Kill() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// KillAfter arms a kill of the registry process once n more bytes went
// through the proxy: sent by snapvol (upstream, a push) or received by
// it (a pull). The returned channel is closed when it was killed.
func (r *fleetRegistry) KillAfter(upstream bool, n int64) <-chan struct{} {
	r.killed = make(chan struct{})
	r.fired.Store(false)
	r.upstream.Store(upstream)
	r.armed.Store(n)
	return r.killed
}

func (r *fleetRegistry) proxy(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			b, err := net.Dial("tcp", r.back)
			if err != nil {
				return
			}
			defer b.Close()
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); r.copy(b, c, true); b.Close(); c.Close() }()
			go func() { defer wg.Done(); r.copy(c, b, false); b.Close(); c.Close() }()
			wg.Wait()
		}()
	}
}

// copy forwards src to dst, counting toward an armed kill.
func (r *fleetRegistry) copy(dst, src net.Conn, upstream bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if r.upstream.Load() == upstream && r.armed.Load() > 0 && r.armed.Add(-int64(n)) <= 0 {
				// One copier crosses zero first; the others see it armed
				// no more.
				if r.fired.CompareAndSwap(false, true) {
					r.Kill()
					close(r.killed)
				}
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// tagged is what the registry's tag names: the manifest's digest and
// layers, after checking every layer's blob is there.
type tagged struct {
	Digest string
	Layers []struct {
		Digest      string            `json:"digest"`
		Annotations map[string]string `json:"annotations"`
	} `json:"layers"`
}

func (r *fleetRegistry) Tagged(t *testing.T, repoPath, tag string) tagged {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+r.Addr+"/v2/"+repoPath+"/manifests/"+tag, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET tag %s: %s\n%s", tag, resp.Status, body)
	}
	var m tagged
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	m.Digest = resp.Header.Get("Docker-Content-Digest")
	for _, l := range m.Layers {
		resp, err := http.Head("http://" + r.Addr + "/v2/" + repoPath + "/blobs/" + l.Digest)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("tag %s names manifest %s whose layer %s is missing (%s)", tag, m.Digest, l.Digest, resp.Status)
		}
	}
	return m
}

// crashAt restarts p with the failpoint armed, runs op (which must fail:
// the plugin dies under it), checks the process is gone, and restarts it
// unarmed (reconcile at start repairs what the kill left).
func crashAt(t *testing.T, p *Plugin, failpoint string, op func() (string, error)) {
	t.Helper()
	p.Env["SNAPVOL_FAILPOINT"] = failpoint
	p.Kill() // a kill at rest first: cheaper than a clean stop, and repaired the same way
	p.Start()
	p.mu.Lock()
	exited := p.waitCh
	p.mu.Unlock()
	out, err := op()
	if err == nil {
		t.Fatalf("the plugin did not crash at %s: the operation succeeded:\n%s", failpoint, out)
	}
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("the plugin did not die at %s; the operation failed with %v:\n%s", failpoint, err, out)
	}
	p.Kill()
	delete(p.Env, "SNAPVOL_FAILPOINT")
	p.Start()
}

// newVersion writes marker content into app-production on prod and moves
// app-production@masked to a snapshot of it.
func newVersion(t *testing.T, prod *Plugin, content string) {
	t.Helper()
	writeMarker(t, prod, "app-production", content)
	if _, err := adminOf(prod).CreateSnapshot("app-production", "masked", "", true); err != nil {
		t.Fatal(err)
	}
}

// adminOf is p's admin API, called in the test process: the crash rounds
// run many commands, and a race-built CLI process for each costs seconds
// on a loaded machine. The error texts are the CLI's.
func adminOf(p *Plugin) *admin.Client { return admin.NewClient(admin.SocketPath(p.StateDir)) }

// pushed is snapvol push SOURCE@REF REPO through p's admin API.
func pushed(p *Plugin, snap, repo string) (admin.PushResult, string, error) {
	res, err := adminOf(p).Push(snap, repo)
	if err != nil {
		return res, err.Error(), err
	}
	return res, fmt.Sprintf("%+v", res), nil
}

// mustPull pulls app-production@masked on ci, which must work.
func mustPull(t *testing.T, ci *Plugin) admin.PullResult {
	t.Helper()
	res, out, err := pulled(ci, "app-production@masked")
	if err != nil || len(res.Tags) != 1 {
		t.Fatalf("pull app-production@masked: %v\n%s", err, out)
	}
	return res
}

// pulled is snapvol pull SOURCE[@TAG] through p's admin API.
func pulled(p *Plugin, source string) (admin.PullResult, string, error) {
	res, err := adminOf(p).Pull(source)
	if err != nil {
		return res, err.Error(), err
	}
	return res, fmt.Sprintf("%+v", res), nil
}

// noStreamFiles checks STATE_DIR/fleet/tmp holds no stream file.
func noStreamFiles(t *testing.T, p *Plugin) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(p.StateDir, "fleet", "tmp"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("stream file left after restart: fleet/tmp/%s", e.Name())
	}
}

// The production host killed at every step of a push: the tag names the
// version before (or, killed once it moved, the new one) and never a
// manifest whose layers are missing; after a restart no stream file is
// left, and the next push completes, incremental (the layer uploaded
// before the kill is not uploaded again); SOURCE@pushed.TAG is moved, not
// accumulated, and the snapshots pushed before are collected.
func TestFleetCrashPush(t *testing.T) {
	start := time.Now()
	reg := startCrashRegistry(t)
	const repoPath = "data/app-production"
	repo := reg.Addr + "/" + repoPath
	prod := StartPlugin(t, map[string]string{"PUBLISH": "app-production@masked*", "LOG_LEVEL": "info"})
	SeedProduction(t, prod)
	newVersion(t, prod, "v0")
	first, out, err := pushed(prod, "app-production@masked", repo)
	if err != nil || !first.Full {
		t.Fatalf("first push: %+v %v\n%s", first, err, out)
	}
	steps := []string{}
	for _, fp := range fleet.Failpoints {
		if strings.HasPrefix(fp, "push:") {
			steps = append(steps, fp)
		}
	}
	before := reg.Tagged(t, repoPath, "masked")
	for i, fp := range steps {
		t.Run(strings.ReplaceAll(fp, ":", "_"), func(t *testing.T) {
			newVersion(t, prod, fmt.Sprintf("v%d", i+1))
			crashAt(t, prod, fp, func() (string, error) {
				_, out, err := pushed(prod, "app-production@masked", repo)
				return out, err
			})
			noStreamFiles(t, prod)
			now := reg.Tagged(t, repoPath, "masked")
			moved := fp == "push:tagged" || fp == "push:kept"
			switch {
			case moved && (now.Digest == before.Digest || len(now.Layers) != len(before.Layers)+1):
				t.Errorf("killed at %s, after the tag moved: the tag names %s with %d layers; want the new manifest, %d layers", fp, now.Digest, len(now.Layers), len(before.Layers)+1)
			case !moved && now.Digest != before.Digest:
				t.Errorf("killed at %s, before the tag moved: the tag names %s; want the version before, %s", fp, now.Digest, before.Digest)
			}
			res, out, err := pushed(prod, "app-production@masked", repo)
			if err != nil {
				t.Fatalf("the push after the restart: %v\n%s", err, out)
			}
			if moved {
				if res.Digest != now.Digest || len(res.Uploaded) != 0 {
					t.Errorf("push after %s: %+v; want nothing sent, the tag at %s already", fp, res, now.Digest)
				}
			} else if res.Full || res.Layers != len(before.Layers)+1 {
				t.Errorf("push after %s: %+v; want one incremental layer on the %d before", fp, res, len(before.Layers))
			} else if fp == "push:uploaded" || fp == "push:manifest" {
				if len(res.Uploaded) != 0 {
					t.Errorf("push after %s: uploaded %v again; the registry had the layer", fp, res.Uploaded)
				}
			}
			before = reg.Tagged(t, repoPath, "masked")
			if before.Digest != res.Digest || before.Layers[len(before.Layers)-1].Annotations[fleet.AnnotationUUID] == "" {
				t.Errorf("the tag names %s after the push answered %s", before.Digest, res.Digest)
			}
			checkPushedKept(t, prod)
			CheckLocalInvariants(t, prod, nil)
		})
	}
	// Every failpoint is a push's (a round here) or a pull's (a round of
	// TestFleetCrashPull): none is left without a kill.
	for _, fp := range fleet.Failpoints {
		if !strings.HasPrefix(fp, "push:") && !strings.HasPrefix(fp, "pull:") {
			t.Errorf("failpoint %s is neither a push's nor a pull's: give it a crash round", fp)
		}
	}
	t.Logf("%d push kill rounds in %v", len(steps), time.Since(start).Round(time.Second))
}

// checkPushedKept checks the production host keeps one SOURCE@pushed.TAG,
// on the snapshot masked names (the last pushed), and that the snapshots
// pushed before it are collected: replaced, not accumulated.
func checkPushedKept(t *testing.T, prod *Plugin) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		snaps, err := admin.NewClient(admin.SocketPath(prod.StateDir)).Snapshots("app-production")
		if err != nil {
			t.Fatal(err)
		}
		var pushed []admin.Snapshot
		masked, objects := "", map[string]bool{}
		for _, s := range snaps {
			objects[s.Object] = true
			if strings.HasPrefix(s.Name, "pushed.") {
				pushed = append(pushed, s)
			}
			if s.Name == "masked" {
				masked = s.Object
			}
		}
		ok := len(pushed) == 1 && pushed[0].Name == "pushed.masked" && pushed[0].Object == masked && len(objects) == 1
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("production snapshots of app-production: %+v; want one object, registered as masked and pushed.masked (old pushes collected)", snaps)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The CI host killed at every step of a pull: after the restart each
// replica is one whole version (no .part, every received version a tag's
// newest and read-only, every registered version's snapshot there, every
// snapshot of the replica source registered or used by a clone), a clone
// running since the first version keeps it, a new clone gets the version
// before (or the new one once it was registered, or made and then
// registered by reconcile), and the next pull completes; at the end the
// running clone's version is collected once it is removed.
func TestFleetCrashPull(t *testing.T) {
	start := time.Now()
	reg := startCrashRegistry(t)
	repo := reg.Addr + "/data/app-production"
	prod := StartPlugin(t, map[string]string{"PUBLISH": "app-production@masked*", "LOG_LEVEL": "info"})
	SeedProduction(t, prod)
	newVersion(t, prod, "v0")
	if _, out, err := pushed(prod, "app-production@masked", repo); err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	ci := StartPlugin(t, map[string]string{"REPLICAS": "app-production=" + repo, "PULL_EVERY": "0", "LOG_LEVEL": "info"})
	mustPull(t, ci)
	running := ci.MustMount("app-production@masked+running", "running")
	if got := readMarker(t, running); got != "v0" {
		t.Fatalf("the first CI clone sees %q; want v0", got)
	}
	checkReplicas(t, ci)

	// Steps after which the new version is visible at restart: registered
	// before the kill, or made and registered by reconcile.
	visible := map[string]bool{"pull:published": true, "pull:registered": true, "pull:pruned": true}
	steps := []string{}
	for _, fp := range fleet.Failpoints {
		if strings.HasPrefix(fp, "pull:") {
			steps = append(steps, fp)
		}
	}
	for i, fp := range steps {
		t.Run(strings.ReplaceAll(fp, ":", "_"), func(t *testing.T) {
			old, next := fmt.Sprintf("v%d", i), fmt.Sprintf("v%d", i+1)
			newVersion(t, prod, next)
			if _, out, err := pushed(prod, "app-production@masked", repo); err != nil {
				t.Fatalf("push: %v\n%s", err, out)
			}
			crashAt(t, ci, fp, func() (string, error) {
				_, out, err := pulled(ci, "app-production@masked")
				return out, err
			})
			checkReplicas(t, ci)
			want := old
			if visible[fp] {
				want = next
			}
			if got := cloneMarker(t, ci, "app-production@masked+after"); got != want {
				t.Errorf("killed at %s: a new clone sees %q; want %q", fp, got, want)
			}
			mustPull(t, ci)
			checkReplicas(t, ci)
			if got := cloneMarker(t, ci, "app-production@masked+next"); got != next {
				t.Errorf("after the pull that followed the kill at %s, a new clone sees %q; want %q", fp, got, next)
			}
			if got := readMarker(t, running); got != "v0" {
				t.Errorf("the clone running since v0 sees %q", got)
			}
		})
	}
	// The running clone kept its version all along; once it is gone,
	// its version is collected.
	snaps, err := admin.NewClient(admin.SocketPath(ci.StateDir)).Snapshots("app-production")
	if err != nil {
		t.Fatal(err)
	}
	runningSnap := ""
	for _, s := range snaps {
		if slices.Contains(s.Clones, "app-production@masked+running") {
			runningSnap = s.Object
		}
	}
	if runningSnap == "" || !exists(filepath.Join(ci.Pool(), runningSnap)) {
		t.Fatalf("the running clone's version is not in the pool: %+v", snaps)
	}
	if err := ci.Unmount("app-production@masked+running", "running"); err != nil {
		t.Fatal(err)
	}
	if err := ci.Remove("app-production@masked+running"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for exists(filepath.Join(ci.Pool(), runningSnap)) {
		if time.Now().After(deadline) {
			t.Fatalf("%s (the removed clone's version) is not collected", runningSnap)
		}
		time.Sleep(100 * time.Millisecond)
	}
	checkReplicas(t, ci)
	t.Logf("%d pull kill rounds in %v", len(steps), time.Since(start).Round(time.Second))
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// cloneMarker makes clone name on ci, reads its marker, and removes it.
func cloneMarker(t *testing.T, ci *Plugin, name string) string {
	t.Helper()
	mp := ci.MustMount(name, "m")
	got := readMarker(t, mp)
	if err := ci.Unmount(name, "m"); err != nil {
		t.Fatal(err)
	}
	if err := ci.Remove(name); err != nil {
		t.Fatal(err)
	}
	return got
}

// checkReplicas checks the CI host holds whole versions only: no .part
// under replicas/, each received version one read-only subvolume and the
// newest of a tag (what snapvol pull shows), each registered version's
// snapshot in the pool, and each snapshot of the replica source either
// registered or used by a clone.
func checkReplicas(t *testing.T, ci *Plugin) {
	t.Helper()
	reps, err := admin.NewClient(admin.SocketPath(ci.StateDir)).Replicas()
	if err != nil {
		t.Fatal(err)
	}
	shown := map[string]bool{}
	for _, r := range reps {
		for _, tg := range r.Tags {
			shown[tg.UUID] = true
			if tg.Snapshot == "" || !exists(filepath.Join(ci.Pool(), tg.Snapshot)) {
				t.Errorf("%s@%s is registered on %q, which is not in the pool", r.Source, tg.Tag, tg.Snapshot)
			}
		}
	}
	dir := filepath.Join(ci.Pool(), "replicas", "app-production")
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".part") {
			t.Errorf("replicas/app-production/%s left after restart", e.Name())
			continue
		}
		if !shown[e.Name()] {
			t.Errorf("received version %s is no tag's newest (tags show %v)", e.Name(), shown)
		}
		subs, _ := os.ReadDir(filepath.Join(dir, e.Name()))
		if len(subs) != 1 {
			t.Errorf("received version %s holds %d entries, want one subvolume", e.Name(), len(subs))
			continue
		}
		out, err := exec.Command("btrfs", "property", "get", "-ts", filepath.Join(dir, e.Name(), subs[0].Name()), "ro").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "ro=true" {
			t.Errorf("received version %s is not a read-only subvolume: %v %s", e.Name(), err, out)
		}
	}
	for u := range shown {
		if !exists(filepath.Join(dir, u)) {
			t.Errorf("a tag shows version %s, which is not received here", u)
		}
	}
	CheckLocalInvariants(t, ci, nil)
	snaps, err := admin.NewClient(admin.SocketPath(ci.StateDir)).Snapshots("app-production")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range snaps {
		if !exists(filepath.Join(ci.Pool(), s.Object)) {
			t.Errorf("snapshot %s@%s is registered on %s, which is not in the pool", s.Source, s.Name, s.Object)
		}
		if s.Kind != "pulled" && len(s.Clones) == 0 {
			t.Errorf("snapshot %s of the replica source is neither registered nor used by a clone (%+v)", s.Object, s)
		}
	}
}

// The registry killed in the middle of a layer's upload and of its
// download: push and pull fail naming the registry, the tag still names
// the version before with all its layers, nothing is left half made on
// either host, clones come from the version before, and once the registry
// is back the next push (incremental) and pull complete.
func TestFleetCrashRegistryKilled(t *testing.T) {
	reg := startCrashRegistry(t)
	const repoPath = "data/app-production"
	repo := reg.Addr + "/" + repoPath
	prod := StartPlugin(t, map[string]string{"PUBLISH": "app-production@masked*", "LOG_LEVEL": "info"})
	SeedProduction(t, prod)
	writeBulk(t, prod, 1)
	newVersion(t, prod, "v1")
	if _, out, err := pushed(prod, "app-production@masked", repo); err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	ci := StartPlugin(t, map[string]string{"REPLICAS": "app-production=" + repo, "PULL_EVERY": "0", "LOG_LEVEL": "info"})
	mustPull(t, ci)
	before := reg.Tagged(t, repoPath, "masked")

	// Mid-push: 4 MiB of new data, the registry killed 1 MiB into it.
	writeBulk(t, prod, 2)
	newVersion(t, prod, "v2")
	killed := reg.KillAfter(true, 1<<20)
	_, out, err := pushed(prod, "app-production@masked", repo)
	select {
	case <-killed:
	case <-time.After(10 * time.Second):
		t.Fatalf("the registry was not killed during the push: %v\n%s", err, out)
	}
	if err == nil || !strings.Contains(out, reg.Addr) || !strings.Contains(out, "cannot be reached or broke the connection") {
		t.Fatalf("push with the registry killed: %v\n%s; want an error naming %s and saying it broke the connection", err, out, reg.Addr)
	}
	t.Logf("push, registry killed: %s", strings.TrimSpace(out))
	noStreamFiles(t, prod)
	CheckLocalInvariants(t, prod, nil)
	reg.Start()
	if now := reg.Tagged(t, repoPath, "masked"); now.Digest != before.Digest {
		t.Errorf("after a push cut short the tag names %s; want the version before, %s", now.Digest, before.Digest)
	}
	res, out, err := pushed(prod, "app-production@masked", repo)
	if err != nil || res.Full || res.Layers != 2 || len(res.Uploaded) != 1 {
		t.Fatalf("push once the registry is back: %+v %v\n%s; want one incremental layer uploaded", res, err, out)
	}

	// Mid-pull: the registry killed 1 MiB into the layer's download.
	killed = reg.KillAfter(false, 1<<20)
	out, err = cli(t, nil, "--state-dir", ci.StateDir, "pull", "app-production@masked")
	select {
	case <-killed:
	case <-time.After(10 * time.Second):
		t.Fatalf("the registry was not killed during the pull: %v\n%s", err, out)
	}
	if err == nil || !strings.Contains(out, reg.Addr) || !strings.Contains(out, "cannot be reached or broke the connection") {
		t.Fatalf("pull with the registry killed: %v\n%s; want an error naming %s and saying it broke the connection", err, out, reg.Addr)
	}
	t.Logf("pull, registry killed: %s", strings.TrimSpace(out))
	checkReplicas(t, ci)
	if got := cloneMarker(t, ci, "app-production@masked+down"); got != "v1" {
		t.Errorf("a clone after the pull was cut short sees %q; want v1", got)
	}
	reg.Start()
	mustPull(t, ci)
	checkReplicas(t, ci)
	if got := cloneMarker(t, ci, "app-production@masked+back"); got != "v2" {
		t.Errorf("a clone after the registry came back sees %q; want v2", got)
	}
}

// writeBulk writes 4 MiB that differ for each seed into app-production
// on p, so a layer is large enough to be cut in the middle.
func writeBulk(t *testing.T, p *Plugin, seed int) {
	t.Helper()
	mp := p.MustMount("app-production", "bulk")
	if mp == "" {
		t.Fatal("empty mount point")
	}
	bulk := make([]byte, 4<<20)
	for i := range bulk {
		bulk[i] = byte(i*seed*7 + i>>9 + seed)
	}
	if err := os.WriteFile(filepath.Join(mp, fmt.Sprintf("bulk%d.bin", seed)), bulk, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.Unmount("app-production", "bulk"); err != nil {
		t.Fatal(err)
	}
}

// A chain is rebased on a full stream once it holds fleet.MaxChain
// layers: push 1 is full, pushes 2..16 each add one incremental layer,
// push 17 is a full stream alone; a CI host that pulled the long chain
// applies the full one and keeps only the new version, and a new CI host
// applies one layer. The production host keeps one pushed.TAG throughout.
func TestFleetCrashChainRebase(t *testing.T) {
	start := time.Now()
	reg := startCrashRegistry(t)
	const repoPath = "data/app-production"
	repo := reg.Addr + "/" + repoPath
	prod := StartPlugin(t, map[string]string{"PUBLISH": "app-production@masked*", "LOG_LEVEL": "warn"})
	SeedProduction(t, prod)
	ciEnv := map[string]string{"REPLICAS": "app-production=" + repo, "PULL_EVERY": "0", "LOG_LEVEL": "warn"}
	ci := StartPlugin(t, ciEnv)
	for i := 1; i <= fleet.MaxChain+1; i++ {
		newVersion(t, prod, fmt.Sprintf("v%d", i))
		res, out, err := pushed(prod, "app-production@masked", repo)
		if err != nil {
			t.Fatalf("push %d: %v\n%s", i, err, out)
		}
		wantLayers, wantFull := i, i == 1
		if i == fleet.MaxChain+1 {
			wantLayers, wantFull = 1, true
		}
		if res.Layers != wantLayers || res.Full != wantFull || len(res.Uploaded) != 1 {
			t.Fatalf("push %d: %+v; want %d layers, full %v, one uploaded", i, res, wantLayers, wantFull)
		}
		if i == fleet.MaxChain || i == fleet.MaxChain+1 {
			res := mustPull(t, ci)
			if want := map[bool]int{true: fleet.MaxChain, false: 1}[i == fleet.MaxChain]; res.Tags[0].Applied != want {
				t.Errorf("pull after push %d applied %d layers; want %d", i, res.Tags[0].Applied, want)
			}
			if got := cloneMarker(t, ci, "app-production@masked+job"); got != fmt.Sprintf("v%d", i) {
				t.Errorf("CI clone after push %d sees %q", i, got)
			}
			checkReplicas(t, ci)
			if ents, _ := os.ReadDir(filepath.Join(ci.Pool(), "replicas", "app-production")); len(ents) != 1 {
				t.Errorf("after pull %d the CI host keeps %d received versions; want 1", i, len(ents))
			}
		}
	}
	checkPushedKept(t, prod)
	fresh := StartPlugin(t, ciEnv)
	if res := mustPull(t, fresh); res.Tags[0].Applied != 1 {
		t.Fatalf("a new CI host's pull after the rebase: %+v; want one layer applied", res)
	}
	t.Logf("%d pushes in %v", fleet.MaxChain+1, time.Since(start).Round(time.Second))
}
