package test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snapvol/snapvol/test/dockerd"
)

// RegistryVersion is the github.com/distribution/distribution/v3 release
// whose cmd/registry the upgrade tests push plugins to.
const RegistryVersion = "v3.1.2"

var registryBuild struct {
	once sync.Once
	path string
	err  error
}

// RegistryBinary is cmd/registry, built from the Go module proxy once (about
// a minute) into the test cache outside the repository and reused by later
// runs.
func RegistryBinary(t testing.TB) string {
	t.Helper()
	registryBuild.once.Do(func() {
		dir := filepath.Join(dockerd.CacheDir(), "registry-"+RegistryVersion)
		bin := filepath.Join(dir, "registry")
		if _, err := os.Stat(bin); err == nil {
			registryBuild.path = bin
			return
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			registryBuild.err = err
			return
		}
		start := time.Now()
		cmd := exec.Command("go", "install", "github.com/distribution/distribution/v3/cmd/registry@"+RegistryVersion)
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			registryBuild.err = fmt.Errorf("building the registry (go install github.com/distribution/distribution/v3/cmd/registry@%s): %v\n%s", RegistryVersion, err, out)
			return
		}
		registryBuild.path = bin
		fmt.Fprintf(os.Stderr, "built %s in %v\n", bin, time.Since(start).Round(time.Second))
	})
	if registryBuild.err != nil {
		t.Fatal(registryBuild.err)
	}
	return registryBuild.path
}

// StartRegistry runs an OCI registry on a free loopback port, storing in
// the test's temporary directory, and returns its host:port. Docker treats
// a 127.0.0.1 registry as insecure-allowed: plain HTTP is fine.
func StartRegistry(t testing.TB) string {
	t.Helper()
	bin := RegistryBinary(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	config := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n  secret: snapvol-test\n",
		filepath.Join(dir, "data"), addr)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
			t.Logf("registry log:\n%s", lastLines(string(b), 40))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
			t.Fatalf("the registry exited: %s", b)
		default:
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the registry did not answer on %s within 30s", addr)
	return ""
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// RegistryTLS is how StartRegistryTLS serves: its certificate and key
// (PEM files; the certificate for 127.0.0.1) and, when ClientCAs is set,
// the CA certificates (a PEM file) a client certificate must be signed by,
// which the registry then requires.
type RegistryTLS struct {
	Cert, Key string
	ClientCAs string
}

// StartRegistryTLS runs an OCI registry like StartRegistry, over HTTPS
// only (distribution's http.tls), and returns its host:port. ready is the
// client the start waits with (it must trust the certificate, and carry a
// client certificate when ClientCAs is set).
func StartRegistryTLS(t testing.TB, cfg RegistryTLS, ready *http.Client) string {
	t.Helper()
	bin := RegistryBinary(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	tlsConf := fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", cfg.Cert, cfg.Key)
	if cfg.ClientCAs != "" {
		tlsConf += fmt.Sprintf("    clientcas:\n      - %s\n", cfg.ClientCAs)
	}
	config := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n  secret: snapvol-test\n%s",
		filepath.Join(dir, "data"), addr, tlsConf)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
			t.Logf("registry log:\n%s", lastLines(string(b), 40))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		resp, err := ready.Get("https://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		last = err
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
			t.Fatalf("the registry exited: %s", b)
		default:
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the registry did not answer on https://%s within 30s: %v", addr, last)
	return ""
}
