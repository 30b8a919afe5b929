package test

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The repository's nested modules, test/bench and test/clients, keep the
// modules only they need (golang.org/x/image; testcontainers-go and the
// Docker Go SDK) out of the main go.mod. go test ./... from the repository
// root does not enter them, so tests here run them: TestBenchModule below,
// TestE2ETestcontainers (clients_test.go) and TestE2EGoSDK
// (e2e_sdk_test.go).

// TestBenchModule vets test/bench (with the bench tag: make bench's code)
// and runs its root-free tests (the statistics, targets, table and plot).
func TestBenchModule(t *testing.T) {
	dir := filepath.Join(RepoRoot(), "test", "bench")
	goInModule(t, dir, 10*time.Minute, "vet", "-tags", "bench", "./...")
	args := []string{"test", "-count=1", "-timeout", "10m"}
	if raceBuild {
		args = append(args, "-race")
	}
	goInModule(t, dir, 10*time.Minute, append(args, ".")...)
}

// goTestInModule runs the named tests of the nested module at dir (with
// -race when this binary is race-built) and fails t unless each of them
// ran and passed, and none of their subtests skipped: go test passes when
// -run matches nothing or a test skips, and that would hide a test that
// no longer runs.
func goTestInModule(t *testing.T, dir string, timeout time.Duration, names ...string) {
	t.Helper()
	args := []string{"test", "-count=1", "-v", "-timeout", timeout.String(), "-run", "^(" + strings.Join(names, "|") + ")$"}
	if raceBuild {
		args = append(args, "-race")
	}
	out := goInModule(t, dir, timeout+time.Minute, append(args, ".")...)
	for _, name := range names {
		if !regexp.MustCompile(`(?m)^--- PASS: ` + regexp.QuoteMeta(name) + ` `).Match(out) {
			t.Errorf("go test in %s: %s did not run and pass (output above)", dir, name)
		}
	}
	if bytes.Contains(out, []byte("--- SKIP: ")) || bytes.Contains(out, []byte("no tests to run")) {
		t.Errorf("go test in %s: a test skipped or did not run (output above): every test here must run", dir)
	}
}

// goInModule runs the go command in the nested module at dir and returns
// its output; it fails t, with the output, if the command fails.
func goInModule(t *testing.T, dir string, timeout time.Duration, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	start := time.Now()
	out, err := cmd.CombinedOutput()
	rel, _ := filepath.Rel(RepoRoot(), dir)
	t.Logf("go %s (in %s, %v):\n%s", strings.Join(args, " "), rel, time.Since(start).Round(time.Second), out)
	if err != nil {
		hint := ""
		if bytes.Contains(out, []byte("go.mod")) || bytes.Contains(out, []byte("go.sum")) {
			// The module requires the main module through a replace: a
			// dependency the main module adds or upgrades must be
			// recorded there too.
			hint = " (after a change to the main go.mod: cd " + rel + " && go mod tidy)"
		}
		t.Fatalf("go %s in %s: %v%s", strings.Join(args, " "), rel, err, hint)
	}
	return out
}
