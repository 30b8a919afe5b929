//go:build bench

package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/snapvol/snapvol/admin"
	"github.com/snapvol/snapvol/test"
)

// Runner fleets (issue 23, "Measure"): two snapvol daemons in host mode
// with their own pools, the production host and a CI host, and a
// distribution/v3 registry on loopback (test.StartRegistry), as
// test/fleet_test.go runs them. Every figure is a ratio to a baseline
// measured in this run: a full push+pull, rsync of the same two trees,
// the bytes the change wrote, the bare btrfs send -p | btrfs receive pipe
// of the same change, and a clone of a local source.
//
// Knobs: FLEET_BENCH_SIZE (the large file, default 4G as the issue says),
// FLEET_BENCH_ROUNDS (incremental push+pull rounds, 3), FLEET_BENCH_LAG_ROUNDS
// (5), FLEET_BENCH_CLONE_REPS (31).

const (
	fleetSource = "fleet-src"
	fleetLocal  = "local-src"
	fleetTag    = "masked"
	fleetBlock  = 4096 // btrfs's sector size: the unit a rewrite changes
	fleetFiles  = 1000
	bigFile     = "big.dat"
	markerFile  = "marker.txt"
	pullEvery   = "1s"
)

type fleetConfig struct {
	size                      int64
	rounds, lagRounds, clones int
}

func loadFleetConfig(t *testing.T) fleetConfig {
	c := fleetConfig{
		rounds:    envInt(t, "FLEET_BENCH_ROUNDS", 3),
		lagRounds: envInt(t, "FLEET_BENCH_LAG_ROUNDS", 5),
		clones:    envInt(t, "FLEET_BENCH_CLONE_REPS", 31),
	}
	var err error
	if c.size, err = ParseSize(envList("FLEET_BENCH_SIZE", "4G")[0]); err != nil {
		t.Fatalf("FLEET_BENCH_SIZE: %v", err)
	}
	if c.size < 1<<20 {
		t.Fatalf("FLEET_BENCH_SIZE=%d: want at least 1M (1%% of its blocks must be some)", c.size)
	}
	return c
}

// fleet is the two hosts and the registry.
type fleet struct {
	t        *testing.T
	cfg      fleetConfig
	prod, ci *test.Plugin
	repo     string
	reg      string
	src      string // the production source's mount point (held mounted)
	res      *FleetResult
}

// poolSize is a pool big enough for n bytes of data held k times over,
// plus room for the changes and the reserve.
func poolSize(n int64, k int64) string {
	return fmt.Sprintf("%dM", (k*n+n/4)>>20+2048)
}

func fleetBench(t *testing.T, res *Results) {
	test.RequireTool(t, "rsync", "rsync")
	cfg := loadFleetConfig(t)
	r := &FleetResult{Size: cfg.size, Label: SizeLabel(cfg.size), BlockSize: fleetBlock, SmallFiles: fleetFiles,
		BlocksRewritten: int(cfg.size / fleetBlock / 100), PullEvery: pullEvery, LoadStart: loadAvg()}
	res.Fleet = r
	defer func() { r.LoadEnd = loadAvg() }()
	reg := test.StartRegistry(t)
	f := &fleet{t: t, cfg: cfg, res: r, reg: reg, repo: reg + "/bench/" + fleetSource}
	// Production: the source, its snapshots (sharing its blocks) and a
	// clone for rsync to read. The CI host: the received versions, the
	// rsync destination and the file rsync rebuilds beside it.
	f.prod = test.StartPlugin(t, map[string]string{"POOL_SIZE": poolSize(cfg.size, 1), "LOG_LEVEL": "info", "LATEST_MAX_AGE": "6h",
		"PUBLISH": fleetSource + "@" + fleetTag + "*"})
	f.ci = test.StartPlugin(t, map[string]string{"POOL_SIZE": poolSize(cfg.size, 3), "LOG_LEVEL": "info", "LATEST_MAX_AGE": "6h",
		"REPLICAS": fleetSource + "=" + f.repo, "PULL_EVERY": "0"})
	for _, p := range []*test.Plugin{f.prod, f.ci} {
		if err := os.MkdirAll(filepath.Join(p.Pool(), "bench"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f.makeSource()
	f.pushPull()
	f.cloneMount()
	f.lag()
	if err := f.prod.Unmount(fleetSource, "writer"); err != nil {
		t.Error(err)
	}
}

// snapvol runs the command bin/snapvol against p and returns how long it
// took, start to exit, and its output.
func (f *fleet) snapvol(p *test.Plugin, args ...string) (time.Duration, []byte) {
	f.t.Helper()
	args = append(args, "--state-dir", p.StateDir)
	cmd := exec.Command(test.CLIBinary(f.t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	el := time.Since(start)
	if err != nil {
		f.t.Fatalf("snapvol %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return el, out
}

func (f *fleet) settle() {
	f.t.Helper()
	for _, p := range []*test.Plugin{f.prod, f.ci} {
		if err := settle(p.Pool()); err != nil {
			f.t.Fatal(err)
		}
	}
}

// makeSource writes the large file (incompressible: ChaCha8) into the
// production source and takes fleet-src@masked of it.
func (f *fleet) makeSource() {
	t := f.t
	if err := f.prod.Create(fleetSource, nil); err != nil {
		t.Fatal(err)
	}
	f.src = f.prod.MustMount(fleetSource, "writer")
	if f.src == "" {
		t.Fatal("empty mount point")
	}
	start := time.Now()
	out, err := os.Create(filepath.Join(f.src, bigFile))
	if err != nil {
		t.Fatal(err)
	}
	var key [32]byte
	key[0] = 0xf1
	rng := rand.NewChaCha8(key)
	buf := make([]byte, 1<<20)
	for left := f.cfg.size; left > 0; left -= int64(len(buf)) {
		n := min(int64(len(buf)), left)
		_, _ = rng.Read(buf[:n])
		if _, err := out.Write(buf[:n]); err != nil {
			t.Fatal(err)
		}
	}
	if err := out.Sync(); err != nil {
		t.Fatal(err)
	}
	out.Close()
	if err := os.WriteFile(filepath.Join(f.src, markerFile), []byte("v0"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.settle()
	t.Logf("fleet: %s written and synced in %s", f.res.Label, time.Since(start).Round(time.Millisecond))
	f.snapvol(f.prod, "snapshot", "create", fleetSource, fleetTag)
}

// change rewrites 1% of the large file's blocks in place, at random, and
// adds 1,000 small files (512 B–8 KiB) and the round's marker; it returns
// the bytes it wrote.
func (f *fleet) change(round int) int64 {
	t := f.t
	blocks := f.cfg.size / fleetBlock
	n := f.res.BlocksRewritten
	rng := rand.New(rand.NewPCG(uint64(round), 0xb10c))
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], uint64(round)+1000)
	content := rand.NewChaCha8(key)
	picked := map[int64]bool{}
	for len(picked) < n {
		picked[rng.Int64N(blocks)] = true
	}
	idx := make([]int64, 0, n)
	for b := range picked {
		idx = append(idx, b)
	}
	sort.Slice(idx, func(i, j int) bool { return idx[i] < idx[j] })
	big, err := os.OpenFile(filepath.Join(f.src, bigFile), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8192)
	var wrote int64
	for _, b := range idx {
		_, _ = content.Read(buf[:fleetBlock])
		if _, err := big.WriteAt(buf[:fleetBlock], b*fleetBlock); err != nil {
			t.Fatal(err)
		}
		wrote += fleetBlock
	}
	if err := big.Sync(); err != nil {
		t.Fatal(err)
	}
	big.Close()
	dir := filepath.Join(f.src, fmt.Sprintf("small-%03d", round))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lo, hi := math.Log(512), math.Log(8192)
	for i := 0; i < fleetFiles; i++ {
		size := int(math.Exp(lo + rng.Float64()*(hi-lo)))
		_, _ = content.Read(buf[:size])
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%04d", i)), buf[:size], 0o644); err != nil {
			t.Fatal(err)
		}
		wrote += int64(size)
	}
	marker := fmt.Sprintf("v%d", round)
	if err := os.WriteFile(filepath.Join(f.src, markerFile), []byte(marker), 0o644); err != nil {
		t.Fatal(err)
	}
	wrote += int64(len(marker))
	f.settle()
	return wrote
}

func (f *fleet) push() (time.Duration, admin.PushResult) {
	el, out := f.snapvol(f.prod, "push", fleetSource+"@"+fleetTag, f.repo+":"+fleetTag, "--json")
	var r admin.PushResult
	if err := json.Unmarshal(out, &r); err != nil {
		f.t.Fatalf("push --json: %v\n%s", err, out)
	}
	return el, r
}

func (f *fleet) pull() (time.Duration, admin.PullResult) {
	el, out := f.snapvol(f.ci, "pull", fleetSource+"@"+fleetTag, "--json")
	var r admin.PullResult
	if err := json.Unmarshal(out, &r); err != nil {
		f.t.Fatalf("pull --json: %v\n%s", err, out)
	}
	if len(r.Tags) != 1 || r.Tags[0].Applied != 1 || !r.Tags[0].New {
		f.t.Fatalf("pull: %+v; want one layer applied, a new version", r)
	}
	return el, r
}

// cloneOn is Get + Mount of name on p (timed), checking the clone shows
// marker; the Unmount and Remove after it are not timed.
func (f *fleet) cloneOn(p *test.Plugin, name, marker string) time.Duration {
	f.t.Helper()
	id := randID()
	start := time.Now()
	if _, err := p.Get(name); err != nil {
		f.t.Fatalf("get %s: %v", name, err)
	}
	mp, err := p.Mount(name, id)
	el := time.Since(start)
	if err != nil {
		f.t.Fatalf("mount %s: %v", name, err)
	}
	if got, err := os.ReadFile(filepath.Join(mp, markerFile)); err != nil || string(got) != marker {
		f.t.Fatalf("%s mounted at %s shows %q (%v); want %q", name, mp, got, err, marker)
	}
	if err := p.Unmount(name, id); err != nil {
		f.t.Fatal(err)
	}
	if err := p.Remove(name); err != nil {
		f.t.Fatal(err)
	}
	return el
}

// rsync copies the tree of fleet-src@masked on the production host (a
// clone of it) into the CI host's local-src with rsync -a
// --no-whole-file, timed until it exits, then the CI pool's flush.
func (f *fleet) rsync(round int, dst, marker string) (time.Duration, time.Duration) {
	t := f.t
	name := fmt.Sprintf("%s@%s+rsync%d", fleetSource, fleetTag, round)
	src := f.prod.MustMount(name, "rsync")
	if src == "" {
		t.Fatal("empty mount point")
	}
	f.settle()
	start := time.Now()
	if out, err := exec.Command("rsync", "-a", "--no-whole-file", src+"/", dst+"/").CombinedOutput(); err != nil {
		t.Fatalf("rsync: %v\n%s", err, out)
	}
	el := time.Since(start)
	start = time.Now()
	if err := syncFS(dst); err != nil {
		t.Fatal(err)
	}
	flush := time.Since(start)
	if got, err := os.ReadFile(filepath.Join(dst, markerFile)); err != nil || string(got) != marker {
		t.Fatalf("rsync destination shows %q (%v); want %q", got, err, marker)
	}
	if err := f.prod.Unmount(name, "rsync"); err != nil {
		t.Fatal(err)
	}
	if err := f.prod.Remove(name); err != nil {
		t.Fatal(err)
	}
	return el, flush
}

// pushPull: the first push and pull (full streams) and the first rsync
// into an empty directory; then rounds of a change, snapshot create
// --replace, push + pull, and rsync of the same two trees.
func (f *fleet) pushPull() {
	t, r := f.t, f.res
	f.settle()
	pushEl, pr := f.push()
	if !pr.Full || pr.Layers != 1 || pr.Bytes < f.cfg.size {
		t.Fatalf("first push: %+v; want one full layer of at least %d bytes", pr, f.cfg.size)
	}
	pullEl, _ := f.pull()
	r.FullPush, r.FullPull, r.FullBytes = NewDist([]time.Duration{pushEl}), NewDist([]time.Duration{pullEl}), pr.Bytes
	t.Logf("fleet: full push %s (%s uploaded), full pull %s", pushEl.Round(time.Millisecond), mib(pr.Bytes), pullEl.Round(time.Millisecond))
	f.cloneOn(f.ci, fleetSource+"@"+fleetTag+"+check0", "v0")

	if err := f.ci.Create(fleetLocal, nil); err != nil {
		t.Fatal(err)
	}
	dst := f.ci.MustMount(fleetLocal, "rsync")
	if dst == "" {
		t.Fatal("empty mount point")
	}
	full, _ := f.rsync(0, dst, "v0")
	r.RsyncFull = NewDist([]time.Duration{full})
	t.Logf("fleet: rsync into an empty directory %s", full.Round(time.Millisecond))

	var push, pull, both, rs, flush []time.Duration
	for round := 1; round <= f.cfg.rounds; round++ {
		changed := f.change(round)
		f.snapvol(f.prod, "snapshot", "create", fleetSource, fleetTag, "--replace")
		f.settle()
		pushEl, pr := f.push()
		if pr.Full || len(pr.Uploaded) != 1 {
			t.Fatalf("push of round %d: %+v; want one incremental layer uploaded", round, pr)
		}
		pullEl, pl := f.pull()
		push, pull, both = append(push, pushEl), append(pull, pullEl), append(both, pushEl+pullEl)
		r.IncBytes, r.Changed = append(r.IncBytes, pr.Bytes), append(r.Changed, changed)
		marker := fmt.Sprintf("v%d", round)
		f.cloneOn(f.ci, fmt.Sprintf("%s@%s+check%d", fleetSource, fleetTag, round), marker)
		f.settle()
		el, fl := f.rsync(round, dst, marker)
		rs, flush = append(rs, el), append(flush, fl)
		t.Logf("fleet round %d: wrote %s; push %s (%s uploaded), pull %s (%s); rsync %s (+ flush %s)", round, mib(changed),
			pushEl.Round(time.Millisecond), mib(pr.Bytes), pullEl.Round(time.Millisecond), mib(pl.Tags[0].Bytes), el.Round(time.Millisecond), fl.Round(time.Millisecond))
	}
	r.Rounds = f.cfg.rounds
	r.IncPush, r.IncPull, r.IncPushPull = NewDist(push), NewDist(pull), NewDist(both)
	r.Rsync, r.RsyncFlush = NewDist(rs), NewDist(flush)
	if err := f.ci.Unmount(fleetLocal, "rsync"); err != nil {
		t.Fatal(err)
	}
}

// cloneMount alternates clones of the replica source and of a local
// source holding the same tree (the rsync destination, snapshotted), on
// the CI host, settled before each.
func (f *fleet) cloneMount() {
	r := f.res
	f.snapvol(f.ci, "snapshot", "create", fleetLocal, fleetTag)
	marker := fmt.Sprintf("v%d", f.cfg.rounds)
	// Warm up both paths once.
	f.cloneOn(f.ci, fleetSource+"@"+fleetTag+"+warm", marker)
	f.cloneOn(f.ci, fleetLocal+"@"+fleetTag+"+warm", marker)
	var rep, loc []time.Duration
	for i := 0; i < f.cfg.clones; i++ {
		steps := []func(){
			func() {
				rep = append(rep, f.cloneOn(f.ci, fmt.Sprintf("%s@%s+c%d", fleetSource, fleetTag, i), marker))
			},
			func() {
				loc = append(loc, f.cloneOn(f.ci, fmt.Sprintf("%s@%s+c%d", fleetLocal, fleetTag, i), marker))
			},
		}
		for j := range steps {
			f.settle()
			steps[(i+j)%2]()
		}
	}
	r.CloneReps = f.cfg.clones
	r.CloneReplica, r.CloneLocal = NewDist(rep), NewDist(loc)
	f.t.Logf("fleet: clone+mount replica %s (p90 %s), local %s (p90 %s)", dist(r.CloneReplica), ms(p90(r.CloneReplica)), dist(r.CloneLocal), ms(p90(r.CloneLocal)))
}

// maskedPath is the production pool's path of fleet-src@masked now.
func (f *fleet) maskedPath() string {
	snaps, err := admin.NewClient(admin.SocketPath(f.prod.StateDir)).Snapshots(fleetSource)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, s := range snaps {
		if s.Name == fleetTag {
			return filepath.Join(f.prod.Pool(), s.Object)
		}
	}
	f.t.Fatalf("no %s@%s among %+v", fleetSource, fleetTag, snaps)
	return ""
}

// pipe is the bare way to move the change: a read-only snapshot of the
// changed source, then btrfs send -p of it against the version the CI host
// has, piped into btrfs receive on the CI pool (timed); all undone again.
func (f *fleet) pipe(round int) (time.Duration, fleetSteps) {
	t := f.t
	x := filepath.Join(f.prod.Pool(), "bench", fmt.Sprintf("x%d", round))
	if err := snapshotIoctl(filepath.Join(f.prod.Pool(), "volumes", fleetSource), x, true); err != nil {
		t.Fatal(err)
	}
	parent := f.maskedPath()
	steps := f.steps(round, parent, x)
	dst := filepath.Join(f.ci.Pool(), "bench", fmt.Sprintf("pipe%d", round))
	if err := os.Mkdir(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	f.settle()
	send := exec.Command("btrfs", "send", "-q", "-p", parent, x)
	recv := exec.Command("btrfs", "receive", "-e", dst)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var sendErr, recvErr bytes.Buffer
	send.Stdout, send.Stderr = pw, &sendErr
	recv.Stdin, recv.Stdout, recv.Stderr = pr, &recvErr, &recvErr
	start := time.Now()
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := send.Start(); err != nil {
		t.Fatal(err)
	}
	pr.Close()
	pw.Close()
	serr, rerr := send.Wait(), recv.Wait()
	el := time.Since(start)
	if serr != nil || rerr != nil {
		t.Fatalf("btrfs send -p %s %s | btrfs receive %s: %v %v\n%s%s", parent, x, dst, serr, rerr, sendErr.Bytes(), recvErr.Bytes())
	}
	got := filepath.Join(dst, filepath.Base(x))
	if b, err := os.ReadFile(filepath.Join(got, markerFile)); err != nil || string(b) != fmt.Sprintf("v%d", round) {
		t.Fatalf("the piped snapshot shows %q (%v)", b, err)
	}
	for _, p := range []string{got, x} {
		if err := subvolDelete(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(dst); err != nil {
		t.Fatal(err)
	}
	f.settle()
	return el, steps
}

// fleetSteps are the bare parts a push and a pull are made of, each timed
// alone on the same change: where the lag's time goes.
type fleetSteps struct {
	send    time.Duration // btrfs send -p into a file, hashed as it is written
	upload  time.Duration // that file to the registry (HEAD, then POST + PUT)
	receive time.Duration // the blob fetched from the registry piped into btrfs receive
	bytes   int64
}

// steps times what push and pull do, bare: btrfs send -p PARENT X into a
// file under the production host's STATE_DIR while hashing it (sha256),
// uploading it to the registry (a scratch repository), and fetching it
// back into btrfs receive on the CI pool, checking its digest; all
// undone again.
func (f *fleet) steps(round int, parent, x string) fleetSteps {
	t := f.t
	var st fleetSteps
	tmp, err := os.CreateTemp(f.prod.StateDir, "steps-*.stream")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	f.settle()
	h := sha256.New()
	send := exec.Command("btrfs", "send", "-q", "-p", parent, x)
	var serr bytes.Buffer
	send.Stdout, send.Stderr = io.MultiWriter(tmp, h), &serr
	start := time.Now()
	if err := send.Run(); err != nil {
		t.Fatalf("btrfs send -p %s %s: %v\n%s", parent, x, err, serr.Bytes())
	}
	st.send = time.Since(start)
	if st.bytes, err = tmp.Seek(0, io.SeekCurrent); err != nil {
		t.Fatal(err)
	}
	desc := ocispec.Descriptor{MediaType: "application/vnd.snapvol.btrfs-send.v1", Size: st.bytes,
		Digest: digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(h.Sum(nil)))}
	repo, err := remote.NewRepository(f.reg + "/bench/steps")
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	ctx := context.Background()
	start = time.Now()
	if ok, err := repo.Exists(ctx, desc); err != nil || ok {
		t.Fatalf("the registry has blob %s already (%v) or cannot say: %v", desc.Digest, ok, err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if err := repo.Push(ctx, desc, tmp); err != nil {
		t.Fatal(err)
	}
	st.upload = time.Since(start)
	dst := filepath.Join(f.ci.Pool(), "bench", fmt.Sprintf("steps%d", round))
	if err := os.Mkdir(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	f.settle()
	start = time.Now()
	rc, err := repo.Fetch(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	h.Reset()
	recv := exec.Command("btrfs", "receive", "-e", dst)
	var rerr bytes.Buffer
	recv.Stdin, recv.Stdout, recv.Stderr = io.TeeReader(rc, h), &rerr, &rerr
	err = recv.Run()
	rc.Close()
	st.receive = time.Since(start)
	if err != nil {
		t.Fatalf("btrfs receive of the fetched blob: %v\n%s", err, rerr.Bytes())
	}
	if got := digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(h.Sum(nil))); got != desc.Digest {
		t.Fatalf("fetched %s, want %s", got, desc.Digest)
	}
	if err := subvolDelete(filepath.Join(dst, filepath.Base(x))); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(dst); err != nil {
		t.Fatal(err)
	}
	return st
}

// lag restarts the CI host with PULL_EVERY=1s and, for each round, makes
// a change, times the bare pipe of it, then times from snapshot create on
// the production host until a clone on the CI host shows it.
func (f *fleet) lag() {
	t, r := f.t, f.res
	f.ci.Stop()
	f.ci.Env["PULL_EVERY"] = pullEvery
	f.ci.Start()
	ci := admin.NewClient(admin.SocketPath(f.ci.StateDir))
	visible := func() string {
		reps, err := ci.Replicas()
		if err != nil {
			t.Fatal(err)
		}
		for _, rp := range reps {
			for _, tg := range rp.Tags {
				if rp.Source == fleetSource && tg.Tag == fleetTag {
					return tg.UUID
				}
			}
		}
		return ""
	}
	var lags, snaps, pushes, vis, clones, pipes, sends, uploads, receives []time.Duration
	for k := 1; k <= f.cfg.lagRounds; k++ {
		round := f.cfg.rounds + k
		f.change(round)
		pipe, st := f.pipe(round)
		pipes, sends, uploads, receives = append(pipes, pipe), append(sends, st.send), append(uploads, st.upload), append(receives, st.receive)
		t.Logf("fleet lag round %d, bare steps: send -p into a file + sha256 %s (%s), upload %s, fetch | receive %s", k,
			st.send.Round(time.Millisecond), mib(st.bytes), st.upload.Round(time.Millisecond), st.receive.Round(time.Millisecond))
		before := visible()
		start := time.Now()
		snapEl, _ := f.snapvol(f.prod, "snapshot", "create", fleetSource, fleetTag, "--replace")
		pushEl, pr := f.push()
		if pr.Full {
			t.Fatalf("lag round %d: the push was full: %+v", k, pr)
		}
		pushed := time.Now()
		deadline := pushed.Add(2 * time.Minute)
		for visible() == before {
			if time.Now().After(deadline) {
				t.Fatalf("lag round %d: the CI host did not pull the new version within 2 minutes (PULL_EVERY=%s):\n%s", k, pullEvery, f.ci.Log())
			}
			time.Sleep(10 * time.Millisecond)
		}
		seen := time.Now()
		cloneEl := f.cloneOn(f.ci, fmt.Sprintf("%s@%s+lag%d", fleetSource, fleetTag, k), fmt.Sprintf("v%d", round))
		lag := seen.Sub(start) + cloneEl
		lags, snaps, pushes, vis, clones = append(lags, lag), append(snaps, snapEl), append(pushes, pushEl), append(vis, seen.Sub(pushed)), append(clones, cloneEl)
		t.Logf("fleet lag round %d: %s (snapshot create %s, push %s, visible %s later, clone %s); bare pipe %s", k, lag.Round(time.Millisecond),
			snapEl.Round(time.Millisecond), pushEl.Round(time.Millisecond), seen.Sub(pushed).Round(time.Millisecond), cloneEl.Round(time.Millisecond), pipes[len(pipes)-1].Round(time.Millisecond))
		f.settle()
	}
	r.LagRounds = f.cfg.lagRounds
	r.Lag, r.LagSnapshot, r.LagPush, r.LagVisible, r.LagClone, r.Pipe = NewDist(lags), NewDist(snaps), NewDist(pushes), NewDist(vis), NewDist(clones), NewDist(pipes)
	r.StepSend, r.StepUpload, r.StepReceive = NewDist(sends), NewDist(uploads), NewDist(receives)
}
