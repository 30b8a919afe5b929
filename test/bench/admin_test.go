//go:build bench

package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snapvol/snapvol/admin"
	"github.com/snapvol/snapvol/test"
)

// The operator's commands (issue 13): the real binary, as an operator
// runs it on the host, talking to the plugin over its admin socket.

// cli runs the command bin/snapvol (cmd/snapvol, what make install puts on
// PATH) with args against the bench plugin's STATE_DIR and returns how long
// the process took, start to exit, and its stdout.
func (b *bench) cli(args ...string) (time.Duration, []byte) {
	b.t.Helper()
	return b.run(test.CLIBinary(b.t), args...)
}

// run is cli with another binary: the daemon bin/snapvold, which has every
// command built in (the one binary the command used to be).
func (b *bench) run(bin string, args ...string) (time.Duration, []byte) {
	b.t.Helper()
	args = append(args, "--state-dir", b.p.StateDir)
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	el := time.Since(start)
	if err != nil {
		b.t.Fatalf("snapvol %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return el, out
}

func (b *bench) adminClient() *admin.Client { return admin.NewClient(admin.SocketPath(b.p.StateDir)) }

// lsLatency times snapvol ls --json (the binary) and the same request
// from this process, alternating, and checks that both list all volumes.
func (b *bench) lsLatency(volumes int) (cli, api Dist) {
	c := b.adminClient()
	var cs, as []time.Duration
	check := func(what string, n int) {
		if n != volumes {
			b.t.Fatalf("%s listed %d volumes, want %d", what, n, volumes)
		}
	}
	for i := 0; i < b.cfg.lsReps; i++ {
		steps := []func(){
			func() {
				el, out := b.cli("ls", "--json")
				var vs []map[string]any
				if err := json.Unmarshal(out, &vs); err != nil {
					b.t.Fatalf("snapvol ls --json printed no JSON array: %v", err)
				}
				check("snapvol ls --json", len(vs))
				if len(vs) > 0 && vs[0]["name"] == nil {
					b.t.Fatalf("snapvol ls --json: no name in %v", vs[0])
				}
				cs = append(cs, el)
			},
			func() {
				start := time.Now()
				vs, err := c.Volumes()
				el := time.Since(start)
				if err != nil {
					b.t.Fatal(err)
				}
				check("the admin client", len(vs))
				as = append(as, el)
			},
		}
		for j := range steps {
			steps[(i+j)%len(steps)]()
		}
	}
	return NewDist(cs), NewDist(as)
}

// adminLatency is snapvol snapshot create SOURCE NAME --from VOLUME, the
// masking flow's step, against a clone + mount of the same source (what
// a CI job waits for). The operator's clone is made once, first, as the
// README's masking flow does; every snapshot is removed again, untimed.
func (b *bench) adminLatency(res *Results, s *source) {
	const work = "mask-work"
	b.cli("volume", "create", work, "--from", s.name+"@now")
	c := b.adminClient()
	a := &AdminResult{Source: s.name}
	var cliT, apiT, cloneT, verT, daemonT, helloT []time.Duration
	hello := helloBinary(b.t)
	// Warm up: the first @latest takes the snapshot the others reuse,
	// and the first exec of a binary reads it from disk.
	b.cloneOnce(s.name+"@latest+admin-warm", s)
	b.cli("version")
	b.run(test.Binary(b.t), "version")
	timeExec(b.t, hello)
	b.settle()
	for rep := 0; rep < b.cfg.adminReps; rep++ {
		steps := []func(){
			func() {
				name := fmt.Sprintf("masked-cli-%d", rep)
				el, out := b.cli("snapshot", "create", s.name, name, "--from", work)
				if !strings.Contains(string(out), name) {
					b.t.Fatalf("snapvol snapshot create printed %q, which does not name %s", out, name)
				}
				cliT = append(cliT, el)
				if err := c.RemoveSnapshot(s.name, name); err != nil {
					b.t.Fatal(err)
				}
			},
			func() {
				name := fmt.Sprintf("masked-api-%d", rep)
				start := time.Now()
				info, err := c.CreateSnapshot(s.name, name, work, false)
				el := time.Since(start)
				if err != nil || info.Name != name {
					b.t.Fatalf("admin client snapshot create: %+v, %v", info, err)
				}
				apiT = append(apiT, el)
				if err := c.RemoveSnapshot(s.name, name); err != nil {
					b.t.Fatal(err)
				}
			},
			func() { cloneT = append(cloneT, b.cloneOnce(fmt.Sprintf("%s@latest+admin-%d", s.name, rep), s)) },
			func() {
				el, out := b.cli("version")
				if !bytes.Contains(out, []byte("Server:")) {
					b.t.Fatalf("snapvol version did not reach the plugin:\n%s", out)
				}
				verT = append(verT, el)
			},
			func() {
				el, _ := b.run(test.Binary(b.t), "version")
				daemonT = append(daemonT, el)
			},
			func() { helloT = append(helloT, timeExec(b.t, hello)) },
		}
		for j := range steps {
			steps[(j+rep)%len(steps)]()
			b.settle()
		}
	}
	b.cli("volume", "rm", work)
	b.settle()
	a.SnapshotCLI, a.SnapshotAPI, a.CloneLatest, a.Version = NewDist(cliT), NewDist(apiT), NewDist(cloneT), NewDist(verT)
	a.VersionDaemon, a.Hello = NewDist(daemonT), NewDist(helloT)
	res.Admin = a
	b.t.Logf("snapvol snapshot create --from: %s (admin client %s); clone+mount @latest %s; binary / clone+mount %.2fx",
		dist(a.SnapshotCLI), dist(a.SnapshotAPI), dist(a.CloneLatest), ratio(a.SnapshotCLI.P50, a.CloneLatest.P50))
	b.t.Logf("snapvol version %s, snapvold version %s, hello-world Go %s: %.2fx and %.2fx a hello-world",
		dist(a.Version), dist(a.VersionDaemon), dist(a.Hello), ratio(a.Version.P50, a.Hello.P50), ratio(a.VersionDaemon.P50, a.Hello.P50))
}

// helloBinary builds the baseline of a command's start: a static Go
// program that writes one line and exits, built like bin/snapvol.
func helloBinary(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src := "package main\n\nimport \"os\"\n\nfunc main() { os.Stdout.WriteString(\"hello\\n\") }\n"
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hello\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "hello")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the hello-world baseline: %v\n%s", err, out)
	}
	return bin
}

// timeExec is how long bin takes, start to exit, run as b.cli runs the
// command (its stdout read).
func timeExec(t *testing.T, bin string) time.Duration {
	t.Helper()
	start := time.Now()
	out, err := exec.Command(bin).Output()
	el := time.Since(start)
	if err != nil || string(out) != "hello\n" {
		t.Fatalf("%s: %q %v", bin, out, err)
	}
	return el
}
