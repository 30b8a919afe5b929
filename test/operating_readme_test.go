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
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/snapvol/snapvol/test/leakcheck"
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

// hostService is the binary make install-host installed, run the way its
// systemd unit runs it (this machine has no systemd as PID 1): the
// settings from /etc/default/snapvol (the unit's EnvironmentFile), stdout
// into one log kept across restarts (the unit's journal), SIGTERM to stop.
// STATE_DIR, DATA_ROOT, SOCKET and POOL_SIZE are the test's.
type hostService struct {
	t                               *testing.T
	bin, envFile                    string
	dir, stateDir, dataRoot, socket string
	journal                         *lockedBuffer
	cmd                             *exec.Cmd
	done                            chan struct{}
}

func newHostService(t *testing.T, bin, envFile string) *hostService {
	dir, err := leakcheck.Dir(t, "snapvol-svc-")
	if err != nil {
		t.Fatal(err)
	}
	s := &hostService{t: t, bin: bin, envFile: envFile, dir: dir, stateDir: filepath.Join(dir, "state"),
		dataRoot: filepath.Join(dir, "data"), socket: filepath.Join(dir, "s.sock"), journal: &lockedBuffer{}}
	t.Cleanup(func() {
		s.stop()
		UnmountUnder(s.dataRoot)
		UnmountUnder(s.stateDir)
		if t.Failed() {
			t.Logf("the service's journal:\n%s", s.journal.String())
		}
		os.RemoveAll(dir)
	})
	return s
}

// environment is the unit's: KEY=VALUE lines of the environment file.
func (s *hostService) environment() []string {
	s.t.Helper()
	data, err := os.ReadFile(s.envFile)
	if err != nil {
		s.t.Fatal(err)
	}
	var env []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") && strings.Contains(l, "=") {
			env = append(env, l)
		}
	}
	return env
}

func (s *hostService) start() {
	s.t.Helper()
	s.cmd = exec.Command(s.bin)
	s.cmd.Env = append(append(os.Environ(), s.environment()...),
		"STATE_DIR="+s.stateDir, "DATA_ROOT="+s.dataRoot, "SOCKET="+s.socket, "POOL_SIZE=1G")
	s.cmd.Stdout, s.cmd.Stderr = s.journal, s.journal
	if err := startDyingWithTest(s.cmd); err != nil {
		s.t.Fatal(err)
	}
	done := make(chan struct{})
	s.done = done
	cmd := s.cmd
	go func() { _ = cmd.Wait(); close(done) }()
	deadline := time.Now().Add(30 * time.Second)
	for activateOK(s.socket) != nil {
		select {
		case <-done:
			s.t.Fatalf("snapvol exited during start:\n%s", s.journal.String())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("snapvol did not answer on %s within 30s:\n%s", s.socket, s.journal.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *hostService) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// mount is something for the metrics and logs to show: a Mount of a new
// tagged clone of production (made once).
func (s *hostService) mount(tag string) {
	s.t.Helper()
	pl := &Plugin{t: s.t, Socket: s.socket, client: &http.Client{Timeout: 40 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", s.socket)
		},
	}}}
	if _, err := pl.Get("app-production"); err != nil {
		if err := pl.Create("app-production", nil); err != nil {
			s.t.Fatal(err)
		}
	}
	if _, err := pl.Mount("app-production@now+"+tag, tag); err != nil {
		s.t.Fatal(err)
	}
	var g volume.GetResponse
	_ = pl.Call("VolumeDriver.Get", volume.GetRequest{Name: "app-production"}, &g)
}

// docs/operating.md's host blocks (systemd, metrics, METRICS_ADDR, logs,
// the scrape configuration), run in order on the binary make install-host
// installs (so snapvol version names what make set). The systemctl lines
// act on hostService; /etc/default/snapvol is the one make install-host
// staged in DESTDIR; journalctl -u snapvol reads the service's journal.
func TestReadmeOperating(t *testing.T) {
	RequireRoot(t)
	RequireTool(t, "make", "make")
	RequireTool(t, "curl", "curl")
	RequireTool(t, "jq", "jq")
	dest := t.TempDir()
	version := fmt.Sprintf("v0.0.0-readme.%d", time.Now().UnixNano())
	listenAddr, metricsAddr := freePort(t), freePort(t)
	bindir := filepath.Join(dest, "usr/local/bin")
	envFile := filepath.Join(dest, "etc/default/snapvol")
	svc := newHostService(t, filepath.Join(bindir, "snapvol"), envFile)

	shEnv := func() []string {
		return append(os.Environ(), "PATH="+bindir+":"+os.Getenv("PATH"), "STATE_DIR="+svc.stateDir)
	}
	journal := filepath.Join(t.TempDir(), "journal")
	subst := strings.NewReplacer("127.0.0.1:9478", listenAddr, "127.0.0.1:9479", metricsAddr,
		"/etc/default/snapvol", envFile, "journalctl -u snapvol -o cat", "cat "+journal)
	// run runs one line of a block; its output is returned.
	run := func(line string) string {
		t.Helper()
		switch line {
		case "make install-host":
			cmd := exec.Command("bash", "-c", line+" DESTDIR="+dest+" VERSION="+version)
			cmd.Dir = RepoRoot()
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", line, err, out)
			}
			return string(out)
		case "systemctl enable --now snapvol":
			svc.start()
			return ""
		case "systemctl restart snapvol":
			svc.stop()
			svc.start()
			return ""
		case "systemctl status snapvol":
			if err := activateOK(svc.socket); err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return "active (running)"
		}
		if strings.HasPrefix(line, "systemctl ") {
			t.Fatalf("this test does not know %q", line)
		}
		if err := os.WriteFile(journal, []byte(svc.journal.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		line = subst.Replace(line)
		if bg, ok := strings.CutSuffix(line, "&"); ok {
			t.Logf("$ %s (in the background)", line)
			cmd := exec.Command("bash", "-c", "exec "+bg)
			cmd.Env = shEnv()
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
			cmd.Env = shEnv()
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

	for _, l := range docBlock(t, "host", "systemd").Commands() {
		run(l)
	}
	svc.mount("r1")

	metrics := docBlock(t, "host", "metrics").Commands()
	want := map[string]string{
		metrics[0]: `snapvol_clones{source="app-production"} 1`,
		metrics[2]: `snapvol_build_info{commit="`,
	}
	for _, l := range metrics {
		if out := run(l); want[l] != "" && !strings.Contains(out, want[l]) {
			t.Errorf("%s: no %q in\n%s", l, want[l], out)
		}
	}

	// METRICS_ADDR: after the restart, the one mount made since is counted.
	addr := docBlock(t, "host", "metrics-addr").Commands()
	if len(addr) != 3 || !strings.HasPrefix(addr[2], "curl ") {
		t.Fatalf("the metrics-addr block is %q: this test knows the setting, the restart and a curl", addr)
	}
	run(addr[0])
	run(addr[1])
	svc.mount("r2")
	if out, w := run(addr[2]), `snapvol_request_duration_seconds_count{op="mount",outcome="ok"} 1`; !strings.Contains(out, w) {
		t.Errorf("%s: no %q in\n%s", addr[2], w, out)
	}

	// Logs: LOG_FORMAT=json, a restart, a mount; the mount's lines share
	// one request id, read from a journal that starts with text lines.
	logs := docBlock(t, "host", "logs-host").Commands()
	if len(logs) != 4 || !strings.Contains(logs[3], "journalctl -u snapvol -o cat") || logs[2] != "snapvol version" {
		t.Fatalf("the logs-host block is %q: this test knows the setting, the restart, snapvol version and journalctl", logs)
	}
	run(logs[0])
	run(logs[1])
	svc.mount("r3")
	if out := run(logs[2]); !strings.Contains(out, version) || strings.Contains(out, "unknown") {
		t.Errorf("%s: %q, want %s and a commit", logs[2], out, version)
	}
	out := run(logs[3])
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
	if !strings.Contains(svc.journal.String(), "level=info") {
		t.Errorf("the journal has no text line from before LOG_FORMAT=json, so the recipe's fromjson? was not put to the test:\n%s", svc.journal.String())
	}

	hostBinaryBlock(t)

	// The scrape configuration names the address snapvol metrics --listen
	// served above.
	cfg := docBlock(t, "host", "scrape-config").Text
	if !strings.Contains(cfg, `targets: ["127.0.0.1:9478"]`) || !strings.Contains(cfg, "job_name: snapvol") || !strings.Contains(strings.Join(metrics, "\n"), "--listen 127.0.0.1:9478") {
		t.Errorf("the scrape configuration does not scrape what snapvol metrics --listen serves:\n%s", cfg)
	}
}

// hostBinaryBlock runs docs/operating.md's legacy-plugin block: make build,
// then the binary as root with the block's settings, STATE_DIR and
// DATA_ROOT moved into a temporary directory and SOCKET there too (the
// block's default socket is the one the host's dockerd reads). It must
// make its pool file, answer Plugin.Activate and stop cleanly on SIGTERM.
func hostBinaryBlock(t *testing.T) {
	lines := docBlock(t, "host", "host-binary").Commands()
	if len(lines) != 2 || lines[0] != "make build" || !strings.HasPrefix(lines[1], "sudo ") {
		t.Fatalf("the host-binary block is %q: this test knows make build and one sudo line", lines)
	}
	build := exec.Command("make", "build")
	build.Dir = RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	dir, err := leakcheck.Dir(t, "snapvol-bin-")
	if err != nil {
		t.Fatal(err)
	}
	state, data, sock := filepath.Join(dir, "state"), filepath.Join(dir, "data"), filepath.Join(dir, "s.sock")
	line := strings.NewReplacer("/var/lib/snapvol", state, "/mnt/snapvol", data).Replace(strings.TrimPrefix(lines[1], "sudo "))
	t.Logf("$ %s (SOCKET=%s)", line, sock)
	// VAR=VALUE … BINARY, as the shell runs it.
	f := strings.Fields(line)
	env := append(os.Environ(), "SOCKET="+sock, "POOL_SIZE=1G")
	for len(f) > 1 && strings.Contains(f[0], "=") {
		env, f = append(env, f[0]), f[1:]
	}
	if len(f) != 1 {
		t.Fatalf("%s: want settings and the binary, nothing else", line)
	}
	cmd := exec.Command(f[0])
	cmd.Dir = RepoRoot()
	cmd.Env = env
	log := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := startDyingWithTest(cmd); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		// Gone before the unmount: a daemon killed while still starting
		// could otherwise mount its pool after it.
		_ = cmd.Process.Kill()
		<-exited
		UnmountUnder(data)
		UnmountUnder(state)
		os.RemoveAll(dir)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for activateOK(sock) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer within 30s:\n%s", line, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Allocated, not sparse, as the block's text says.
	if fi, err := os.Stat(filepath.Join(state, "pool.img")); err != nil || fi.Size() != 1<<30 {
		t.Errorf("%s made no 1G pool.img in STATE_DIR: %v", line, err)
	} else if st := fi.Sys().(*syscall.Stat_t); st.Blocks*512 < fi.Size() {
		t.Errorf("%s: pool.img has %d of its %d bytes allocated: sparse", line, st.Blocks*512, fi.Size())
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("%s: SIGTERM: %v\n%s", line, waitErr, log.String())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not stop within 30s of SIGTERM", line)
	}
}
