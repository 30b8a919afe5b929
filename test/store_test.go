package test

import (
	"bufio"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/snapvol/snapvol/mountpoint"
	"github.com/snapvol/snapvol/test/leakcheck"
)

// The store is never silently new (issue 21, item 3): with production
// mounted, masked registered and a CI clone held by a container, an
// emptied, missing, older or damaged snapvol.db used to start a fresh
// state whose sweep destroyed the CI clone and masked, or to panic.

// storeRig is a plugin with production, a CI clone held by a "container"
// (a process in its own mount namespace, holding a copy of the mount, as
// a container holds its bind mount), a named snapshot and a clone of it.
type storeRig struct {
	p      *Plugin
	ciPath string // the CI clone's mount point
}

func newStoreRig(t *testing.T) *storeRig {
	p := StartPlugin(t, nil)
	SeedProduction(t, p)
	ci := p.MustMount("app-production@latest", "ci-job")
	if err := os.WriteFile(filepath.Join(ci, "ci-wrote.txt"), []byte("job output\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	adminCLI(t, p, "snapshot", "create", "app-production", "masked")
	p.MustMount("app-production@masked", "ci-masked")
	holdInNamespace(t, ci)
	return &storeRig{p: p, ciPath: ci}
}

// holdInNamespace starts a process in a new mount namespace that keeps a
// copy of target, and nothing else from the tests, until the test ends,
// as a container holds its bind mount. A new namespace copies every mount
// on the host, other tests' pools, clones and tmpfs included (tests run
// in parallel, and other test processes beside this one): the holder
// detaches those at once, or it keeps their loop devices attached (on
// deleted pool files) and their mount points busy for as long as it
// lives. It reads its stdin, so it dies with this process too, never
// lingering with its copies after a killed test run.
func holdInNamespace(t *testing.T, target string) {
	t.Helper()
	RequireTool(t, "unshare", "util-linux")
	// Deepest first; target and the mounts on the way to it stay, and so
	// do the system's. Detaching a mount another test is unmounting at
	// the same time may fail: that one is gone anyway.
	script := `tac /proc/self/mountinfo | while read -r _ _ _ _ m _; do
	case "$m" in
	/|/proc|/proc/*|/sys|/sys/*|/dev|/dev/*|"$1"|"$1"/*) ;;
	*) case "$1" in "$m"/*) ;; *) umount -l "$m" 2>/dev/null || true ;; esac ;;
	esac
done
echo ready
exec cat`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "holder", target)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
	}()
	select {
	case line := <-ready:
		if line != "ready\n" {
			t.Fatalf("the namespace holder did not start: %q", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the namespace holder did not start within 10s")
	}
	held, err := leakcheck.MountPoints("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(held, target) {
		t.Fatalf("the namespace holder has no copy of %s: %v", target, held)
	}
}

// objects lists the pool's clones and snapshots.
func (r *storeRig) objects(t *testing.T) []string {
	t.Helper()
	var out []string
	clones, _ := os.ReadDir(filepath.Join(r.p.Pool(), "clones"))
	for _, e := range clones {
		out = append(out, "clones/"+e.Name())
	}
	snaps, _ := os.ReadDir(filepath.Join(r.p.Pool(), "snapshots", "app-production"))
	for _, e := range snaps {
		out = append(out, "snapshots/"+e.Name())
	}
	if len(out) < 3 {
		t.Fatalf("the rig has %d objects (%v), want two clones and a snapshot at least", len(out), out)
	}
	return out
}

// refusedStart starts the plugin, expects it to exit by itself and
// returns its exit status and what it logged.
func refusedStart(t *testing.T, p *Plugin) (int, string) {
	t.Helper()
	before := len(p.Log())
	exited := p.Spawn()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		p.Kill()
		t.Fatalf("snapvol did not refuse to start within 30s:\n%s", p.Log()[before:])
	}
	p.mu.Lock()
	cmd := p.cmd
	p.cmd = nil
	p.mu.Unlock()
	return cmd.ProcessState.ExitCode(), p.Log()[before:]
}

// expectRefused checks a start is refused with exit 78, names what, has
// not panicked, and left every object and the held mount alone.
func (r *storeRig) expectRefused(t *testing.T, objects []string, want ...string) {
	t.Helper()
	code, log := refusedStart(t, r.p)
	if code != 78 {
		t.Errorf("exit status %d, want 78 (EX_CONFIG):\n%s", code, log)
	}
	// An uncaught panic or fault prints "panic: " or "unexpected fault"
	// at the start of a line and a goroutine dump; a panic bbolt's check
	// recovered from is part of the refusal's message.
	for _, l := range strings.Split(log, "\n") {
		for _, bad := range []string{"panic: ", "unexpected fault", "fatal error", "goroutine ", "SIGBUS"} {
			if strings.HasPrefix(l, bad) {
				t.Errorf("the refusal crashed (%q):\n%s", l, log)
			}
		}
	}
	for _, w := range want {
		if !strings.Contains(log, w) {
			t.Errorf("the refusal does not say %q:\n%s", w, log)
		}
	}
	if got := r.objects(t); strings.Join(got, " ") != strings.Join(objects, " ") {
		t.Errorf("objects after the refused start: %v, want %v", got, objects)
	}
	if data, err := os.ReadFile(filepath.Join(r.ciPath, "ci-wrote.txt")); err != nil || string(data) != "job output\n" {
		t.Errorf("the CI clone under its container: %q, %v", data, err)
	}
}

func (r *storeRig) db() string { return filepath.Join(r.p.StateDir, "snapvol.db") }

func TestStoreEmptiedIsRefused(t *testing.T) {
	r := newStoreRig(t)
	objs := r.objects(t)
	r.p.Stop()
	if err := os.Truncate(r.db(), 0); err != nil {
		t.Fatal(err)
	}
	r.expectRefused(t, objs, r.db(), "empty", "snapvol recover")
}

// Missing: with the identity file (this version ran) and without it (the
// state of a version before it, or STATE_DIR lost but the pool kept): the
// pool's labelled objects refuse the new store.
func TestStoreMissingIsRefused(t *testing.T) {
	r := newStoreRig(t)
	objs := r.objects(t)
	r.p.Stop()
	if err := os.Remove(r.db()); err != nil {
		t.Fatal(err)
	}
	r.expectRefused(t, objs, r.db(), "missing", "snapvol recover")
	if err := os.Remove(filepath.Join(r.p.StateDir, "snapvol.store")); err != nil {
		t.Fatal(err)
	}
	r.expectRefused(t, objs, "the pool holds", "snapvol recover")
	// Refused again: the store the refused start made is not sealed.
	r.expectRefused(t, objs, "the pool holds")
}

func TestStoreOlderCopyIsRefused(t *testing.T) {
	r := newStoreRig(t)
	r.p.Stop()
	old, err := os.ReadFile(r.db())
	if err != nil {
		t.Fatal(err)
	}
	r.p.Start()
	if err := r.p.Create("later", nil); err != nil {
		t.Fatal(err)
	}
	objs := r.objects(t)
	r.p.Stop()
	if err := os.WriteFile(r.db(), old, 0o600); err != nil {
		t.Fatal(err)
	}
	r.expectRefused(t, objs, r.db(), "older copy", "snapvol recover")
}

// Garbage or zeroed pages panicked bbolt ("assertion failed: Page
// expected to be ..."), a truncated file SIGBUS, exit 2, which systemd
// restarted in a loop: each is exit 78 naming the file now.
func TestStoreDamagedIsRefused(t *testing.T) {
	r := newStoreRig(t)
	// Enough records for pages beyond the meta pages, freelist and root.
	for i := 0; i < 300; i++ {
		if err := r.p.Create("plain-"+strconv.Itoa(i)+strings.Repeat("x", 60), nil); err != nil {
			t.Fatal(err)
		}
	}
	objs := r.objects(t)
	r.p.Stop()
	good, err := os.ReadFile(r.db())
	if err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()
	if len(good) < 8*page {
		t.Fatalf("snapvol.db has %d bytes, too small to damage", len(good))
	}
	for _, how := range []string{"garbage pages", "zeroed pages", "truncated"} {
		t.Run(how, func(t *testing.T) {
			bad := append([]byte(nil), good...)
			switch how {
			case "garbage pages":
				_, _ = rand.Read(bad[2*page:])
			case "zeroed pages":
				clear(bad[2*page:])
			case "truncated":
				bad = bad[:len(bad)/2]
			}
			if err := os.WriteFile(r.db(), bad, 0o600); err != nil {
				t.Fatal(err)
			}
			r.expectRefused(t, objs, r.db(), "damaged", "snapvol recover")
		})
	}
	// The good file serves again, and keeps the volumes.
	if err := os.WriteFile(r.db(), good, 0o600); err != nil {
		t.Fatal(err)
	}
	r.p.Start()
	if _, err := r.p.Get("app-production@masked"); err != nil {
		t.Fatal(err)
	}
}

// A first start (no store, an empty pool) serves, and seals the store.
func TestStoreFirstStart(t *testing.T) {
	p := StartPlugin(t, nil)
	if _, err := os.Stat(filepath.Join(p.StateDir, "snapvol.store")); err != nil {
		t.Fatalf("the first start left no identity file: %v", err)
	}
	if !strings.Contains(p.Log(), "new state: first start") {
		t.Errorf("the first start does not say so:\n%s", p.Log())
	}
	if err := p.Create("first", nil); err != nil {
		t.Fatal(err)
	}
	p.Stop()
	p.Start()
	if _, err := p.Get("first"); err != nil {
		t.Fatal(err)
	}
}

// docs/recover.md, host mode, after the database was deleted: the start
// is refused, snapvol recover rebuilds the records from the labels, and
// the plugin then starts and serves every volume, with masked registered
// again and the CI clone, still held by its container, neither destroyed
// nor unmounted.
func TestRecoverAfterDeletingTheStore(t *testing.T) {
	r := newStoreRig(t)
	p := r.p
	// Operator volumes (issue 21 item 4) come back as the operator's, not
	// as Docker clone volumes: a --secret clone of raw production, one
	// with no opt-in, one shared with --docker (of @now: a plain name
	// does not say its ref), and a Docker clone with -o ttl=0 (never
	// reaped, not IDLE_TTL).
	secret := strings.TrimSpace(adminCLI(t, p, "volume", "create", "mask", "--from", "app-production@now", "--secret"))
	adminCLI(t, p, "volume", "create", "mask-work", "--from", "app-production@now")
	adminCLI(t, p, "volume", "create", "fixture", "--from", "app-production@now", "--docker")
	if err := p.Create("keeper", map[string]string{"from": "app-production", "ttl": "0"}); err != nil {
		t.Fatal(err)
	}
	p.MustMount("keeper", "keeper-job")
	if err := p.Unmount("keeper", "keeper-job"); err != nil {
		t.Fatal(err)
	}
	kept := []string{secret, "mask-work", "fixture", "keeper"}
	before := inspectFields(t, p, kept...)
	objs := r.objects(t)
	p.Stop()
	if err := os.Remove(r.db()); err != nil {
		t.Fatal(err)
	}
	r.expectRefused(t, objs, "snapvol recover")

	env := []string{"STATE_DIR=" + p.StateDir, "DATA_ROOT=" + p.DataRoot}
	for k, v := range p.Env {
		env = append(env, k+"="+v)
	}
	ran := false
	for _, line := range docBlock(t, "host", "recover-host").Commands() {
		switch {
		case line == "systemctl stop snapvol":
			p.Stop() // stopped already: the refused start exited
		case line == "systemctl start snapvol":
			p.Start()
		case strings.HasPrefix(line, "snapvol recover"):
			out, err := cli(t, env, strings.Fields(line)[1:]...)
			if err != nil {
				t.Fatalf("%s: %v\n%s", line, err, out)
			}
			for _, w := range []string{"app-production@latest", "app-production@masked", "app-production@masked", "in use now",
				secret + " (the operator's, access secret)", "mask-work (the operator's, access none)", "fixture (the operator's, access docker)"} {
				if !strings.Contains(out, w) {
					t.Errorf("%s does not report %q:\n%s", line, w, out)
				}
			}
			ran = true
		case strings.HasPrefix(line, "snapvol "):
			adminCLI(t, p, strings.Fields(line)[1:]...)
		default:
			t.Fatalf("docs/recover.md line %q: the test does not know it", line)
		}
	}
	if !ran {
		t.Fatal("docs/recover.md's block runs no snapvol recover")
	}

	// Served: Docker's List has every volume, Get answers each.
	vols, err := p.List()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vols {
		got = append(got, v.Name)
	}
	if want := "app-production app-production@latest app-production@masked fixture keeper"; strings.Join(got, " ") != want {
		t.Fatalf("List after recover: %v, want %s (operator volumes without --docker are not Docker's)", got, want)
	}
	if after := inspectFields(t, p, kept...); after != before {
		t.Errorf("volume inspect after recover:\n%s\nbefore the store was lost:\n%s", after, before)
	}
	var snaps []struct{ Name, Kind string }
	if err := json.Unmarshal([]byte(adminCLI(t, p, "snapshot", "ls", "app-production", "--json")), &snaps); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range snaps {
		found = found || s.Name == "masked" && s.Kind == "named"
	}
	if !found {
		t.Fatalf("masked is not registered again: %+v", snaps)
	}
	// The reconcile and sweep of that start destroyed nothing, and the
	// held clone is still mounted with what the job wrote.
	if got := r.objects(t); strings.Join(got, " ") != strings.Join(objs, " ") {
		t.Errorf("objects after recover and start: %v, want %v", got, objs)
	}
	if !mountpoint.IsMountPoint(r.ciPath) {
		t.Error("the held CI clone was unmounted")
	}
	if data, err := os.ReadFile(filepath.Join(r.ciPath, "ci-wrote.txt")); err != nil || string(data) != "job output\n" {
		t.Errorf("the CI clone under its container: %q, %v", data, err)
	}
	// A container's mount counted: the job's Unmount ends it, and the
	// volume then removes as usual; a new job mounts the masked clone.
	if err := p.Unmount("app-production@latest", "ci-job"); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove("app-production@latest"); err != nil {
		t.Fatal(err)
	}
	mp := p.MustMount("app-production@masked", "next-job")
	if _, err := os.Stat(filepath.Join(mp, "guestbook")); err != nil {
		t.Fatalf("the masked clone after recover: %v", err)
	}
	if err := p.Unmount("app-production@masked", "next-job"); err != nil {
		t.Fatal(err)
	}
	checkOperatorVolumesAfterRecover(t, p, secret)
}

// Every refusal at start exits 78; the small-filesystem one exited 1,
// which the systemd unit restarts in a loop.
func TestSmallFilesystemRefusalExits78(t *testing.T) {
	RequireRoot(t)
	dir := t.TempDir()
	// The tmpfs's mount point is not under t.TempDir: in the whole suite
	// a process of another test made a mount namespace while it was
	// mounted (seen twice, not found), and that namespace's copy keeps the
	// directory busy after this test unmounts its own, which fails
	// TempDir's removal. The tmpfs itself is unmounted here either way;
	// an empty directory that stays busy is named with its holders.
	state, err := leakcheck.Dir(t, "snapvol-smallfs-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", state).CombinedOutput(); err != nil {
		os.Remove(state)
		t.Fatalf("mounting a small tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		UnmountUnder(state)
		if err := os.Remove(state); err != nil {
			t.Logf("the emptied mount point %s stays (%v); mount namespaces still holding a copy: %v", state, err, namespacesHolding(state))
		}
	})
	p := &Plugin{
		t: t, Dir: dir, StateDir: state, DataRoot: filepath.Join(dir, "data"),
		Socket: filepath.Join(dir, "snapvol.sock"), log: &lockedBuffer{},
		Env: map[string]string{"POOL_SIZE": "1G"},
	}
	code, log := refusedStart(t, p)
	if code != 78 || !strings.Contains(log, "POOL_SIZE") || !strings.Contains(log, state) {
		t.Fatalf("exit status %d, want 78 naming POOL_SIZE and %s:\n%s", code, state, log)
	}
}

// inspectFields is what snapvol volume inspect says of each volume that
// recover must restore: kind, access, source, ref, and keeper's -o ttl.
func inspectFields(t *testing.T, p *Plugin, vols ...string) string {
	t.Helper()
	var rows []map[string]any
	if err := json.Unmarshal([]byte(adminCLI(t, p, append([]string{"volume", "inspect"}, vols...)...)), &rows); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, row := range rows {
		for _, k := range []string{"name", "kind", "access", "source", "ref"} {
			fmt.Fprintf(&b, "%s=%v ", k, row[k])
		}
		// ttl_seconds is the ttl in force, which is SUPERSEDED_TTL for
		// a clone of an older snapshot (as of a cache a second old): only
		// a -o ttl's own, which recover must keep, is compared.
		if row["name"] == "keeper" {
			fmt.Fprintf(&b, "ttl_seconds=%v ", row["ttl_seconds"])
		}
		b.WriteString("\n")
	}
	return b.String()
}

// checkOperatorVolumesAfterRecover: the recovered operator volumes are
// still the operator's: Docker cannot see, mount or remove mask-work, nor
// remove the secret one; snapvol ls lists them; snapshot create --from
// (which takes operator volumes only) takes mask-work.
func checkOperatorVolumesAfterRecover(t *testing.T, p *Plugin, secret string) {
	t.Helper()
	if _, err := p.Get("mask-work"); err == nil {
		t.Error("Docker's Get answers for mask-work, an operator volume made without --docker")
	}
	if _, err := p.Mount("mask-work", "docker-user"); err == nil || !strings.Contains(err.Error(), "belongs to the operator") {
		t.Errorf("a Docker Mount of mask-work after recover: %v, want refused as the operator's", err)
	}
	for _, v := range []string{"mask-work", secret} {
		if err := p.Remove(v); err == nil || !strings.Contains(err.Error(), "belongs to the operator") {
			t.Errorf("a Docker Remove of %s after recover: %v, want refused as the operator's", v, err)
		}
	}
	ls := adminCLI(t, p, "ls")
	for _, v := range []string{secret, "mask-work", "fixture"} {
		if !strings.Contains(ls, v) {
			t.Errorf("snapvol ls after recover does not list %s:\n%s", v, ls)
		}
	}
	adminCLI(t, p, "snapshot", "create", "app-production", "masked-again", "--from", "mask-work")
}

// namespacesHolding lists the pids whose mount namespace has something
// mounted at path.
func namespacesHolding(path string) []string {
	var pids []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/mountinfo")
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n") {
			if f := strings.Fields(l); len(f) > 4 && f[4] == path {
				comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
				pids = append(pids, e.Name()+" ("+strings.TrimSpace(string(comm))+")")
				break
			}
		}
	}
	return pids
}
