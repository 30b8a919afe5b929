package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
)

// freePort is a loopback host:port nothing listens on.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// README, Operating: the metrics, logs and systemd blocks, run on the
// binary make install-host installs (so snapvol version names what make
// set), in host mode. Managed-mode lines (docker plugin set KEY=VALUE) are
// the same settings given to the binary's environment; systemctl needs
// systemd as PID 1, which this machine has not: the notify protocol the
// unit relies on is TestSystemdInstallAndNotify's.
func TestReadmeOperating(t *testing.T) {
	RequireRoot(t)
	RequireTool(t, "make", "make")
	RequireTool(t, "curl", "curl")
	RequireTool(t, "jq", "jq")
	dest := t.TempDir()
	version := fmt.Sprintf("v0.0.0-readme.%d", time.Now().UnixNano())

	sysd := readmeRunBlock(t, "systemd")
	if sysd[0] != "make install-host" {
		t.Fatalf("README's systemd block starts %q", sysd[0])
	}
	install := exec.Command("bash", "-c", sysd[0]+" DESTDIR="+dest+" VERSION="+version)
	install.Dir = RepoRoot()
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", sysd[0], err, out)
	}
	for _, l := range sysd[1:] {
		if _, err := os.Stat("/run/systemd/system"); err != nil {
			t.Logf("not run, systemd is not PID 1 here: %s", l)
		}
	}
	bindir := filepath.Join(dest, "usr/local/bin")

	listenAddr, metricsAddr := freePort(t), freePort(t)
	metricsLines := readmeRunBlock(t, "metrics")
	addrLines := readmeRunBlock(t, "metrics-addr")
	logLines := readmeRunBlock(t, "logs")
	setting := func(line string) (string, string) {
		const prefix = "docker plugin set snapvol "
		if !strings.HasPrefix(line, prefix) {
			t.Fatalf("README line %q: want %s KEY=VALUE first", line, prefix)
		}
		k, v, _ := strings.Cut(strings.TrimPrefix(line, prefix), "=")
		return k, v
	}
	env := map[string]string{}
	for _, l := range []string{addrLines[0], logLines[0]} {
		k, v := setting(l)
		env[k] = strings.ReplaceAll(v, "127.0.0.1:9479", metricsAddr)
	}
	p := startRaw(t, filepath.Join(bindir, "snapvol"), env)
	p.waitSocket()

	// Something to count: a production volume and a clone of it.
	pl := &Plugin{t: t, Socket: p.socket, client: &http.Client{Timeout: 40 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", p.socket)
		},
	}}}
	if err := pl.Create("app-production", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := pl.Mount("app-production@now+readme", "r1"); err != nil {
		t.Fatal(err)
	}
	var g volume.GetResponse
	_ = pl.Call("VolumeDriver.Get", volume.GetRequest{Name: "app-production"}, &g)

	shEnv := append(os.Environ(), "PATH="+bindir+":"+os.Getenv("PATH"), "STATE_DIR="+p.stateDir)
	subst := strings.NewReplacer("127.0.0.1:9478", listenAddr, "127.0.0.1:9479", metricsAddr)
	run := func(line string) string {
		t.Helper()
		line = subst.Replace(line)
		if bg, ok := strings.CutSuffix(line, "&"); ok {
			t.Logf("$ %s (in the background)", line)
			cmd := exec.Command("bash", "-c", "exec "+bg)
			cmd.Env = shEnv
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			return ""
		}
		t.Logf("$ %s", line)
		deadline := time.Now().Add(10 * time.Second)
		for {
			cmd := exec.Command("bash", "-c", "set -o pipefail; "+line)
			cmd.Env = shEnv
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Logf("%s", out)
				return string(out)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v\n%s", line, err, out)
			}
			time.Sleep(200 * time.Millisecond) // a listener started just before
		}
	}
	want := map[string]string{
		metricsLines[0]: `snapvol_clones{source="app-production"} 1`,
		metricsLines[2]: `snapvol_build_info{commit="`,
		addrLines[1]:    `snapvol_request_duration_seconds_count{op="mount",outcome="ok"} 1`,
	}
	for _, l := range append(metricsLines, addrLines[1:]...) {
		out := run(l)
		if w := want[l]; w != "" && !strings.Contains(out, w) {
			t.Errorf("%s: no %q in\n%s", l, w, out)
		}
	}
	if out := run(logLines[1]); !strings.Contains(out, version) || strings.Contains(out, "unknown") {
		t.Errorf("%s: %q, want %s and a commit", logLines[1], out, version)
	}
	logFile := filepath.Join(t.TempDir(), "snapvol.log")
	if err := os.WriteFile(logFile, []byte(p.log.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	journal := strings.Replace(logLines[2], "journalctl -u snapvol -o cat", "cat "+logFile, 1)
	if journal == logLines[2] {
		t.Fatalf("README's logs block no longer reads journalctl -u snapvol -o cat: %s", logLines[2])
	}
	out := run(journal)
	// Every line of the Mount request carries its id: the clone it made
	// and the request's own line.
	var reqs []string
	lines := 0
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("not a JSON line: %q", l)
		}
		lines++
		reqs = append(reqs, fmt.Sprint(e["req"]))
	}
	if lines < 2 || reqs[0] == "<nil>" || strings.Count(strings.Join(reqs, " "), reqs[0]) != lines {
		t.Errorf("the mount's lines do not share one req id: %v\n%s", reqs, out)
	}
	for _, l := range strings.Split(strings.TrimSpace(p.log.String()), "\n") {
		if !json.Valid([]byte(l)) {
			t.Errorf("LOG_FORMAT=json wrote a line that is not JSON: %q", l)
		}
	}

	// The scrape configuration names the address the metrics were read at.
	cfg := strings.Join(readmeRunBlock(t, "scrape-config"), "\n")
	if !strings.Contains(cfg, `targets: ["127.0.0.1:9478"]`) || !strings.Contains(cfg, "job_name: snapvol") {
		t.Errorf("README's scrape configuration:\n%s", cfg)
	}
}
