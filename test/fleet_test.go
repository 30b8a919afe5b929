package test

import (
	"encoding/base64"
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
)

// startFleetRegistry runs a distribution/v3 registry on loopback like
// StartRegistry, with htpasswd auth when htpasswd (a file's content) is
// set, and returns its address and a func that stops it (the registry
// down).
func startFleetRegistry(t *testing.T, htpasswd string) (string, func()) {
	t.Helper()
	bin := RegistryBinary(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	auth := ""
	if htpasswd != "" {
		if err := os.WriteFile(filepath.Join(dir, "htpasswd"), []byte(htpasswd), 0o600); err != nil {
			t.Fatal(err)
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: snapvol-test\n    path: %s\n", filepath.Join(dir, "htpasswd"))
	}
	config := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n  secret: snapvol-test\n%s",
		filepath.Join(dir, "data"), addr, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-done
	}
	t.Cleanup(func() {
		stop()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
			t.Logf("registry log:\n%s", lastLines(string(b), 40))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + addr + "/v2/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return addr, stop
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the registry did not answer on %s within 30s", addr)
	return "", nil
}

// writeMarker writes marker.txt into volume name of p (mounted for it).
func writeMarker(t *testing.T, p *Plugin, name, content string) {
	t.Helper()
	mp := p.MustMount(name, "marker-writer")
	if mp == "" {
		t.Fatal("empty mount point")
	}
	if err := os.WriteFile(filepath.Join(mp, "marker.txt"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.Unmount(name, "marker-writer"); err != nil {
		t.Fatal(err)
	}
}

func readMarker(t *testing.T, mp string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(mp, "marker.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type pushOut struct {
	Digest   string   `json:"digest"`
	Layers   int      `json:"layers"`
	Uploaded []string `json:"uploaded"`
	Bytes    int64    `json:"bytes"`
	Full     bool     `json:"full"`
}

func push(t *testing.T, p *Plugin, env []string, snap, repo string) (pushOut, string, error) {
	t.Helper()
	out, err := cli(t, env, "--state-dir", p.StateDir, "push", snap, repo, "--json")
	var r pushOut
	if err == nil {
		if jerr := json.Unmarshal([]byte(out), &r); jerr != nil {
			t.Fatalf("push --json: %v\n%s", jerr, out)
		}
	}
	return r, out, err
}

// Two snapvol hosts with their own pools and one registry: the production
// host pushes app-production@masked, the CI host pulls it on first use and
// clones it; a change on production is pushed as one incremental layer, a
// new CI clone sees it and a running one does not; raw refs never leave
// (PUBLISH); a replica source is never a Docker volume; with the registry
// down clones come from the local copy.
func TestFleetPushPull(t *testing.T) {
	reg, stopRegistry := startFleetRegistry(t, "")
	repo := reg + "/data/app-production"
	prodEnv, prodCmds := fleetDoc(t, "fleet-production", reg)
	ciEnv, ciCmds := fleetDoc(t, "fleet-ci", reg)
	if prodEnv["PUBLISH"] != "app-production@masked*" || len(prodCmds) != 1 || prodCmds[0][0] != "push" || ciEnv["REPLICAS"] != "app-production="+repo || len(ciCmds) != 1 || ciCmds[0][0] != "pull" {
		t.Fatalf("docs/fleets.md's hosts changed: production %v %v, CI %v %v", prodEnv, prodCmds, ciEnv, ciCmds)
	}
	prod := StartPlugin(t, prodEnv)
	SeedProduction(t, prod)
	writeMarker(t, prod, "app-production", "v1")
	// Data enough that a full stream is far larger than a change.
	mp := prod.MustMount("app-production", "bulk")
	if mp == "" {
		t.Fatal("empty mount point")
	}
	bulk := make([]byte, 4<<20)
	for i := range bulk {
		bulk[i] = byte(i*7 + i>>9)
	}
	if err := os.WriteFile(filepath.Join(mp, "bulk.bin"), bulk, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := prod.Unmount("app-production", "bulk"); err != nil {
		t.Fatal(err)
	}
	adminCLI(t, prod, "snapshot", "create", "app-production", "masked")

	first, out, err := push(t, prod, nil, prodCmds[0][1], prodCmds[0][2])
	if err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	if !first.Full || first.Layers != 1 || len(first.Uploaded) != 1 || first.Bytes == 0 {
		t.Fatalf("first push: %+v; want one full layer uploaded", first)
	}
	// The same snapshot again: nothing to upload, the tag stays.
	again, out, err := push(t, prod, nil, "app-production@masked", repo)
	if err != nil || len(again.Uploaded) != 0 || again.Digest != first.Digest {
		t.Fatalf("push of the same snapshot: %+v %v\n%s", again, err, out)
	}

	// Raw production never leaves: PUBLISH allows masked* only.
	adminCLI(t, prod, "snapshot", "create", "app-production", "raw")
	if _, out, err := push(t, prod, nil, "app-production@raw", repo+":raw"); err == nil || !strings.Contains(out, "PUBLISH") {
		t.Fatalf("push of a raw ref: %v\n%s; want a refusal naming PUBLISH", err, out)
	}

	ci := StartPlugin(t, ciEnv)
	// The replica source itself is never a Docker volume.
	if err := ci.Create("app-production", nil); err == nil || !strings.Contains(err.Error(), "replica source") {
		t.Fatalf("create of the replica source's plain name: %v; want a refusal", err)
	}
	if err := ci.Create("app-production@now+x", nil); err == nil {
		t.Fatal("@now of a replica source was accepted")
	}
	// First use pulls (within the Create's budget).
	if err := ci.Create("app-production@masked+job1", nil); err != nil {
		t.Fatalf("first use on the CI host: %v\n%s", err, ci.Log())
	}
	old := ci.MustMount("app-production@masked+job1", "job1")
	if old == "" || readMarker(t, old) != "v1" {
		t.Fatalf("job1 sees %q; want v1", readMarker(t, old))
	}

	// Production changes; the masked name moves; the push sends one
	// incremental layer.
	writeMarker(t, prod, "app-production", "v2")
	adminCLI(t, prod, "snapshot", "create", "app-production", "masked", "--replace")
	second, out, err := push(t, prod, nil, "app-production@masked", repo)
	if err != nil {
		t.Fatalf("second push: %v\n%s", err, out)
	}
	if second.Full || second.Layers != 2 || len(second.Uploaded) != 1 || second.Uploaded[0] == first.Uploaded[0] || second.Bytes*10 > first.Bytes {
		t.Fatalf("second push: %+v (first %+v); want one new incremental layer, smaller than the full one", second, first)
	}

	out = adminCLI(t, ci, append(ciCmds[0], "--json")...)
	var pulled struct {
		Tags []struct {
			Applied int  `json:"applied"`
			New     bool `json:"new"`
		} `json:"tags"`
	}
	if err := json.Unmarshal([]byte(out), &pulled); err != nil || len(pulled.Tags) != 1 || pulled.Tags[0].Applied != 1 || !pulled.Tags[0].New {
		t.Fatalf("pull: %v\n%s; want one layer applied", err, out)
	}
	if err := ci.Create("app-production@masked+job2", nil); err != nil {
		t.Fatal(err)
	}
	fresh := ci.MustMount("app-production@masked+job2", "job2")
	if got := readMarker(t, fresh); got != "v2" {
		t.Fatalf("a new CI clone sees %q; want v2", got)
	}
	if got := readMarker(t, old); got != "v1" {
		t.Fatalf("the running CI clone sees %q; want v1 still", got)
	}
	latest := ci.MustMount("app-production@latest+job3", "job3")
	if got := readMarker(t, latest); got != "v2" {
		t.Fatalf("@latest on the CI host sees %q; want v2 (the newest pulled)", got)
	}

	// The registry down: pull says which registry, clones come from the
	// local copy.
	stopRegistry()
	if out, err := cli(t, nil, "--state-dir", ci.StateDir, "pull", "app-production"); err == nil || !strings.Contains(out, reg) {
		t.Fatalf("pull with the registry down: %v\n%s; want an error naming %s", err, out, reg)
	}
	down := ci.MustMount("app-production@masked+job4", "job4")
	if got := readMarker(t, down); got != "v2" {
		t.Fatalf("a clone with the registry down sees %q; want v2 from the local copy", got)
	}
	v, err := ci.Get("app-production@masked+job4")
	if err != nil {
		t.Fatal(err)
	}
	if v.Status["replica_age"] == nil || v.Status["replica_age"] == "" || !strings.Contains(fmt.Sprint(v.Status["registry_error"]), reg) {
		t.Fatalf("Status of a clone made with the registry down: %v; want replica_age and a registry_error naming %s", v.Status, reg)
	}
	for _, v := range []struct{ name, id string }{{"app-production@masked+job1", "job1"}, {"app-production@masked+job2", "job2"}, {"app-production@latest+job3", "job3"}, {"app-production@masked+job4", "job4"}} {
		if err := ci.Unmount(v.name, v.id); err != nil {
			t.Error(err)
		}
	}
}

// fleetHtpasswd is user fleet, password fleet-secret (bcrypt, as
// distribution's htpasswd auth wants; made with libxcrypt's crypt).
const fleetHtpasswd = "fleet:$2b$05$sUcu3SeQDYzVBjr0lnozKeNuM8keYqGgXiu.kqHBWzElVbIPFRNLC\n"

// dockerConfig writes a docker config.json holding user:password for
// registry into a new directory (what REGISTRY_CONFIG names).
func dockerConfig(t *testing.T, registry, user, password string) string {
	t.Helper()
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	data := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, registry, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A registry with htpasswd auth: the production host pushes with the
// credentials docker login would have stored (REGISTRY_CONFIG), a CI host
// with a wrong password gets an error naming the registry and the
// repository and saying to log in, and one with the right password pulls.
func TestFleetRegistryAuth(t *testing.T) {
	reg, _ := startFleetRegistry(t, fleetHtpasswd)
	repo := reg + "/data/app-production"
	prod := StartPlugin(t, map[string]string{"PUBLISH": "app-production@masked", "REGISTRY_CONFIG": dockerConfig(t, reg, "fleet", "fleet-secret")})
	SeedProduction(t, prod)
	writeMarker(t, prod, "app-production", "v1")
	adminCLI(t, prod, "snapshot", "create", "app-production", "masked")
	if _, out, err := push(t, prod, nil, "app-production@masked", repo); err != nil {
		t.Fatalf("push with the right credentials: %v\n%s", err, out)
	}

	bad := StartPlugin(t, map[string]string{"REPLICAS": "app-production=" + repo, "PULL_EVERY": "0", "REGISTRY_CONFIG": dockerConfig(t, reg, "fleet", "wrong")})
	out, err := cli(t, nil, "--state-dir", bad.StateDir, "pull", "app-production@masked")
	if err == nil || !strings.Contains(out, repo) || !strings.Contains(out, "docker login") {
		t.Fatalf("pull with a wrong password: %v\n%s; want an error naming %s and saying to docker login", err, out, repo)
	}
	t.Logf("wrong password: %s", out)
	if err := bad.Create("app-production@masked+job", nil); err == nil || !strings.Contains(err.Error(), repo) {
		t.Fatalf("first use with a wrong password: %v; want an error naming %s", err, repo)
	}

	good := StartPlugin(t, map[string]string{"REPLICAS": "app-production=" + repo, "PULL_EVERY": "0", "REGISTRY_CONFIG": dockerConfig(t, reg, "fleet", "fleet-secret")})
	adminCLI(t, good, "pull", "app-production@masked")
	mp := good.MustMount("app-production@masked+job", "job")
	if got := readMarker(t, mp); got != "v1" {
		t.Fatalf("the CI clone sees %q; want v1", got)
	}
	if err := good.Unmount("app-production@masked+job", "job"); err != nil {
		t.Fatal(err)
	}
}

// fleetDoc reads a host block of docs/fleets.md with the example registry
// replaced by reg: the settings its snapvol serve line sets, and its other
// snapvol commands' arguments.
func fleetDoc(t *testing.T, name, reg string) (map[string]string, [][]string) {
	t.Helper()
	env := map[string]string{}
	var cmds [][]string
	for _, line := range docBlock(t, "host", name).Commands() {
		f := strings.Fields(strings.ReplaceAll(line, "registry.example.com", reg))
		for i := range f {
			f[i] = strings.Trim(f[i], "'\"")
		}
		i := 0
		for ; i < len(f) && strings.Contains(f[i], "=") && f[i] != "snapvol"; i++ {
			k, v, _ := strings.Cut(f[i], "=")
			env[k] = strings.Trim(v, "'\"")
		}
		if i >= len(f) || f[i] != "snapvol" {
			t.Fatalf("docs/fleets.md %s: %q is not a snapvol command", name, line)
		}
		if i+1 < len(f) && f[i+1] != "serve" {
			cmds = append(cmds, f[i+1:])
		}
	}
	return env, cmds
}
