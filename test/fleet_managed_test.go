package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/snapvol/snapvol/test/dockerd"
)

// Runner fleets in the mode users run them (docs/fleets.md, the README's
// two-host example): two private dockerds on one engine, a production host
// and a CI host, each with the fleet bundle (config.fleet.json) installed
// from a loopback registry with htpasswd auth by the documentation's
// commands, each with its own state directory and pool. Production runs
// PostgreSQL 15 on app-production; docs/operator.md's masking script makes
// app-production@masked and the host's snapvol pushes it through the
// plugin's admin socket. On the CI host a container on
// app-production@masked+each (first use pulls) sees masked rows only and
// writes its own; production changes, is masked and pushed again (one
// incremental layer), the CI host's PULL_EVERY loop pulls it, and new CI
// containers (the docs' docker run and the GitLab runner's bind of
// config.toml's volume) see the change while the running one keeps its
// version. A raw ref is refused naming PUBLISH and never reaches the
// registry; a wrong password names the registry, the repository and
// docker login; production's rows are only production's.
func TestFleetManaged(t *testing.T) {
	dockerd.Require(t)
	RequirePostgres(t)
	doc := fleetManagedDoc(t)
	bundle := dockerd.BundleWith(t, Binary(t), "config.fleet.json")
	pg := &pgImageCache{tar: filepath.Join(t.TempDir(), "postgres.tar")}
	dockerd.ForEachEngine(t, func(t *testing.T, eng dockerd.Engine) { fleetManaged(t, eng, bundle, doc, pg) })
}

// pgImageCache makes the PostgreSQL image once (scripts/postgres-image.sh
// copies and tars a few thousand files: most of this test's time on a
// loaded machine) and loads the saved image into every other engine.
type pgImageCache struct{ tar string }

func (c *pgImageCache) load(t *testing.T, d *dockerd.Daemon) {
	t.Helper()
	if _, err := os.Stat(c.tar); err != nil {
		ImportPostgres(t, d, PGImage)
		d.MustDocker("save", "-o", c.tar, PGImage)
	} else {
		d.MustDocker("load", "-q", "-i", c.tar)
	}
	d.MustDocker("tag", PGImage, "postgres:15") // the name the docs use
}

// fleetDocs are the blocks TestFleetManaged runs.
type fleetDocs struct {
	installProd, installCI, refresh, ciJob, gitlab, mask string
	readmePush, readmeCI                                 string
	gitlabVolume                                         string // config.toml's volumes entry with the clone
}

func fleetManagedDoc(t *testing.T) fleetDocs {
	t.Helper()
	d := fleetDocs{
		installProd: docBlock(t, "managed", "fleet-install-production").Text,
		installCI:   docBlock(t, "managed", "fleet-install-ci").Text,
		refresh:     docBlock(t, "managed", "fleet-refresh").Text,
		ciJob:       docBlock(t, "managed", "fleet-ci-job").Text,
		gitlab:      docBlock(t, "managed", "fleet-gitlab").Text,
		mask:        docBlock(t, "managed", "mask-script").Text,
	}
	for what, want := range map[string][]string{
		d.installProd: {"docker plugin install", "registry.example.com/snapvol-fleet:v1", "'PUBLISH=app-production@masked*'", "REGISTRY_CONFIG=/var/lib/snapvol/registry", "state.source=/var/lib/snapvol", "/root/push-password"},
		d.installCI:   {"docker plugin install", "REPLICAS=app-production=registry.example.com/data/app-production", "PULL_EVERY=1m", "REGISTRY_CONFIG=/var/lib/snapvol/registry", "state.source=/var/lib/snapvol", "/root/ci-password"},
		d.refresh:     {"/usr/local/sbin/mask-production.sh", "snapvol push app-production@masked registry.example.com/data/app-production:masked"},
		d.ciJob:       {"--name ci-db", "app-production@masked+each:" + PGData, "postgres:15"},
	} {
		for _, w := range want {
			if !strings.Contains(what, w) {
				t.Fatalf("docs/fleets.md: a block lost %q (the test substitutes it):\n%s", w, what)
			}
		}
	}
	// The runner's config: the clone as a volume, and no volume_driver
	// (CLAIM answers for the name).
	if strings.Contains(d.gitlab, "volume_driver") {
		t.Fatalf("docs/fleets.md's GitLab config sets volume_driver, which CLAIM makes unneeded:\n%s", d.gitlab)
	}
	m := regexp.MustCompile(`"(app-production@masked\+each:[^"]+)"`).FindStringSubmatch(d.gitlab)
	if m == nil {
		t.Fatalf("docs/fleets.md's GitLab config has no app-production@masked+each volume:\n%s", d.gitlab)
	}
	d.gitlabVolume = m[1]
	readme := docBlock(t, "managed", "readme-fleet").Commands()
	if len(readme) != 2 || !strings.HasPrefix(readme[0], "snapvol push ") || !strings.HasPrefix(readme[1], "docker run -d --name ci-db ") {
		t.Fatalf("README.md's two-host example is %q; this test knows a push on production, then a docker run -d --name ci-db on a CI host", readme)
	}
	d.readmePush, d.readmeCI = readme[0], readme[1]
	return d
}

// fleetManagedHtpasswd: fleet (fleet-secret) publishes the plugin,
// snapvol-push (push-secret) is the production host's account and
// snapvol-ci (ci-secret) the CI host's (bcrypt, made with libxcrypt's crypt).
const fleetManagedHtpasswd = fleetHtpasswd +
	"snapvol-push:$2b$05$L3yxhU3/hTxG/GvL8L/zrOQyJ5lIdB7Eh0khqvWEu5i2QCfr.XZYS\n" +
	"snapvol-ci:$2b$05$sLJ5z73BmX4eKMWt6xjwRO4oaowaQIJryHXVOgJpWfepGWOizRO0u\n"

// fleetHost is one Docker host of the fleet: a private dockerd, the
// plugin's state directory on the host, and a shell as the operator's.
type fleetHost struct {
	t     *testing.T
	name  string
	d     *dockerd.Daemon
	state string
	bin   string // PATH directory: the host's snapvol and docker
	subst *strings.Replacer
}

// run runs script with bash as the operator would on this host, the
// documentation's example names replaced by the test's.
func (h *fleetHost) run(script string) (string, error) {
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", h.subst.Replace(script))
	cmd.Env = append(h.d.Env(), "PATH="+h.bin+":"+os.Getenv("PATH"), "STATE_DIR="+h.state)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (h *fleetHost) sh(what, script string) string {
	h.t.Helper()
	out, err := h.run(script)
	if err != nil {
		h.t.Fatalf("%s host, %s: %v\n%s\nscript:\n%s", h.name, what, err, out, h.subst.Replace(script))
	}
	return out
}

func fleetManaged(t *testing.T, eng dockerd.Engine, bundle string, doc fleetDocs, pgImage *pgImageCache) {
	start, last := time.Now(), time.Now()
	// step logs how long each part took: the run time is watched (make test).
	step := func(what string) {
		t.Logf("%s in %v", what, time.Since(last).Round(100*time.Millisecond))
		last = time.Now()
	}
	reg, _ := startFleetRegistry(t, fleetManagedHtpasswd)
	repo := reg + "/data/app-production"
	prod := newFleetHost(t, "production", eng, reg, doc.mask)
	ci := newFleetHost(t, "CI", eng, reg, doc.mask)
	step("a registry and two dockerds")

	// What make push does once the bundle is built (docs/fleets.md's skipped
	// block): the fleet bundle in the registry the hosts install from.
	if out, err := prod.d.DockerInput([]byte("fleet-secret"), "login", "-u", "fleet", "--password-stdin", reg); err != nil {
		t.Fatalf("docker login: %v\n%s", err, out)
	}
	plugin := reg + "/snapvol-fleet:v1"
	prod.d.MustDocker("plugin", "create", plugin, bundle)
	prod.d.MustDocker("plugin", "push", plugin)
	prod.d.MustDocker("plugin", "rm", plugin)
	step("the fleet bundle published")

	prod.sh("installing the fleet bundle", doc.installProd)
	ci.sh("installing the fleet bundle", doc.installCI)
	for _, h := range []*fleetHost{prod, ci} {
		if got := strings.TrimSpace(h.d.MustDocker("plugin", "inspect", "--format", "{{.Config.Network.Type}} {{.Enabled}}", "snapvol")); got != "host true" {
			t.Fatalf("%s host: the installed plugin is %q; want the fleet bundle (network host), enabled", h.name, got)
		}
	}
	step("installed on both hosts")
	for _, h := range []*fleetHost{prod, ci} {
		pgImage.load(t, h.d)
	}
	step("PostgreSQL imported on both hosts")

	// Production: the live database, masked, pushed (the README's line).
	pg := startUsersProduction(t, prod.d)
	prodBefore := pgUsers(t, pg)
	prod.sh("the masking script", "/usr/local/sbin/mask-production.sh")
	if out := prod.sh("the README's push", doc.readmePush); !strings.Contains(out, repo+":masked") || !strings.Contains(out, "1 layers") || !strings.Contains(out, "full)") {
		t.Fatalf("the first push says %q; want %s:masked, one full layer", out, repo)
	}
	// The stream was hashed in a file under STATE_DIR (the plugin's rootfs
	// is no place for a snapshot's size), and the file went with the push.
	if left, err := os.ReadDir(filepath.Join(prod.state, "fleet", "tmp")); err != nil || len(left) != 0 {
		t.Fatalf("STATE_DIR/fleet/tmp after the push: %v %v; want the directory, empty", left, err)
	}
	step("production started, masked and pushed")

	// Raw production never leaves: refused naming PUBLISH, and the
	// registry has the masked tag alone.
	prod.sh("a raw snapshot", "snapvol snapshot create app-production raw")
	if out, err := prod.run("snapvol push app-production@raw " + repo + ":raw"); err == nil || !strings.Contains(out, "PUBLISH") {
		t.Fatalf("push of app-production@raw: %v\n%s; want a refusal naming PUBLISH", err, out)
	}
	if tags := registryTags(t, reg, "data/app-production"); strings.Join(tags, ",") != "masked" {
		t.Fatalf("the registry's tags of data/app-production: %v; want [masked] alone", tags)
	}

	// The CI host with a wrong password (an expired token): the pull and a
	// job's first use fail naming the registry, the repository and docker
	// login; with the password docker login stored they work.
	cfg := filepath.Join(ci.state, "registry", "config.json")
	good, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatalf("docker login on the CI host wrote no %s: %v", cfg, err)
	}
	bad, err := os.ReadFile(filepath.Join(dockerConfig(t, reg, "snapvol-ci", "expired"), "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := ci.run("snapvol pull app-production@masked"); err == nil || !strings.Contains(out, repo) || !strings.Contains(out, "docker login") {
		t.Fatalf("pull with a wrong password: %v\n%s; want an error naming %s and docker login", err, out, repo)
	}
	if out, err := ci.run(strings.ReplaceAll(doc.ciJob, "ci-db", "ci-refused")); err == nil || !strings.Contains(out, repo) {
		t.Fatalf("a CI job with a wrong password: %v\n%s; want its mount refused naming %s", err, out, repo)
	}
	if err := os.WriteFile(cfg, good, 0o600); err != nil {
		t.Fatal(err)
	}
	step("raw and a wrong password refused")

	// The first CI job (the README's line): its first use pulls.
	job1 := ci.postgres("ci-db", doc.readmeCI)
	masked := pgUsers(t, job1)
	checkMaskedUsers(t, "the first CI job", masked)
	if _, err := job1.SQL("INSERT INTO users VALUES (100, 'ci', 'ci@example.invalid')"); err != nil {
		t.Fatal(err)
	}
	pulled := ci.maskedObject()
	step("the first CI job (pulled on first use)")

	// Production changes; the nightly refresh masks and pushes it: one
	// incremental layer on the chain.
	if _, err := pg.SQL("INSERT INTO users VALUES (4, 'Late Comer', 'late@example.com'); CHECKPOINT;"); err != nil {
		t.Fatal(err)
	}
	if out := prod.sh("the refresh", doc.refresh); !strings.Contains(out, "2 layers, 1 uploaded") || !strings.Contains(out, "incremental)") {
		t.Fatalf("the refresh's push says %q; want one incremental layer uploaded, two on the chain", out)
	}
	step("production changed, masked and pushed")

	// PULL_EVERY=1s on the CI host: the new version is pulled by itself.
	deadline := time.Now().Add(60 * time.Second)
	for ci.maskedObject() == pulled {
		if time.Now().After(deadline) {
			t.Fatalf("the CI host did not pull the new app-production@masked within 60s (PULL_EVERY=1s); dockerd log:\n%s", ci.d.LogTail(40))
		}
		time.Sleep(200 * time.Millisecond)
	}
	step("pulled by the CI host (PULL_EVERY)")
	// snapvol pull through the CI plugin's admin socket: the version is
	// here already, nothing to apply.
	var pull struct {
		Tags []struct {
			Tag     string `json:"tag"`
			Applied int    `json:"applied"`
			New     bool   `json:"new"`
		} `json:"tags"`
	}
	if out := ci.sh("snapvol pull", "snapvol pull app-production --json"); json.Unmarshal([]byte(out), &pull) != nil ||
		len(pull.Tags) != 1 || pull.Tags[0].Tag != "masked" || pull.Tags[0].Applied != 0 || pull.Tags[0].New {
		t.Fatalf("snapvol pull on the CI host after PULL_EVERY pulled: %s; want tag masked, nothing applied, nothing new", out)
	}
	// New jobs see the change: docs/fleets.md's docker run, and a service
	// as the GitLab runner starts it (config.toml's volume as a bind, no
	// volume driver).
	for _, job := range []*PGServer{
		ci.postgres("ci-db2", strings.ReplaceAll(doc.ciJob, "ci-db", "ci-db2")),
		ci.postgres("ci-gitlab", "docker run -d --name ci-gitlab --network none -v "+doc.gitlabVolume+" postgres:15"),
	} {
		rows := pgUsers(t, job)
		checkMaskedUsers(t, job.Name, rows)
		if !strings.Contains(rows, "4|user 4|user4@example.invalid") || strings.Contains(rows, "100|ci") {
			t.Fatalf("new CI job %s after the refresh sees:\n%s\nwant production's new row masked, and no other job's writes", job.Name, rows)
		}
	}
	if got, want := pgUsers(t, job1), masked+"100|ci|ci@example.invalid\n"; got != want {
		t.Fatalf("the running CI job changed under the refresh:\n%s\nwant:\n%s", got, want)
	}

	// Production never felt any of it.
	if got, want := pgUsers(t, pg), prodBefore+"4|Late Comer|late@example.com\n"; got != want {
		t.Fatalf("production changed:\n%s\nwant:\n%s", got, want)
	}
	step("two new CI jobs")
	t.Logf("%s: the fleet end to end in %v", eng.Name, time.Since(start).Round(time.Second))
}

// newFleetHost starts a private dockerd on eng with the host's snapvol
// command and docker on the PATH and the masking script saved where
// docs/operator.md says.
func newFleetHost(t *testing.T, name string, eng dockerd.Engine, reg, maskScript string) *fleetHost {
	t.Helper()
	d := dockerd.Start(t, dockerd.Options{Engine: &eng})
	h := &fleetHost{t: t, name: name, d: d, state: filepath.Join(d.Dir, "state"), bin: t.TempDir()}
	for cmd, target := range map[string]string{"snapvol": CLIBinary(t), "docker": dockerd.DockerCLI()} {
		p, err := exec.LookPath(target)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(p, filepath.Join(h.bin, cmd)); err != nil {
			t.Fatal(err)
		}
	}
	script := filepath.Join(h.bin, "mask-production.sh")
	if err := os.WriteFile(script, []byte("#!/usr/bin/env bash\n"+maskScript), 0o755); err != nil {
		t.Fatal(err)
	}
	secrets := t.TempDir()
	for file, password := range map[string]string{"push-password": "push-secret", "ci-password": "ci-secret"} {
		if err := os.WriteFile(filepath.Join(secrets, file), []byte(password+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	h.subst = strings.NewReplacer(
		"registry.example.com", reg,
		// The plugin's state on the host, and a small pool; inside the
		// plugin the state mount stays /var/lib/snapvol (REGISTRY_CONFIG).
		"state.source=/var/lib/snapvol", "state.source="+h.state+" POOL_SIZE=1G",
		"mkdir -p /var/lib/snapvol/", "mkdir -p "+h.state+"/",
		"DOCKER_CONFIG=/var/lib/snapvol/", "DOCKER_CONFIG="+h.state+"/",
		"/root/push-password", filepath.Join(secrets, "push-password"),
		"/root/ci-password", filepath.Join(secrets, "ci-password"),
		"/usr/local/sbin/mask-production.sh", script,
		"PULL_EVERY=1m", "PULL_EVERY=1s",
	)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := h.run("snapvol ls; snapvol snapshot ls app-production")
			t.Logf("%s host: snapvol ls, snapshot ls:\n%s", name, out)
		}
	})
	return h
}

// postgres starts a CI job's database with the docker run line, named
// name, and waits for it.
func (h *fleetHost) postgres(name, line string) *PGServer {
	h.t.Helper()
	h.t.Cleanup(func() { _, _ = h.d.Docker("rm", "-f", name) })
	h.sh("CI job "+name, line)
	s := &PGServer{d: h.d, Name: name}
	if err := s.WaitReady(60 * time.Second); err != nil {
		h.t.Fatal(err)
	}
	return s
}

// maskedObject is the snapshot app-production@masked names on this host
// ("" if none): it changes when a pull makes a new version visible.
func (h *fleetHost) maskedObject() string {
	h.t.Helper()
	out := h.sh("snapshot ls", "snapvol snapshot ls app-production --json")
	var snaps []struct {
		Name   string `json:"name"`
		Object string `json:"object"`
	}
	if err := json.Unmarshal([]byte(out), &snaps); err != nil {
		h.t.Fatalf("snapshot ls --json: %v\n%s", err, out)
	}
	for _, s := range snaps {
		if s.Name == "masked" {
			return s.Object
		}
	}
	return ""
}

// registryTags lists repo's tags in the registry at reg (user fleet).
func registryTags(t *testing.T, reg, repo string) []string {
	t.Helper()
	req, err := http.NewRequest("GET", fmt.Sprintf("http://%s/v2/%s/tags/list", reg, repo), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("fleet", "fleet-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var list struct {
		Tags []string `json:"tags"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &list) != nil {
		t.Fatalf("tags of %s: HTTP %d %s", repo, resp.StatusCode, body)
	}
	return list.Tags
}
