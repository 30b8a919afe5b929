package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snapvol/snapvol/test/dockerd"
)

// e2eDocBlocks runs every block marked managed and registered to
// TestE2EManagedPlugin (README.md, then docs/*.md, in order) against the
// managed plugin of the end-to-end test, as written: bash, the engine's
// docker, the host's snapvol, CI_JOB_ID set. A GitLab job block runs its
// before_script, script and after_script; an Engine API block is sent to
// the engine's socket; journalctl -u docker reads the private dockerd's
// log file. Then the local bundle's warning for METRICS_ADDR is checked,
// the settings the blocks changed are set back, and every volume they made
// is removed.
func e2eDocBlocks(t *testing.T, e *e2e) {
	d := e.d
	blocks := docBlocksOf(t, "managed")
	if len(blocks) == 0 {
		t.Fatal("no managed documentation blocks registered to TestE2EManagedPlugin")
	}
	// The images the blocks name: busybox, and cassandra, which lists
	// its data directory. guestbook-tests is the compose step's.
	d.MustDocker("tag", dockerd.Image, "busybox")
	_, _ = d.Docker("rm", "-f", "docs-cassandra")
	d.MustDocker("create", "--name", "docs-cassandra", dockerd.Image)
	d.MustDocker("commit", "--change", `CMD ["ls", "/var/lib/cassandra"]`, "docs-cassandra", "cassandra")
	d.MustDocker("rm", "docs-cassandra")

	bin := t.TempDir()
	for name, target := range map[string]string{"snapvol": Binary(t), "docker": dockerd.DockerCLI()} {
		if err := os.Symlink(target, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	dockerdLog := filepath.Join(t.TempDir(), "dockerd.log")
	env := append(d.Env(), "PATH="+bin+":"+os.Getenv("PATH"), "STATE_DIR="+e.p.StateDir, "CI_JOB_ID=docs1")
	sh := func(b DocBlock, script string) string {
		t.Helper()
		if err := os.WriteFile(dockerdLog, []byte(d.Log()), 0o600); err != nil {
			t.Fatal(err)
		}
		script = strings.ReplaceAll(script, "journalctl -u docker -o cat", "cat "+dockerdLog)
		cmd := d.Command("bash", "-euo", "pipefail", "-c", script)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s\nscript:\n%s", b, err, out, script)
		}
		return string(out)
	}
	before := e.volumeNames()
	t.Cleanup(func() {
		for _, n := range e.volumeNames() {
			if !e2eHas(before, n) {
				if _, err := d.Docker("volume", "rm", n); err != nil {
					t.Errorf("removing %s, which a documentation block made: %v", n, err)
				}
			}
		}
	})

	for _, b := range blocks {
		t.Logf("%s", b)
		var out string
		switch {
		case strings.HasPrefix(b.Text, "POST "):
			out = docAPIBlock(t, d, b)
		case strings.Contains(b.Text, "\n  script:"):
			out = sh(b, strings.Join(gitlabJobCommands(b.Text), "\n"))
		case strings.Contains(b.Text, "journalctl -u docker"):
			// The settings, then a container (a Mount to log), then the
			// log lines.
			cut := strings.LastIndex(b.Text, "docker plugin enable")
			cut += strings.IndexByte(b.Text[cut:], '\n') + 1
			sh(b, b.Text[:cut])
			e.run([]string{"-v", "app-production@now+docs-log:/data"}, "ls /data > /dev/null")
			out = sh(b, b.Text[cut:])
		default:
			out = sh(b, b.Text)
		}
		t.Logf("%s:\n%s", b.Name, out)
		docBlockOutput(t, e, b, out)
	}

	// The local bundle has no network: METRICS_ADDR is served where nothing
	// reaches it, and the plugin says so at start.
	mark := len(d.Log())
	for _, args := range [][]string{
		{"plugin", "disable", "-f", "snapvol"},
		{"plugin", "set", "snapvol", "METRICS_ADDR=127.0.0.1:9479"},
		{"plugin", "enable", "snapvol"},
	} {
		d.MustDocker(args...)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(d.Log()[mark:], "METRICS_ADDR 127.0.0.1:9479 is not reachable from the host") {
		if time.Now().After(deadline) {
			t.Errorf("no warning that METRICS_ADDR is unreachable in the local bundle; dockerd's log:\n%s", lastLines(d.Log()[mark:], 30))
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Back to what the later steps expect; explicit defaults, as the
	// state marker refuses settings that fall back to their defaults.
	for _, args := range [][]string{
		{"plugin", "disable", "-f", "snapvol"},
		{"plugin", "set", "snapvol", "IDLE_TTL=24h", "LATEST_MAX_AGE=5m", "LOG_FORMAT=text", "METRICS_ADDR="},
		{"plugin", "enable", "snapvol"},
	} {
		d.MustDocker(args...)
	}
	e.checkProduction()
}

// docBlockOutput checks what a block printed, by name: what it shows
// happened.
func docBlockOutput(t *testing.T, e *e2e, b DocBlock, out string) {
	t.Helper()
	want := map[string][]string{
		"quickstart": {"guestbook"},
		"usage":      {"guestbook", `"source": "app-production"`, `"ref": "latest"`},
		"gitlab-job": {"tests passed on a fresh clone"},
		"docker-api": {Guestbook["guestbook/0003.txt"]},
	}[b.Name]
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s printed no %q:\n%s", b, w, out)
		}
	}
	switch b.Name {
	case "settings-change":
		got := e.d.MustDocker("plugin", "inspect", "--format", "{{.Enabled}} {{.Settings.Env}}", "snapvol")
		for _, w := range []string{"true ", "IDLE_TTL=2h", "LATEST_MAX_AGE=1m"} {
			if !strings.Contains(got, w) {
				t.Errorf("after %s the plugin is %q, want %s", b, got, w)
			}
		}
	case "logs-managed":
		// The mounts' lines, each a JSON object: the request that made the
		// clone logged it and its answer under one req id. (Docker may
		// send more than one Mount for a container: each is a request.)
		msgs := map[string][]string{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("%s printed a line that is not JSON: %q", b, l)
			}
			if m["op"] != "mount" {
				t.Errorf("%s printed a line of op %v", b, m["op"])
			}
			req := fmt.Sprint(m["req"])
			msgs[req] = append(msgs[req], fmt.Sprint(m["msg"]))
		}
		made := false
		for req, ms := range msgs {
			j := strings.Join(ms, "|")
			if req != "<nil>" && strings.Contains(j, "clone made") && strings.Contains(j, "mount") {
				made = true
			}
		}
		if !made {
			t.Errorf("%s: no request logged both its clone and its mount under one req id: %v\n%s", b, msgs, out)
		}
	}
}

// gitlabJobCommands are a GitLab job's before_script, script and
// after_script items, in that order (the YAML's "- " list items under
// those keys).
func gitlabJobCommands(yaml string) []string {
	sections := map[string][]string{}
	cur := ""
	for _, l := range strings.Split(yaml, "\n") {
		trimmed := strings.TrimSpace(l)
		switch {
		case strings.HasSuffix(trimmed, ":") && !strings.HasPrefix(trimmed, "- "):
			cur = strings.TrimSuffix(trimmed, ":")
		case strings.HasPrefix(trimmed, "- ") && cur != "":
			sections[cur] = append(sections[cur], strings.TrimPrefix(trimmed, "- "))
		}
	}
	var out []string
	for _, k := range []string{"before_script", "script", "after_script"} {
		out = append(out, sections[k]...)
	}
	return out
}

// docAPIBlock sends an Engine API block (a request line, then its JSON
// body) to the engine's socket, starts the container it created, and
// returns what the container printed; the container is removed.
func docAPIBlock(t *testing.T, d *dockerd.Daemon, b DocBlock) string {
	t.Helper()
	first, body, _ := strings.Cut(b.Text, "\n")
	method, path, _ := strings.Cut(strings.TrimSpace(first), " ")
	if !json.Valid([]byte(body)) {
		t.Fatalf("%s: the request body is not JSON:\n%s", b, body)
	}
	sock := strings.TrimPrefix(d.Host, "unix://")
	c := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", sock)
		}}}
	req, err := http.NewRequest(method, "http://docker"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var created struct{ Id string }
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(data, &created) != nil || created.Id == "" {
		t.Fatalf("%s: %s %s", b, resp.Status, data)
	}
	defer func() { _, _ = d.Docker("rm", "-f", created.Id) }()
	out, err := d.Docker("start", "-a", created.Id)
	if err != nil {
		t.Fatalf("%s: docker start -a: %v\n%s", b, err, out)
	}
	return out
}
