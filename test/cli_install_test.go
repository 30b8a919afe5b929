package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// make install-cli puts the command on PATH (DESTDIR/usr/local/bin here,
// never the real /usr/local), built with VERSION and COMMIT, and make
// uninstall-cli removes it. Before, make install left only bin/snapvol.
func TestMakeInstallCLI(t *testing.T) {
	RequireRoot(t)
	RequireTool(t, "make", "make")
	dest := t.TempDir()
	version := fmt.Sprintf("v0.0.0-cli-test.%d", time.Now().UnixNano())
	mk := func(target string) string {
		t.Helper()
		cmd := exec.Command("make", "-s", target, "DESTDIR="+dest, "VERSION="+version)
		cmd.Dir = RepoRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
		return string(out)
	}
	out := mk("install-cli")
	bindir := filepath.Join(dest, "usr", "local", "bin")
	if !strings.Contains(out, filepath.Join(bindir, "snapvol")) || !strings.Contains(out, version) {
		t.Errorf("make install-cli says %q; want the path and the version", out)
	}
	cmd := exec.Command("sh", "-c", "snapvol version") // found on PATH, as an operator types it
	cmd.Env = append(os.Environ(), "PATH="+bindir+":/usr/bin:/bin", "STATE_DIR="+filepath.Join(t.TempDir(), "no-plugin"))
	vout, err := cmd.CombinedOutput()
	// No plugin serves that STATE_DIR: the client part, then a failure
	// for the server part, as docker version does.
	client, server, _ := strings.Cut(string(vout), "server:")
	if err == nil || !strings.Contains(client, "Client:") || !strings.Contains(client, version) || !strings.Contains(server, "snapvol is not running") {
		t.Fatalf("snapvol version from PATH: %v\n%s", err, vout)
	}
	if _, err := os.Stat(filepath.Join(bindir, "snapvold")); !os.IsNotExist(err) {
		t.Errorf("make install-cli installed the daemon too: %v", err)
	}
	if out := mk("uninstall-cli"); !strings.Contains(out, "removed") {
		t.Errorf("make uninstall-cli says %q", out)
	}
	if _, err := os.Stat(filepath.Join(bindir, "snapvol")); !os.IsNotExist(err) {
		t.Fatalf("make uninstall-cli left the command: %v", err)
	}
}
