package bench

// The runner-fleet measures of issue 23 ("Measure"): what fleet_test.go
// records (FleetResult), the targets checked against it and its table.
// Root-free like report.go, so the rendering has unit tests.

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// FleetResult is a production host pushing a source through a loopback
// registry to a CI host, against the bare ways of moving the same change.
type FleetResult struct {
	Size  int64  `json:"size"`
	Label string `json:"label"`
	// The change of every round: BlocksRewritten blocks of BlockSize of
	// the large file rewritten in place at random, SmallFiles new files.
	BlockSize       int `json:"block_size"`
	BlocksRewritten int `json:"blocks_rewritten"`
	SmallFiles      int `json:"small_files"`

	// The first push of the source (a full stream) and the CI host's
	// first pull of it, each the snapvol command start to exit.
	FullPush  Dist  `json:"full_push"`
	FullPull  Dist  `json:"full_pull"`
	FullBytes int64 `json:"full_bytes"`
	// Incremental rounds: the change, snapshot create --replace, then
	// push and pull (timed), then rsync of the same two trees (timed).
	Rounds      int     `json:"rounds"`
	IncPush     Dist    `json:"inc_push"`
	IncPull     Dist    `json:"inc_pull"`
	IncPushPull Dist    `json:"inc_push_pull"`
	IncBytes    []int64 `json:"inc_bytes"`     // bytes the registry received, per round
	Changed     []int64 `json:"changed_bytes"` // bytes the change wrote, per round
	// rsync -a --no-whole-file from a clone of the new version on the
	// production pool into a directory on the CI pool holding the old
	// one: until rsync exits, and the syncfs of the CI pool after it.
	Rsync      Dist `json:"rsync"`
	RsyncFlush Dist `json:"rsync_flush"`
	// The first rsync, into an empty directory (context for the full
	// push+pull).
	RsyncFull Dist `json:"rsync_full"`

	// Lag rounds with PULL_EVERY on the CI host: from the start of
	// snapshot create on the production host until a new clone on the CI
	// host shows the change; its parts; and the bare btrfs send -p |
	// btrfs receive of the same change between the two pools.
	PullEvery   string `json:"pull_every"`
	LagRounds   int    `json:"lag_rounds"`
	Lag         Dist   `json:"lag"`
	LagSnapshot Dist   `json:"lag_snapshot_create"`
	LagPush     Dist   `json:"lag_push"`
	LagVisible  Dist   `json:"lag_visible"` // from the push's end to the version visible on the CI host
	LagClone    Dist   `json:"lag_clone"`   // Get + Mount of the clone that shows it
	Pipe        Dist   `json:"pipe"`
	// The bare steps of a push and a pull of the same change, each alone:
	// btrfs send -p into a file while hashing it, uploading that file to
	// the registry, fetching it back into btrfs receive.
	StepSend    Dist `json:"step_send_hash"`
	StepUpload  Dist `json:"step_upload"`
	StepReceive Dist `json:"step_fetch_receive"`

	// Get + Mount over the CI host's socket of a clone of the replica
	// source's pulled version and of a named snapshot of a local source
	// holding the same tree, alternating.
	CloneReps    int  `json:"clone_reps"`
	CloneReplica Dist `json:"clone_replica"`
	CloneLocal   Dist `json:"clone_local"`

	LoadStart string `json:"loadavg_start"`
	LoadEnd   string `json:"loadavg_end"`
}

// p90 is the nearest-rank 90th percentile of d's samples.
func p90(d Dist) float64 {
	s := append([]float64(nil), d.Samples...)
	sort.Float64s(s)
	return Percentile(s, 90)
}

// byteRatios are uploaded / changed bytes of each round.
func (f *FleetResult) byteRatios() []float64 {
	var out []float64
	for i := range f.IncBytes {
		if i < len(f.Changed) && f.Changed[i] > 0 {
			out = append(out, float64(f.IncBytes[i])/float64(f.Changed[i]))
		}
	}
	return out
}

func (f *FleetResult) targets() []Target {
	var ts []Target
	add := func(what string, v float64, format, goal string, met bool) {
		ts = append(ts, Target{What: what, Value: fmt.Sprintf(format, v), Goal: goal, Met: met && !math.IsNaN(v), Known: !math.IsNaN(v)})
	}
	if f.IncPushPull.N > 0 {
		full := f.FullPush.P50 + f.FullPull.P50
		v := ratio(f.IncPushPull.P50, full)
		add(fmt.Sprintf("fleet, %s source: incremental push+pull (1%% of blocks rewritten, %d files added) / full push+pull (p50)", f.Label, f.SmallFiles), v, "%.3fx", "≤ 0.1x", v <= 0.1)
		v = measured(f.IncPushPull, f.Rsync)
		add("fleet: incremental push+pull / rsync -a --no-whole-file of the same two trees (p50)", v, "%.3fx", "≤ 0.2x", v <= 0.2)
		worst := math.NaN()
		for _, r := range f.byteRatios() {
			if math.IsNaN(worst) || r > worst {
				worst = r
			}
		}
		add("fleet: bytes uploaded for the incremental / bytes the change wrote (worst round)", worst, "%.3fx", "≤ 1.2x", worst <= 1.2)
	}
	if f.Lag.N > 0 {
		d := (f.Lag.P50 - f.Pipe.P50) / 1000
		ts = append(ts, Target{What: fmt.Sprintf("fleet: lag from snapshot create to a clone on the CI host (PULL_EVERY=%s) − bare btrfs send -p | btrfs receive of the same change (p50)", f.PullEvery),
			Value: fmt.Sprintf("%s − %s = %+.2f s", ms(f.Lag.P50), ms(f.Pipe.P50), d), Goal: "≤ 2 s", Met: d <= 2, Known: f.Pipe.N > 0})
	}
	if f.CloneReplica.N > 0 {
		v := measured(f.CloneReplica, f.CloneLocal)
		add("fleet: clone+mount on a replica source / on a local source (p50)", v, "%.2fx", "≤ 1.1x", v <= 1.1)
		ts = append(ts, Target{What: "  the same at p90", Value: fmt.Sprintf("%.2fx", ratio(p90(f.CloneReplica), p90(f.CloneLocal))), Goal: "–", Known: true, Context: true})
	}
	return ts
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func int64s(v []int64, f func(int64) string) string {
	var s []string
	for _, x := range v {
		s = append(s, f(x))
	}
	return strings.Join(s, ", ")
}

func (f *FleetResult) table(w func(string, ...any)) {
	w("\n## Runner fleets\n\n")
	w("Two snapvol daemons in host mode on one machine, each with its own pool (the production host with `PUBLISH=fleet-src@masked*`, a CI host with `REPLICAS=fleet-src=REGISTRY/bench/fleet-src`), and a distribution/v3 registry on loopback. ")
	w("The source: one file of %s of incompressible data. A change: %d of its %d-byte blocks (1%%) rewritten in place at random, %d small files (512 B–8 KiB) added. ", f.Label, f.BlocksRewritten, f.BlockSize, f.SmallFiles)
	w("Push and pull are the `snapvol push … --json` and `snapvol pull … --json` commands, start to exit (the CI host with PULL_EVERY=0 then). ")
	w("rsync: `rsync -a --no-whole-file` from a clone of the new version on the production pool into a directory on the CI pool holding the old one, timed until it exits (its flush column is the CI pool's syncfs after it). ")
	w("Load average (1 minute) %s at the start of this section, %s at its end.\n\n", f.LoadStart, f.LoadEnd)
	w("| | push | pull | push+pull | uploaded | rsync -a --no-whole-file | rsync flush |\n|---|---|---|---|---|---|---|\n")
	w("| full (first push and pull) | %s | %s | %s | %s | %s (into an empty directory) | – |\n", ms(f.FullPush.P50), ms(f.FullPull.P50), ms(f.FullPush.P50+f.FullPull.P50), mib(f.FullBytes), ms(f.RsyncFull.P50))
	w("| incremental, %d rounds (p50 / p95) | %s | %s | %s | %s | %s | %s |\n", f.Rounds, dist(f.IncPush), dist(f.IncPull), dist(f.IncPushPull), int64s(f.IncBytes, mib), dist(f.Rsync), dist(f.RsyncFlush))
	var rs []string
	for _, r := range f.byteRatios() {
		rs = append(rs, fmt.Sprintf("%.3fx", r))
	}
	w("\nBytes the change wrote per round: %s; uploaded / written: %s.\n", int64s(f.Changed, mib), strings.Join(rs, ", "))
	if f.Lag.N > 0 {
		w("\nLag, %d rounds with PULL_EVERY=%s on the CI host: the change, then the bare pipe `btrfs send -q -p PARENT NEW | btrfs receive -e DIR` from the production pool to the CI pool (PARENT the version the CI host has, NEW a read-only snapshot of the changed source), then, timed from the start of `snapvol snapshot create fleet-src masked --replace` on the production host, `snapvol push`, waiting for the CI host's PULL_EVERY loop to make the version visible (`/v1/fleet/replicas`, polled every 10 ms), and Get + Mount of a new clone there that shows the change.\n\n", f.LagRounds, f.PullEvery)
		w("| lag (p50 / p95) | snapshot create | push | push end → visible on the CI host | clone+mount | bare send -p \\| receive | lag − pipe (p50) |\n|---|---|---|---|---|---|---|\n")
		w("| %s | %s | %s | %s | %s | %s | %+.2f s |\n", dist(f.Lag), dist(f.LagSnapshot), dist(f.LagPush), dist(f.LagVisible), dist(f.LagClone), dist(f.Pipe), (f.Lag.P50-f.Pipe.P50)/1000)
		if f.StepSend.N > 0 {
			w("\nWhere the time goes: the bare steps a push and a pull are made of, each alone on the same change (before the pipe and the lag are timed): `btrfs send -p` into a file while hashing it (sha256), as a push does before it can name the layer; uploading that file to the registry (HEAD, POST, PUT, with oras-go); fetching it back piped into `btrfs receive`, checking its digest, as a pull does. The pipe overlaps send and receive; a push and a pull through a registry cannot (the layer's digest comes first), and the CI host's PULL_EVERY loop looks every %s.\n\n", f.PullEvery)
			w("| send -p into a file + sha256 | upload | fetch \\| receive | sum | bare pipe | push | push end → visible |\n|---|---|---|---|---|---|---|\n")
			w("| %s | %s | %s | %s | %s | %s | %s |\n", dist(f.StepSend), dist(f.StepUpload), dist(f.StepReceive), ms(f.StepSend.P50+f.StepUpload.P50+f.StepReceive.P50), dist(f.Pipe), dist(f.LagPush), dist(f.LagVisible))
		}
	}
	if f.CloneReplica.N > 0 {
		w("\nClone+mount on the CI host, %d reps each, alternating, the pool settled before each: Get + Mount of `fleet-src@masked+N` (the replica source's pulled version) and of `local-src@masked+N` (a named snapshot of a plain volume there holding the same tree, the rsync destination above).\n\n", f.CloneReps)
		w("| source | p50 | p90 | p95 |\n|---|---|---|---|\n")
		for _, x := range []struct {
			n string
			d Dist
		}{{"replica", f.CloneReplica}, {"local", f.CloneLocal}} {
			w("| %s | %s | %s | %s |\n", x.n, ms(x.d.P50), ms(p90(x.d)), ms(x.d.P95))
		}
		w("\nReplica / local: p50 %.2fx, p90 %.2fx.\n", ratio(f.CloneReplica.P50, f.CloneLocal.P50), ratio(p90(f.CloneReplica), p90(f.CloneLocal)))
	}
}
