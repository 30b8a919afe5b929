package test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/snapvol/snapvol/test/dockerd"
)

// The compose files of README.md and docs/usage.md are a contract: every
// one runs as written, with Compose v2 (`docker compose`) and Compose 1.29
// (`docker-compose`), on every engine, with the README's commands.

// composeFileNames are the compose files' blocks, in the order they run.
var composeFileNames = []string{"compose-each", "compose-snap", "compose-job"}

// docComposeFiles are the compose files the documentation shows.
func docComposeFiles(t testing.TB) []string {
	t.Helper()
	var files []string
	for _, n := range composeFileNames {
		files = append(files, docBlock(t, "compose", n).Text)
	}
	return files
}

// docComposeCommands are the Compose command lines of the README's
// compose-command block ("docker compose …" or "docker-compose …"),
// comments cut.
func docComposeCommands(t testing.TB) []string {
	t.Helper()
	var cmds []string
	for _, line := range docBlock(t, "compose", "compose-command").Commands() {
		if i := strings.Index(line, " #"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if strings.HasPrefix(line, "docker compose ") || strings.HasPrefix(line, "docker-compose ") {
			cmds = append(cmds, line)
		}
	}
	return cmds
}

// The compose blocks hold the three patterns, every name with a colon has
// the nocopy option, the per-job name refuses an unset CI_JOB_ID, and the
// commands are up and down -v.
func TestReadmeComposeExtraction(t *testing.T) {
	var files []string
	var cmds []string
	for _, b := range allDocBlocks(t) {
		switch {
		case b.Mode == "compose" && strings.HasPrefix(b.Text, "services:"):
			files = append(files, b.Text)
		case b.Mode == "compose":
			cmds = append(cmds, b.Commands()...)
		}
	}
	if len(files) != len(composeFileNames) {
		t.Fatalf("the documentation has %d compose files, the test runs %v", len(files), composeFileNames)
	}
	var names []string
	for _, f := range files {
		names = append(names, composeVolumeNames(f)...)
	}
	joined := strings.Join(names, " ")
	for _, want := range []string{"+each", "snap:", "${CI_JOB_ID:?"} {
		if !strings.Contains(joined, want) {
			t.Errorf("no compose volume name has %q: %v", want, names)
		}
	}
	for _, f := range files {
		for _, n := range composeVolumeNames(f) {
			if strings.Contains(composeJobName.ReplaceAllString(n, composeJobID), ":") && !strings.Contains(f, "nocopy: true") {
				t.Errorf("compose file with %q has no nocopy mount option: Compose >= 2.35 would pass it as a Binds string, which splits at the colon:\n%s", n, f)
			}
		}
	}
	if len(cmds) < 2 || !strings.Contains(strings.Join(cmds, "\n"), " up ") || !strings.Contains(strings.Join(cmds, "\n"), "down -v") {
		t.Fatalf("the README's compose commands are %q, want up and down -v", cmds)
	}
}

// composeJobName is the CI_JOB_ID reference of a compose volume name,
// with or without the :? guard.
var composeJobName = regexp.MustCompile(`\$\{CI_JOB_ID(:\?[^}]*)?\}`)

var composeNameLine = regexp.MustCompile(`(?m)^\s+name:\s*"?([^"\n]+?)"?\s*$`)

// composeVolumeNames are the `name:` values of a compose file.
func composeVolumeNames(file string) []string {
	var out []string
	for _, m := range composeNameLine.FindAllStringSubmatch(file, -1) {
		out = append(out, m[1])
	}
	return out
}

// A Compose implementation the tests run.
type composeTool struct {
	name string   // subtest name
	argv []string // the command before its arguments
}

// composeTools are Compose v2 (the docker CLI plugin scripts/test-deps.sh
// builds) and Debian's docker-compose 1.29; a missing one fails the test.
func composeTools(t testing.TB) []composeTool {
	t.Helper()
	if out, err := exec.Command(dockerd.DockerCLI(), "compose", "version").CombinedOutput(); err != nil {
		t.Fatalf("docker compose (Compose v2) does not run: %v: %s; run %s as root (make test and .ci/run do)", err, strings.TrimSpace(string(out)), dockerd.DepsScript)
	}
	RequireTool(t, "docker-compose", "docker-compose")
	return []composeTool{
		{"compose-v2", []string{dockerd.DockerCLI(), "compose"}},
		{"compose-v1", []string{"docker-compose"}},
	}
}

// composeImage makes the test image the README's compose files name:
// busybox whose command is a small test suite on /var/lib/cassandra. It
// fails unless the directory is a fresh clone of production (the bad
// entry is there, no earlier run's marker is), then writes a marker.
func (e *e2e) composeImage(t *testing.T, image string) {
	t.Helper()
	script := `set -e
d=/var/lib/cassandra
grep -l "$(printf '\377')" $d/guestbook/*
if [ -e $d/ci-was-here ]; then echo "stale clone: an earlier run wrote here at $(cat $d/ci-was-here)"; exit 7; fi
date > $d/ci-was-here
echo "tests passed on a fresh clone"`
	cmd, _ := json.Marshal([]string{"sh", "-c", script})
	e.d.Docker("rm", "-f", "compose-image")
	e.d.MustDocker("create", "--name", "compose-image", dockerd.Image)
	e.d.MustDocker("commit", "--change", "CMD "+string(cmd), "compose-image", image)
	e.d.MustDocker("rm", "compose-image")
}

// e2eReadmeCompose runs every compose file of the documentation, as written, with each Compose: the README's `up` and `down -v`,
// twice, with the same project and CI_JOB_ID. Each run must see a fresh
// clone of production (the image's test suite fails on a stale one), and
// down -v must leave no clone in the pool.
func e2eReadmeCompose(t *testing.T, e *e2e) {
	files := docComposeFiles(t)
	cmds := docComposeCommands(t)
	e.composeImage(t, "guestbook-tests")
	for _, tool := range composeTools(t) {
		t.Run(tool.name, func(t *testing.T) {
			e := e.with(t)
			for i, file := range files {
				dir := t.TempDir()
				if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(file), 0o644); err != nil {
					t.Fatal(err)
				}
				before := e.clones()
				for round := 1; round <= 2; round++ {
					start := time.Now()
					for _, c := range cmds {
						args := strings.Fields(c)
						if args[0] == "docker" {
							args = args[2:] // docker compose ARGS
						} else {
							args = args[1:] // docker-compose ARGS
						}
						out := e.compose(tool, dir, args...)
						if round == 1 && testing.Verbose() {
							t.Logf("%s %s:\n%s", strings.Join(tool.argv, " "), strings.Join(args, " "), out)
						}
						if args[0] != "up" {
							continue
						}
						if !strings.Contains(out, "tests passed on a fresh clone") {
							t.Errorf("README compose file %d, %s %s, round %d: the test suite did not pass:\n%s", i+1, tool.name, c, round, out)
						}
						// What the README says of Compose v2 and claimed names.
						if tool.name == "compose-v2" && !strings.Contains(out, "already exists but was not created by Docker Compose") {
							t.Errorf("README compose file %d, %s up: no \"not created by Docker Compose\" warning, which the README explains:\n%s", i+1, tool.name, out)
						}
						if got := e.newClones(before); len(got) != 0 && strings.Contains(file, "+each") {
							t.Errorf("README compose file %d: +each clones %v left after the container stopped", i+1, got)
						}
						if tool.name == "compose-v2" && composeJobName.MatchString(file) && round == 1 {
							// Without the file, down -v finds volumes by
							// Compose's labels, which a claimed name lacks.
							name := composeJobName.ReplaceAllString(composeVolumeNames(file)[0], composeJobID)
							e.compose(tool, t.TempDir(), "-p", "snapvol-ci-"+composeJobID, "down", "-v")
							if !e2eHas(e.volumeNames(), name) {
								t.Errorf("docker compose -p NAME down -v without the file removed %s; the README says it does not", name)
							}
						}
					}
					if got := e.newClones(before); len(got) != 0 {
						t.Errorf("README compose file %d, %s, round %d: clones %v left after down -v", i+1, tool.name, round, got)
					}
					t.Logf("README compose file %d with %s, round %d: %v", i+1, tool.name, round, time.Since(start).Round(time.Millisecond))
				}
				for _, n := range composeVolumeNames(file) {
					n = composeJobName.ReplaceAllString(n, composeJobID)
					if !strings.Contains(n, "+each") && e2eHas(e.volumeNames(), n) {
						t.Errorf("README compose file %d, %s: volume %s still listed after down -v", i+1, tool.name, n)
					}
				}
				e.checkProduction()
				if composeJobName.MatchString(file) {
					e.composeWithoutJobID(t, tool, file)
				}
			}
			if tool.name == "compose-v2" {
				e.composeWithoutNocopy(t, tool, files)
			}
		})
	}
	// The documentation's other managed blocks, on the same plugin (its
	// images, guestbook-tests among them, are made by now).
	t.Run("the docs' managed blocks", func(t *testing.T) { e2eDocBlocks(t, e.with(t)) })
}

// composeWithoutJobID: the per-job file with CI_JOB_ID unset is refused
// by Compose, naming the variable, and makes no volume: without the guard
// every such job would share the one clone app-production@latest+job-.
func (e *e2e) composeWithoutJobID(t *testing.T, tool composeTool, file string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	before := e.volumeNames()
	cmd := e.d.Command(tool.argv[0], append(append([]string{}, tool.argv[1:]...), "up", "--exit-code-from", "tests")...)
	cmd.Dir = dir
	var env []string
	for _, kv := range cmd.Env {
		if !strings.HasPrefix(kv, "CI_JOB_ID=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "COMPOSE_PROJECT_NAME=snapvol-ci-nojob")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "CI_JOB_ID must be set") {
		t.Errorf("%s up with CI_JOB_ID unset: %v, want a refusal saying CI_JOB_ID must be set:\n%s", tool.name, err, out)
	}
	for _, n := range e.volumeNames() {
		if !e2eHas(before, n) {
			t.Errorf("%s up with CI_JOB_ID unset made volume %s", tool.name, n)
		}
	}
}

// composeWithoutNocopy checks what the README says of the nocopy option:
// without it, Compose v2 fails on a name with a colon.
func (e *e2e) composeWithoutNocopy(t *testing.T, tool composeTool, files []string) {
	nocopy := regexp.MustCompile(`(?m)^\s+volume:\n\s+nocopy: true\n`)
	for _, file := range files {
		if !nocopy.MatchString(file) {
			continue
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(nocopy.ReplaceAllString(file, "")), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := e.tryCompose(tool, dir, "up", "--exit-code-from", "tests")
		if err == nil || !strings.Contains(out, "invalid volume specification") {
			t.Errorf("Compose v2 up of the README's file without nocopy: %v, want the failure the README quotes (invalid volume specification):\n%s", err, out)
		}
		e.compose(tool, dir, "down", "-v")
		return
	}
	t.Error("no README compose file has the nocopy option")
}

// composeJobID is the CI_JOB_ID the compose runs see.
const composeJobID = "4711"

// compose runs a Compose command in dir (holding compose.yaml) against the
// engine, as a CI job would: project name and CI_JOB_ID from the
// environment. It fails the test on a non-zero exit.
func (e *e2e) compose(tool composeTool, dir string, args ...string) string {
	e.t.Helper()
	out, err := e.tryCompose(tool, dir, args...)
	if err != nil {
		e.t.Fatalf("%s %s: %v\n%s", strings.Join(tool.argv, " "), strings.Join(args, " "), err, out)
	}
	return out
}

func (e *e2e) tryCompose(tool composeTool, dir string, args ...string) (string, error) {
	cmd := e.d.Command(tool.argv[0], append(append([]string{}, tool.argv[1:]...), args...)...)
	cmd.Dir = dir
	cmd.Env = append(cmd.Env, "CI_JOB_ID="+composeJobID, "COMPOSE_PROJECT_NAME=snapvol-ci-"+composeJobID)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
