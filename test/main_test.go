package test

import (
	"os"
	"testing"

	"github.com/snapvol/snapvol/test/leakcheck"
)

// TestMain lets the test binary be the other client (see otherclient.go);
// otherwise it runs the tests and then fails the run, naming the test, if
// any mount (in any mount namespace) or loop device is left below a
// directory a test made: a killed daemon's pool and clones, a namespace
// holder's copies, a tmpfs. Nothing else fails on those, and they piled
// up across runs.
func TestMain(m *testing.M) {
	if spec := os.Getenv(clientEnv); spec != "" {
		os.Exit(runClient(spec))
	}
	os.Exit(leakcheck.Main(m))
}
