// Package roottest decides whether a test that needs root (loop devices,
// mounts, a private dockerd) runs. `go test ./...` as a normal user skips
// those tests, saying why; make test and .ci/run set SNAPVOL_ROOT_TESTS=1,
// and then anything missing fails the test instead: a suite that was asked
// for the real thing never passes by skipping it.
package roottest

import (
	"os"
	"os/exec"
	"testing"
)

// Env is the variable that asks for root tests.
const Env = "SNAPVOL_ROOT_TESTS"

// Wanted reports whether root tests were asked for.
func Wanted() bool { return os.Getenv(Env) == "1" }

// Require skips t unless root tests were asked for, then fails it unless
// it runs as root with every tool named (command -> Debian package).
// why says what the test needs root for.
func Require(t testing.TB, why string, tools ...Tool) {
	t.Helper()
	if !Wanted() {
		t.Skipf("needs root (%s); run `make test` as root, or set %s=1", why, Env)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("%s=1 but not root: this test needs root (%s)", Env, why)
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool.Command); err != nil {
			t.Fatalf("%s not found: apt-get install -y %s (bash .ci/run installs everything the tests need)", tool.Command, tool.Package)
		}
	}
}

// Tool is a command a test runs and the Debian package that has it.
type Tool struct{ Command, Package string }

// Btrfs is mkfs.btrfs, for pool files.
var Btrfs = Tool{"mkfs.btrfs", "btrfs-progs"}
