// Package test holds snapvol's integration and end-to-end tests and the
// helpers they share. The tests use the real thing: the bin/snapvol binary,
// a btrfs pool on a loop file, the VolumeDriver protocol over a unix socket.
package test

import (
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
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/snapvol/snapvol/internal/roottest"
	"github.com/snapvol/snapvol/test/leakcheck"
	"golang.org/x/sys/unix"
)

// RequireRoot skips a test that needs root unless root tests were asked
// for (make test, .ci/run), and then fails it if it is not root.
func RequireRoot(t testing.TB) {
	t.Helper()
	roottest.Require(t, "btrfs loop pool, mounts")
}

// RequireTool fails if a command is missing, naming the Debian package.
func RequireTool(t testing.TB, tool, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		t.Fatalf("%s not found: install Debian's %s (bash .ci/run installs everything the tests need)", tool, pkg)
	}
}

// RepoRoot is the module root, found from this file's location.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// builds holds one build of the snapvol binary per flavour.
var builds sync.Map // output name -> *build

type build struct {
	once sync.Once
	err  error
}

// buildBinary builds ./plugin (the daemon) into bin/NAME once per test
// process.
func buildBinary(t testing.TB, name string, race bool) string {
	return buildPackage(t, name, "./plugin", race)
}

// buildPackage builds pkg into bin/NAME once per test process.
func buildPackage(t testing.TB, name, pkg string, race bool) string {
	t.Helper()
	root := RepoRoot()
	out := filepath.Join(root, "bin", name)
	v, _ := builds.LoadOrStore(name, &build{})
	b := v.(*build)
	b.once.Do(func() {
		args, cgo := []string{"build", "-o", out}, "CGO_ENABLED=0"
		if race {
			args, cgo = []string{"build", "-race", "-o", out}, "CGO_ENABLED=1"
		}
		cmd := exec.Command("go", append(args, pkg)...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), cgo)
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("building bin/%s: %v\n%s", name, err, msg)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return out
}

// Binary is the static daemon bin/snapvold (./plugin, every command built
// in), as make build makes it: what a plugin bundle ships as /snapvol (its
// rootfs has no C library).
func Binary(t testing.TB) string { return buildBinary(t, "snapvold", false) }

// CLIBinary is the operator's command bin/snapvol (./cmd/snapvol), as make
// build makes it, with the daemon bin/snapvold beside it (which its serve
// and recover exec).
func CLIBinary(t testing.TB) string {
	Binary(t)
	return buildPackage(t, "snapvol", "./cmd/snapvol", false)
}

// HostBinary is the snapvol the tests run directly on the host: race-built
// when the tests are (the crash and chaos figures are quoted "with -race"),
// else the static one.
func HostBinary(t testing.TB) string {
	if raceBuild {
		return buildBinary(t, "snapvold-race", true)
	}
	return Binary(t)
}

// Plugin is a bin/snapvol process serving on its own socket, with its own
// STATE_DIR (and so its own loop-mounted pool) and DATA_ROOT.
type Plugin struct {
	t        testing.TB
	Dir      string
	StateDir string
	DataRoot string
	Socket   string
	Env      map[string]string
	log      *lockedBuffer
	client   *http.Client

	mu     sync.Mutex // guards cmd and waitCh: crash tests kill from a timer
	cmd    *exec.Cmd
	waitCh chan struct{}
	// changes counts the requests that may change storage since the
	// process started: right after a start, reconcile has swept, so
	// whatever it may collect is collected.
	changes atomic.Int64
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// StartPlugin starts bin/snapvol with the default local backend on a fresh
// 1 GiB pool file; env overrides or adds settings. Everything it mounted is
// unmounted at the end of the test.
func StartPlugin(t testing.TB, env map[string]string) *Plugin {
	t.Helper()
	RequireRoot(t)
	RequireTool(t, "mkfs.btrfs", "btrfs-progs")
	dir, err := leakcheck.Dir(t, "snapvol-test-")
	if err != nil {
		t.Fatal(err)
	}
	p := &Plugin{
		t: t, Dir: dir, StateDir: filepath.Join(dir, "state"), DataRoot: filepath.Join(dir, "data"),
		Socket: filepath.Join(dir, "snapvol.sock"), log: &lockedBuffer{},
		Env: map[string]string{"POOL_SIZE": "1G", "LOG_LEVEL": "debug"},
	}
	for k, v := range env {
		p.Env[k] = v
	}
	p.client = unixClient(p.Socket)
	t.Cleanup(p.cleanup)
	p.Start()
	return p
}

// Start (re)starts the process and waits for its socket.
func (p *Plugin) Start() {
	p.t.Helper()
	exited := p.Spawn()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			p.Kill()
			p.t.Fatalf("snapvol exited during start:\n%s", p.Log())
		default:
		}
		if c, err := net.Dial("unix", p.Socket); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.t.Fatalf("snapvol did not serve %s within 30s:\n%s", p.Socket, p.Log())
}

// Spawn starts the process and returns at once, with a channel closed
// when it exits: crash tests kill it while it is still starting.
func (p *Plugin) Spawn() <-chan struct{} {
	p.t.Helper()
	bin := HostBinary(p.t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "STATE_DIR="+p.StateDir, "DATA_ROOT="+p.DataRoot, "SOCKET="+p.Socket)
	for k, v := range p.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	// The daemon dies with the test process: a test binary that dies
	// (-timeout, a kill) runs no cleanup, and a daemon left serving
	// would keep its pool and clones mounted, and mount again, for good.
	_ = os.Remove(p.Socket)
	p.changes.Store(0)
	if err := startDyingWithTest(cmd); err != nil {
		p.t.Fatalf("starting snapvol: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	p.mu.Lock()
	p.cmd, p.waitCh = cmd, exited
	p.mu.Unlock()
	return exited
}

// startDyingWithTest starts cmd so that it gets SIGKILL when the test
// process dies. The kernel sends the parent-death signal when the *thread*
// that forked the child ends, not the process, and Go ends a thread when a
// goroutine locked to it returns (test/osdserver's mount-namespace helper
// does, by design): a daemon forked on such a thread was killed in the
// middle of an unrelated test (TestPortworxServerDown saw EOF) and left its
// pool mounted. So every such child is forked on one thread that is locked
// for the life of the test binary and never ends before it.
func startDyingWithTest(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	done := make(chan error, 1)
	forkThread <- func() { done <- cmd.Start() }
	return <-done
}

// forkThread runs the Start of every child that must die with the tests,
// on a thread that only ends with the process.
var forkThread = func() chan<- func() {
	ch := make(chan func())
	go func() {
		runtime.LockOSThread() // never unlocked: this thread must not end
		for start := range ch {
			start()
		}
	}()
	return ch
}()

// Stop sends SIGTERM and waits for a clean exit.
func (p *Plugin) Stop() {
	p.t.Helper()
	cmd, done := p.take()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(unix.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		p.t.Fatalf("snapvol did not stop on SIGTERM within 30s:\n%s", p.Log())
	}
	if st := cmd.ProcessState; st != nil && !st.Success() {
		p.t.Errorf("snapvol exited with %v after SIGTERM:\n%s", st, p.Log())
	}
}

// Kill sends SIGKILL (a crash at whatever point the process is) and waits
// for the process to be gone. Safe to call from another goroutine.
func (p *Plugin) Kill() {
	cmd, done := p.take()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// take hands over the running process (nil if none) and the channel closed
// when it exits, so only one of Stop and Kill ends it.
func (p *Plugin) take() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cmd, done := p.cmd, p.waitCh
	p.cmd = nil
	return cmd, done
}

// PID is the running process's id, 0 if none.
func (p *Plugin) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Log is everything the process printed.
func (p *Plugin) Log() string { return p.log.String() }

// Pool is the mounted btrfs pool directory.
func (p *Plugin) Pool() string { return filepath.Join(p.StateDir, "pool") }

func (p *Plugin) cleanup() {
	p.Kill()
	UnmountUnder(p.DataRoot)
	UnmountUnder(p.StateDir)
	if p.t.Failed() {
		p.t.Logf("snapvol log:\n%s", p.Log())
	}
	os.RemoveAll(p.Dir)
}

// UnmountUnder detaches every mount at or below dir, deepest first, and
// lazily: after a killed daemon a clone may still be open.
func UnmountUnder(dir string) { leakcheck.UnmountUnder(dir) }

// Call sends one VolumeDriver request and decodes the reply into out. It
// returns the plugin's error message as an error.
func (p *Plugin) Call(method string, req, out any) error {
	switch method {
	case "VolumeDriver.Create", "VolumeDriver.Mount", "VolumeDriver.Unmount", "VolumeDriver.Remove":
		p.changes.Add(1)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	resp, err := p.client.Post("http://plugin/"+method, "application/vnd.docker.plugins.v1.2+json", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("transport: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var e volume.ErrorResponse
	if json.Unmarshal(data, &e) == nil && e.Err != "" {
		return &PluginError{Method: method, Msg: e.Err}
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d: %s", method, resp.StatusCode, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// PluginError is an error the plugin answered with.
type PluginError struct{ Method, Msg string }

func (e *PluginError) Error() string { return e.Method + ": " + e.Msg }

// Create, Mount, Unmount, Remove, Get and List wrap the protocol.
func (p *Plugin) Create(name string, opts map[string]string) error {
	return p.Call("VolumeDriver.Create", volume.CreateRequest{Name: name, Options: opts}, nil)
}

func (p *Plugin) Mount(name, id string) (string, error) {
	var r volume.MountResponse
	err := p.Call("VolumeDriver.Mount", volume.MountRequest{Name: name, ID: id}, &r)
	return r.Mountpoint, err
}

func (p *Plugin) Unmount(name, id string) error {
	return p.Call("VolumeDriver.Unmount", volume.UnmountRequest{Name: name, ID: id}, nil)
}

func (p *Plugin) Remove(name string) error {
	return p.Call("VolumeDriver.Remove", volume.RemoveRequest{Name: name}, nil)
}

func (p *Plugin) Get(name string) (*volume.Volume, error) {
	var r volume.GetResponse
	err := p.Call("VolumeDriver.Get", volume.GetRequest{Name: name}, &r)
	return r.Volume, err
}

func (p *Plugin) List() ([]*volume.Volume, error) {
	var r volume.ListResponse
	err := p.Call("VolumeDriver.List", struct{}{}, &r)
	return r.Volumes, err
}

func (p *Plugin) Path(name string) (string, error) {
	var r volume.PathResponse
	err := p.Call("VolumeDriver.Path", volume.PathRequest{Name: name}, &r)
	return r.Mountpoint, err
}

func (p *Plugin) Capabilities() (volume.Capability, error) {
	var r volume.CapabilitiesResponse
	err := p.Call("VolumeDriver.Capabilities", struct{}{}, &r)
	return r.Capabilities, err
}

// MustMount mounts or fails the test.
func (p *Plugin) MustMount(name, id string) string {
	p.t.Helper()
	mp, err := p.Mount(name, id)
	if err != nil {
		p.t.Fatalf("mount %s: %v", name, err)
	}
	return mp
}

// unixClient is an HTTP client of the unix socket at path.
func unixClient(path string) *http.Client {
	return &http.Client{Timeout: 40 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}
