package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snapvol/snapvol/test/dockerd"
)

// docs/operator.md's masking recipe, verbatim, under a private dockerd with
// PostgreSQL 15: production runs a live database; the refresh script makes
// an operator clone under a secret name (issue 21 item 4: a name CI could
// guess was a raw-production tap), masks it in a container, registers it
// as app-production@masked and drops the clone; SOURCES then lets Docker
// users clone only the masked snapshots. CI sees only masked rows, raw
// production is refused, production is unchanged, and a refresh while a CI
// clone runs leaves that clone as it was and gives the next one the new
// data.
func TestE2EMaskingRecipe(t *testing.T) {
	dockerd.Require(t)
	RequirePostgres(t)
	script := docBlock(t, "managed", "mask-script").Text
	sources := docBlock(t, "managed", "mask-sources").Text
	ciRun := docBlock(t, "managed", "mask-ci").Text
	for _, want := range []string{"--from app-production@now --secret)", `snapvol snapshot create app-production masked --from "$work" --replace`, "--volume-driver snapvol", "UPDATE users"} {
		if !strings.Contains(script, want) {
			t.Fatalf("docs/operator.md's refresh script lost %q:\n%s", want, script)
		}
	}

	d := dockerd.Start(t, dockerd.Options{})
	p := d.InstallPlugin(dockerd.Bundle(t, Binary(t)), "snapvol", "POOL_SIZE=4G")
	ImportPostgres(t, d, PGImage)
	d.MustDocker("tag", PGImage, "postgres:15") // the name the docs use

	// The host's snapvol and docker, as the operator's shell has them.
	bin := t.TempDir()
	for name, target := range map[string]string{"snapvol": Binary(t), "docker": dockerd.DockerCLI()} {
		if err := os.Symlink(target, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	sh := func(what, script string) string {
		t.Helper()
		cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
		cmd.Env = append(d.Env(), "PATH="+bin+":"+os.Getenv("PATH"), "STATE_DIR="+p.StateDir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s\nscript:\n%s", what, err, out, script)
		}
		return string(out)
	}
	var containers []string
	t.Cleanup(func() {
		for _, c := range containers {
			_, _ = d.Docker("rm", "-f", c)
		}
	})

	prod := startUsersProduction(t, d)
	rows := func(s *PGServer) string { t.Helper(); return pgUsers(t, s) }
	prodBefore := rows(prod)

	sh("the refresh script", script)
	// The operator's clone went with the script, and Docker never listed it.
	if out := sh("snapvol ls", "snapvol ls --json"); strings.Contains(out, `"operator"`) {
		t.Fatalf("the refresh script left an operator volume:\n%s", out)
	}
	if out := d.MustDocker("volume", "ls", "-q"); strings.Contains(out, "mask") {
		t.Fatalf("docker volume ls shows the masking clone:\n%s", out)
	}
	sh("SOURCES", sources)

	startCI := func(name string) *PGServer {
		t.Helper()
		containers = append(containers, name)
		sh("the CI container", strings.ReplaceAll(ciRun, "ci-db", name))
		s := &PGServer{d: d, Name: name}
		if err := s.WaitReady(60 * time.Second); err != nil {
			t.Fatal(err)
		}
		return s
	}
	ci := startCI("ci-db")
	masked := rows(ci)
	checkMaskedUsers(t, "CI", masked)
	// CI writes to its clone; nobody else sees it.
	if _, err := ci.SQL("INSERT INTO users VALUES (100, 'ci', 'ci@example.invalid')"); err != nil {
		t.Fatal(err)
	}

	// Raw production is refused, naming SOURCES.
	out, err := d.Docker("run", "--rm", "--network", "none", "--volume-driver", "snapvol", "-v", "app-production@latest+raw:/data", "postgres:15", "true")
	if err == nil || !strings.Contains(err.Error(), "SOURCES=app-production@masked*") {
		t.Fatalf("raw production under SOURCES=app-production@masked*: %v\n%s", err, out)
	}

	// A refresh while CI runs: production gains a row; the running CI
	// clone keeps what it started with, the next one gets the new data.
	if _, err := prod.SQL("INSERT INTO users VALUES (4, 'Late Comer', 'late@example.com'); CHECKPOINT;"); err != nil {
		t.Fatal(err)
	}
	sh("the refresh script, again", script)
	if got := rows(ci); got != masked+"100|ci|ci@example.invalid\n" {
		t.Fatalf("the running CI clone changed under the refresh:\n%s\nwant:\n%s", got, masked+"100|ci|ci@example.invalid\n")
	}
	next := rows(startCI("ci-db2"))
	if !strings.Contains(next, "4|user 4|user4@example.invalid") || strings.Contains(next, "@example.com") || strings.Contains(next, "100|ci") {
		t.Fatalf("the CI clone after the refresh:\n%s", next)
	}

	// Production never felt any of it.
	want := prodBefore + "4|Late Comer|late@example.com\n"
	if got := rows(prod); got != want {
		t.Fatalf("production changed:\n%s\nwant:\n%s", got, want)
	}
	snaps := sh("snapshot ls", "snapvol snapshot ls app-production")
	if !strings.Contains(snaps, "masked") {
		t.Fatalf("snapshot ls has no masked snapshot:\n%s", snaps)
	}
}

// startUsersProduction is production as the masking recipe finds it: volume
// app-production of d's snapvol, PostgreSQL 15 on it (container pg-prod,
// removed at cleanup) with database app and its users, personal data, one
// row of it the strange UTF-8 a user typed last night.
func startUsersProduction(t *testing.T, d *dockerd.Daemon) *PGServer {
	t.Helper()
	d.MustDocker("volume", "create", "-d", "snapvol", "app-production")
	t.Cleanup(func() { _, _ = d.Docker("rm", "-f", "pg-prod") })
	prod, err := RunPostgres(d, "pg-prod", []string{"-v", "app-production:" + PGData})
	if err != nil {
		t.Fatal(err)
	}
	if err := prod.WaitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Docker("exec", "pg-prod", "psql", "-d", "postgres", "-c", "CREATE DATABASE app"); err != nil {
		t.Fatal(err)
	}
	if _, err := prod.SQL(`CREATE TABLE users (id int PRIMARY KEY, name text, email text);
INSERT INTO users VALUES (1, 'Ada Lovelace', 'ada@example.com'), (2, 'Zoë 🎈 O''Brien', 'zoe@example.com'), (3, 'Grace Hopper', 'grace@example.com');
CHECKPOINT;`); err != nil {
		t.Fatal(err)
	}
	return prod
}

// pgUsers is the users table of s, a row a line (id|name|email).
func pgUsers(t *testing.T, s *PGServer) string {
	t.Helper()
	out, err := s.SQL("SELECT id, name, email FROM users ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkMaskedUsers fails unless rows (pgUsers) are the masking script's
// output: no name or address of production's.
func checkMaskedUsers(t *testing.T, who, rows string) {
	t.Helper()
	if strings.Contains(rows, "@example.com") || strings.Contains(rows, "Lovelace") || strings.Contains(rows, "Zoë") {
		t.Fatalf("%s sees unmasked rows:\n%s", who, rows)
	}
	if !strings.Contains(rows, "2|user 2|user2@example.invalid") {
		t.Fatalf("%s's rows are not the masked ones:\n%s", who, rows)
	}
}
