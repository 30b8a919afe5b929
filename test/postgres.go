package test

// PostgreSQL in a private Docker engine, for the live-database test: the
// image (scripts/postgres-image.sh, from this host's Debian packages), a
// server container and queries through `docker exec psql`, a steady write
// load whose every commit is acknowledged back to the test, and the checks
// a copy of the database must pass.

import (
	"bufio"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapvol/snapvol/test/dockerd"
)

const (
	PGImage   = "snapvol-postgres:15"
	PGData    = "/var/lib/postgresql/data"
	pgBin     = "/usr/lib/postgresql/15/bin"
	pgDB      = "app"
	pgAccts   = 1000 // rows in accounts
	pgBalance = 1000 // each account's starting balance: the sum never changes
)

// RequirePostgres fails, naming the package, unless Debian's PostgreSQL 15
// server (with amcheck) is installed: the image is made from it.
func RequirePostgres(t testing.TB) {
	t.Helper()
	for _, f := range []string{pgBin + "/postgres", pgBin + "/initdb", pgBin + "/pg_amcheck", "/usr/lib/postgresql/15/lib/amcheck.so", "/usr/share/postgresql/15/extension/amcheck.control"} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s not found: apt-get install -y postgresql-15 (bash .ci/run installs everything the tests need)", f)
		}
	}
}

// ImportPostgres makes image in d with scripts/postgres-image.sh.
func ImportPostgres(t testing.TB, d *dockerd.Daemon, image string) {
	t.Helper()
	cmd := d.Command(filepath.Join(RepoRoot(), "scripts", "postgres-image.sh"), image)
	cmd.Env = append(cmd.Env, "DOCKER="+dockerd.DockerCLI())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/postgres-image.sh: %v\n%s", err, out)
	}
}

// PGServer is a postgres container.
type PGServer struct {
	d    *dockerd.Daemon
	Name string
}

// RunPostgres starts container name from PGImage with --network none and
// the given docker run arguments (the data volume), passing pgArgs to
// postgres. It does not wait for the server: see WaitReady.
func RunPostgres(d *dockerd.Daemon, name string, runArgs []string, pgArgs ...string) (*PGServer, error) {
	a := append([]string{"run", "-d", "--name", name, "--network", "none", "--stop-signal", "SIGINT"}, runArgs...)
	a = append(append(a, PGImage), pgArgs...)
	if _, err := d.Docker(a...); err != nil {
		return nil, err
	}
	return &PGServer{d: d, Name: name}, nil
}

// WaitReady waits until the server accepts connections (after any crash
// recovery), failing early if the container stops.
func (s *PGServer) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := s.d.Docker("exec", s.Name, "pg_isready", "-q"); err == nil {
			return nil
		}
		state, _ := s.d.Docker("inspect", "--format", "{{.State.Status}}", s.Name)
		if st := strings.TrimSpace(state); st != "running" && st != "created" {
			return fmt.Errorf("postgres container %s is %s; its log:\n%s", s.Name, st, s.Logs())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres in %s not ready within %v; its log:\n%s", s.Name, timeout, s.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Logs is the container's output (postgres logs to stderr).
func (s *PGServer) Logs() string {
	cmd := s.d.Command(dockerd.DockerCLI(), "logs", s.Name)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("(docker logs %s: %v) %s", s.Name, err, out)
	}
	return string(out)
}

// SQL runs a script in database app with psql (unaligned, tuples only, '|'
// between fields, stopping at the first error) and returns its output.
func (s *PGServer) SQL(script string) (string, error) {
	out, err := s.d.DockerInput([]byte(script), "exec", "-i", s.Name, "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", pgDB)
	if err != nil {
		return out, fmt.Errorf("psql in %s: %w", s.Name, err)
	}
	return out, nil
}

// Rows runs SQL and splits its output into rows of fields.
func (s *PGServer) Rows(script string) ([][]string, error) {
	out, err := s.SQL(script)
	if err != nil {
		return nil, err
	}
	var rows [][]string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if line != "" {
			rows = append(rows, strings.Split(line, "|"))
		}
	}
	return rows, nil
}

// Amcheck runs pg_amcheck on every database: heap and TOAST pages, every
// B-tree index with its parent links and a re-find of every tuple from the
// root, and every heap tuple looked up in every index. Page checksums are
// verified as the pages are read. It installs the amcheck extension where
// it is missing (a write, so only on a server that may be written).
func (s *PGServer) Amcheck() error {
	out, err := s.d.Docker("exec", s.Name, "pg_amcheck", "--install-missing", "--all",
		"--heapallindexed", "--parent-check", "--rootdescend")
	if err != nil || strings.TrimSpace(out) != "" {
		return fmt.Errorf("pg_amcheck in %s: %v\n%s", s.Name, err, out)
	}
	return nil
}

// PGSchema makes the load's tables in a new database app: items (each load
// transaction inserts one), ledger (one row per writer, counting its
// commits) and accounts (money moved between two accounts per transaction;
// the total is constant).
func PGSchema(s *PGServer, writers int) error {
	if _, err := s.d.Docker("exec", s.Name, "psql", "-X", "-q", "-d", "postgres", "-c", "CREATE DATABASE "+pgDB); err != nil {
		return err
	}
	_, err := s.SQL(fmt.Sprintf(`
CREATE TABLE items (writer int NOT NULL, seq int NOT NULL, payload text NOT NULL, sum text NOT NULL,
	at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (writer, seq));
CREATE INDEX items_sum ON items (sum);
CREATE INDEX items_at ON items (at);
CREATE TABLE ledger (writer int PRIMARY KEY, n int NOT NULL, last_sum text NOT NULL DEFAULT '');
INSERT INTO ledger (writer, n) SELECT g, 0 FROM generate_series(1, %d) g;
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO accounts SELECT g, %d FROM generate_series(1, %d) g;
`, writers, pgBalance, pgAccts))
	return err
}

// PGPayload is what writer w's transaction seq inserts: a payload of 64 to
// 6,062 hex digits (the longer ones go to TOAST) derived from the seed, and
// its MD5, so any copy can be checked row by row against what was written.
func PGPayload(seed uint64, w, seq int) (payload, sum string) {
	r := rand.New(rand.NewPCG(seed, uint64(w)<<32|uint64(seq)))
	b := make([]byte, 32+r.IntN(3000))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	payload = hex.EncodeToString(b)
	h := md5.Sum([]byte(payload))
	return payload, hex.EncodeToString(h[:])
}

// PGLoad is a steady write load: writers, each a psql session in the
// server's container (docker exec -i) fed one transaction at a time at a
// fixed rate. Every transaction inserts the writer's next item, counts it in
// the ledger and moves money between two accounts; after its COMMIT returns,
// psql echoes an acknowledgement, and only then is the commit counted as
// acknowledged.
type PGLoad struct {
	Seed    uint64
	writers []*pgWriter
	stop    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	err     error
}

type pgWriter struct {
	id     int
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr *lockedBuffer
	sent   atomic.Int64 // transactions handed to psql (may have committed)
	acked  atomic.Int64 // transactions whose COMMIT returned
	lat    []time.Duration
}

// StartPGLoad starts writers sessions (ids 1..writers), each committing
// rate transactions per second.
func StartPGLoad(s *PGServer, seed uint64, writers, rate int) (*PGLoad, error) {
	l := &PGLoad{Seed: seed, stop: make(chan struct{})}
	for id := 1; id <= writers; id++ {
		w := &pgWriter{id: id, stderr: &lockedBuffer{}}
		w.cmd = s.d.Command(dockerd.DockerCLI(), "exec", "-i", s.Name, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", pgDB)
		w.cmd.Stderr = w.stderr
		out, err := w.cmd.StdoutPipe()
		if err == nil {
			w.stdin, err = w.cmd.StdinPipe()
		}
		if err == nil {
			err = w.cmd.Start()
		}
		if err != nil {
			l.Stop() // the writers already running
			return nil, fmt.Errorf("starting writer %d: %w", id, err)
		}
		w.stdout = bufio.NewReader(out)
		l.writers = append(l.writers, w)
		l.wg.Add(1)
		go l.run(w, time.Second/time.Duration(rate))
	}
	return l, nil
}

func (l *PGLoad) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = err
	}
}

func (l *PGLoad) run(w *pgWriter, interval time.Duration) {
	defer l.wg.Done()
	defer func() {
		w.stdin.Close()
		err := w.cmd.Wait()
		select {
		case <-l.stop:
			if err != nil {
				l.fail(fmt.Errorf("writer %d: psql exited with %v at the end: %s", w.id, err, w.stderr.String()))
			}
		default: // already failed
		}
	}()
	r := rand.New(rand.NewPCG(l.Seed, uint64(w.id)))
	next := time.Now()
	var sb strings.Builder
	for seq := 1; ; seq++ {
		if d := time.Until(next); d > 0 {
			select {
			case <-l.stop:
				return
			case <-time.After(d):
			}
		} else {
			select {
			case <-l.stop:
				return
			default:
			}
			next = time.Now() // behind: no burst to catch up, the rate stays steady
		}
		next = next.Add(interval)

		payload, sum := PGPayload(l.Seed, w.id, seq)
		a, b := 1+r.IntN(pgAccts), 1+r.IntN(pgAccts-1)
		if b >= a {
			b++
		}
		if a > b { // rows locked in id order: writers never deadlock
			a, b = b, a
		}
		amount := r.IntN(201) - 100
		sb.Reset()
		fmt.Fprintf(&sb, "BEGIN;\nINSERT INTO items (writer, seq, payload, sum) VALUES (%d, %d, '%s', '%s');\n", w.id, seq, payload, sum)
		fmt.Fprintf(&sb, "UPDATE ledger SET n = n + 1, last_sum = '%s' WHERE writer = %d AND n = %d;\n", sum, w.id, seq-1)
		fmt.Fprintf(&sb, "UPDATE accounts SET balance = balance + %d WHERE id = %d;\n", amount, a)
		fmt.Fprintf(&sb, "UPDATE accounts SET balance = balance - %d WHERE id = %d;\n", amount, b)
		fmt.Fprintf(&sb, "COMMIT;\n\\echo ack %d %d\n", w.id, seq)

		start := time.Now()
		w.sent.Store(int64(seq))
		if _, err := io.WriteString(w.stdin, sb.String()); err != nil {
			l.fail(fmt.Errorf("writer %d seq %d: writing to psql: %v: %s", w.id, seq, err, w.stderr.String()))
			return
		}
		line, err := w.stdout.ReadString('\n')
		if err != nil {
			l.fail(fmt.Errorf("writer %d seq %d: no acknowledgement: %v: %s", w.id, seq, err, w.stderr.String()))
			return
		}
		if want := fmt.Sprintf("ack %d %d\n", w.id, seq); line != want {
			l.fail(fmt.Errorf("writer %d seq %d: psql said %q, want %q: %s", w.id, seq, line, want, w.stderr.String()))
			return
		}
		w.lat = append(w.lat, time.Since(start))
		w.acked.Store(int64(seq))
	}
}

// Acked is each writer's count of acknowledged commits, by writer id
// (index 0 unused). Read it before a snapshot: every one of these must be in
// it.
func (l *PGLoad) Acked() []int64 {
	c := make([]int64, len(l.writers)+1)
	for _, w := range l.writers {
		c[w.id] = w.acked.Load()
	}
	return c
}

// Sent is each writer's count of transactions handed to psql. Read it after
// a snapshot: nothing beyond these can be in it.
func (l *PGLoad) Sent() []int64 {
	c := make([]int64, len(l.writers)+1)
	for _, w := range l.writers {
		c[w.id] = w.sent.Load()
	}
	return c
}

// Err is the first failure of any writer.
func (l *PGLoad) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Stop ends the load after each writer's transaction in flight and waits
// for the sessions to end. Safe to call more than once.
func (l *PGLoad) Stop() error {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		// A session stuck in a commit: end the clients so their reads
		// return.
		l.fail(errors.New("the load did not stop within 60s of being told to: a commit hung"))
		for _, w := range l.writers {
			_ = w.cmd.Process.Kill()
		}
		<-done
	}
	return l.Err()
}

// Latencies are the commit latencies of every acknowledged transaction
// (after Stop), sorted.
func (l *PGLoad) Latencies() []time.Duration {
	var all []time.Duration
	for _, w := range l.writers {
		all = append(all, w.lat...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	return all
}

// PGFacts is what a check found in a copy of the database.
type PGFacts struct {
	Committed []int64   // items per writer (= its ledger count), by writer id
	Rows      int       // items rows checked against what was written
	Newest    time.Time // the newest item's commit-side timestamp
}

// Total is the number of load transactions in the copy.
func (f PGFacts) Total() int64 {
	var n int64
	for _, c := range f.Committed {
		n += c
	}
	return n
}

// CheckPG checks the load's data in s: for every writer, its items are
// exactly seq 1..n with no gap, each row's payload has the MD5 stored with
// it and both are what the writer sent, the ledger counts n and holds the
// last item's sum, and atLeast[w] <= n <= atMost[w] (nil: no bound); no
// items of other writers; the accounts still sum to their start. It does not
// run amcheck (see Amcheck).
func CheckPG(s *PGServer, seed uint64, writers int, atLeast, atMost []int64) (PGFacts, error) {
	facts := PGFacts{Committed: make([]int64, writers+1)}
	var errs []error
	bad := func(format string, args ...any) {
		if len(errs) < 20 {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}

	acc, err := s.Rows("SELECT count(*), sum(balance) FROM accounts")
	if err != nil {
		return facts, err
	}
	if want := fmt.Sprintf("%d|%d", pgAccts, pgAccts*pgBalance); len(acc) != 1 || strings.Join(acc[0], "|") != want {
		bad("accounts: count|sum = %v, want %s (money appeared or vanished: a transaction was torn)", acc, want)
	}

	ledger := map[int][2]string{}
	rows, err := s.Rows("SELECT writer, n, last_sum FROM ledger ORDER BY writer")
	if err != nil {
		return facts, err
	}
	for _, r := range rows {
		w, _ := strconv.Atoi(r[0])
		ledger[w] = [2]string{r[1], r[2]}
	}
	if len(ledger) != writers {
		bad("ledger has %d rows, want %d", len(ledger), writers)
	}

	// Every item, read through its TOAST, hashed by the server.
	items, err := s.Rows("SELECT writer, seq, sum, md5(payload), length(payload), extract(epoch FROM at) FROM items ORDER BY writer, seq")
	if err != nil {
		return facts, err
	}
	lastSum := map[int]string{}
	for _, r := range items {
		if len(r) != 6 {
			bad("odd items row %q", r)
			continue
		}
		w, _ := strconv.Atoi(r[0])
		seq, _ := strconv.ParseInt(r[1], 10, 64)
		if w < 1 || w > writers {
			bad("item of unknown writer %d (seq %d)", w, seq)
			continue
		}
		facts.Rows++
		if seq != facts.Committed[w]+1 {
			bad("writer %d: item seq %d follows seq %d: a gap (a lost commit) or a duplicate", w, seq, facts.Committed[w])
		}
		facts.Committed[w] = seq
		payload, sum := PGPayload(seed, w, int(seq))
		if r[2] != sum || r[3] != sum || r[4] != strconv.Itoa(len(payload)) {
			bad("writer %d seq %d: stored sum %s, md5(payload) %s, length %s; written sum %s, length %d", w, seq, r[2], r[3], r[4], sum, len(payload))
		}
		lastSum[w] = r[2]
		if at, err := strconv.ParseFloat(r[5], 64); err == nil {
			if t := time.Unix(0, int64(at*1e9)); t.After(facts.Newest) {
				facts.Newest = t
			}
		}
	}
	for w := 1; w <= writers; w++ {
		n := facts.Committed[w]
		if l, ok := ledger[w]; ok && (l[0] != strconv.FormatInt(n, 10) || l[1] != lastSum[w]) {
			bad("writer %d: ledger n=%s last_sum=%q, but %d items, the last with sum %q", w, l[0], l[1], n, lastSum[w])
		}
		if atLeast != nil && n < atLeast[w] {
			bad("writer %d: %d items, but %d commits were acknowledged before the snapshot: acknowledged commits lost", w, n, atLeast[w])
		}
		if atMost != nil && n > atMost[w] {
			bad("writer %d: %d items, but only %d transactions had been sent when the snapshot was done", w, n, atMost[w])
		}
	}
	return facts, errors.Join(errs...)
}
