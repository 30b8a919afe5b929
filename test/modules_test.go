package test

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The repository's nested modules, test/bench and test/clients, keep the
// modules only they need (golang.org/x/image, testcontainers-go) out of the
// main go.mod. go test ./... from the repository root does not enter
// them, so tests here run them: TestBenchModule below, and
// TestE2ETestcontainers (clients_test.go).

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

// goInModule runs the go command in the nested module at dir and fails t,
// with its output, if it fails.
func goInModule(t *testing.T, dir string, timeout time.Duration, args ...string) {
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
}
