//go:build bench

package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/snapvol/snapvol/admin"
	"github.com/snapvol/snapvol/test"
)

// The operator's commands (issue 13): the real binary, as an operator
// runs it on the host, talking to the plugin over its admin socket.

// cli runs bin/snapvol with args against the bench plugin's STATE_DIR and
// returns how long the process took, start to exit, and its stdout.
func (b *bench) cli(args ...string) (time.Duration, []byte) {
	b.t.Helper()
	args = append(args, "--state-dir", b.p.StateDir)
	cmd := exec.Command(test.Binary(b.t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	el := time.Since(start)
	if err != nil {
		b.t.Fatalf("snapvol %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return el, out
}

func (b *bench) adminClient() *admin.Client { return admin.NewClient(admin.SocketPath(b.p.StateDir)) }

// lsLatency times snapvol ls --json (the binary) and the same request
// from this process, alternating, and checks that both list all volumes.
func (b *bench) lsLatency(volumes int) (cli, api Dist) {
	c := b.adminClient()
	var cs, as []time.Duration
	check := func(what string, n int) {
		if n != volumes {
			b.t.Fatalf("%s listed %d volumes, want %d", what, n, volumes)
		}
	}
	for i := 0; i < b.cfg.lsReps; i++ {
		steps := []func(){
			func() {
				el, out := b.cli("ls", "--json")
				var vs []map[string]any
				if err := json.Unmarshal(out, &vs); err != nil {
					b.t.Fatalf("snapvol ls --json printed no JSON array: %v", err)
				}
				check("snapvol ls --json", len(vs))
				if len(vs) > 0 && vs[0]["name"] == nil {
					b.t.Fatalf("snapvol ls --json: no name in %v", vs[0])
				}
				cs = append(cs, el)
			},
			func() {
				start := time.Now()
				vs, err := c.Volumes()
				el := time.Since(start)
				if err != nil {
					b.t.Fatal(err)
				}
				check("the admin client", len(vs))
				as = append(as, el)
			},
		}
		for j := range steps {
			steps[(i+j)%len(steps)]()
		}
	}
	return NewDist(cs), NewDist(as)
}

// adminLatency is snapvol snapshot create SOURCE NAME --from VOLUME, the
// masking flow's step, against a clone + mount of the same source (what
// a CI job waits for). The operator's clone is made once, first, as the
// README's masking flow does; every snapshot is removed again, untimed.
func (b *bench) adminLatency(res *Results, s *source) {
	const work = "mask-work"
	b.cli("volume", "create", work, "--from", s.name+"@now")
	c := b.adminClient()
	a := &AdminResult{Source: s.name}
	var cliT, apiT, cloneT, verT []time.Duration
	// Warm up: the first @latest takes the snapshot the others reuse,
	// and the first exec of the binary reads it from disk.
	b.cloneOnce(s.name+"@latest+admin-warm", s)
	b.cli("version")
	b.settle()
	for rep := 0; rep < b.cfg.adminReps; rep++ {
		steps := []func(){
			func() {
				name := fmt.Sprintf("masked-cli-%d", rep)
				el, out := b.cli("snapshot", "create", s.name, name, "--from", work)
				if !strings.Contains(string(out), name) {
					b.t.Fatalf("snapvol snapshot create printed %q, which does not name %s", out, name)
				}
				cliT = append(cliT, el)
				if err := c.RemoveSnapshot(s.name, name); err != nil {
					b.t.Fatal(err)
				}
			},
			func() {
				name := fmt.Sprintf("masked-api-%d", rep)
				start := time.Now()
				info, err := c.CreateSnapshot(s.name, name, work, false)
				el := time.Since(start)
				if err != nil || info.Name != name {
					b.t.Fatalf("admin client snapshot create: %+v, %v", info, err)
				}
				apiT = append(apiT, el)
				if err := c.RemoveSnapshot(s.name, name); err != nil {
					b.t.Fatal(err)
				}
			},
			func() { cloneT = append(cloneT, b.cloneOnce(fmt.Sprintf("%s@latest+admin-%d", s.name, rep), s)) },
			func() {
				el, _ := b.cli("version")
				verT = append(verT, el)
			},
		}
		for j := range steps {
			steps[(j+rep)%len(steps)]()
			b.settle()
		}
	}
	b.cli("volume", "rm", work)
	b.settle()
	a.SnapshotCLI, a.SnapshotAPI, a.CloneLatest, a.Version = NewDist(cliT), NewDist(apiT), NewDist(cloneT), NewDist(verT)
	res.Admin = a
	b.t.Logf("snapvol snapshot create --from: %s (admin client %s); clone+mount @latest %s; snapvol version %s; binary / clone+mount %.2fx",
		dist(a.SnapshotCLI), dist(a.SnapshotAPI), dist(a.CloneLatest), dist(a.Version), ratio(a.SnapshotCLI.P50, a.CloneLatest.P50))
}
