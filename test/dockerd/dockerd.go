// Package dockerd runs a private Docker engine for end-to-end tests:
// Debian's dockerd (20.10) or the current Docker Engine that
// scripts/test-deps.sh builds (see Engines), with its own data root, exec
// root, pid file and socket, no bridge and no iptables, stopped and
// cleaned up when the test ends. It
// also builds the snapvol managed plugin bundle, installs it into such an
// engine and imports a busybox image from Debian's busybox-static, so tests
// need no registry and no network.
package dockerd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snapvol/snapvol/internal/roottest"
	"github.com/snapvol/snapvol/test/leakcheck"
	"golang.org/x/sys/unix"
)

// Image is the busybox image Start makes in every engine.
const Image = "snapvol-busybox:latest"

// Require fails the test, naming what to install, unless everything a
// private engine needs is here. It never skips.
func Require(t testing.TB) {
	t.Helper()
	roottest.Require(t, "a private dockerd")
	for _, tool := range []struct{ name, pkg string }{
		{"containerd", "containerd (a dependency of docker.io)"},
		{DockerCLI(), "docker.io"}, {"mkfs.btrfs", "btrfs-progs"}, {"busybox", "busybox-static"},
	} {
		if _, err := exec.LookPath(tool.name); err != nil {
			t.Fatalf("%s not found: apt-get install -y %s (%s installs everything the tests need)", tool.name, tool.pkg, DepsScript)
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Fatalf("/dev/loop-control missing: the snapvol plugin needs loop devices (modprobe loop): %v", err)
	}
}

// DockerCLI is the docker client the tests run: $SNAPVOL_DOCKER, else
// docker from PATH. Newer clients negotiate the API down to dockerd 20.10's.
func DockerCLI() string {
	if c := os.Getenv("SNAPVOL_DOCKER"); c != "" {
		return c
	}
	return "docker"
}

// Options change how the engine runs.
type Options struct {
	// LiveRestore keeps containers (and plugins) running across a restart.
	LiveRestore bool
	// Engine is the dockerd to run; nil is Debian's (see Debian).
	Engine *Engine
}

// Daemon is a private dockerd.
type Daemon struct {
	t        testing.TB
	opts     Options
	Engine   Engine
	Dir      string // data root, config, logs, client config
	ExecRoot string // short, under /run: plugin socket paths must fit 108 bytes
	Socket   string
	Host     string // DOCKER_HOST value
	cmd      *exec.Cmd
	exited   chan struct{}
	logPath  string
}

// Start starts a private engine, waits until it answers, and imports the
// busybox image. Everything is stopped, unmounted and removed at cleanup.
func Start(t testing.TB, opts Options) *Daemon {
	t.Helper()
	Require(t)
	eng := Debian(t)
	if opts.Engine != nil {
		eng = *opts.Engine
	}
	dir, err := os.MkdirTemp("", "snapvol-dockerd-")
	if err != nil {
		t.Fatal(err)
	}
	execRoot, err := os.MkdirTemp("/run", "svd")
	if err != nil {
		t.Fatal(err)
	}
	// dockerd serves each plugin at EXEC_ROOT/plugins/<64-hex id>/snapvol.sock.
	if n := len(execRoot) + len("/plugins/") + 64 + len("/snapvol.sock"); n > 107 {
		t.Fatalf("exec root %s makes plugin socket paths %d bytes long, over the 107 a unix socket allows", execRoot, n)
	}
	// The run's leak check looks below both (test/leakcheck).
	leakcheck.Track(dir, t.Name())
	leakcheck.Track(execRoot, t.Name())
	d := &Daemon{
		t: t, opts: opts, Engine: eng, Dir: dir, ExecRoot: execRoot,
		Socket:  filepath.Join(dir, "docker.sock"),
		logPath: filepath.Join(dir, "dockerd.log"),
	}
	d.Host = "unix://" + d.Socket
	for _, sub := range []string{"data", "client"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// An empty daemon.json: a host's /etc/docker/daemon.json must not apply.
	if err := os.WriteFile(filepath.Join(dir, "daemon.json"), []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.cleanup)
	d.start()
	d.ImportBusybox(Image)
	return d
}

func (d *Daemon) args() []string {
	a := []string{
		"--config-file", filepath.Join(d.Dir, "daemon.json"),
		"--data-root", filepath.Join(d.Dir, "data"),
		"--exec-root", d.ExecRoot,
		"--pidfile", filepath.Join(d.Dir, "docker.pid"),
		"-H", d.Host,
		"--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false",
		"--log-level=info",
	}
	if sd := os.Getenv("SNAPVOL_DOCKERD_STORAGE_DRIVER"); sd != "" {
		a = append(a, "--storage-driver", sd)
	}
	if d.opts.LiveRestore {
		a = append(a, "--live-restore")
	}
	return a
}

func (d *Daemon) start() {
	d.t.Helper()
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		d.t.Fatal(err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "\n===== %s %s started by the test at %s\n", d.Engine.Dockerd, strings.Join(d.args(), " "), time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(d.Engine.Dockerd, d.args()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+filepath.Join(d.Dir, "client"))
	if d.Engine.PathDir != "" {
		// Its runc first, for dockerd, its containerd and the shims.
		cmd.Env = append(cmd.Env, "PATH="+d.Engine.PathDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	// Its own process group, so a terminal's ^C reaches the test first and
	// the cleanup stops the daemon in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		d.t.Fatalf("starting dockerd: %v", err)
	}
	d.cmd = cmd
	d.exited = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(cmd, d.exited)

	client := d.httpClient(2 * time.Second)
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-d.exited:
			d.t.Fatalf("dockerd %s exited during start (%v); its log:\n%s", d.Engine.Version, cmd.ProcessState, d.LogTail(60))
		default:
		}
		resp, err := client.Get("http://docker/_ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.t.Fatalf("dockerd did not answer on %s within 90s; its log:\n%s", d.Socket, d.LogTail(60))
}

func (d *Daemon) httpClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var nd net.Dialer
			return nd.DialContext(ctx, "unix", d.Socket)
		},
	}}
}

// Running reports whether the dockerd process is alive.
func (d *Daemon) Running() bool {
	if d.cmd == nil {
		return false
	}
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM and waits for dockerd to exit (it stops its containers,
// plugins and containerd first).
func (d *Daemon) Stop() {
	d.t.Helper()
	if err := d.stop(); err != nil {
		d.t.Fatal(err)
	}
}

func (d *Daemon) stop() error {
	if !d.Running() {
		d.cmd = nil
		return nil
	}
	_ = d.cmd.Process.Signal(unix.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(90 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
		d.cmd = nil
		return fmt.Errorf("dockerd did not stop within 90s of SIGTERM; killed. Its log:\n%s", d.LogTail(60))
	}
	d.cmd = nil
	return nil
}

// Restart stops and starts the engine with the same directories: enabled
// plugins are enabled again and volumes are listed again.
func (d *Daemon) Restart() {
	d.t.Helper()
	d.RestartAfter(func() {})
}

// RestartAfter is Restart that runs during while the engine is down: with
// LiveRestore, containers (and plugins) keep running then, and a test can
// make one exit behind Docker's back.
func (d *Daemon) RestartAfter(during func()) {
	d.t.Helper()
	d.Stop()
	during()
	d.start()
}

// Env is the environment for docker clients (docker, docker-compose, make)
// aimed at this engine.
func (d *Daemon) Env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DOCKER_HOST=") && !strings.HasPrefix(kv, "DOCKER_CONTEXT=") && !strings.HasPrefix(kv, "DOCKER_CONFIG=") {
			env = append(env, kv)
		}
	}
	return append(env, "DOCKER_HOST="+d.Host, "DOCKER_CONFIG="+filepath.Join(d.Dir, "client"))
}

// Command returns a command aimed at this engine.
func (d *Daemon) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = d.Env()
	return cmd
}

// Docker runs the docker CLI and returns its stdout; the error carries
// stderr.
func (d *Daemon) Docker(args ...string) (string, error) {
	return d.run(nil, DockerCLI(), args...)
}

// DockerInput is Docker with stdin.
func (d *Daemon) DockerInput(stdin []byte, args ...string) (string, error) {
	return d.run(stdin, DockerCLI(), args...)
}

func (d *Daemon) run(stdin []byte, name string, args ...string) (string, error) {
	cmd := d.Command(name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// MustDocker is Docker, failing the test on error.
func (d *Daemon) MustDocker(args ...string) string {
	d.t.Helper()
	out, err := d.Docker(args...)
	if err != nil {
		d.t.Fatal(err)
	}
	return out
}

// Log is dockerd's log (plugins log through it).
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(d.logPath)
	return string(b)
}

// LogTail is the last n lines of the log.
func (d *Daemon) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(d.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ImportBusybox makes image from Debian's busybox-static with docker import,
// through the same script the demo uses.
func (d *Daemon) ImportBusybox(image string) {
	d.t.Helper()
	if out, err := d.run(nil, filepath.Join(RepoRoot(), "scripts", "busybox-image.sh"), image); err != nil {
		d.t.Fatalf("importing busybox: %v\n%s", err, out)
	}
}

// RepoRoot is the module root: the first directory above the working
// directory (go test runs in the package's) holding go.mod and config.json.
func RepoRoot() string {
	wd, err := os.Getwd()
	if err == nil {
		for dir := wd; dir != "/"; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
				if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
					return dir
				}
			}
		}
	}
	return filepath.Join(wd, "..")
}

// Bundle builds the managed plugin bundle (config.json + rootfs) from binary
// with the script `make plugin` uses, on a copy of the repository's rootfs/
// skeleton in the test's temporary directory (the repository's build/ and
// rootfs/ are left alone). It takes well under a second.
func Bundle(t testing.TB, binary string) string {
	t.Helper()
	return BundleWith(t, binary, "config.json")
}

// BundleWith is Bundle with another of the repository's plugin configs
// (config.portworx.json: the Portworx bundle's privileges).
func BundleWith(t testing.TB, binary, config string) string {
	t.Helper()
	dir := t.TempDir()
	root := RepoRoot()
	rootfs := filepath.Join(dir, "rootfs-src")
	if out, err := exec.Command("cp", "-a", filepath.Join(root, "rootfs"), rootfs).CombinedOutput(); err != nil {
		t.Fatalf("copying the rootfs skeleton: %v\n%s", err, out)
	}
	cmd := exec.Command(filepath.Join(root, "scripts", "plugin-rootfs.sh"), binary, filepath.Join(root, config),
		rootfs, filepath.Join(dir, "plugin"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the plugin bundle: %v\n%s", err, out)
	}
	return filepath.Join(dir, "plugin")
}

// Plugin is a snapvol managed plugin installed in a Daemon.
type Plugin struct {
	d        *Daemon
	Name     string // as given to install; Docker calls it Name:latest
	StateDir string // host directory bound at /var/lib/snapvol
}

// InstallPlugin installs and enables the bundle as name with
// scripts/plugin-install.sh (what make install runs), its state in a fresh
// host directory, plus settings (KEY=VALUE for docker plugin set).
func (d *Daemon) InstallPlugin(bundle, name string, settings ...string) *Plugin {
	d.t.Helper()
	state := filepath.Join(d.Dir, "state-"+strings.ReplaceAll(name, ":", "-"))
	args := append([]string{"install", DockerCLI(), name, bundle, state}, settings...)
	if out, err := d.run(nil, filepath.Join(RepoRoot(), "scripts", "plugin-install.sh"), args...); err != nil {
		d.t.Fatalf("installing the plugin: %v\n%s\ndockerd log:\n%s", err, out, d.LogTail(40))
	}
	return &Plugin{d: d, Name: name, StateDir: state}
}

// ID is the plugin's full ID.
func (p *Plugin) ID() (string, error) {
	out, err := p.d.Docker("plugin", "inspect", "--format", "{{.Id}}", p.Name)
	return strings.TrimSpace(out), err
}

// PID is the plugin process's pid on the host, found by the cgroup runc
// puts it in (named after the plugin ID).
func (p *Plugin) PID() (int, error) {
	id, err := p.ID()
	if err != nil {
		return 0, err
	}
	if len(id) != 64 {
		return 0, fmt.Errorf("plugin %s: odd ID %q", p.Name, id)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			cg, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
			if err != nil || !bytes.Contains(cg, []byte(id)) {
				continue
			}
			cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if bytes.HasPrefix(cmdline, []byte("/snapvol\x00")) {
				return pid, nil
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no process of plugin %s (%s) found", p.Name, id[:12])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Pool is the btrfs pool as the plugin sees it, reached through its
// mount namespace (/proc/PID/root): the pool is mounted only in there.
func (p *Plugin) Pool() (string, error) {
	pid, err := p.PID()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("/proc/%d/root/var/lib/snapvol/pool", pid), nil
}

// PoolFile is the pool file on the host.
func (p *Plugin) PoolFile() string { return filepath.Join(p.StateDir, "pool.img") }

// LoopDevices lists the loop devices bound to the pool file.
func (p *Plugin) LoopDevices() ([]string, error) {
	out, err := exec.Command("losetup", "--noheadings", "--output", "NAME", "--associated", p.PoolFile()).Output()
	if err != nil {
		return nil, fmt.Errorf("losetup --associated %s: %w", p.PoolFile(), err)
	}
	return strings.Fields(string(out)), nil
}

func (d *Daemon) cleanup() {
	if err := d.stop(); err != nil {
		d.t.Error(err)
	}
	// Processes dockerd left (its containerd, shims, plugins) are found by
	// the directories only this daemon uses, and killed by pid.
	for _, pid := range d.leftovers() {
		d.t.Logf("killing process %d left by the private dockerd", pid)
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	for _, dir := range []string{d.Dir, d.ExecRoot} {
		if err := unmountUnder(dir); err != nil {
			d.t.Errorf("cleanup: %v", err)
		}
	}
	if d.t.Failed() {
		d.t.Logf("private dockerd log (last 120 lines):\n%s", d.LogTail(120))
	}
	for _, dir := range []string{d.ExecRoot, d.Dir} {
		if err := os.RemoveAll(dir); err != nil {
			d.t.Errorf("cleanup: %v", err)
		}
	}
}

func (d *Daemon) leftovers() []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(cmdline, []byte(d.ExecRoot+"/")) || bytes.Contains(cmdline, []byte(d.Dir+"/")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// unmountUnder detaches every mount at or below dir, deepest first, and
// reports any it could not.
func unmountUnder(dir string) error {
	var left []string
	for attempt := 0; attempt < 5; attempt++ {
		data, err := os.ReadFile("/proc/thread-self/mountinfo")
		if err != nil {
			return err
		}
		var targets []string
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
				targets = append(targets, f[4])
			}
		}
		if len(targets) == 0 {
			return nil
		}
		left = nil
		for i := len(targets) - 1; i >= 0; i-- {
			if err := unix.Unmount(targets[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				left = append(left, fmt.Sprintf("%s: %v", targets[i], err))
			}
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("could not unmount %s", strings.Join(left, "; "))
	}
	return nil
}
