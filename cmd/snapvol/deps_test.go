package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The command starts in milliseconds because it links none of the daemon:
// every linked package's init runs at start, and those of OpenStorage
// (protobuf registries), Prometheus (its collectors), bbolt and the driver
// were most of the 18 ms snapvol version took as the one binary. This
// keeps them out (make bench measures the start against a hello-world).
func TestCommandLinksNoneOfTheDaemon(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, bad := range []string{
			"github.com/snapvol/snapvol/driver", "github.com/snapvol/snapvol/storage", "github.com/snapvol/snapvol/metrics",
			"github.com/snapvol/snapvol/fleet", "github.com/snapvol/snapvol/admin/server", "github.com/snapvol/snapvol/plugin",
			"go.etcd.io/bbolt", "github.com/prometheus/", "google.golang.org/protobuf", "github.com/libopenstorage/",
			"github.com/sirupsen/logrus", "oras.land/",
		} {
			if strings.HasPrefix(pkg, bad) {
				t.Errorf("cmd/snapvol links %s", pkg)
			}
		}
	}
}
