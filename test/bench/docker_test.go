//go:build bench

package bench

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/snapvol/snapvol/test"
	"github.com/snapvol/snapvol/test/dockerd"
)

// dockerRun times what a CI job runs, on a private dockerd with the managed
// plugin installed as the README says:
//
//	docker run --rm --network none -v app-production@latest+N:/data busybox true
//
// against the same with a fresh `local` volume. No --volume-driver: the
// plugin claims the name. Each run gets a new name on both sides, so each
// makes a new volume (a clone, or a local directory); removing it after
// the run is not timed.
func dockerRun(t *testing.T, cfg config, res *Results) {
	d := dockerd.Start(t, dockerd.Options{})
	bundle := dockerd.Bundle(t, test.Binary(t))
	d.InstallPlugin(bundle, "snapvol", "POOL_SIZE=2G", "LATEST_MAX_AGE=6h")
	r := &DockerResult{}
	res.Docker = r
	r.Engine = "dockerd " + strings.TrimSpace(d.MustDocker("version", "--format", "{{.Server.Version}}"))

	// Production: 8 MiB of incompressible data in 64 files, written by a
	// container through the plugin.
	d.MustDocker("volume", "create", "-d", "snapvol", "app-production")
	d.MustDocker("run", "--rm", "--network", "none", "-v", "app-production:/data", dockerd.Image,
		"sh", "-c", "for i in $(seq 1 64); do head -c 131072 /dev/urandom > /data/f$i; done; sync")

	run := func(vol string, cmd ...string) time.Duration {
		if len(cmd) == 0 {
			cmd = []string{"true"}
		}
		args := append([]string{"run", "--rm", "--network", "none", "-v", vol + ":/data", dockerd.Image}, cmd...)
		start := time.Now()
		if _, err := d.Docker(args...); err != nil {
			t.Fatalf("docker %s: %v\ndockerd log:\n%s", strings.Join(args, " "), err, d.LogTail(30))
		}
		el := time.Since(start)
		d.MustDocker("volume", "rm", vol)
		return el
	}
	clone := func(i int) time.Duration { return run(fmt.Sprintf("app-production@latest+bench-%d", i)) }
	local := func(i int) time.Duration { return run(fmt.Sprintf("bench-local-%d", i)) }
	// Warm up both paths (image layers, plugin socket, first snapshot),
	// and check once that a clone has production's data.
	run("app-production@latest+bench-check", "test", "-f", "/data/f64")
	local(-1)
	var cs, ls []time.Duration
	for i := 0; i < cfg.dockerRep; i++ {
		if i%2 == 0 {
			cs, ls = append(cs, clone(i)), append(ls, local(i))
		} else {
			ls, cs = append(ls, local(i)), append(cs, clone(i))
		}
	}
	r.Clone, r.Local = NewDist(cs), NewDist(ls)
	t.Logf("docker run: clone %s, local volume %s, %.2fx", dist(r.Clone), dist(r.Local), ratio(r.Clone.P50, r.Local.P50))
}
