package bench

import (
	"bytes"
	"image/png"
	"io/fs"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPercentiles(t *testing.T) {
	ms := func(v ...float64) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x*float64(time.Millisecond)))
		}
		return out
	}
	d := NewDist(ms(5, 1, 4, 2, 3))
	if d.N != 5 || d.P50 != 3 || d.P95 != 5 || d.Min != 1 || d.Max != 5 {
		t.Fatalf("odd count: %+v", d)
	}
	if d := NewDist(ms(4, 1, 3, 2)); d.P50 != 2.5 {
		t.Fatalf("even count median = %v, want 2.5", d.P50)
	}
	var twenty []float64
	for i := 1; i <= 20; i++ {
		twenty = append(twenty, float64(i))
	}
	if p := Percentile(twenty, 95); p != 19 {
		t.Fatalf("p95 of 1..20 = %v, want 19 (nearest rank)", p)
	}
	if d := NewDist(nil); d.N != 0 || d.Samples != nil {
		t.Fatalf("empty: %+v", d)
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Fatal("percentile of nothing is not NaN")
	}
}

func TestParseGoBench(t *testing.T) {
	out := `goos: linux
BenchmarkGet/volumes=10000-2         	  445832	      2687 ns/op	    1344 B/op	      14 allocs/op
BenchmarkCapabilities-2              	100000000	        11.05 ns/op	       0 B/op	       0 allocs/op
BenchmarkParse/rejected-16   	    2000	      1211 ns/op
PASS`
	gs := ParseGoBench(out)
	if len(gs) != 3 {
		t.Fatalf("parsed %d lines: %+v", len(gs), gs)
	}
	if g := gs[0]; g.Name != "Get/volumes=10000" || g.NsOp != 2687 || g.BytesOp != 1344 || g.AllocsOp != 14 {
		t.Fatalf("first: %+v", g)
	}
	if gs[1].NsOp != 11.05 || gs[2].Name != "Parse/rejected" {
		t.Fatalf("others: %+v", gs[1:])
	}
}

func sample() *Results {
	d := func(p50, p95 float64) Dist { return Dist{N: 9, P50: p50, P95: p95, Min: p50, Max: p95} }
	return &Results{
		Started: time.Date(2026, 11, 21, 6, 0, 0, 0, time.UTC), Duration: "10m", Host: "Linux x, 2 CPUs, 24 GiB RAM",
		Sizes: []SizeResult{
			{Label: "8 MiB", Bytes: 8 << 20, Files: 45, Now: d(3, 4), Latest: d(1.4, 3), Bare: d(1, 1.2), BareMount: d(1.2, 1.4), BareNow: d(2, 2.4), Null: d(0.3, 0.4), Cp: d(5, 6), CpFlush: d(2, 3), Reflink: d(4, 5)},
			{Label: "4 GiB", Bytes: 4 << 30, Files: 23000, Now: d(3.3, 4), Latest: d(1.8, 3), Bare: d(1, 1.2), BareMount: d(1.2, 1.4), BareNow: d(2, 2.4), Null: d(0.3, 0.4), Cp: d(4000, 4500), CpFlush: d(9000, 9500), Reflink: d(900, 1000)},
		},
		Conc: []ConcResult{{Jobs: 32, Rounds: 5, Wall: d(30, 40), PerJob: d(20, 28), Snapshots: 1, Ratio: 10, NullWall: d(9, 11), NullRatio: 11.5,
			CPU: CPUUse{Busy: 0.9, PluginMsPerJob: 0.5, BenchMsPerJob: 0.25}}},
		NullOne: d(0.8, 1),
		One:     d(3, 4),
		API: []APIResult{{Volumes: 10000, Materialized: 100, Get: d(0.1, 0.2), GetClaimed: d(0.1, 0.2), List: d(12, 14),
			Capabilities: d(0.05, 0.1), RSSMiB: 30, DBMiB: 8, LsCLI: d(40, 50), LsAdmin: d(30, 35)}},
		Prod: &ProdResult{Seconds: 20, Rounds: 4, WriteBytes: 4096, Idle: Dist{N: 9, P50: 0.5, P95: 0.8, P99: 1}, Cloning: Dist{N: 9, P50: 0.6, P95: 1.5, P99: 2.5},
			Clones: 100, CloneMount: d(5, 6), CloneCycle: d(9, 10), Quotas: "simple quotas, POOL_RESERVE 10%",
			QuotaLatest: d(2.1, 3), NoQuotaLatest: d(2, 3), QuotaNow: d(4, 5), NoQuotaNow: d(3, 4)},
		Admin:   &AdminResult{Source: "src-8mib", SnapshotCLI: d(6, 7), SnapshotAPI: d(2, 3), CloneLatest: d(2.5, 3), Version: d(3, 4), VersionDaemon: d(18, 20), Hello: d(1, 1.2)},
		Docker:  &DockerResult{Skipped: "no dockerd here"},
		GoBench: []GoBench{{Name: "Get/volumes=10000", NsOp: 2687, BytesOp: 1344, AllocsOp: 14}},
	}
}

func TestTargetsAndMarkdown(t *testing.T) {
	r := sample()
	met := map[string]bool{}
	for _, tg := range r.Targets() {
		met[tg.What] = tg.Met
	}
	for what, want := range map[string]bool{
		"clone+mount @latest: 4 GiB source / 8 MiB source (p50)":                                                                  true,
		"cp -a of 4 GiB / clone+mount @latest of 4 GiB (p50)":                                                                     true,
		"32 concurrent jobs: wall time / one job alone (p50)":                                                                     false,
		"List p50 at 10,000 volumes":                                                                                              false,
		"plugin RSS at 10,000 volumes":                                                                                            true,
		"plugin @latest clone+mount / bare snapshot ioctl (p50), at every size":                                                   false,
		"production 4 KiB write+fdatasync p99: while @now clones are taken / idle":                                                false,
		"clone+mount @latest: space accounting on (defaults: a quota group per clone, the reserve check) / quotas off (p50)":      true,
		"clone+mount @now: space accounting on (defaults, with what the source wrote since its last snapshot) / quotas off (p50)": false,
		"snapvol snapshot create --from (the binary) / clone+mount @latest of the same source (p50)":                              false,
		"snapvol ls --json p50 at 10,000 volumes (the binary, over the admin socket)":                                             true,
		"snapvol version (start + one request to the plugin) / a hello-world Go binary (p50)":                                     true,
		"docker run with a clone / with a local volume (p50)":                                                                     false,
		"plugin @now / bare 2 ioctls + bind mount (p50, worst size)":                                                              true,
	} {
		got, ok := met[what]
		if !ok || got != want {
			t.Errorf("target %q: met=%v (present %v), want %v", what, got, ok, want)
		}
	}
	md := r.Markdown()
	for _, want := range []string{"| 4 GiB | 23000 |", "**missed**", "not measured", "Not measured: no dockerd here", "2222x", "| Get/volumes=10000 | 2.7 µs | 1344 | 14 |", "no-op jobs", "| 11.50x |", "| 4.00x |",
		"8 MiB 1.40x, 4 GiB 1.80x", "8 MiB 1.50x, 4 GiB 1.50x", "| 2.50x |", "p99 2.50x", "| 40.0 ms / 50.0 ms |", "| 2.40x |", "0.500 ms / 0.800 ms / 1.00 ms", "| 3.00 ms / 4.00 ms | 18.0 ms / 20.0 ms | 1.00 ms / 1.20 ms |"} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestPlotIsAPNG(t *testing.T) {
	for _, r := range []*Results{sample(), {Host: "empty"}} {
		data, err := r.Plot()
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if b := img.Bounds(); b.Dx() != 1000 || b.Dy() != 620 {
			t.Fatalf("plot is %v", b)
		}
	}
}

func TestFillWritesManyFilesOfIncompressibleData(t *testing.T) {
	dir := t.TempDir()
	files, probe, err := Fill(dir, 3<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	n := 0
	err = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		if info.Size() > MaxFile {
			t.Errorf("%s is %d bytes, over MaxFile", p, info.Size())
		}
		total += info.Size()
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if total != 3<<20 || n != files || n < 5 || probe <= 0 {
		t.Fatalf("%d bytes in %d files (reported %d, probe %d)", total, n, files, probe)
	}
	again := t.TempDir()
	if f2, p2, _ := Fill(again, 3<<20, 1); f2 != files || p2 != probe {
		t.Fatalf("same seed, different tree: %d/%d files", f2, files)
	}
}

func TestSizes(t *testing.T) {
	for in, want := range map[string]int64{"8M": 8 << 20, "1g": 1 << 30, "512K": 512 << 10, "4096": 4096} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "x", "-1G", "0"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
	if SizeLabel(8<<20) != "8 MiB" || SizeLabel(4<<30) != "4 GiB" || SizeLabel(1500) != "1500 B" {
		t.Error("SizeLabel")
	}
}

func TestTargetsWithoutCopies(t *testing.T) {
	r := sample()
	for i := range r.Sizes {
		r.Sizes[i].Cp = Dist{}
	}
	for _, tg := range r.Targets() {
		if strings.HasPrefix(tg.What, "cp -a of") && (tg.Known || tg.Met) {
			t.Errorf("%q with no copies measured: %+v", tg.What, tg)
		}
	}
}
