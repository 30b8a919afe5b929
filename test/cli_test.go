package test

import (
	"encoding/json"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

// snapvol runs the command bin/snapvol (cmd/snapvol) against p's admin
// socket and returns its output; it fails the test if the command fails.
func snapvolCLI(t *testing.T, p *Plugin, args ...string) string {
	t.Helper()
	cmd := exec.Command(CLIBinary(t), append([]string{"--state-dir", p.StateDir}, args...)...)
	cmd.Env = os.Environ()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("snapvol %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func keySet(m map[string]any) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ",")
}

// The command against a real plugin: version names the running plugin
// (Server) beside the command (Client); ls --json has the same keys on a
// plain volume's row and a clone's; ls fits 100 columns; volume inspect
// shows one volume; a schedule is shown by schedule SOURCE and snapshot
// ls; commands that printed nothing on success (volume rm, schedule
// --off, snapshot rm) say what they did.
func TestCLIAgainstThePlugin(t *testing.T) {
	p := StartPlugin(t, nil)
	sources := SeedProduction(t, p)

	v := snapvolCLI(t, p, "version")
	client, server, ok := strings.Cut(v, "Server:")
	if !ok || !strings.Contains(client, "Client:") || !strings.Contains(server, "Backend:  local") || !strings.Contains(server, "Started:") {
		t.Fatalf("snapvol version:\n%s", v)
	}

	const clone = "app-production@latest+job-4711"
	p.MustMount(clone, "c1")
	var rows []map[string]any
	if err := json.Unmarshal([]byte(snapvolCLI(t, p, "ls", "--json")), &rows); err != nil {
		t.Fatal(err)
	}
	byName := map[string]map[string]any{}
	for _, r := range rows {
		byName[r["name"].(string)] = r
	}
	plain, cl := byName["app-production"], byName[clone]
	if plain == nil || cl == nil || keySet(plain) != keySet(cl) {
		t.Fatalf("ls --json: a plain volume's keys %s, a clone's %s", keySet(plain), keySet(cl))
	}
	if plain["source"] != nil || cl["source"] != "app-production" || cl["age_seconds"] == nil {
		t.Errorf("ls --json rows: %v / %v", plain, cl)
	}
	table := snapvolCLI(t, p, "ls")
	for _, l := range strings.Split(strings.TrimSpace(table), "\n") {
		if len(l) > 100 {
			t.Errorf("snapvol ls: %d columns: %q", len(l), l)
		}
	}
	if !strings.Contains(table, "idle 24h") {
		t.Errorf("snapvol ls: the mounted clone's EXPIRES is not idle 24h:\n%s", table)
	}
	var insp []map[string]any
	if err := json.Unmarshal([]byte(snapvolCLI(t, p, "volume", "inspect", clone)), &insp); err != nil || len(insp) != 1 || insp[0]["snapshot"] == nil {
		t.Fatalf("volume inspect: %v %v", insp, err)
	}
	if err := p.Unmount(clone, "c1"); err != nil {
		t.Fatal(err)
	}

	if out := snapvolCLI(t, p, "snapshot", "schedule", "app-production"); !strings.Contains(out, "no schedule") {
		t.Errorf("schedule with none set: %q", out)
	}
	snapvolCLI(t, p, "snapshot", "schedule", "app-production", "--every", "1h", "--keep", "24")
	if out := snapvolCLI(t, p, "snapshot", "schedule", "app-production"); !strings.Contains(out, "every 1h0m0s, the newest 24 kept") {
		t.Errorf("snapshot schedule app-production: %q", out)
	}
	if out := snapvolCLI(t, p, "snapshot", "ls", "app-production"); !strings.Contains(out, "every 1h0m0s, the newest 24 kept") {
		t.Errorf("snapshot ls does not show the schedule:\n%s", out)
	}
	var sc map[string]any
	if err := json.Unmarshal([]byte(snapvolCLI(t, p, "snapshot", "schedule", "app-production", "--json")), &sc); err != nil || sc["every_seconds"] != float64(3600) {
		t.Errorf("schedule --json: %v %v", sc, err)
	}
	if out := snapvolCLI(t, p, "snapshot", "schedule", "app-production", "--off"); !strings.Contains(out, "app-production: no schedule") {
		t.Errorf("schedule --off printed %q", out)
	}
	snapvolCLI(t, p, "snapshot", "create", "app-production", "nightly")
	if out := snapvolCLI(t, p, "snapshot", "rm", "app-production", "nightly"); out != "app-production@nightly: removed\n" {
		t.Errorf("snapshot rm printed %q", out)
	}
	if out := snapvolCLI(t, p, "volume", "rm", clone); out != clone+": removed\n" {
		t.Errorf("volume rm printed %q", out)
	}
	CheckLocalInvariants(t, p, sources)
}
