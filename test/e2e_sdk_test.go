package test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/snapvol/snapvol/test/dockerd"
)

// TestE2EGoSDK runs the test/clients module's TestGoSDK: containers and
// volumes made through the Docker Go SDK (github.com/docker/docker) as
// GitLab Runner's Docker executor makes them, a job container and two
// replays of a runner's jobs, against the managed plugin on both engines.
// The SDK is that module's requirement, not the main module's; running
// the test from here keeps `go test ./...` running it (modules_test.go).
func TestE2EGoSDK(t *testing.T) {
	dockerd.Require(t)
	dir := filepath.Join(RepoRoot(), "test", "clients")
	goInModule(t, dir, 20*time.Minute, "vet", "./...")
	goTestInModule(t, dir, 20*time.Minute, "TestGoSDK")
}
