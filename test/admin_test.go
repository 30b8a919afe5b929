package test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cli runs the snapvol binary with args and returns its output and error.
func cli(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(HostBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// adminCLI runs a CLI command against p's admin socket and fails the test if
// it fails.
func adminCLI(t *testing.T, p *Plugin, args ...string) string {
	t.Helper()
	out, err := cli(t, nil, append([]string{"--state-dir", p.StateDir}, args...)...)
	if err != nil {
		t.Fatalf("snapvol %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// Help, version, a typo or a bad flag never start the daemon: they answer
// at once and never touch STATE_DIR; in the command (bin/snapvol, which
// execs the daemon for serve) and in the daemon binary (every command built
// in: the managed plugin's entrypoint). version prints the client and
// fails for the server, as docker version does with no daemon.
func TestCLINeverStartsTheDaemonByAccident(t *testing.T) {
	RequireRoot(t)
	state := filepath.Join(t.TempDir(), "state-never-made")
	env := []string{"STATE_DIR=" + state, "SOCKET=" + filepath.Join(t.TempDir(), "s.sock")}
	for _, bin := range []string{CLIBinary(t), HostBinary(t)} {
		for _, tc := range []struct {
			args []string
			ok   bool
			want []string
		}{
			{[]string{"--help"}, true, []string{"ls", "df", "volume", "snapshot", "serve", "version"}},
			{[]string{"help"}, true, []string{"snapshot"}},
			{[]string{"snapshot", "--help"}, true, []string{"create", "ls", "rm", "schedule"}},
			{[]string{"volume", "create", "--help"}, true, []string{"--from"}},
			{[]string{"version"}, false, []string{"Client:", " Version:", "server: snapvol is not running"}},
			{[]string{"version", "--json"}, false, []string{`"client": {`, `"server": null`}},
			{[]string{"lss"}, false, []string{`unknown command "lss"`, "Did you mean this?", "ls"}},
			{[]string{"sl"}, false, []string{`unknown command "sl"`, "Did you mean this?", "ls"}},
			{[]string{"snapshot", "shedule"}, false, []string{`unknown command "shedule"`, "schedule"}},
			{[]string{"--bogus"}, false, []string{"unknown flag"}},
			{[]string{"serve", "extra"}, false, []string{"unknown command"}},
			{[]string{"recover", "extra"}, false, []string{"unknown command"}},
			{[]string{"ls"}, false, []string{"snapvol is not running", state}},
		} {
			done := make(chan struct{})
			var out []byte
			var err error
			go func() {
				cmd := exec.Command(bin, tc.args...)
				cmd.Env = append(os.Environ(), env...)
				out, err = cmd.CombinedOutput()
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatalf("%s %v still running after 20 s: it started the daemon", bin, tc.args)
			}
			if (err == nil) != tc.ok {
				t.Errorf("%s %v: err %v, want ok=%v\n%s", bin, tc.args, err, tc.ok, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("%s %v output does not mention %q:\n%s", bin, tc.args, w, out)
				}
			}
		}
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Fatalf("STATE_DIR %s was touched: %v", state, err)
	}
}

// The operator's commands through the real binary and admin socket: an
// operator volume, a masked snapshot of it registered under the source,
// ls/df/snapshot ls as JSON, and SOURCES letting Docker users clone only
// the masked snapshot.
func TestAdminCommandsOverTheSocket(t *testing.T) {
	p := StartPlugin(t, nil)
	sources := SeedProduction(t, p)
	sock := filepath.Join(p.StateDir, "admin.sock")
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket %s: %v, mode %v; want 0600", sock, err, fi.Mode())
	}
	// DATA_ROOT (every volume's mount point) and the pool are closed to
	// other host users (they were 0755).
	for _, dir := range []string{p.DataRoot, p.Pool()} {
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, mode %v; want 0700", dir, err, fi.Mode())
		}
	}

	adminCLI(t, p, "volume", "create", "mask-work", "--from", "app-production@now", "--docker") // mounted below, as a Docker user would
	mp := p.MustMount("mask-work", "masker")
	if mp == "" {
		t.Fatal("empty mount point")
	}
	if err := os.WriteFile(filepath.Join(mp, "guestbook", "0001.txt"), []byte("masked\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.Unmount("mask-work", "masker"); err != nil {
		t.Fatal(err)
	}
	adminCLI(t, p, "snapshot", "create", "app-production", "masked", "--from", "mask-work")
	out, err := cli(t, nil, "--state-dir", p.StateDir, "snapshot", "create", "app-production", "masked", "--from", "mask-work")
	if err == nil || !strings.Contains(out, "--replace") {
		t.Fatalf("a second create without --replace: %v\n%s", err, out)
	}
	adminCLI(t, p, "volume", "rm", "mask-work")

	var snaps []map[string]any
	if err := json.Unmarshal([]byte(adminCLI(t, p, "snapshot", "ls", "app-production", "--json")), &snaps); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range snaps {
		if s["name"] == "masked" && s["kind"] == "named" && s["from"] == "mask-work" && s["time"] != "" {
			found = true
		}
	}
	if !found {
		t.Fatalf("snapshot ls --json has no named snapshot masked: %v", snaps)
	}
	var vols []map[string]any
	if err := json.Unmarshal([]byte(adminCLI(t, p, "ls", "--json")), &vols); err != nil {
		t.Fatal(err)
	}
	if len(vols) != 1 || vols[0]["name"] != "app-production" || vols[0]["kind"] != "volume" {
		t.Fatalf("ls --json: %v", vols)
	}
	var df map[string]any
	if err := json.Unmarshal([]byte(adminCLI(t, p, "df", "--json")), &df); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"size", "used", "free", "reserve", "consumers"} {
		if _, ok := df[k]; !ok {
			t.Errorf("df --json has no %q: %v", k, df)
		}
	}
	if !strings.Contains(adminCLI(t, p, "ls"), "app-production") {
		t.Error("ls does not list app-production")
	}

	// CI may clone only the masked snapshot.
	p.Env["SOURCES"] = "app-production@masked*"
	p.Stop()
	p.Start()
	if _, err := p.Mount("app-production@latest+ci", "1"); err == nil || !strings.Contains(err.Error(), "SOURCES=app-production@masked*") {
		t.Fatalf("raw production under SOURCES=app-production@masked*: %v", err)
	}
	ci := p.MustMount("app-production@masked+ci", "1")
	if got := ReadFile(t, filepath.Join(ci, "guestbook", "0001.txt")); got != "masked\n" {
		t.Fatalf("CI's clone of the masked snapshot reads %q", got)
	}
	if err := p.Unmount("app-production@masked+ci", "1"); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove("app-production@masked+ci"); err != nil {
		t.Fatal(err)
	}
	CheckLocalInvariants(t, p, sources)
}

// A schedule takes snapshots, keeps the newest N, and survives a restart.
func TestScheduleThroughTheCLI(t *testing.T) {
	p := StartPlugin(t, nil)
	sources := SeedProduction(t, p)
	adminCLI(t, p, "snapshot", "schedule", "app-production", "--every", "1s", "--keep", "2")
	scheduled := func() int {
		var snaps []map[string]any
		if err := json.Unmarshal([]byte(adminCLI(t, p, "snapshot", "ls", "app-production", "--json")), &snaps); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, s := range snaps {
			if s["kind"] == "scheduled" {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(20 * time.Second)
	for scheduled() < 2 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2500 * time.Millisecond) // more are taken; only 2 stay
	if n := scheduled(); n != 2 {
		t.Fatalf("%d scheduled snapshots, want the newest 2", n)
	}
	p.Stop()
	p.Start()
	before := len(snapshotsOf(p, "app-production"))
	time.Sleep(2500 * time.Millisecond)
	if n := scheduled(); n != 2 {
		t.Fatalf("%d scheduled snapshots after a restart, want 2", n)
	}
	if !strings.Contains(p.Log(), "scheduled snapshot taken") || before == 0 {
		t.Fatalf("no scheduled snapshot after the restart (pool had %d)", before)
	}
	adminCLI(t, p, "snapshot", "schedule", "app-production", "--off")
	CheckLocalInvariants(t, p, sources)
}

// A new, empty volume that reuses the name of a removed source is not
// offered the old volume's snapshots: neither a snapshot made by hand
// (NAME@nightly) nor, through @latest, a young one. The previous code
// served the old data for both.
func TestReusedSourceNameGetsNoOldSnapshots(t *testing.T) {
	p := StartPlugin(t, nil)
	RequireTool(t, "btrfs", "btrfs-progs")
	if err := p.Create("reuse", nil); err != nil {
		t.Fatal(err)
	}
	mp := p.MustMount("reuse", "w")
	WriteTree(t, mp, map[string]string{"secret.txt": "old data\n"})
	if err := p.Unmount("reuse", "w"); err != nil {
		t.Fatal(err)
	}
	pool := p.Pool()
	if pool == "" {
		t.Fatal("empty pool path")
	}
	if err := os.MkdirAll(filepath.Join(pool, "snapshots", "reuse"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("btrfs", "subvolume", "snapshot", "-r", filepath.Join(pool, "volumes", "reuse"), filepath.Join(pool, "snapshots", "reuse", "nightly")).CombinedOutput(); err != nil {
		t.Fatalf("btrfs subvolume snapshot: %v\n%s", err, out)
	}
	if err := p.Remove("reuse"); err != nil {
		t.Fatal(err)
	}
	if err := p.Create("reuse", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Mount("reuse@nightly+a", "1"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("the new reuse was offered the old one's nightly: %v", err)
	}
	latest := p.MustMount("reuse@latest+b", "1")
	if _, err := os.Stat(filepath.Join(latest, "secret.txt")); !os.IsNotExist(err) {
		t.Fatalf("reuse@latest of the new, empty volume holds the old volume's file: %v", err)
	}
	if err := p.Unmount("reuse@latest+b", "1"); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove("reuse@latest+b"); err != nil {
		t.Fatal(err)
	}
	// The hand-made snapshot is never snapvol's to delete.
	if _, err := os.Stat(filepath.Join(pool, "snapshots", "reuse", "nightly", "secret.txt")); err != nil {
		t.Fatalf("the snapshot made by hand is gone: %v", err)
	}
	if out, err := exec.Command("btrfs", "subvolume", "delete", filepath.Join(pool, "snapshots", "reuse", "nightly")).CombinedOutput(); err != nil {
		t.Fatalf("cleaning up: %v\n%s", err, out)
	}
}

// Every command and flag docs/operator.md's synopsis shows
// exists in the binary: `snapvol WORDS --help` answers and lists the flags.
func TestREADMEOperatorCommandsExist(t *testing.T) {
	RequireRoot(t)
	block := docBlock(t, "synopsis", "operator-synopsis").Text
	n := 0
	for _, line := range strings.Split(block, "\n") {
		line, _, _ = strings.Cut(line, "#")
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "snapvol" {
			continue
		}
		var words, flags []string
		for _, w := range f[1:] {
			w = strings.Trim(w, "[]|")
			switch {
			case strings.HasPrefix(w, "--"):
				flags = append(flags, w)
			case w != "" && strings.ToLower(w) == w && len(flags) == 0 && !strings.ContainsAny(w, "0123456789"):
				words = append(words, w)
			}
		}
		out, err := cli(t, nil, append(words, "--help")...)
		if err != nil {
			t.Errorf("snapvol %s --help: %v\n%s", strings.Join(words, " "), err, out)
			continue
		}
		for _, fl := range flags {
			if !strings.Contains(out, fl) {
				t.Errorf("snapvol %s has no flag %s:\n%s", strings.Join(words, " "), fl, out)
			}
		}
		n++
	}
	if n < 9 {
		t.Fatalf("only %d commands found in docs/operator.md's synopsis", n)
	}
}
