package test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/snapvol/snapvol/test/dockerd"
)

// Options on a SOURCE@REF name are never silently lost, on both engines,
// through the managed plugin. Docker asks the plugin's Get before Create;
// with CLAIM on, Get answers for the name, so Docker never calls Create
// and the -o options never reach snapvol (Docker still exits 0 and lists
// them under the volume's Options). docker volume inspect's Status says
// so: no options in effect, the idle ttl that applies and its setting, and
// where options go. On a plain name they arrive, apply, and show; an
// unknown one is refused. Before, Status said nothing of options or ttl.
func TestE2EOptionsOnGrammarNames(t *testing.T) {
	dockerd.Require(t)
	dockerd.ForEachEngine(t, func(t *testing.T, eng dockerd.Engine) {
		d := dockerd.Start(t, dockerd.Options{Engine: &eng})
		d.InstallPlugin(dockerd.Bundle(t, Binary(t)), "snapvol", "POOL_SIZE=1G", "IDLE_TTL=24h")
		d.MustDocker("volume", "create", "-d", "snapvol", "app-production")
		inspect := func(name string) (status map[string]any, options map[string]string) {
			t.Helper()
			var vs []struct {
				Status  map[string]any
				Options map[string]string
			}
			if err := json.Unmarshal([]byte(d.MustDocker("volume", "inspect", name)), &vs); err != nil || len(vs) != 1 {
				t.Fatalf("docker volume inspect %s: %v %v", name, vs, err)
			}
			return vs[0].Status, vs[0].Options
		}

		const grammar = "app-production@latest+opts"
		out, err := d.Docker("volume", "create", "-d", "snapvol", "-o", "ttl=2h", "-o", "bogus=1", grammar)
		if err != nil {
			// Had Docker called Create, snapvol would refuse bogus=1:
			// not lost either, but not what the engines do.
			t.Fatalf("docker volume create -o ... %s failed (%v): Docker called Create, which it should not for a claimed name:\n%s", grammar, err, out)
		}
		status, options := inspect(grammar)
		t.Logf("docker volume inspect %s: Options %v, Status %v", grammar, options, status)
		if options["ttl"] != "2h" || options["bogus"] != "1" {
			t.Errorf("Docker's Options %v: the engine kept no -o options; the premise changed", options)
		}
		if s, _ := status["options"].(string); !strings.Contains(s, "takes no -o options") || !strings.Contains(s, "-o from=SOURCE") {
			t.Errorf("Status options %v: want a note that the name takes no -o options and where they go", status["options"])
		}
		if status["ttl"] != "24h0m0s (IDLE_TTL)" {
			t.Errorf("Status ttl %v, want the IDLE_TTL in effect", status["ttl"])
		}
		// Once mounted (the record is made), the same.
		d.MustDocker("run", "--rm", "--network", "none", "-v", grammar+":/data", dockerd.Image, "true")
		if status, _ = inspect(grammar); status["ttl"] != "24h0m0s (IDLE_TTL)" || !strings.Contains(status["options"].(string), "takes no -o options") {
			t.Errorf("after a mount: Status options %v, ttl %v", status["options"], status["ttl"])
		}

		// A plain name takes them: they arrive, apply, and show.
		d.MustDocker("volume", "create", "-d", "snapvol", "-o", "from=app-production", "-o", "ttl=2h", "ci-opts")
		status, _ = inspect("ci-opts")
		opts, _ := status["options"].(map[string]any)
		if opts["from"] != "app-production" || opts["ref"] != "latest" || opts["ttl"] != "2h0m0s" || status["ttl"] != "2h0m0s (-o ttl)" {
			t.Errorf("ci-opts Status: options %v, ttl %v", status["options"], status["ttl"])
		}
		if out, err := d.Docker("volume", "create", "-d", "snapvol", "-o", "bogus=1", "ci-bogus"); err == nil || !strings.Contains(out+err.Error(), `unknown option "bogus"`) {
			t.Errorf("-o bogus=1 on a plain name: %v\n%s", err, out)
		}
		d.MustDocker("volume", "rm", grammar, "ci-opts")
	})
}
