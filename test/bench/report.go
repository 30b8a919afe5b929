// Package bench is snapvol's performance benchmark: `make bench` runs it
// (bench_test.go, build tag "bench", root, real btrfs, real dockerd) and
// it writes a Markdown table, a JSON file of every sample and a PNG plot.
// This file and plot.go hold the parts that need no root: statistics,
// targets, the table and the plot, with their own unit tests.
package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"time"
)

// Dist is a latency distribution in milliseconds.
type Dist struct {
	N       int       `json:"n"`
	P50     float64   `json:"p50_ms"`
	P95     float64   `json:"p95_ms"`
	P99     float64   `json:"p99_ms"`
	Min     float64   `json:"min_ms"`
	Max     float64   `json:"max_ms"`
	Samples []float64 `json:"samples_ms,omitempty"`
}

// NewDist summarises samples (nearest-rank percentiles).
func NewDist(samples []time.Duration) Dist {
	d := Dist{N: len(samples)}
	if len(samples) == 0 {
		return d
	}
	ms := make([]float64, len(samples))
	for i, s := range samples {
		ms[i] = float64(s) / float64(time.Millisecond)
	}
	d.Samples = append([]float64(nil), ms...)
	sort.Float64s(ms)
	d.P50 = Percentile(ms, 50)
	d.P95 = Percentile(ms, 95)
	d.P99 = Percentile(ms, 99)
	d.Min, d.Max = ms[0], ms[len(ms)-1]
	return d
}

// Percentile is the nearest-rank percentile of sorted values; the median
// of an even count is the mean of the two middle values.
func Percentile(sorted []float64, p float64) float64 {
	n := len(sorted)
	if n == 0 {
		return math.NaN()
	}
	if p == 50 {
		if n%2 == 1 {
			return sorted[n/2]
		}
		return (sorted[n/2-1] + sorted[n/2]) / 2
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	if rank < 1 {
		rank = 1
	}
	if rank > n {
		rank = n
	}
	return sorted[rank-1]
}

// SizeResult is clone + mount against copying, for one source size.
type SizeResult struct {
	Label string `json:"label"`
	Bytes int64  `json:"bytes"`
	Files int    `json:"files"`
	// Get + Mount of SOURCE@now+TAG and SOURCE@latest+TAG over the socket.
	Now    Dist `json:"now"`
	Latest Dist `json:"latest"`
	// The physical limit: one writable-snapshot ioctl of the source; the
	// same plus the bind mount a container needs; and what @now does at
	// the least (read-only snapshot, writable snapshot of it, bind mount).
	Bare      Dist `json:"bare_ioctl"`
	BareMount Dist `json:"bare_ioctl_bind"`
	BareNow   Dist `json:"bare_2ioctl_bind"`
	// What the socket alone costs at the same moment: Get of the same
	// kind of name and a no-op request (Capabilities) in Mount's place,
	// after the same settle. Bare ioctl + bind + this is the least any
	// plugin answering over the socket could take.
	Null Dist `json:"null_round_trips"`
	// cp -a until cp exits, the syncfs after it, and cp -a --reflink=always.
	Cp      Dist `json:"cp_a"`
	CpFlush Dist `json:"cp_a_flush"`
	Reflink Dist `json:"cp_reflink"`
}

// ConcResult is N CI jobs cloning the same source at once.
type ConcResult struct {
	Jobs      int     `json:"jobs"`
	Rounds    int     `json:"rounds"`
	Wall      Dist    `json:"wall"`      // whole round, start to last job done
	PerJob    Dist    `json:"per_job"`   // every job of every round
	Snapshots int     `json:"snapshots"` // distinct snapshots the jobs' clones came from
	Ratio     float64 `json:"ratio_wall_vs_one_job"`
	CPU       CPUUse  `json:"cpu"`
	// The physical limit: as many bare snapshot ioctls of the source at
	// once, wall time, and its ratio to one alone.
	BareWall  Dist    `json:"bare_wall"`
	BareRatio float64 `json:"bare_ratio"`
	// The machine's floor: as many no-op jobs (same client, same six
	// round trips, answered from memory) at once, and the ratio to one.
	NullWall  Dist    `json:"null_wall"`
	NullRatio float64 `json:"null_ratio"`
}

// CPUUse is where CPU time went while jobs ran: the share of all the
// machine's CPUs that were busy (plugin, benchmark client, kernel threads
// of btrfs and the loop device, and anything else running), and the CPU
// time of the plugin and of the benchmark process per job.
type CPUUse struct {
	Busy           float64 `json:"busy"`
	PluginMsPerJob float64 `json:"plugin_ms_per_job"`
	BenchMsPerJob  float64 `json:"bench_ms_per_job"`
}

// APIResult is Get, List and Capabilities over the socket at one size.
type APIResult struct {
	Volumes      int     `json:"volumes"`
	Materialized int     `json:"materialized"`
	Get          Dist    `json:"get"`
	GetClaimed   Dist    `json:"get_claimed"`
	List         Dist    `json:"list"`
	Capabilities Dist    `json:"capabilities"`
	RSSMiB       float64 `json:"rss_mib"`
	DBMiB        float64 `json:"db_mib"`
	// snapvol ls --json: the real binary through the admin socket
	// (process start included), and the same request from the bench
	// process (admin.Client), which leaves the process start out.
	LsCLI   Dist `json:"ls_json_cli"`
	LsAdmin Dist `json:"ls_admin_client"`
}

// ProdResult is production under clones (issue 12): a writer's small
// synced writes on a plain volume while nothing else happens and while
// another client takes @now clones of it in a loop, in alternating
// blocks; and clone + mount on a pool with quotas (the defaults) against
// one without, in the same run. Production's writer is also timed while
// the benchmark takes the same snapshots bare, at the plugin's pace.
type ProdResult struct {
	Seconds    float64 `json:"seconds_per_phase"`
	Rounds     int     `json:"rounds"`
	WriteBytes int     `json:"write_bytes"`
	// Write + fdatasync latency of production.
	Idle    Dist `json:"idle"`
	Cloning Dist `json:"cloning"`
	// The clones taken meanwhile: how many, Create + Mount, and the
	// whole Create + Mount + Unmount + Remove.
	Clones     int  `json:"clones"`
	CloneMount Dist `json:"clone_mount"`
	CloneCycle Dist `json:"clone_cycle"`
	// The same writes while this process takes the snapshots bare, at
	// the plugin's pace: a read-only snapshot of production, a writable
	// one of it, a bind mount, then all undone.
	BareCloning   Dist `json:"bare_cloning"`
	BareSnapshots int  `json:"bare_snapshot_pairs"`
	BareCycle     Dist `json:"bare_cycle"`
	// The same writes while storms of StormJobs jobs start at once on
	// @now (Create + Mount each, all at once; then all torn down), one
	// storm after another (issue 20 item 6): how many storms, the
	// snapshots they took in all, and how long until a storm's jobs were
	// all mounted.
	Storm          Dist `json:"storm"`
	StormJobs      int  `json:"storm_jobs"`
	Storms         int  `json:"storms"`
	StormSnapshots int  `json:"storm_snapshots"`
	StormStart     Dist `json:"storm_start"`
	// Get + Mount over the socket, on a pool with quotas (the default
	// POOL_RESERVE, and whatever CLONE_SIZE says) and on one without
	// (POOL_RESERVE=0, CLONE_SIZE=0).
	Quotas        string `json:"quotas"`
	QuotaLatest   Dist   `json:"quota_latest"`
	NoQuotaLatest Dist   `json:"noquota_latest"`
	QuotaNow      Dist   `json:"quota_now"`
	NoQuotaNow    Dist   `json:"noquota_now"`
}

// AdminResult is snapvol snapshot create SOURCE NAME --from VOLUME (of an
// operator clone) against a clone + mount of the same source.
type AdminResult struct {
	Source string `json:"source"`
	// The real binary: process start, the request over the admin
	// socket, printing the answer.
	SnapshotCLI Dist `json:"snapshot_from_cli"`
	// The same request from the bench process (admin.Client).
	SnapshotAPI Dist `json:"snapshot_from_admin_client"`
	// Get + Mount of SOURCE@latest over the VolumeDriver socket.
	CloneLatest Dist `json:"clone_latest"`
	// snapvol version: starting the command (bin/snapvol) and asking the
	// plugin its version.
	Version Dist `json:"version_cli"`
	// The same with the daemon binary (bin/snapvold, every command built
	// in): what the command cost while it was the one binary.
	VersionDaemon Dist `json:"version_daemon"`
	// A static hello-world Go binary: the floor of a Go program's start
	// on this machine, measured in the same rotation.
	Hello Dist `json:"hello_go"`
}

// DockerResult is docker run with a clone against a local volume.
type DockerResult struct {
	Skipped string `json:"skipped,omitempty"`
	Engine  string `json:"engine,omitempty"`
	Clone   Dist   `json:"clone"`
	Local   Dist   `json:"local"`
}

// GoBench is one line of `go test -bench` output.
type GoBench struct {
	Name     string  `json:"name"`
	NsOp     float64 `json:"ns_op"`
	BytesOp  float64 `json:"bytes_op"`
	AllocsOp float64 `json:"allocs_op"`
}

// Results is one run of `make bench`.
type Results struct {
	Started   time.Time     `json:"started"`
	Duration  string        `json:"duration"`
	Host      string        `json:"host"`
	CPUs      int           `json:"cpus"`
	LoadStart string        `json:"loadavg_start"`
	LoadEnd   string        `json:"loadavg_end"`
	Notes     []string      `json:"notes,omitempty"`
	Sizes     []SizeResult  `json:"sizes"`
	Conc      []ConcResult  `json:"concurrency"`
	One       Dist          `json:"one_job"`
	OneCPU    CPUUse        `json:"one_job_cpu"`
	BareOne   Dist          `json:"bare_one"`
	NullOne   Dist          `json:"null_one"`
	API       []APIResult   `json:"api"`
	Prod      *ProdResult   `json:"prod,omitempty"`
	Admin     *AdminResult  `json:"admin,omitempty"`
	Docker    *DockerResult `json:"docker,omitempty"`
	Fleet     *FleetResult  `json:"fleet,omitempty"`
	GoBench   []GoBench     `json:"go_bench"`
}

// Target is one goal of issue 7, checked against a ratio from this run.
type Target struct {
	What  string
	Value string
	Goal  string
	Met   bool
	// Known is false when the run lacks the numbers (e.g. no dockerd).
	Known bool
	// Context rows are not goals: they show what a goal is up against.
	Context bool
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

func (r *Results) size(label string) *SizeResult {
	for i := range r.Sizes {
		if r.Sizes[i].Label == label {
			return &r.Sizes[i]
		}
	}
	return nil
}

// smallest and largest source sizes measured.
func (r *Results) ends() (small, big *SizeResult) {
	if len(r.Sizes) == 0 {
		return nil, nil
	}
	small, big = &r.Sizes[0], &r.Sizes[0]
	for i := range r.Sizes {
		if r.Sizes[i].Bytes < small.Bytes {
			small = &r.Sizes[i]
		}
		if r.Sizes[i].Bytes > big.Bytes {
			big = &r.Sizes[i]
		}
	}
	return small, big
}

func (r *Results) api(n int) *APIResult {
	for i := range r.API {
		if r.API[i].Volumes == n {
			return &r.API[i]
		}
	}
	return nil
}

// cpus is the machine's CPU count (from Host for runs that did not record it).
func (r *Results) cpus() int {
	if r.CPUs > 0 {
		return r.CPUs
	}
	var n int
	if i := strings.Index(r.Host, " CPUs"); i > 0 {
		f := strings.Fields(r.Host[:i])
		fmt.Sscan(f[len(f)-1], &n)
	}
	return n
}

// cpuBound is the least c's wall time / one job can be when the CPU the
// jobs used had to share the machine's CPUs: jobs × CPU per job / CPUs,
// over one job's wall time. No scheduling gets n jobs below it.
func (r *Results) cpuBound(c ConcResult) float64 {
	cpus := r.cpus()
	if cpus == 0 || r.One.P50 == 0 {
		return 0
	}
	return float64(c.Jobs) * (c.CPU.PluginMsPerJob + c.CPU.BenchMsPerJob) / float64(cpus) / r.One.P50
}

// Targets checks the run against the goals of issues 7, 11, 12 and 13.
func (r *Results) Targets() []Target {
	var ts []Target
	add := func(what string, v float64, format, goal string, met bool) {
		ts = append(ts, Target{What: what, Value: fmt.Sprintf(format, v), Goal: goal, Met: met && !math.IsNaN(v), Known: !math.IsNaN(v)})
	}
	context := func(what, value string) {
		ts = append(ts, Target{What: what, Value: value, Goal: "–", Known: true, Context: true})
	}
	if small, big := r.ends(); small != nil && small != big {
		for _, x := range []struct {
			ref  string
			b, s Dist
		}{{"@now", big.Now, small.Now}, {"@latest", big.Latest, small.Latest}} {
			v := ratio(x.b.P50, x.s.P50)
			add(fmt.Sprintf("clone+mount %s: %s source / %s source (p50)", x.ref, big.Label, small.Label), v, "%.2fx", "≤ 1.5x", v <= 1.5)
		}
		v := measured(big.Cp, big.Latest)
		add(fmt.Sprintf("cp -a of %s / clone+mount @latest of %s (p50)", big.Label, big.Label), v, "%.0fx faster", "≥ 50x", v >= 50)
		v = measured(big.Cp, big.Now)
		add(fmt.Sprintf("cp -a of %s / clone+mount @now of %s (p50)", big.Label, big.Label), v, "%.0fx faster", "≥ 50x", v >= 50)
	}
	if len(r.Sizes) > 0 {
		// Issue 11: at every size, not only the worst.
		var each, floors []string
		worst, worstNow := 0.0, 0.0
		for _, s := range r.Sizes {
			v := ratio(s.Latest.P50, s.Bare.P50)
			worst = math.Max(worst, v)
			worstNow = math.Max(worstNow, ratio(s.Now.P50, s.BareNow.P50))
			each = append(each, fmt.Sprintf("%s %.2fx", s.Label, v))
			if s.Null.N > 0 {
				floors = append(floors, fmt.Sprintf("%s %.2fx", s.Label, ratio(s.BareMount.P50+s.Null.P50, s.Bare.P50)))
			}
		}
		ts = append(ts, Target{What: "plugin @latest clone+mount / bare snapshot ioctl (p50), at every size", Value: strings.Join(each, ", "),
			Goal: "≤ 1.5x", Met: worst <= 1.5, Known: !math.IsNaN(worst)})
		if len(floors) == len(r.Sizes) {
			context("  the floor: (bare ioctl + bind mount + Get and a no-op request over the socket) / bare ioctl (p50)", strings.Join(floors, ", "))
		}
		add("plugin @now / bare 2 ioctls + bind mount (p50, worst size)", worstNow, "%.2fx", "≤ 2x", worstNow <= 2)
	}
	if d := r.Docker; d != nil && d.Skipped == "" {
		v := ratio(d.Clone.P50, d.Local.P50)
		add("docker run with a clone / with a local volume (p50)", v, "%.2fx", "≤ 1.3x", v <= 1.3)
	} else {
		ts = append(ts, Target{What: "docker run with a clone / with a local volume (p50)", Value: "not measured", Goal: "≤ 1.3x"})
	}
	for _, c := range r.Conc {
		if c.Jobs == 32 {
			add("32 concurrent jobs: wall time / one job alone (p50)", c.Ratio, "%.2fx", "≤ 4x", c.Ratio <= 4)
			context("  the physical limit: 32 bare snapshot ioctls at once / one (p50)", fmt.Sprintf("%.2fx", c.BareRatio))
			if b := r.cpuBound(c); b > 0 {
				context(fmt.Sprintf("  the CPU bound: 32 × CPU per job (plugin + client) / %d CPUs / one job (p50)", r.cpus()), fmt.Sprintf("%.2fx", b))
			}
			if c.NullRatio > 0 {
				context("  32 no-op jobs (same client, six round trips answered from memory) at once / one (p50)", fmt.Sprintf("%.2fx", c.NullRatio))
			}
		}
	}
	if a := r.api(10000); a != nil {
		add("Get p50 at 10,000 volumes", a.Get.P50, "%.3f ms", "< 1 ms", a.Get.P50 < 1)
		add("List p50 at 10,000 volumes", a.List.P50, "%.2f ms", "< 10 ms", a.List.P50 < 10)
		add("plugin RSS at 10,000 volumes", a.RSSMiB, "%.1f MiB", "< 64 MiB", a.RSSMiB < 64)
		if a.LsCLI.N > 0 {
			add("snapvol ls --json p50 at 10,000 volumes (the binary, over the admin socket)", a.LsCLI.P50, "%.1f ms", "< 100 ms", a.LsCLI.P50 < 100)
		}
	}
	if p := r.Prod; p != nil {
		v := ratio(p.Cloning.P99, p.Idle.P99)
		add("production 4 KiB write+fdatasync p99: while @now clones are taken / idle", v, "%.2fx", "≤ 2x", v <= 2)
		context("  the same at p50", fmt.Sprintf("%.2fx", ratio(p.Cloning.P50, p.Idle.P50)))
		if p.BareCloning.N > 0 {
			context("  p99 while the same snapshots are taken bare, at the plugin's pace / idle", fmt.Sprintf("%.2fx", ratio(p.BareCloning.P99, p.Idle.P99)))
		}
		if p.Storm.N > 0 {
			v := ratio(p.Storm.P99, p.Idle.P99)
			add(fmt.Sprintf("production 4 KiB write+fdatasync p99 while %d jobs start at once on @now / idle", p.StormJobs), v, "%.2fx", "≤ 2x", v <= 2)
			context("  snapshots per storm of jobs (group commit)", fmt.Sprintf("%.1f", float64(p.StormSnapshots)/float64(max(1, p.Storms))))
		}
		// Issue 20: "on" is the whole space accounting (simple quotas, a
		// quota group per clone in the reserve group, the check of free
		// space against the reserve before every snapshot and clone).
		v = ratio(p.QuotaLatest.P50, p.NoQuotaLatest.P50)
		add("clone+mount @latest: space accounting on (defaults: a quota group per clone, the reserve check) / quotas off (p50)", v, "%.2fx", "≤ 1.1x", v <= 1.1)
		v = ratio(p.QuotaNow.P50, p.NoQuotaNow.P50)
		add("clone+mount @now: space accounting on (defaults, with what the source wrote since its last snapshot) / quotas off (p50)", v, "%.2fx", "≤ 1.1x", v <= 1.1)
	}
	if a := r.Admin; a != nil {
		v := ratio(a.SnapshotCLI.P50, a.CloneLatest.P50)
		add("snapvol snapshot create --from (the binary) / clone+mount @latest of the same source (p50)", v, "%.2fx", "≤ 2x", v <= 2)
		if a.Hello.N > 0 {
			// Issue 24: the command starts in under 5 ms where a
			// hello-world Go program starts in 1 ms: 5x that floor,
			// measured in the same run so the machine's load cancels.
			v = ratio(a.Version.P50, a.Hello.P50)
			add("snapvol version (start + one request to the plugin) / a hello-world Go binary (p50)", v, "%.2fx", "≤ 5x", v <= 5)
			context("  snapvold version (the daemon binary, every command built in: the command before issue 24) / hello-world", fmt.Sprintf("%.2fx", ratio(a.VersionDaemon.P50, a.Hello.P50)))
			context("  snapvol version, snapvold version, hello-world (p50)", fmt.Sprintf("%.2f ms, %.2f ms, %.2f ms", a.Version.P50, a.VersionDaemon.P50, a.Hello.P50))
		}
	}
	if r.Fleet != nil {
		ts = append(ts, r.Fleet.targets()...)
	}
	return ts
}

// measured is a/b of the p50s, NaN when either was not measured.
func measured(a, b Dist) float64 {
	if a.N == 0 || b.N == 0 {
		return math.NaN()
	}
	return ratio(a.P50, b.P50)
}

func ms(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v >= 10000:
		return fmt.Sprintf("%.1f s", v/1000)
	case v >= 1000:
		return fmt.Sprintf("%.2f s", v/1000)
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	case v >= 1:
		return fmt.Sprintf("%.2f ms", v)
	default:
		return fmt.Sprintf("%.3f ms", v)
	}
}

func dist(d Dist) string {
	if d.N == 0 {
		return "–"
	}
	return ms(d.P50) + " / " + ms(d.P95)
}

// Markdown renders the run as the tables docs/bench.md holds.
func (r *Results) Markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# snapvol benchmark\n\n")
	w("Run %s, took %s, on %s (1-minute load average %s at the start, %s at the end: other work shared the machine). ",
		r.Started.UTC().Format(time.RFC3339), r.Duration, r.Host, r.LoadStart, r.LoadEnd)
	w("Produced by `make bench` (test/bench); every number below comes from this one run. ")
	w("Cells are median / p95 unless marked; ratios are of medians. Absolute times depend on the machine; the ratios are the result.\n\n")

	w("## Targets\n\n| target | this run | goal | |\n|---|---|---|---|\n")
	for _, t := range r.Targets() {
		mark := "met"
		switch {
		case t.Context:
			mark = "context"
		case !t.Known:
			mark = "not measured"
		case !t.Met:
			mark = "**missed**"
		}
		w("| %s | %s | %s | %s |\n", t.What, t.Value, t.Goal, mark)
	}

	if len(r.Sizes) > 0 {
		r.sizeTables(w)
	}
	r.otherTables(w)
	return b.String()
}

func (r *Results) sizeTables(w func(string, ...any)) {
	w("\n## Clone + mount against copying\n\n")
	w("Get + Mount over the plugin's socket (what `docker run -v SOURCE@REF+TAG:/data` sends), on a btrfs pool on a loop file. ")
	w("Sources hold incompressible data in many files (sizes log-uniform 4 KiB–1 MiB), written and synced before timing. ")
	w("Bare ioctl: one writable btrfs snapshot of the source, timed in the benchmark process on the same pool. ")
	w("cp -a reads a source still in the page cache and is timed until it exits; the flush column is the syncfs after it.\n\n")
	w("| source | files | @now | @latest | bare ioctl | bare ioctl + bind | bare 2 ioctls + bind | cp -a | cp -a flush | cp -a --reflink | cp -a / @latest |\n")
	w("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range r.Sizes {
		w("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %.0fx |\n", s.Label, s.Files, dist(s.Now), dist(s.Latest), dist(s.Bare), dist(s.BareMount), dist(s.BareNow),
			dist(s.Cp), dist(s.CpFlush), dist(s.Reflink), ratio(s.Cp.P50, s.Latest.P50))
	}
	if small, big := r.ends(); small != nil && small != big {
		w("\nConstant time: %s / %s source, p50: @now %.2fx, @latest %.2fx, bare ioctl %.2fx; cp -a %.0fx, reflink %.0fx.\n",
			big.Label, small.Label, ratio(big.Now.P50, small.Now.P50), ratio(big.Latest.P50, small.Latest.P50), ratio(big.Bare.P50, small.Bare.P50),
			ratio(big.Cp.P50, small.Cp.P50), ratio(big.Reflink.P50, small.Reflink.P50))
	}
	w("\nThe plugin's share (p50). Socket floor: Get of a name of the same kind and a no-op request (Capabilities) in Mount's place, timed at the same point of the rotation (after the same settle): what the two round trips cost with no work behind them. ")
	w("Floor ratio: (bare ioctl + bind + socket floor) / bare ioctl, the least any plugin answering over the socket could reach.\n\n")
	w("| source | @latest / bare ioctl | floor ratio | @latest / bare ioctl + bind | @now / bare 2 ioctls + bind | socket floor | plugin time over bare ioctl + bind, @latest | of which over the socket floor |\n|---|---|---|---|---|---|---|---|\n")
	for _, s := range r.Sizes {
		w("| %s | %.2fx | %s | %.2fx | %.2fx | %s | %s | %s |\n", s.Label, ratio(s.Latest.P50, s.Bare.P50), floorRatio(s), ratio(s.Latest.P50, s.BareMount.P50), ratio(s.Now.P50, s.BareNow.P50),
			dist(s.Null), ms(s.Latest.P50-s.BareMount.P50), nullMs(s.Null, s.Latest.P50-s.BareMount.P50-s.Null.P50))
	}
}

func floorRatio(s SizeResult) string {
	if s.Null.N == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2fx", ratio(s.BareMount.P50+s.Null.P50, s.Bare.P50))
}

func nullMs(d Dist, v float64) string {
	if d.N == 0 {
		return "–"
	}
	return ms(v)
}

func (r *Results) otherTables(w func(string, ...any)) {

	if d := r.Docker; d != nil {
		w("\n## docker run\n\n")
		if d.Skipped != "" {
			w("Not measured: %s\n", d.Skipped)
		} else {
			w("`docker run --rm --network none -v app-production@latest+N:/data busybox true` against the same with a fresh `local` volume each run, on a private dockerd (%s) with the managed plugin.\n\n", d.Engine)
			w("| volume | docker run |\n|---|---|\n| snapvol clone | %s |\n| local volume | %s |\n\nOverhead: %.2fx (p50).\n", dist(d.Clone), dist(d.Local), ratio(d.Clone.P50, d.Local.P50))
		}
	}

	if len(r.Conc) > 0 {
		w("\n## Concurrent CI jobs\n\n")
		w("A job: Get + Mount of `SOURCE@latest+JOB` (the largest source), read a file, Get, Unmount, Remove, over the socket; all jobs of a round start together. ")
		w("CPU: share of the machine's CPUs busy while jobs ran, and CPU time per job of the plugin and of the benchmark process (the client).\n\n")
		w("The physical limit: the same number of bare writable-snapshot ioctls of the source started at once (each into its own directory), wall time to the last. ")
		w("No-op jobs: the same number at once, each the same client making six round trips the plugin answers from memory (Capabilities) and reading the same file: what the protocol alone costs under concurrency. ")
		w("CPU bound: jobs × CPU per job (plugin + client) / CPUs / one job's wall time, the least the wall time / one job ratio can be with that much CPU work shared by this machine's CPUs.\n\n")
		w("| jobs at once | rounds | wall time per round | per job | snapshots used | wall / one job | CPU bound | bare ioctls at once | bare / one bare | no-op jobs at once | no-op / one no-op | CPUs busy | plugin CPU / job | client CPU / job |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		w("| 1 | %d | %s | %s | 1 | 1x | – | %s | 1x | %s | 1x | %.0f%% | %.2f ms | %.2f ms |\n", r.One.N, dist(r.One), dist(r.One), dist(r.BareOne), dist(r.NullOne),
			100*r.OneCPU.Busy, r.OneCPU.PluginMsPerJob, r.OneCPU.BenchMsPerJob)
		for _, c := range r.Conc {
			w("| %d | %d | %s | %s | %d | %.2fx | %.2fx | %s | %.2fx | %s | %.2fx | %.0f%% | %.2f ms | %.2f ms |\n", c.Jobs, c.Rounds, dist(c.Wall), dist(c.PerJob), c.Snapshots, c.Ratio,
				r.cpuBound(c), dist(c.BareWall), c.BareRatio, dist(c.NullWall), c.NullRatio, 100*c.CPU.Busy, c.CPU.PluginMsPerJob, c.CPU.BenchMsPerJob)
		}
	}

	if len(r.API) > 0 {
		w("\n## Get, List, Capabilities, snapvol ls and memory\n\n")
		w("Over the socket; volumes are clone records (1 in 100 materialized and mounted). Get of a known name; Get claimed: a grammar name nobody created (Docker's probe). RSS is VmRSS of the plugin process. ")
		w("`snapvol ls --json`: the real binary with `--state-dir`, through the admin socket, process start and printing included (its output is checked to list every volume); admin client: the same request from the benchmark process.\n\n")
		w("| volumes | Get | Get claimed | List | Capabilities | `snapvol ls --json` | ls, admin client | RSS | bbolt file |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, a := range r.API {
			w("| %d | %s | %s | %s | %s | %s | %s | %.1f MiB | %.1f MiB |\n", a.Volumes, dist(a.Get), dist(a.GetClaimed), dist(a.List), dist(a.Capabilities), dist(a.LsCLI), dist(a.LsAdmin), a.RSSMiB, a.DBMiB)
		}
	}

	if a := r.Admin; a != nil {
		w("\n## Operator snapshot of a clone\n\n")
		w("`snapvol volume create mask-work --from %s@now` once; then, in rotation with a settled pool before each: `snapvol snapshot create %s NAME --from mask-work` (the real binary: process start, the request over the admin socket, the answer printed), ", a.Source, a.Source)
		w("the same request from the benchmark process (admin client), Get + Mount of `%s@latest+TAG` over the VolumeDriver socket, `snapvol version` (the command bin/snapvol starting and asking the plugin its version), `snapvold version` (the same from the daemon binary, which links everything) and a static hello-world Go binary (the floor of a Go program's start here). Each snapshot is removed again, untimed.\n\n", a.Source)
		w("| snapshot create --from (binary) | same, admin client | clone+mount @latest | `snapvol version` | `snapvold version` | hello-world Go | binary / clone+mount |\n|---|---|---|---|---|---|---|\n")
		w("| %s | %s | %s | %s | %s | %s | %.2fx |\n", dist(a.SnapshotCLI), dist(a.SnapshotAPI), dist(a.CloneLatest), dist(a.Version), dist(a.VersionDaemon), dist(a.Hello), ratio(a.SnapshotCLI.P50, a.CloneLatest.P50))
	}

	if p := r.Prod; p != nil {
		w("\n## Production while clones are taken\n\n")
		w("A writer on a plain volume (production, on a pool with the default settings: %s) overwrites %d-byte blocks of a preallocated file, each followed by fdatasync, ", p.Quotas, p.WriteBytes)
		w("for %.0f s with nothing else running, %.0f s while another client takes `@now` clones of it in a loop (Create + Mount + Unmount + Remove over the socket, one after the other), ", p.Seconds, p.Seconds)
		if p.Storm.N == 0 {
			w("and ")
		}
		w("%.0f s while the benchmark takes the same snapshots bare at the plugin's pace (read-only snapshot of production, writable snapshot of it, bind mount; undone)", p.Seconds)
		if p.Storm.N > 0 {
			w(", and %.0f s while storms of %d jobs start at once on `@now` (Create + Mount each, all at once, then all unmounted and removed, storm after storm; requests that arrive while a snapshot is taken share the next one)", p.Seconds, p.StormJobs)
		}
		w(": ")
		w("%d rounds of one block of each, their order rotating; the pool settles between blocks. ", p.Rounds)
		w("Cells are p50 / p95 / p99.\n\n")
		w("| phase | writes | write + fdatasync | clones taken | clone Create + Mount | whole clone cycle |\n|---|---|---|---|---|---|\n")
		w("| idle | %d | %s | – | – | – |\n", p.Idle.N, dist3(p.Idle))
		w("| taking clones through the plugin | %d | %s | %d | %s | %s |\n", p.Cloning.N, dist3(p.Cloning), p.Clones, dist3(p.CloneMount), dist3(p.CloneCycle))
		if p.BareCloning.N > 0 {
			w("| taking the same snapshots bare, at the plugin's pace | %d | %s | %d | – | %s |\n", p.BareCloning.N, dist3(p.BareCloning), p.BareSnapshots, dist3(p.BareCycle))
		}
		if p.Storm.N > 0 {
			w("| %d jobs starting at once on @now, storm after storm (%d storms, %d snapshots) | %d | %s | %d | %s (all %d) | – |\n",
				p.StormJobs, p.Storms, p.StormSnapshots, p.Storm.N, dist3(p.Storm), p.Storms*p.StormJobs, dist3(p.StormStart), p.StormJobs)
		}
		w("\nWhile cloning / idle: p50 %.2fx, p99 %.2fx", ratio(p.Cloning.P50, p.Idle.P50), ratio(p.Cloning.P99, p.Idle.P99))
		if p.BareCloning.N > 0 {
			w("; bare snapshots / idle: p50 %.2fx, p99 %.2fx", ratio(p.BareCloning.P50, p.Idle.P50), ratio(p.BareCloning.P99, p.Idle.P99))
		}
		if p.Storm.N > 0 {
			w("; %d jobs at once on @now / idle: p50 %.2fx, p99 %.2fx", p.StormJobs, ratio(p.Storm.P50, p.Idle.P50), ratio(p.Storm.P99, p.Idle.P99))
		}
		w(".\n")
		w("\nQuotas: Get + Mount over the socket on two pools of the same size holding the same production data, one plugin with the defaults (%s) and one with POOL_RESERVE=0 and CLONE_SIZE=0 (quotas never enabled), in rotation, settled before each.\n\n", p.Quotas)
		w("| ref | quotas on | quotas off | on / off |\n|---|---|---|---|\n")
		w("| @latest | %s | %s | %.2fx |\n", dist(p.QuotaLatest), dist(p.NoQuotaLatest), ratio(p.QuotaLatest.P50, p.NoQuotaLatest.P50))
		w("| @now | %s | %s | %.2fx |\n", dist(p.QuotaNow), dist(p.NoQuotaNow), ratio(p.QuotaNow.P50, p.NoQuotaNow.P50))
	}

	if r.Fleet != nil {
		r.Fleet.table(w)
	}

	if len(r.GoBench) > 0 {
		w("\n## Go benchmarks (driver hot paths, in-memory backend, real bbolt)\n\n| benchmark | time/op | B/op | allocs/op |\n|---|---|---|---|\n")
		for _, g := range r.GoBench {
			w("| %s | %s | %.0f | %.0f |\n", g.Name, ns(g.NsOp), g.BytesOp, g.AllocsOp)
		}
	}
	if len(r.Notes) > 0 {
		w("\n## Notes\n\n")
		for _, n := range r.Notes {
			w("- %s\n", n)
		}
	}
}

func dist3(d Dist) string {
	if d.N == 0 {
		return "–"
	}
	return ms(d.P50) + " / " + ms(d.P95) + " / " + ms(d.P99)
}

func ns(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2f ms", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1f µs", v/1e3)
	default:
		return fmt.Sprintf("%.0f ns", v)
	}
}

// ParseGoBench reads `go test -bench -benchmem` output.
func ParseGoBench(out string) []GoBench {
	var gs []GoBench
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		g := GoBench{Name: strings.TrimPrefix(f[0], "Benchmark")}
		// Drop the -GOMAXPROCS suffix.
		if i := strings.LastIndexByte(g.Name, '-'); i > 0 && strings.Trim(g.Name[i+1:], "0123456789") == "" {
			g.Name = g.Name[:i]
		}
		for i := 2; i+1 < len(f); i += 2 {
			var v float64
			if _, err := fmt.Sscan(f[i], &v); err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				g.NsOp = v
			case "B/op":
				g.BytesOp = v
			case "allocs/op":
				g.AllocsOp = v
			}
		}
		if g.NsOp > 0 {
			gs = append(gs, g)
		}
	}
	return gs
}

// Write saves results.json, results.md and latency.png in dir.
func (r *Results) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(dir+"/results.json", data, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(dir+"/results.md", []byte(r.Markdown()), 0o644); err != nil {
		return err
	}
	png, err := r.Plot()
	if err != nil {
		return err
	}
	return os.WriteFile(dir+"/latency.png", png, 0o644)
}
