package test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// scheduleOf is snapvol snapshot schedule SOURCE --json of p, decoded
// into its keys (nil: no schedule).
func scheduleOf(t *testing.T, p *Plugin, source string) map[string]any {
	t.Helper()
	out := adminCLI(t, p, "snapshot", "schedule", source, "--json")
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("snapshot schedule %s --json: %v\n%s", source, err, out)
	}
	return m
}

// waitSchedule polls source's schedule on p until ok says it is as
// wanted, failing after within.
func waitSchedule(t *testing.T, p *Plugin, source string, within time.Duration, what string, ok func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		m := scheduleOf(t, p, source)
		if ok(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("within %v the schedule of %s never showed %s: %v\nplugin log:\n%s", within, source, what, m, lastLines(p.Log(), 30))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func lsFits100(t *testing.T, out string) {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if n := len([]rune(l)); n > 100 {
			t.Errorf("snapvol ls/df: %d columns, want at most 100: %q", n, l)
		}
	}
}

// A schedule whose snapshots are pushed (docs/fleets.md, fleet-schedule):
// refused at once, naming PUBLISH, for a source PUBLISH does not let go;
// a push that fails (a wrong password) is logged with the registry and
// repository, shown by snapshot schedule and snapvol ls, and the next
// tick's snapshot is pushed once the credentials are right; a CI host
// pulls what the schedule pushed, sees production's next change, and its
// snapvol ls, df and replica ls show the replica source, its tag, age and
// repository, and with the registry down how old its copy is.
func TestFleetSchedulePush(t *testing.T) {
	reg, stopRegistry := startFleetRegistry(t, fleetHtpasswd)
	env, cmds := fleetDoc(t, "fleet-schedule", reg)
	if len(cmds) != 1 || len(cmds[0]) < 8 || cmds[0][0] != "snapshot" || cmds[0][1] != "schedule" || cmds[0][len(cmds[0])-2] != "--push" {
		t.Fatalf("docs/fleets.md's fleet-schedule block changed: %v %v", env, cmds)
	}
	// Every second rather than the documented hour.
	for i := range cmds[0][:len(cmds[0])-1] {
		if cmds[0][i] == "--every" {
			cmds[0][i+1] = "1s"
		}
	}
	source, target := cmds[0][2], cmds[0][len(cmds[0])-1]
	repo, tag, _ := strings.Cut(strings.TrimPrefix(target, reg+"/"), ":")
	repo = reg + "/" + repo
	if env["PUBLISH"] != source+"@scheduled-*" || tag == "" {
		t.Fatalf("docs/fleets.md's fleet-schedule block: PUBLISH %q for %s, push to %s", env["PUBLISH"], source, target)
	}
	creds := dockerConfig(t, reg, "fleet", "wrong")
	env["REGISTRY_CONFIG"] = creds
	prod := StartPlugin(t, env)
	if err := prod.Create(source, nil); err != nil {
		t.Fatal(err)
	}
	writeMarker(t, prod, source, "v1")
	if err := prod.Create("other-db", nil); err != nil {
		t.Fatal(err)
	}

	// PUBLISH does not let other-db go: refused now, not at every tick.
	out, err := cli(t, nil, "--state-dir", prod.StateDir, "snapshot", "schedule", "other-db", "--every", "1s", "--keep", "2", "--push", repo+":other")
	if err == nil || !strings.Contains(out, "PUBLISH") || !strings.Contains(out, "other-db@scheduled-*") {
		t.Fatalf("a pushed schedule PUBLISH refuses: %v\n%s; want a refusal naming PUBLISH and other-db@scheduled-*", err, out)
	}
	if m := scheduleOf(t, prod, "other-db"); m != nil {
		t.Fatalf("the refused schedule was set: %v", m)
	}

	// The documented command; the first pushes fail on a wrong password.
	out = adminCLI(t, prod, cmds[0]...)
	if !strings.Contains(out, "each pushed to "+target) {
		t.Fatalf("snapshot schedule --push said:\n%s", out)
	}
	failed := waitSchedule(t, prod, source, 30*time.Second, "a failed push", func(m map[string]any) bool { return m["push_error"] != nil })
	if e := failed["push_error"].(string); !strings.Contains(e, repo) || !strings.Contains(e, "docker login") || failed["push"] != target || failed["pushed"] != nil {
		t.Fatalf("a push with a wrong password: %v; want an error naming %s and docker login, nothing pushed", failed, repo)
	}
	if log := prod.Log(); !strings.Contains(log, "scheduled push failed") || !strings.Contains(log, `registry="`+reg+`"`) || !strings.Contains(log, "repository="+strings.TrimPrefix(repo, reg+"/")+" ") {
		t.Fatalf("the failed push is not logged with the registry and repository:\n%s", lastLines(log, 30))
	}
	if out := adminCLI(t, prod, "snapshot", "schedule", source); !strings.Contains(out, "FAILED (retried with the next snapshot)") || !strings.Contains(out, "docker login") {
		t.Fatalf("snapshot schedule after a failed push:\n%s", out)
	}
	out = adminCLI(t, prod, "ls")
	if !strings.Contains(out, "SCHEDULED PUSHES FAILING") || !strings.Contains(out, source+" -> "+target+": failed ") {
		t.Fatalf("snapvol ls after a failed scheduled push:\n%s", out)
	}
	lsFits100(t, out)

	// The right password: the next tick's snapshot is pushed.
	if err := os.WriteFile(filepath.Join(creds, "config.json"), mustRead(t, filepath.Join(dockerConfig(t, reg, "fleet", "fleet-secret"), "config.json")), 0o600); err != nil {
		t.Fatal(err)
	}
	pushed := waitSchedule(t, prod, source, 30*time.Second, "a push that worked", func(m map[string]any) bool { return m["pushed"] != nil && m["push_error"] == nil })
	if _, err := time.Parse(time.RFC3339, pushed["pushed"].(string)); err != nil {
		t.Fatalf("pushed %v: %v", pushed["pushed"], err)
	}
	if out := adminCLI(t, prod, "ls"); strings.Contains(out, "SCHEDULED PUSHES FAILING") {
		t.Fatalf("snapvol ls after the push worked still lists it as failing:\n%s", out)
	}

	// The CI host pulls what the schedule pushed.
	ci := StartPlugin(t, map[string]string{"REPLICAS": source + "=" + repo, "PULL_EVERY": "0", "REGISTRY_CONFIG": dockerConfig(t, reg, "fleet", "fleet-secret")})
	adminCLI(t, ci, "pull", source+"@"+tag)
	job1 := source + "@" + tag + "+job1"
	if got := readMarker(t, ci.MustMount(job1, "job1")); got != "v1" {
		t.Fatalf("the CI clone of the scheduled push sees %q; want v1", got)
	}
	out = adminCLI(t, ci, "ls")
	lsFits100(t, out)
	if !strings.Contains(out, "REPLICAS") || !replicaRow(out, source, tag, "ok", repo) {
		t.Fatalf("snapvol ls on the CI host: no REPLICAS row for %s %s (ok, %s):\n%s", source, tag, repo, out)
	}
	out = adminCLI(t, ci, "df")
	lsFits100(t, out)
	if !replicaRow(out, source, tag, "ok", repo) {
		t.Fatalf("snapvol df on the CI host: no REPLICAS row for %s %s:\n%s", source, tag, out)
	}
	reps := replicaJSON(t, ci)
	if reps[0]["error"] != nil || reps[0]["pulled"] == nil || reps[0]["registry"] != reg || reps[0]["repository"] != repo {
		t.Fatalf("replica ls --json: %v", reps[0])
	}
	var du struct {
		Replicas []map[string]any `json:"replicas"`
	}
	if err := json.Unmarshal([]byte(adminCLI(t, ci, "df", "--json")), &du); err != nil || len(du.Replicas) != 1 || du.Replicas[0]["source"] != source || len(du.Replicas[0]) != len(reps[0]) {
		t.Fatalf("df --json: %v; replicas %v", err, du.Replicas)
	}

	// Production changes; a later scheduled push carries it.
	writeMarker(t, prod, source, "v2")
	deadline := time.Now().Add(45 * time.Second)
	for n := 2; ; n++ {
		adminCLI(t, ci, "pull", source+"@"+tag)
		id := fmt.Sprintf("job%d", n)
		name := source + "@" + tag + "+" + id
		got := readMarker(t, ci.MustMount(name, id))
		if err := ci.Unmount(name, id); err != nil {
			t.Fatal(err)
		}
		if got == "v2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("within 45s no scheduled push carried production's change (a CI clone sees %q)\nproduction log:\n%s", got, lastLines(prod.Log(), 30))
		}
		time.Sleep(time.Second)
	}

	// The registry down: the production host's pushes fail naming it,
	// and the CI host says how old the copy its clones get is.
	stopRegistry()
	waitSchedule(t, prod, source, 30*time.Second, "a push failing on the registry down", func(m map[string]any) bool {
		e, _ := m["push_error"].(string)
		return strings.Contains(e, reg)
	})
	if out, err := cli(t, nil, "--state-dir", ci.StateDir, "pull", source); err == nil {
		t.Fatalf("pull with the registry down worked:\n%s", out)
	}
	out = adminCLI(t, ci, "ls")
	lsFits100(t, out)
	if !replicaRow(out, source, tag, "failing", repo) || !strings.Contains(out, source+": the last pull FAILED; clones get the newest copy here, ") {
		t.Fatalf("snapvol ls on the CI host with the registry down:\n%s", out)
	}
	reps = replicaJSON(t, ci)
	if e, _ := reps[0]["error"].(string); !strings.Contains(e, reg) || reps[0]["newest_age_seconds"] == nil {
		t.Fatalf("replica ls --json with the registry down: %v; want an error naming %s and newest_age_seconds", reps[0], reg)
	}
	if err := ci.Unmount(job1, "job1"); err != nil {
		t.Error(err)
	}
	adminCLI(t, prod, "snapshot", "schedule", source, "--off")
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// replicaRow reports whether out (snapvol ls or df) has a REPLICAS row of
// source's tag in state, from repo (cut to the 100 columns).
func replicaRow(out, source, tag, state, repo string) bool {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 6 && f[0] == source && f[1] == tag && f[len(f)-2] == state && strings.HasPrefix(repo, strings.TrimSuffix(f[len(f)-1], "...")) {
			return true
		}
	}
	return false
}

// replicaJSON is snapvol replica ls --json of p: one replica source, every
// key on its row and on its tags' rows, times RFC 3339.
func replicaJSON(t *testing.T, p *Plugin) []map[string]any {
	t.Helper()
	out := adminCLI(t, p, "replica", "ls", "--json")
	var reps []map[string]any
	if err := json.Unmarshal([]byte(out), &reps); err != nil || len(reps) != 1 {
		t.Fatalf("replica ls --json: %v\n%s", err, out)
	}
	keys := []string{"source", "repository", "registry", "tags", "pulled", "error", "newest", "newest_age_seconds"}
	if len(reps[0]) != len(keys) {
		t.Errorf("replica ls --json: %d keys, want %v: %v", len(reps[0]), keys, reps[0])
	}
	for _, k := range keys {
		if _, ok := reps[0][k]; !ok {
			t.Errorf("replica ls --json: no %q: %v", k, reps[0])
		}
	}
	tags, _ := reps[0]["tags"].([]any)
	if len(tags) != 1 {
		t.Fatalf("replica ls --json: tags %v; want the one pulled", reps[0]["tags"])
	}
	tg := tags[0].(map[string]any)
	for _, k := range []string{"tag", "uuid", "snapshot", "time", "age_seconds"} {
		if tg[k] == nil {
			t.Errorf("replica ls --json: tag row without %q: %v", k, tg)
		}
	}
	if _, err := time.Parse(time.RFC3339, tg["time"].(string)); err != nil {
		t.Errorf("replica ls --json: tag time %v: %v", tg["time"], err)
	}
	return reps
}

// A scheduled push to a registry that never answers holds up nothing:
// while it hangs, snapvol ls, snapshot create and a Docker clone's
// create, mount and unmount answer at once and the schedule keeps taking
// snapshots (their pushes wait for the hung one: one at a time); when the
// registry goes, the push fails naming it.
func TestFleetScheduleNeverBlocks(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never answered
			mu.Unlock()
		}
	}()
	closeAll := func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
	t.Cleanup(closeAll)
	hung := l.Addr().String()

	prod := StartPlugin(t, map[string]string{"PUBLISH": "app-production@scheduled-*"})
	SeedProduction(t, prod)
	adminCLI(t, prod, "snapshot", "schedule", "app-production", "--every", "1s", "--keep", "3", "--push", hung+"/data/app-production")
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(conns)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no scheduled push reached the registry within 30s\n%s", lastLines(prod.Log(), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
	first := scheduleOf(t, prod, "app-production")["last"]
	timed := func(what string, f func() error) {
		t.Helper()
		start := time.Now()
		if err := f(); err != nil {
			t.Fatalf("%s while a scheduled push hangs: %v", what, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s took %v while a scheduled push hangs", what, d)
		}
	}
	timed("snapvol ls", func() error { _, err := cli(t, nil, "--state-dir", prod.StateDir, "ls"); return err })
	timed("snapshot create", func() error {
		_, err := cli(t, nil, "--state-dir", prod.StateDir, "snapshot", "create", "app-production", "named1")
		return err
	})
	timed("a Docker clone's create", func() error { return prod.Create("app-production@latest+job", nil) })
	timed("its mount", func() error { _, err := prod.Mount("app-production@latest+job", "job"); return err })
	timed("its unmount", func() error { return prod.Unmount("app-production@latest+job", "job") })
	time.Sleep(2500 * time.Millisecond)
	sc := scheduleOf(t, prod, "app-production")
	if sc["last"] == first || sc["pushed"] != nil || sc["push_error"] != nil {
		t.Fatalf("while a push hangs: schedule %v (first snapshot at %v); want later snapshots, no push done or failed yet", sc, first)
	}
	if !strings.Contains(prod.Log(), "the one before is still running") {
		t.Errorf("no log line says a tick's push waited for the hung one:\n%s", lastLines(prod.Log(), 20))
	}
	// The registry goes: the hung push fails, naming it.
	closeAll()
	sc = waitSchedule(t, prod, "app-production", 30*time.Second, "the hung push failing", func(m map[string]any) bool { return m["push_error"] != nil })
	if e := sc["push_error"].(string); !strings.Contains(e, hung) {
		t.Fatalf("push_error %q: want it to name %s", e, hung)
	}
	adminCLI(t, prod, "snapshot", "schedule", "app-production", "--off")
}
