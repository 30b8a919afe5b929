//go:build bench

package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/test"
)

// Settings of a run, from the environment (the Makefile passes them on).
type config struct {
	out       string
	sizes     []int64
	reps      int // clone + mount repetitions per size and ref
	copyReps  int // cp -a / reflink repetitions per size
	oneReps   int // single CI job repetitions
	rounds    int // rounds of concurrent jobs
	jobs      []int
	volumes   []int
	poolSize  string
	sections  map[string]bool
	dockerRep int
	lsReps    int // snapvol ls --json runs per volume count
	adminReps int // rounds of the admin section
	// prod: seconds of each phase (idle, plugin clones, bare
	// snapshots), split over rounds of one block of each; the size of
	// its two pools, and of production's data.
	prodSeconds  int
	prodRounds   int
	prodPoolSize string
	prodData     int64
}

func envInt(t *testing.T, key string, def int) int {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", key, v)
	}
	return n
}

func envList(key, def string) []string {
	v := os.Getenv(key)
	if v == "" {
		v = def
	}
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })
}

func loadConfig(t *testing.T) config {
	c := config{
		out:       os.Getenv("BENCH_OUT"),
		reps:      envInt(t, "BENCH_REPS", 31),
		copyReps:  envInt(t, "BENCH_COPY_REPS", 5),
		oneReps:   envInt(t, "BENCH_ONE_REPS", 31),
		rounds:    envInt(t, "BENCH_ROUNDS", 11),
		dockerRep: envInt(t, "BENCH_DOCKER_REPS", 21),
		poolSize:  os.Getenv("BENCH_POOL_SIZE"),
		sections:  map[string]bool{},
		lsReps:    envInt(t, "BENCH_LS_REPS", 11),
		adminReps: envInt(t, "BENCH_ADMIN_REPS", 21),

		prodSeconds:  envInt(t, "BENCH_PROD_SECONDS", 20),
		prodRounds:   envInt(t, "BENCH_PROD_ROUNDS", 4),
		prodPoolSize: os.Getenv("BENCH_PROD_POOL_SIZE"),
	}
	if c.prodPoolSize == "" {
		c.prodPoolSize = "4G"
	}
	var err error
	if c.prodData, err = ParseSize(envList("BENCH_PROD_DATA", "64M")[0]); err != nil {
		t.Fatalf("BENCH_PROD_DATA: %v", err)
	}
	if c.out == "" {
		c.out = filepath.Join(test.RepoRoot(), "bench-out")
	}
	if c.poolSize == "" {
		c.poolSize = "16G"
	}
	for _, s := range envList("BENCH_SIZES", "8M,1G,4G") {
		n, err := ParseSize(s)
		if err != nil {
			t.Fatalf("BENCH_SIZES: %v", err)
		}
		c.sizes = append(c.sizes, n)
	}
	sort.Slice(c.sizes, func(i, j int) bool { return c.sizes[i] < c.sizes[j] })
	for _, key := range []struct {
		env, def string
		dst      *[]int
	}{{"BENCH_JOBS", "16,32", &c.jobs}, {"BENCH_VOLUMES", "100,1000,10000", &c.volumes}} {
		for _, s := range envList(key.env, key.def) {
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				t.Fatalf("%s: %q is not a positive integer", key.env, s)
			}
			*key.dst = append(*key.dst, n)
		}
	}
	sort.Ints(c.volumes)
	for _, s := range envList("BENCH_SECTIONS", "gobench,metrics,clone,copy,jobs,admin,api,prod,docker,fleet") {
		c.sections[s] = true
	}
	return c
}

func hostInfo() string {
	var u unix.Utsname
	_ = unix.Uname(&u)
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(data), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.0f GiB RAM", float64(kb)/(1<<20))
		}
	}
	return fmt.Sprintf("Linux %s, %d CPUs%s, %s", unix.ByteSliceToString(u.Release[:]), runtime.NumCPU(), mem, runtime.Version())
}

// loadAvg is the 1-minute load average: how busy the machine was with
// other work too.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(data))[0]
}

func randID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// TestBench is `make bench`: every section in one run, one plugin, one
// pool, results written even when a later section fails.
func TestBench(t *testing.T) {
	test.RequireRoot(t)
	test.RequireTool(t, "btrfs", "btrfs-progs")
	cfg := loadConfig(t)
	if from := os.Getenv("BENCH_RENDER"); from != "" {
		// Only render a run's results.json again (table, plot), e.g.
		// after a change to the report; nothing is measured.
		data, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		var res Results
		if err := json.Unmarshal(data, &res); err != nil {
			t.Fatal(err)
		}
		if err := res.Write(cfg.out); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("%s\nrendered %s into %s\n", res.Markdown(), from, cfg.out)
		return
	}
	res := &Results{Started: time.Now(), Host: hostInfo(), CPUs: runtime.NumCPU(), LoadStart: loadAvg()}
	t.Cleanup(func() {
		res.Duration = time.Since(res.Started).Round(time.Second).String()
		res.LoadEnd = loadAvg()
		if err := res.Write(cfg.out); err != nil {
			t.Errorf("writing results: %v", err)
			return
		}
		fmt.Printf("\n%s\nwritten: %s/results.md, results.json, latency.png\n", res.Markdown(), cfg.out)
	})

	if cfg.sections["gobench"] {
		goBench(t, cfg, res)
	}
	if cfg.sections["metrics"] {
		metricsCost(t, cfg)
	}
	need := func(names ...string) bool {
		for _, n := range names {
			if cfg.sections[n] {
				return true
			}
		}
		return false
	}
	if need("clone", "copy", "jobs", "admin", "api") {
		b := newBench(t, cfg)
		srcs := b.makeSources(res)
		if cfg.sections["clone"] {
			b.cloneLatency(res, srcs)
		}
		if cfg.sections["copy"] {
			b.copyLatency(res, srcs)
		}
		if cfg.sections["jobs"] {
			b.concurrentJobs(res, srcs[len(srcs)-1])
		}
		// Before api grows the plugin to thousands of volumes.
		if cfg.sections["admin"] {
			b.adminLatency(res, srcs[0])
		}
		if cfg.sections["api"] {
			b.apiLatency(res, srcs[0])
		}
	}
	if cfg.sections["prod"] {
		prodLatency(t, cfg, res)
	}
	if cfg.sections["docker"] {
		dockerRun(t, cfg, res)
	}
	if cfg.sections["fleet"] {
		fleetBench(t, res)
	}
}

// goBench runs the driver's Go benchmarks first, on a quiet machine.
func goBench(t *testing.T, cfg config, res *Results) {
	t.Log("go test -bench ./driver/...")
	cmd := exec.Command("go", "test", "-run", "^$", "-bench", ".", "-benchmem", "-count", "1", "./driver/...")
	cmd.Dir = test.RepoRoot()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go test -bench: %v\n%s", err, out)
	}
	if err := os.MkdirAll(cfg.out, 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(cfg.out, "gobench.txt"), out, 0o644)
	}
	res.GoBench = ParseGoBench(string(out))
	if len(res.GoBench) == 0 {
		t.Fatalf("no benchmark results in:\n%s", out)
	}
}

// metricsCost is what metrics cost Get over the socket: p50 with metrics on
// against off, in alternating batches (plugin's TestMetricsCostGetP50,
// which fails over the 1.1x goal when SNAPVOL_METRICS_COST is set).
func metricsCost(t *testing.T, cfg config) {
	t.Log("go test -run TestMetricsCostGetP50 ./plugin")
	cmd := exec.Command("go", "test", "-count", "1", "-v", "-run", "^TestMetricsCostGetP50$", "./plugin")
	cmd.Dir = test.RepoRoot()
	cmd.Env = append(os.Environ(), "SNAPVOL_METRICS_COST=1")
	out, err := cmd.CombinedOutput()
	if err := os.MkdirAll(cfg.out, 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(cfg.out, "metrics-cost.txt"), out, 0o644)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "p50 metrics off") {
			t.Log(strings.TrimSpace(line))
		}
	}
	if err != nil {
		t.Errorf("metrics cost: %v\n%s", err, out)
	}
}

// bench is the plugin under test and its pool.
type bench struct {
	t    *testing.T
	cfg  config
	p    *test.Plugin
	pool string
	mnt  string // bind targets of the bare baselines
}

func newBench(t *testing.T, cfg config) *bench {
	p := test.StartPlugin(t, map[string]string{
		"POOL_SIZE": cfg.poolSize, "LOG_LEVEL": "info",
		// One run takes longer than the default 5m; @latest must keep
		// meaning "reuse the newest snapshot" throughout.
		"LATEST_MAX_AGE": "6h",
	})
	b := &bench{t: t, cfg: cfg, p: p, pool: p.Pool(), mnt: filepath.Join(p.Dir, "bare")}
	// Runs before the harness removes p.Dir: nothing may still be bound
	// below it then.
	t.Cleanup(func() { test.UnmountUnder(b.mnt) })
	for _, d := range []string{filepath.Join(b.pool, "bench"), b.mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func (b *bench) settle() {
	if err := settle(b.pool); err != nil {
		b.t.Fatal(err)
	}
}

type source struct {
	name  string
	bytes int64
	files int
	probe int64
	res   *SizeResult
}

// makeSources creates one plain volume per size through the plugin and
// fills it through its mount point, as production data would be.
func (b *bench) makeSources(res *Results) []*source {
	var out []*source
	for i, n := range b.cfg.sizes {
		s := &source{name: fmt.Sprintf("src-%s", strings.ReplaceAll(strings.ToLower(SizeLabel(n)), " ", ""))}
		s.bytes = n
		if err := b.p.Create(s.name, nil); err != nil {
			b.t.Fatalf("create %s: %v", s.name, err)
		}
		mp := b.p.MustMount(s.name, "fill")
		start := time.Now()
		var err error
		s.files, s.probe, err = Fill(mp, n, uint64(i+1))
		if err != nil {
			b.t.Fatalf("filling %s: %v", s.name, err)
		}
		if err := b.p.Unmount(s.name, "fill"); err != nil {
			b.t.Fatal(err)
		}
		b.settle()
		b.t.Logf("source %s: %s in %d files, written and synced in %s", s.name, SizeLabel(n), s.files, time.Since(start).Round(time.Millisecond))
		res.Sizes = append(res.Sizes, SizeResult{Label: SizeLabel(n), Bytes: n, Files: s.files})
		out = append(out, s)
	}
	for i := range out {
		out[i].res = &res.Sizes[i]
	}
	return out
}

// checkClone verifies a mounted clone shows the source's data.
func (b *bench) checkClone(name, mp string, s *source) {
	st, err := os.Stat(filepath.Join(mp, ProbeFile))
	if err != nil || st.Size() != s.probe {
		b.t.Fatalf("%s mounted at %s does not show %s's data: %v", name, mp, s.name, err)
	}
}

// cloneOnce is what Docker sends for `docker run -v NAME:/data` with a
// claimed name: Get, then Mount. It returns that time; the Unmount and
// Remove after it are not timed.
func (b *bench) cloneOnce(name string, s *source) time.Duration {
	id := randID()
	start := time.Now()
	if _, err := b.p.Get(name); err != nil {
		b.t.Fatalf("get %s: %v", name, err)
	}
	mp, err := b.p.Mount(name, id)
	el := time.Since(start)
	if err != nil {
		b.t.Fatalf("mount %s: %v", name, err)
	}
	b.checkClone(name, mp, s)
	if err := b.p.Unmount(name, id); err != nil {
		b.t.Fatal(err)
	}
	if err := b.p.Remove(name); err != nil {
		b.t.Fatal(err)
	}
	return el
}

// nullOnce is what the socket alone costs cloneOnce: the same Get (of
// a claimed name of the same kind) and a no-op request (Capabilities) in
// Mount's place, nothing made.
func (b *bench) nullOnce(name string) time.Duration {
	start := time.Now()
	v, err := b.p.Get(name)
	if err != nil || v == nil || v.Status["claimed"] != true {
		b.t.Fatalf("get %s: %+v, %v", name, v, err)
	}
	if _, err := b.p.Capabilities(); err != nil {
		b.t.Fatal(err)
	}
	return time.Since(start)
}

// bareOnce times the bare ioctls on the same pool: a writable snapshot;
// the same plus a bind mount; a read-only snapshot, a writable snapshot of
// it and a bind mount (the least @now can do).
func (b *bench) bareOnce(s *source, rep int) (bare, bareMount, bareNow time.Duration) {
	src := filepath.Join(b.pool, "volumes", s.name)
	dir := filepath.Join(b.pool, "bench")
	a, c, ro, rw := filepath.Join(dir, fmt.Sprintf("a%d", rep)), filepath.Join(dir, fmt.Sprintf("c%d", rep)),
		filepath.Join(dir, fmt.Sprintf("ro%d", rep)), filepath.Join(dir, fmt.Sprintf("rw%d", rep))
	t1, t2 := filepath.Join(b.mnt, fmt.Sprintf("c%d", rep)), filepath.Join(b.mnt, fmt.Sprintf("rw%d", rep))
	must := func(err error) {
		if err != nil {
			b.t.Helper()
			b.t.Fatal(err)
		}
	}

	start := time.Now()
	must(snapshotIoctl(src, a, false))
	bare = time.Since(start)
	b.settle()

	start = time.Now()
	must(snapshotIoctl(src, c, false))
	must(bindMount(c, t1))
	bareMount = time.Since(start)
	b.settle()

	start = time.Now()
	must(snapshotIoctl(src, ro, true))
	must(snapshotIoctl(ro, rw, false))
	must(bindMount(rw, t2))
	bareNow = time.Since(start)

	st, err := os.Stat(filepath.Join(t2, ProbeFile))
	if err != nil || st.Size() != s.probe {
		b.t.Fatalf("bare snapshot %s does not show the source's data: %v", rw, err)
	}
	must(unbind(t1))
	must(unbind(t2))
	for _, p := range []string{a, c, rw, ro} {
		must(subvolDelete(p))
	}
	return bare, bareMount, bareNow
}

// cloneLatency interleaves sizes, refs and the bare baseline in every
// repetition (rotating the order), so drift on a shared machine spreads
// over all of them alike.
func (b *bench) cloneLatency(res *Results, srcs []*source) {
	type acc struct{ now, latest, bare, bareMount, bareNow, null []time.Duration }
	accs := make([]acc, len(srcs))
	for i, s := range srcs {
		// Warm up: the first @latest takes the snapshot later ones reuse.
		b.cloneOnce(s.name+"@latest+warm", s)
		b.bareOnce(s, -1-i)
		b.settle()
	}
	for rep := 0; rep < b.cfg.reps; rep++ {
		for k := range srcs {
			i := (k + rep) % len(srcs)
			s := srcs[i]
			steps := []func(){
				func() { accs[i].now = append(accs[i].now, b.cloneOnce(fmt.Sprintf("%s@now+r%d", s.name, rep), s)) },
				func() {
					accs[i].latest = append(accs[i].latest, b.cloneOnce(fmt.Sprintf("%s@latest+r%d", s.name, rep), s))
				},
				func() {
					x, y, z := b.bareOnce(s, rep)
					accs[i].bare, accs[i].bareMount, accs[i].bareNow = append(accs[i].bare, x), append(accs[i].bareMount, y), append(accs[i].bareNow, z)
				},
				func() { accs[i].null = append(accs[i].null, b.nullOnce(fmt.Sprintf("%s@latest+n%d", s.name, rep))) },
			}
			for j := range steps {
				steps[(j+rep)%len(steps)]()
				b.settle()
			}
		}
	}
	for i, s := range srcs {
		s.res.Now, s.res.Latest = NewDist(accs[i].now), NewDist(accs[i].latest)
		s.res.Bare, s.res.BareMount, s.res.BareNow = NewDist(accs[i].bare), NewDist(accs[i].bareMount), NewDist(accs[i].bareNow)
		s.res.Null = NewDist(accs[i].null)
		b.t.Logf("%s: @now %s, @latest %s, bare ioctl %s, bare ioctl+bind %s, bare 2 ioctls+bind %s, Get + no-op request %s; @latest / bare ioctl %.2fx", s.res.Label,
			dist(s.res.Now), dist(s.res.Latest), dist(s.res.Bare), dist(s.res.BareMount), dist(s.res.BareNow), dist(s.res.Null), ratio(s.res.Latest.P50, s.res.Bare.P50))
	}
}

// copyLatency times what users do instead: cp -a of the source into a
// fresh directory on the same pool, with and without reflinks. Each copy
// lands in its own subvolume, so deleting it is cheap; the pool settles
// (btrfs frees the copy's extents) before the next one.
func (b *bench) copyLatency(res *Results, srcs []*source) {
	type acc struct{ cp, flush, reflink []time.Duration }
	accs := make([]acc, len(srcs))
	for rep := 0; rep < b.cfg.copyReps; rep++ {
		for k := range srcs {
			i := (k + rep) % len(srcs)
			s := srcs[i]
			for _, reflink := range []bool{rep%2 == 0, rep%2 != 0} {
				sub := filepath.Join(b.pool, "bench", fmt.Sprintf("copy-%d-%t", rep, reflink))
				if err := subvolCreate(sub); err != nil {
					b.t.Fatal(err)
				}
				args := []string{"-a"}
				if reflink {
					args = append(args, "--reflink=always")
				}
				args = append(args, filepath.Join(b.pool, "volumes", s.name), filepath.Join(sub, "data"))
				start := time.Now()
				if out, err := exec.Command("cp", args...).CombinedOutput(); err != nil {
					b.t.Fatalf("cp %v: %v\n%s", args, err, out)
				}
				el := time.Since(start)
				start = time.Now()
				if err := syncFS(b.pool); err != nil {
					b.t.Fatal(err)
				}
				flush := time.Since(start)
				if st, err := os.Stat(filepath.Join(sub, "data", ProbeFile)); err != nil || st.Size() != s.probe {
					b.t.Fatalf("copy of %s is incomplete: %v", s.name, err)
				}
				if reflink {
					accs[i].reflink = append(accs[i].reflink, el)
				} else {
					accs[i].cp, accs[i].flush = append(accs[i].cp, el), append(accs[i].flush, flush)
				}
				if err := subvolDelete(sub); err != nil {
					b.t.Fatal(err)
				}
				b.settle()
			}
		}
	}
	for i, s := range srcs {
		s.res.Cp, s.res.CpFlush, s.res.Reflink = NewDist(accs[i].cp), NewDist(accs[i].flush), NewDist(accs[i].reflink)
		b.t.Logf("%s: cp -a %s (+ flush %s), cp -a --reflink=always %s", s.res.Label, dist(s.res.Cp), dist(s.res.CpFlush), dist(s.res.Reflink))
	}
}

// job is one CI job's use of the plugin: Get + Mount of a fresh @latest
// clone, read a file, Get (as docker volume inspect would) for the
// snapshot it came from, Unmount, Remove.
func (b *bench) job(name string, s *source) (time.Duration, string, error) {
	id := randID()
	start := time.Now()
	if _, err := b.p.Get(name); err != nil {
		return 0, "", err
	}
	mp, err := b.p.Mount(name, id)
	if err != nil {
		return 0, "", err
	}
	data, err := os.ReadFile(filepath.Join(mp, ProbeFile))
	if err != nil || int64(len(data)) != s.probe {
		return 0, "", fmt.Errorf("%s: clone does not show the source's data: %v", name, err)
	}
	v, err := b.p.Get(name)
	if err != nil {
		return 0, "", err
	}
	snap, _ := v.Status["snapshot"].(string)
	if err := b.p.Unmount(name, id); err != nil {
		return 0, "", err
	}
	if err := b.p.Remove(name); err != nil {
		return 0, "", err
	}
	return time.Since(start), snap, nil
}

// cpuSample is CPU time used so far: by the whole machine (busy and all
// jiffies from /proc/stat), by the plugin process and by this one.
type cpuSample struct {
	busy, all     float64
	plugin, bench time.Duration
}

func cpuNow(pid int) cpuSample {
	var c cpuSample
	if data, err := os.ReadFile("/proc/stat"); err == nil {
		f := strings.Fields(strings.SplitN(string(data), "\n", 2)[0])
		for i, v := range f[1:] {
			x, _ := strconv.ParseFloat(v, 64)
			if i >= 8 { // guest time is already in user
				break
			}
			c.all += x
			if i != 3 && i != 4 { // idle, iowait
				c.busy += x
			}
		}
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	for _, t := range tasks {
		if data, err := os.ReadFile(t); err == nil {
			var ns int64
			if _, err := fmt.Sscan(string(data), &ns); err == nil {
				c.plugin += time.Duration(ns)
			}
		}
	}
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
		c.bench = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return c
}

// cpuUse accumulates CPU use over timed stretches.
type cpuUse struct {
	busy, all     float64
	plugin, bench time.Duration
}

func (u *cpuUse) add(from, to cpuSample) {
	u.busy += to.busy - from.busy
	u.all += to.all - from.all
	u.plugin += to.plugin - from.plugin
	u.bench += to.bench - from.bench
}

func (u *cpuUse) result(jobs int) CPUUse {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(jobs) }
	return CPUUse{Busy: ratio(u.busy, u.all), PluginMsPerJob: ms(u.plugin), BenchMsPerJob: ms(u.bench)}
}

// nullJob is the floor any plugin stands on: the same client making the
// same six round trips and reading the same file, answered by the plugin
// from memory with no work behind them (Capabilities). What n of these at
// once cost against one is what the machine itself (CPUs, scheduler, the
// HTTP stack on both ends) charges for concurrency.
func (b *bench) nullJob(mp string, s *source) (time.Duration, string, error) {
	start := time.Now()
	for i := 0; i < 6; i++ {
		if _, err := b.p.Capabilities(); err != nil {
			return 0, "", err
		}
		if i == 1 {
			data, err := os.ReadFile(filepath.Join(mp, ProbeFile))
			if err != nil || int64(len(data)) != s.probe {
				return 0, "", fmt.Errorf("%s: probe file: %v", mp, err)
			}
		}
	}
	return time.Since(start), "", nil
}

// rounds runs n jobs at once, rounds times, and returns the wall time of
// each round, every job's time, the CPU used and the distinct snapshots
// the jobs reported.
func (b *bench) rounds(pid, n, rounds int, job func(j, round int) (time.Duration, string, error)) (walls, per []time.Duration, use cpuUse, snaps int) {
	for round := 0; round < rounds; round++ {
		var wg sync.WaitGroup
		var mu sync.Mutex
		seen := map[string]bool{}
		errs := make(chan error, n)
		gate := make(chan struct{})
		for j := 0; j < n; j++ {
			wg.Add(1)
			go func(j int) {
				defer wg.Done()
				<-gate
				el, snap, err := job(j, round)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				per = append(per, el)
				seen[snap] = true
				mu.Unlock()
			}(j)
		}
		before := cpuNow(pid)
		start := time.Now()
		close(gate)
		wg.Wait()
		walls = append(walls, time.Since(start))
		use.add(before, cpuNow(pid))
		close(errs)
		for err := range errs {
			b.t.Fatalf("%d concurrent jobs: %v", n, err)
		}
		snaps = max(snaps, len(seen))
		b.settle()
	}
	return walls, per, use, snaps
}

func (b *bench) concurrentJobs(res *Results, s *source) {
	pid := b.pluginPID()
	cloneJob := func(n int) func(j, round int) (time.Duration, string, error) {
		return func(j, round int) (time.Duration, string, error) {
			return b.job(fmt.Sprintf("%s@latest+c%d-r%d-j%d", s.name, n, round, j), s)
		}
	}
	// The source stays mounted for the no-op jobs' file reads.
	mp := b.p.MustMount(s.name, "null-jobs")
	defer func() {
		if err := b.p.Unmount(s.name, "null-jobs"); err != nil {
			b.t.Error(err)
		}
	}()
	nullJob := func(j, round int) (time.Duration, string, error) { return b.nullJob(mp, s) }

	one, _, oneCPU, _ := b.rounds(pid, 1, b.cfg.oneReps, cloneJob(1))
	res.One = NewDist(one)
	res.OneCPU = oneCPU.result(b.cfg.oneReps)
	res.BareOne = NewDist(b.bareConcurrent(s, 1, b.cfg.oneReps))
	nullOne, _, _, _ := b.rounds(pid, 1, b.cfg.oneReps, nullJob)
	res.NullOne = NewDist(nullOne)
	for _, n := range b.cfg.jobs {
		c := ConcResult{Jobs: n, Rounds: b.cfg.rounds}
		walls, per, use, snaps := b.rounds(pid, n, b.cfg.rounds, cloneJob(n))
		c.Wall, c.PerJob, c.Snapshots = NewDist(walls), NewDist(per), snaps
		c.Ratio = ratio(c.Wall.P50, res.One.P50)
		c.CPU = use.result(n * b.cfg.rounds)
		c.BareWall = NewDist(b.bareConcurrent(s, n, b.cfg.rounds))
		c.BareRatio = ratio(c.BareWall.P50, res.BareOne.P50)
		nullWalls, _, _, _ := b.rounds(pid, n, b.cfg.rounds, nullJob)
		c.NullWall = NewDist(nullWalls)
		c.NullRatio = ratio(c.NullWall.P50, res.NullOne.P50)
		b.t.Logf("%d jobs: wall %s, per job %s, %.2fx one job (%s); CPUs %.0f%% busy, plugin %.2f ms and client %.2f ms of CPU per job (alone: %.2f, %.2f); %d bare snapshot ioctls at once: %s, %.2fx one (%s); %d no-op jobs at once: %s, %.2fx one (%s)",
			n, dist(c.Wall), dist(c.PerJob), c.Ratio, dist(res.One), 100*c.CPU.Busy, c.CPU.PluginMsPerJob, c.CPU.BenchMsPerJob,
			res.OneCPU.PluginMsPerJob, res.OneCPU.BenchMsPerJob, n, dist(c.BareWall), c.BareRatio, dist(res.BareOne),
			n, dist(c.NullWall), c.NullRatio, dist(res.NullOne))
		res.Conc = append(res.Conc, c)
	}
}

// bareConcurrent is the physical limit of n jobs at once: n writable
// snapshots of the source made at the same moment with the bare ioctl, each
// into its own directory (so no parent directory lock is shared), timed to
// the last; then deleted, untimed. One wall time per round.
func (b *bench) bareConcurrent(s *source, n, rounds int) []time.Duration {
	src := filepath.Join(b.pool, "volumes", s.name)
	var walls []time.Duration
	for round := 0; round < rounds; round++ {
		dsts := make([]string, n)
		for j := range dsts {
			dir := filepath.Join(b.pool, "bench", fmt.Sprintf("cc%d", j))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				b.t.Fatal(err)
			}
			dsts[j] = filepath.Join(dir, fmt.Sprintf("n%d-r%d-j%d", n, round, j))
		}
		var wg sync.WaitGroup
		errs := make(chan error, n)
		gate := make(chan struct{})
		for _, dst := range dsts {
			wg.Add(1)
			go func(dst string) {
				defer wg.Done()
				<-gate
				if err := snapshotIoctl(src, dst, false); err != nil {
					errs <- err
				}
			}(dst)
		}
		start := time.Now()
		close(gate)
		wg.Wait()
		walls = append(walls, time.Since(start))
		close(errs)
		for err := range errs {
			b.t.Fatal(err)
		}
		for _, dst := range dsts {
			if err := subvolDelete(dst); err != nil {
				b.t.Fatal(err)
			}
		}
		b.settle()
	}
	return walls
}

// pluginPID is the pid of the process serving the socket (SO_PEERCRED).
func (b *bench) pluginPID() int {
	c, err := net.Dial("unix", b.p.Socket)
	if err != nil {
		b.t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		b.t.Fatal(err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil || cerr != nil {
		b.t.Fatalf("SO_PEERCRED: %v %v", err, cerr)
	}
	return int(cred.Pid)
}

func rssMiB(pid int) (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var kb float64
		if _, err := fmt.Sscanf(sc.Text(), "VmRSS: %f kB", &kb); err == nil {
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// apiLatency grows the plugin to each size of clone records (1 in 100
// materialized and mounted) and times Get, a claimed Get, List and
// Capabilities over the socket, then reads the plugin's resident memory.
func (b *bench) apiLatency(res *Results, s *source) {
	pid := b.pluginPID()
	rng := mrand.New(mrand.NewPCG(7, 7))
	var names []string
	materialized := 0
	grow := func(to int) {
		var wg sync.WaitGroup
		work := make(chan int)
		errs := make(chan error, 4)
		var mu sync.Mutex
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					name := fmt.Sprintf("%s@latest+v%05d", s.name, i)
					if err := b.p.Create(name, nil); err != nil {
						select {
						case errs <- err:
						default:
						}
						continue
					}
					if i%100 == 0 {
						if _, err := b.p.Mount(name, "api"); err != nil {
							select {
							case errs <- err:
							default:
							}
							continue
						}
						mu.Lock()
						materialized++
						mu.Unlock()
					}
					mu.Lock()
					names = append(names, name)
					mu.Unlock()
				}
			}()
		}
		for i := len(names); i < to; i++ {
			work <- i
		}
		close(work)
		wg.Wait()
		close(errs)
		for err := range errs {
			b.t.Fatalf("growing to %d volumes: %v", to, err)
		}
	}
	// Timed: request sent to the last byte of the answer, what the plugin
	// costs Docker. Decoding the answer (Docker's own cost, 10 ms for a
	// 10,000-volume List in Go) comes after, untimed, to check it.
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", b.p.Socket)
		},
	}}
	call := func(method string, req any) (func(out any) error, time.Duration, error) {
		body, err := json.Marshal(req)
		if err != nil {
			return nil, 0, err
		}
		start := time.Now()
		resp, err := client.Post("http://plugin/VolumeDriver."+method, "application/vnd.docker.plugins.v1.2+json", bytes.NewReader(body))
		if err != nil {
			return nil, 0, err
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		el := time.Since(start)
		if err != nil {
			return nil, 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, 0, fmt.Errorf("%s: HTTP %d: %s", method, resp.StatusCode, data)
		}
		return func(out any) error { return json.Unmarshal(data, out) }, el, nil
	}
	timeN := func(n int, method string, req func(i int) any, check func(decode func(any) error) error) Dist {
		var ds []time.Duration
		for i := 0; i < n; i++ {
			decode, el, err := call(method, req(i))
			if err == nil {
				err = check(decode)
			}
			if err != nil {
				b.t.Fatal(err)
			}
			ds = append(ds, el)
		}
		return NewDist(ds)
	}
	for _, n := range b.cfg.volumes {
		// The sources are volumes too: count them in.
		grow(n - len(b.cfg.sizes))
		b.settle()
		var a APIResult
		a.Volumes = len(names) + len(b.cfg.sizes)
		a.Materialized = materialized
		a.Get = timeN(2000, "Get", func(int) any { return volume.GetRequest{Name: names[rng.IntN(len(names))]} },
			func(decode func(any) error) error {
				var r volume.GetResponse
				if err := decode(&r); err != nil || r.Volume == nil || r.Volume.CreatedAt == "" {
					return fmt.Errorf("Get answered %+v: %v", r, err)
				}
				return nil
			})
		a.GetClaimed = timeN(500, "Get", func(i int) any { return volume.GetRequest{Name: fmt.Sprintf("%s@latest+probe-%d", s.name, i)} },
			func(decode func(any) error) error {
				var r volume.GetResponse
				if err := decode(&r); err != nil || r.Volume == nil || r.Volume.Status["claimed"] != true {
					return fmt.Errorf("probe of an uncreated name was not answered as claimed: %+v: %v", r, err)
				}
				return nil
			})
		a.List = timeN(max(20, min(200, 200000/n)), "List", func(int) any { return struct{}{} },
			func(decode func(any) error) error {
				var r volume.ListResponse
				if err := decode(&r); err != nil || len(r.Volumes) != a.Volumes {
					return fmt.Errorf("List returned %d volumes, want %d: %v", len(r.Volumes), a.Volumes, err)
				}
				return nil
			})
		a.Capabilities = timeN(1000, "Capabilities", func(int) any { return struct{}{} },
			func(decode func(any) error) error {
				var r volume.CapabilitiesResponse
				if err := decode(&r); err != nil || r.Capabilities.Scope != "local" {
					return fmt.Errorf("Capabilities answered %+v: %v", r, err)
				}
				return nil
			})
		var err error
		if a.RSSMiB, err = rssMiB(pid); err != nil {
			b.t.Fatal(err)
		}
		if st, err := os.Stat(filepath.Join(b.p.StateDir, "snapvol.db")); err == nil {
			a.DBMiB = float64(st.Size()) / (1 << 20)
		}
		a.LsCLI, a.LsAdmin = b.lsLatency(a.Volumes)
		// Trim the samples kept in results.json for the big series.
		for _, d := range []*Dist{&a.Get, &a.GetClaimed, &a.Capabilities} {
			d.Samples = nil
		}
		b.t.Logf("%d volumes: Get %s, claimed Get %s, List %s, Capabilities %s, snapvol ls --json %s (admin client %s), RSS %.1f MiB", a.Volumes, dist(a.Get), dist(a.GetClaimed),
			dist(a.List), dist(a.Capabilities), dist(a.LsCLI), dist(a.LsAdmin), a.RSSMiB)
		res.API = append(res.API, a)
	}
}
