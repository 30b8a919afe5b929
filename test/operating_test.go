package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/test/leakcheck"
)

// Operating snapvol: what README, Operating, promises, through the real
// binary.

// rawPlugin is a snapvol process started by these tests with a binary of
// their choosing (the harness starts the race-built one under -race).
type rawPlugin struct {
	t        *testing.T
	cmd      *exec.Cmd
	dir      string
	socket   string
	stateDir string
	dataRoot string
	log      *lockedBuffer
	done     chan struct{}
}

func startRaw(t *testing.T, bin string, env map[string]string, extraEnv ...string) *rawPlugin {
	t.Helper()
	RequireRoot(t)
	RequireTool(t, "mkfs.btrfs", "btrfs-progs")
	dir, err := leakcheck.Dir(t, "snapvol-op-")
	if err != nil {
		t.Fatal(err)
	}
	p := &rawPlugin{t: t, dir: dir, socket: filepath.Join(dir, "s.sock"), stateDir: filepath.Join(dir, "state"),
		dataRoot: filepath.Join(dir, "data"), log: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin)
	p.cmd.Env = append(os.Environ(), "STATE_DIR="+p.stateDir, "DATA_ROOT="+p.dataRoot, "SOCKET="+p.socket, "POOL_SIZE=1G")
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Env = append(p.cmd.Env, extraEnv...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := startDyingWithTest(p.cmd); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		UnmountUnder(p.dataRoot)
		UnmountUnder(p.stateDir)
		if t.Failed() {
			t.Logf("snapvol log:\n%s", p.log.String())
		}
		os.RemoveAll(dir)
	})
	return p
}

func (p *rawPlugin) waitSocket() {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			p.t.Fatalf("snapvol exited during start:\n%s", p.log.String())
		default:
		}
		if c, err := net.Dial("unix", p.socket); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.t.Fatalf("snapvol did not serve %s within 30s:\n%s", p.socket, p.log.String())
}

func (p *rawPlugin) status(field string) int64 {
	p.t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		p.t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field+":" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	p.t.Fatalf("no %s in /proc/%d/status", field, p.cmd.Process.Pid)
	return 0
}

func (p *rawPlugin) fds() int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	return len(ents)
}

// activateOK asks the socket what Docker asks first.
func activateOK(socket string) error {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}}}
	resp, err := c.Post("http://plugin/Plugin.Activate", "application/json", strings.NewReader("{}"))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte("VolumeDriver")) {
		return fmt.Errorf("Plugin.Activate: %s %s", resp.Status, b)
	}
	return nil
}

// Issue 12 item 5: a 1 GB request body leaves the plugin's peak RSS under
// 64 MiB, and thousands of idle connections are closed by the timeouts.
func TestSocketHardening(t *testing.T) {
	p := startRaw(t, Binary(t), nil)
	p.waitSocket()
	baseFDs := p.fds()

	// 1 GB of a JSON string, streamed as fast as the plugin reads it.
	conn, err := net.Dial("unix", p.socket)
	if err != nil {
		t.Fatal(err)
	}
	const size = 1 << 30
	head := fmt.Sprintf("POST /VolumeDriver.Create HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"Name\":\"", size)
	start := time.Now()
	sent := int64(0)
	answer := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(conn)
		answer <- string(b)
	}()
	if _, err := conn.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("a"), 1<<20)
	for sent < size {
		n, err := conn.Write(chunk)
		sent += int64(n)
		if err != nil {
			break // the plugin stopped reading: what it should do
		}
	}
	conn.(*net.UnixConn).CloseWrite()
	var got string
	select {
	case got = <-answer:
	case <-time.After(30 * time.Second):
		t.Fatal("no answer to the 1 GB request within 30s")
	}
	conn.Close()
	hwm := p.status("VmHWM")
	t.Logf("1 GB body: the plugin read %d MiB of it before refusing in %v; its peak RSS is %d MiB; answer %q",
		sent>>20, time.Since(start).Round(time.Millisecond), hwm>>10, firstLine(got))
	if !strings.Contains(got, "400 Bad Request") || !strings.Contains(got, "too large") {
		t.Errorf("the 1 GB request was answered %q", got)
	}
	if hwm >= 64<<10 {
		t.Errorf("peak RSS %d KiB after a 1 GB request, want under 64 MiB", hwm)
	}
	if err := activateOK(p.socket); err != nil {
		t.Fatalf("the plugin stopped answering: %v", err)
	}

	// 3,000 connections that never send a byte, and 1,000 kept alive
	// after one request each.
	var idle []net.Conn
	for i := 0; i < 3000; i++ {
		c, err := net.Dial("unix", p.socket)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		idle = append(idle, c)
	}
	for i := 0; i < 1000; i++ {
		c, err := net.Dial("unix", p.socket)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		body := `{"Name":"nothing"}`
		fmt.Fprintf(c, "POST /VolumeDriver.Get HTTP/1.1\r\nHost: plugin\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		r := bufio.NewReader(c)
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("Get on connection %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		idle = append(idle, c)
	}
	held := p.fds()
	t.Logf("%d connections held open: the plugin has %d file descriptors (%d before)", len(idle), held, baseFDs)
	if held < baseFDs+3900 {
		t.Fatalf("the plugin holds only %d descriptors with %d connections open", held, len(idle))
	}
	// Each must be closed by the plugin: a read returns EOF.
	start = time.Now()
	var wg sync.WaitGroup
	closedAt := make([]time.Duration, len(idle))
	for i, c := range idle {
		wg.Add(1)
		go func(i int, c net.Conn) {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(IdleTimeoutForTest + 15*time.Second))
			_, err := c.Read(make([]byte, 1))
			if err == io.EOF {
				closedAt[i] = time.Since(start)
			}
			c.Close()
		}(i, c)
	}
	wg.Wait()
	var never int
	var maxFresh, maxUsed time.Duration
	for i, d := range closedAt {
		switch {
		case d == 0:
			never++
		case i < 3000 && d > maxFresh:
			maxFresh = d
		case i >= 3000 && d > maxUsed:
			maxUsed = d
		}
	}
	t.Logf("closed by the plugin: the 3000 silent connections within %v, the 1000 idle kept-alive ones within %v; %d never", maxFresh.Round(time.Millisecond), maxUsed.Round(time.Millisecond), never)
	if never > 0 {
		t.Errorf("%d connections were never closed by the plugin", never)
	}
	time.Sleep(time.Second)
	if n := p.fds(); n > baseFDs+10 {
		t.Errorf("the plugin still has %d descriptors (%d before the connections)", n, baseFDs)
	}
	if err := activateOK(p.socket); err != nil {
		t.Fatalf("the plugin stopped answering: %v", err)
	}
}

// IdleTimeoutForTest is plugin.IdleTimeout (package main cannot be
// imported): how long a kept-alive connection may sit idle.
const IdleTimeoutForTest = 30 * time.Second

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return strings.TrimSpace(s[:i])
	}
	return s
}

// sdListener is a NOTIFY_SOCKET: a unixgram socket collecting what the
// plugin sends, as systemd does.
type sdListener struct {
	path string
	conn *net.UnixConn
	msgs chan string
}

func listenNotify(t *testing.T) *sdListener {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	l := &sdListener{path: path, conn: conn, msgs: make(chan string, 100)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(l.msgs)
				return
			}
			l.msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return l
}

// next waits for a message holding want, returning it.
func (l *sdListener) next(t *testing.T, want string, within time.Duration) (string, time.Time) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case m, ok := <-l.msgs:
			if !ok {
				t.Fatalf("notify socket closed waiting for %s", want)
			}
			for _, line := range strings.Split(m, "\n") {
				if line == want {
					return m, time.Now()
				}
			}
		case <-deadline:
			t.Fatalf("no %s within %v", want, within)
		}
	}
}

// make install-host into a DESTDIR, then the installed binary under the
// installed unit's protocol: READY=1 only once Plugin.Activate answers,
// WATCHDOG=1 with WatchdogSec, STOPPING=1 at SIGTERM.
func TestSystemdInstallAndNotify(t *testing.T) {
	RequireRoot(t)
	RequireTool(t, "make", "make")
	dest := t.TempDir()
	version := fmt.Sprintf("v0.0.0-systemd-test.%d", time.Now().UnixNano())
	cmd := exec.Command("make", "-s", "install-host", "DESTDIR="+dest, "VERSION="+version)
	cmd.Dir = RepoRoot()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make install-host: %v\n%s", err, out)
	}
	t.Logf("make install-host DESTDIR=%s:\n%s", dest, out)
	bin := filepath.Join(dest, "usr/local/bin/snapvol")
	unit, err := os.ReadFile(filepath.Join(dest, "etc/systemd/system/snapvol.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "ExecStart=/usr/local/bin/snapvol serve", "WatchdogSec=", "EnvironmentFile=-/etc/default/snapvol"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the installed unit lacks %q", want)
		}
	}
	if _, err := os.Stat(filepath.Join(dest, "etc/default/snapvol")); err != nil {
		t.Errorf("no /etc/default/snapvol installed: %v", err)
	}
	if sa, err := exec.LookPath("systemd-analyze"); err == nil {
		// The unit parses; its ExecStart is absent outside DESTDIR, which
		// systemd-analyze reports and this ignores.
		out, _ := exec.Command(sa, "verify", filepath.Join(dest, "etc/systemd/system/snapvol.service")).CombinedOutput()
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if line != "" && !strings.Contains(line, "/usr/local/bin/snapvol") {
				t.Errorf("systemd-analyze verify: %s", line)
			}
		}
	}
	// No plugin runs yet: version prints the command's build (Client) and
	// fails for the server; snapvold, beside it, is the same build.
	for _, b := range []string{bin, filepath.Join(dest, "usr/local/bin/snapvold")} {
		vout, _ := exec.Command(b, "version").CombinedOutput()
		client, _, _ := strings.Cut(string(vout), "server:")
		if !strings.Contains(client, "Client:") || !strings.Contains(client, version) || strings.Contains(client, "unknown") {
			t.Fatalf("installed %s version: %q; want a Client section with %s and a commit", b, vout, version)
		}
	}

	sd := listenNotify(t)
	p := startRaw(t, bin, map[string]string{"LOG_FORMAT": "json"}, "NOTIFY_SOCKET="+sd.path, "WATCHDOG_USEC=1000000")
	msg, _ := sd.next(t, "READY=1", 60*time.Second)
	// The moment READY=1 arrives the socket answers (it was checked
	// before it was sent).
	if err := activateOK(p.socket); err != nil {
		t.Fatalf("READY=1 arrived but Plugin.Activate does not answer: %v", err)
	}
	if !strings.Contains(msg, "STATUS=serving") {
		t.Errorf("READY=1 without a STATUS: %q", msg)
	}
	if !strings.Contains(p.log.String(), `"msg":"reconciled"`) {
		t.Errorf("READY=1 before reconcile finished:\n%s", p.log.String())
	}
	sd.next(t, "WATCHDOG=1", 5*time.Second)
	sd.next(t, "WATCHDOG=1", 5*time.Second)
	if err := p.cmd.Process.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sd.next(t, "STOPPING=1", 10*time.Second)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("snapvol did not exit within 30s of SIGTERM")
	}
	if !p.cmd.ProcessState.Success() {
		t.Errorf("snapvol exited %v after SIGTERM", p.cmd.ProcessState)
	}
	// The start-up line names the version and commit the build set.
	for _, line := range strings.Split(p.log.String(), "\n") {
		if strings.Contains(line, `"msg":"snapvol starting"`) {
			var e map[string]any
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatal(err)
			}
			if e["version"] != version || len(fmt.Sprint(e["commit"])) != 40 {
				t.Errorf("start-up line %s: want version %s and a 40-hex commit", line, version)
			}
			return
		}
	}
	t.Errorf("no start-up line in:\n%s", p.log.String())
}
