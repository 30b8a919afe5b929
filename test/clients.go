package test

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/snapvol/snapvol/test/dockerd"
)

// What the client tests share (test/clients_test.go and the e2e suite
// here, and the test/clients module's testcontainers and Go SDK tests,
// which import this package and cannot reach helpers in _test files).

// WriteProduction makes the snapvol volume name in d holding Guestbook,
// written through a container as an application would write it.
func WriteProduction(t testing.TB, d *dockerd.Daemon, name string) {
	t.Helper()
	d.MustDocker("volume", "create", "-d", "snapvol", name)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(Guestbook))
	for n := range Guestbook {
		names = append(names, n)
	}
	sort.Strings(names)
	dirs := map[string]bool{}
	for _, n := range names {
		if dir := filepath.Dir(n); dir != "." && !dirs[dir] {
			dirs[dir] = true
			_ = tw.WriteHeader(&tar.Header{Name: dir + "/", Typeflag: tar.TypeDir, Mode: 0o755})
		}
		_ = tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(Guestbook[n]))})
		_, _ = tw.Write([]byte(Guestbook[n]))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.DockerInput(buf.Bytes(), "run", "--rm", "-i", "--network", "none", "-v", name+":/data", dockerd.Image, "tar", "-x", "-C", "/data"); err != nil {
		t.Fatal(err)
	}
}

// PoolClones lists the clone subvolumes in a plugin's pool.
func PoolClones(t testing.TB, pool string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(pool, "clones"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// NewEntries are the names in after that are not in before.
func NewEntries(before, after []string) []string {
	had := map[string]bool{}
	for _, c := range before {
		had[c] = true
	}
	var out []string
	for _, c := range after {
		if !had[c] {
			out = append(out, c)
		}
	}
	return out
}

// PluginDataMounts lists what is mounted below DATA_ROOT (/mnt/snapvol)
// in the managed plugin's mount namespace: one mount per mounted volume or
// clone.
func PluginDataMounts(t testing.TB, p *dockerd.Plugin) []string {
	t.Helper()
	pid, err := p.PID()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], "/mnt/snapvol/") {
			out = append(out, f[4])
		}
	}
	return out
}
