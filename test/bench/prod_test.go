//go:build bench

package bench

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/admin"
	"github.com/snapvol/snapvol/test"
)

// Production under clones (issue 12, item 7): production must not feel a
// clone being taken; and what the space limits (quotas, on by default)
// cost a clone. Two plugins, each on a fresh pool of the same size with
// the same production data: one with the default settings (simple quotas
// and a POOL_RESERVE), one with POOL_RESERVE=0 and CLONE_SIZE=0, which
// never turns quotas on.

const (
	prodVolume = "production"
	walFile    = "wal"
	walSize    = 16 << 20
	writeSize  = 4 << 10
)

func startProdPlugin(t *testing.T, cfg config, extra map[string]string) (*test.Plugin, string) {
	env := map[string]string{"POOL_SIZE": cfg.prodPoolSize, "LOG_LEVEL": "info", "LATEST_MAX_AGE": "6h"}
	for k, v := range extra {
		env[k] = v
	}
	p := test.StartPlugin(t, env)
	if err := p.Create(prodVolume, nil); err != nil {
		t.Fatal(err)
	}
	mp := p.MustMount(prodVolume, "writer")
	// Production's data, and a preallocated log file its writer
	// overwrites block by block, as a database's WAL segment.
	if _, _, err := Fill(filepath.Join(mp, "data"), cfg.prodData, 42); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, walSize)
	_, _ = rand.Read(buf)
	f, err := os.OpenFile(filepath.Join(mp, walFile), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err == nil {
		_, err = f.Write(buf)
		if err == nil {
			err = f.Sync()
		}
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := settle(p.Pool()); err != nil {
		t.Fatal(err)
	}
	return p, mp
}

// quotaMode is what the kernel says about the pool's quotas: "" when they
// are off, else the mode (qgroup, squota) from /sys/fs/btrfs/FSID/qgroups.
func quotaMode(pool string) (string, error) {
	fsid, err := fsID(pool)
	if err != nil {
		return "", err
	}
	dir := filepath.Join("/sys/fs/btrfs", fsid, "qgroups")
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	data, err := os.ReadFile(filepath.Join(dir, "mode"))
	if err != nil {
		return "on", nil // a kernel without the mode file: full qgroups
	}
	return strings.TrimSpace(string(data)), nil
}

// fsID is the pool filesystem's UUID (BTRFS_IOC_FS_INFO), as /sys/fs/btrfs
// names it.
func fsID(p string) (string, error) {
	fd, err := openDir(p)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	var a struct {
		maxID, numDevices uint64
		fsid              [16]byte
		rest              [992]byte
	}
	if err := ioctl(uintptr(fd), 0x8400941f, unsafe.Pointer(&a)); err != nil {
		return "", fmt.Errorf("BTRFS_IOC_FS_INFO %s: %w", p, err)
	}
	u := a.fsid
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]), nil
}

// cloneMount is cloneOnce for any plugin: Get + Mount of name timed, the
// clone checked to hold production's log file, Unmount and Remove untimed.
func cloneMount(t *testing.T, p *test.Plugin, name string) time.Duration {
	id := randID()
	start := time.Now()
	if _, err := p.Get(name); err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	mp, err := p.Mount(name, id)
	el := time.Since(start)
	if err != nil {
		t.Fatalf("mount %s: %v", name, err)
	}
	if st, err := os.Stat(filepath.Join(mp, walFile)); err != nil || st.Size() != walSize {
		t.Fatalf("%s does not show production's data: %v", name, err)
	}
	if err := p.Unmount(name, id); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove(name); err != nil {
		t.Fatal(err)
	}
	return el
}

func prodLatency(t *testing.T, cfg config, res *Results) {
	on, mp := startProdPlugin(t, cfg, nil)
	off, _ := startProdPlugin(t, cfg, map[string]string{"POOL_RESERVE": "0", "CLONE_SIZE": "0"})
	p := &ProdResult{WriteBytes: writeSize, Rounds: cfg.prodRounds, Seconds: float64(cfg.prodSeconds)}
	res.Prod = p

	// Which is which, as the kernel and the plugin say.
	modeOn, err := quotaMode(on.Pool())
	if err != nil {
		t.Fatal(err)
	}
	modeOff, err := quotaMode(off.Pool())
	if err != nil {
		t.Fatal(err)
	}
	if modeOn == "" || modeOff != "" {
		t.Fatalf("quotas: %q on the default pool, %q on the POOL_RESERVE=0 CLONE_SIZE=0 pool; want on and off", modeOn, modeOff)
	}
	df, err := admin.NewClient(admin.SocketPath(on.StateDir)).Usage()
	if err != nil {
		t.Fatal(err)
	}
	if df.Reserve <= 0 {
		t.Fatalf("the default pool has no reserve: %+v", df)
	}
	p.Quotas = fmt.Sprintf("btrfs quotas (%s) with a reserve of %.0f%% of the %.1f GiB pool", modeOn, 100*float64(df.Reserve)/float64(df.Size), float64(df.Size)/(1<<30))

	quotaCost(t, cfg, p, on, off)
	prodWrites(t, cfg, p, on, mp)
	for _, x := range []*test.Plugin{on, off} {
		if err := x.Unmount(prodVolume, "writer"); err != nil {
			t.Error(err)
		}
	}
}

// quotaCost: Get + Mount of @latest and @now on both pools, in rotation.
func quotaCost(t *testing.T, cfg config, p *ProdResult, on, off *test.Plugin) {
	settleAll := func() {
		for _, x := range []*test.Plugin{on, off} {
			if err := settle(x.Pool()); err != nil {
				t.Fatal(err)
			}
		}
	}
	cloneMount(t, on, prodVolume+"@latest+warm")
	cloneMount(t, off, prodVolume+"@latest+warm")
	settleAll()
	var onL, offL, onN, offN []time.Duration
	for rep := 0; rep < cfg.reps; rep++ {
		steps := []func(){
			func() { onL = append(onL, cloneMount(t, on, fmt.Sprintf("%s@latest+q%d", prodVolume, rep))) },
			func() { offL = append(offL, cloneMount(t, off, fmt.Sprintf("%s@latest+q%d", prodVolume, rep))) },
			func() { onN = append(onN, cloneMount(t, on, fmt.Sprintf("%s@now+q%d", prodVolume, rep))) },
			func() { offN = append(offN, cloneMount(t, off, fmt.Sprintf("%s@now+q%d", prodVolume, rep))) },
		}
		for j := range steps {
			steps[(j+rep)%len(steps)]()
			settleAll()
		}
	}
	p.QuotaLatest, p.NoQuotaLatest, p.QuotaNow, p.NoQuotaNow = NewDist(onL), NewDist(offL), NewDist(onN), NewDist(offN)
	t.Logf("clone+mount with %s / without: @latest %s / %s = %.2fx, @now %s / %s = %.2fx", p.Quotas,
		dist(p.QuotaLatest), dist(p.NoQuotaLatest), ratio(p.QuotaLatest.P50, p.NoQuotaLatest.P50),
		dist(p.QuotaNow), dist(p.NoQuotaNow), ratio(p.QuotaNow.P50, p.NoQuotaNow.P50))
}

// writer overwrites the log file block by block, each write followed by
// fdatasync, until stop, and returns each write's latency. It keeps an OS
// thread of its own, as a database's writer process has one.
func writer(f *os.File, stop *atomic.Bool, next *int64) ([]time.Duration, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, writeSize)
	_, _ = rand.Read(buf)
	fd := int(f.Fd())
	var out []time.Duration
	for !stop.Load() {
		off := *next
		*next = (off + writeSize) % walSize
		start := time.Now()
		if _, err := unix.Pwrite(fd, buf, off); err != nil {
			return out, err
		}
		if err := unix.Fdatasync(fd); err != nil {
			return out, err
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

// prodWrites runs production's writer in blocks of three phases: alone;
// while a client takes @now clones of production through the plugin in a
// loop (Create + Mount + Unmount + Remove over the socket, one after the
// other); and while this process takes the same snapshots bare, at the
// plugin's pace (a read-only snapshot of production, a writable snapshot
// of that, a bind mount; then unmounted and both deleted), which is what
// production would feel from the snapshots alone; and while storms of
// stormJobs jobs start at once on @now (issue 20 item 6: they share the
// next snapshot), each storm torn down before the next. The phases rotate
// in each round, the bare one always after the plugin's loop (its pace is
// that loop's mean cycle so far); the pool settles between blocks,
// untimed, so no block inherits another's work.
func prodWrites(t *testing.T, cfg config, p *ProdResult, pl *test.Plugin, mp string) {
	f, err := os.OpenFile(filepath.Join(mp, walFile), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	block := time.Duration(cfg.prodSeconds) * time.Second / time.Duration(cfg.prodRounds)
	pool := pl.Pool()
	src := filepath.Join(pool, "volumes", prodVolume)
	bareDir, bareMnt := filepath.Join(pool, "bench-prod"), filepath.Join(pl.Dir, "bare-prod")
	for _, d := range []string{bareDir, bareMnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { test.UnmountUnder(bareMnt) })
	const (
		idlePhase = iota
		clonePhase
		barePhase
		stormPhase
	)
	orders := [][4]int{
		{idlePhase, clonePhase, barePhase, stormPhase}, {clonePhase, idlePhase, stormPhase, barePhase},
		{stormPhase, clonePhase, barePhase, idlePhase}, {clonePhase, stormPhase, idlePhase, barePhase},
	}
	var writes [4][]time.Duration
	var cycle, mount, bareCycle, stormStart []time.Duration
	var stormSnaps []int
	var cycleSum time.Duration
	var next int64
	n := 0
	for round := 0; round < cfg.prodRounds; round++ {
		for _, phase := range orders[round%len(orders)] {
			var stop atomic.Bool
			var wg sync.WaitGroup
			var got []time.Duration
			var werr, cerr error
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, werr = writer(f, &stop, &next)
			}()
			switch phase {
			case clonePhase:
				wg.Add(1)
				go func() {
					defer wg.Done()
					for !stop.Load() {
						name, id := fmt.Sprintf("%s@now+p%d", prodVolume, n), randID()
						n++
						start := time.Now()
						if err := pl.Create(name, nil); err != nil {
							cerr = err
							return
						}
						if _, err := pl.Mount(name, id); err != nil {
							cerr = err
							return
						}
						mounted := time.Since(start)
						if err := pl.Unmount(name, id); err != nil {
							cerr = err
							return
						}
						if err := pl.Remove(name); err != nil {
							cerr = err
							return
						}
						el := time.Since(start)
						cycle, mount, cycleSum = append(cycle, el), append(mount, mounted), cycleSum+el
					}
				}()
			case stormPhase:
				wg.Add(1)
				go func() {
					defer wg.Done()
					for !stop.Load() {
						el, snaps, err := storm(pl, n)
						n += stormJobs
						if err != nil {
							cerr = err
							return
						}
						stormStart, stormSnaps = append(stormStart, el), append(stormSnaps, snaps)
					}
				}()
			case barePhase:
				pace := cycleSum / time.Duration(max(1, len(cycle)))
				wg.Add(1)
				go func() {
					defer wg.Done()
					for !stop.Load() {
						start := time.Now()
						ro, rw, target := filepath.Join(bareDir, fmt.Sprintf("ro%d", n)), filepath.Join(bareDir, fmt.Sprintf("rw%d", n)), filepath.Join(bareMnt, fmt.Sprintf("rw%d", n))
						n++
						for _, err := range []error{snapshotIoctl(src, ro, true), snapshotIoctl(ro, rw, false), bindMount(rw, target), unbind(target), subvolDelete(rw), subvolDelete(ro)} {
							if err != nil {
								cerr = err
								return
							}
						}
						bareCycle = append(bareCycle, time.Since(start))
						if rest := pace - time.Since(start); rest > 0 {
							time.Sleep(rest)
						}
					}
				}()
			}
			time.Sleep(block)
			stop.Store(true)
			wg.Wait()
			if werr != nil || cerr != nil {
				t.Fatalf("production writer: %v; cloner: %v", werr, cerr)
			}
			writes[phase] = append(writes[phase], got...)
			if err := settle(pool); err != nil {
				t.Fatal(err)
			}
		}
	}
	p.Idle, p.Cloning, p.BareCloning = NewDist(writes[idlePhase]), NewDist(writes[clonePhase]), NewDist(writes[barePhase])
	p.Storm = NewDist(writes[stormPhase])
	p.Idle.Samples, p.Cloning.Samples, p.BareCloning.Samples, p.Storm.Samples = nil, nil, nil, nil // tens of thousands
	p.StormJobs, p.Storms, p.StormStart = stormJobs, len(stormStart), NewDist(stormStart)
	for _, s := range stormSnaps {
		p.StormSnapshots += s
	}
	p.Clones, p.CloneMount, p.CloneCycle = len(cycle), NewDist(mount), NewDist(cycle)
	p.BareSnapshots, p.BareCycle = len(bareCycle), NewDist(bareCycle)
	t.Logf("production %d-byte write + fdatasync, p50 / p95 / p99: idle %s (%d writes); while taking %d @now clones %s (%d writes): p50 %.2fx, p99 %.2fx; "+
		"while taking %d bare snapshot pairs at the same pace %s (%d writes): p50 %.2fx, p99 %.2fx; clone Create+Mount %s, whole cycle %s, bare cycle %s",
		writeSize, dist3(p.Idle), p.Idle.N, p.Clones, dist3(p.Cloning), p.Cloning.N, ratio(p.Cloning.P50, p.Idle.P50), ratio(p.Cloning.P99, p.Idle.P99),
		p.BareSnapshots, dist3(p.BareCloning), p.BareCloning.N, ratio(p.BareCloning.P50, p.Idle.P50), ratio(p.BareCloning.P99, p.Idle.P99),
		dist(p.CloneMount), dist(p.CloneCycle), dist(p.BareCycle))
	t.Logf("while %d storms of %d jobs started at once on @now (%d snapshots, all %d mounted after %s) %s (%d writes): p50 %.2fx, p99 %.2fx",
		p.Storms, stormJobs, p.StormSnapshots, stormJobs, dist(p.StormStart), dist3(p.Storm), p.Storm.N, ratio(p.Storm.P50, p.Idle.P50), ratio(p.Storm.P99, p.Idle.P99))
}

// stormJobs is how many CI jobs start at once in the storm phase.
const stormJobs = 32

// storm starts stormJobs jobs at once on @now of production (Create +
// Mount each, named from n on), and returns how long until all were
// mounted and how many distinct snapshots their clones came from; then
// unmounts and removes them all, at once too.
func storm(pl *test.Plugin, n int) (time.Duration, int, error) {
	names, ids := make([]string, stormJobs), make([]string, stormJobs)
	for i := range names {
		names[i], ids[i] = fmt.Sprintf("%s@now+s%d", prodVolume, n+i), randID()
	}
	each := func(f func(i int) error) error {
		errs := make([]error, stormJobs)
		var wg sync.WaitGroup
		for i := range names {
			wg.Add(1)
			go func(i int) { defer wg.Done(); errs[i] = f(i) }(i)
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	start := time.Now()
	err := each(func(i int) error {
		if err := pl.Create(names[i], nil); err != nil {
			return err
		}
		_, err := pl.Mount(names[i], ids[i])
		return err
	})
	el := time.Since(start)
	if err != nil {
		return el, 0, err
	}
	snaps := map[string]bool{}
	for _, name := range names {
		v, err := pl.Get(name)
		if err != nil {
			return el, 0, err
		}
		snaps[fmt.Sprint(v.Status["snapshot"])] = true
	}
	err = each(func(i int) error {
		if err := pl.Unmount(names[i], ids[i]); err != nil {
			return err
		}
		return pl.Remove(names[i])
	})
	return el, len(snaps), err
}
