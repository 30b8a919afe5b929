package test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/snapvol/snapvol/test/dockerd"
)

// The seeds' story with a real database: PostgreSQL runs on the snapvol
// volume pgdata under a steady write load, and while the load runs,
// pgdata@now clones start in other containers, recover from the WAL as
// after a crash, and must hold every commit acknowledged before the clone
// and nothing sent after it, each row as written, the ledger and the
// accounts consistent, and indexes and heap passing amcheck. The clones are
// written to; production never sees it, and the clones never see
// production's later writes.
//
// SNAPVOL_PG_CLONES sets the number of clones (default 5).
func TestE2EPostgresLiveClones(t *testing.T) {
	dockerd.Require(t)
	RequirePostgres(t)
	clones := 5
	if v := os.Getenv("SNAPVOL_PG_CLONES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SNAPVOL_PG_CLONES=%q: want a positive number", v)
		}
		clones = n
	}
	dockerd.ForEachEngine(t, func(t *testing.T, eng dockerd.Engine) { pgLiveClones(t, eng, clones) })
}

// pgLiveClones is TestE2EPostgresLiveClones on one engine.
func pgLiveClones(t *testing.T, eng dockerd.Engine, clones int) {
	began := time.Now()
	const (
		writers = 4
		rate    = 100 // commits per second per writer
	)
	seed := rand.Uint64()
	t.Logf("payload seed %d", seed)

	d := dockerd.Start(t, dockerd.Options{Engine: &eng})
	d.InstallPlugin(dockerd.Bundle(t, Binary(t)), "snapvol", "POOL_SIZE=4G")
	ImportPostgres(t, d, PGImage)
	t.Logf("engine, plugin and image ready in %v", time.Since(began).Round(time.Millisecond))

	var containers, volumes []string
	t.Cleanup(func() {
		for _, c := range containers {
			_, _ = d.Docker("rm", "-f", "-v", c)
		}
		for _, v := range volumes {
			_, _ = d.Docker("volume", "rm", "-f", v)
		}
	})

	// Production: small buffers and frequent checkpoints (the smallest
	// max_wal_size: one every few seconds under this load), so the clones
	// catch checkpoints in progress and dirty pages not yet written.
	pgArgs := []string{"-c", "shared_buffers=16MB", "-c", "checkpoint_timeout=30s", "-c", "max_wal_size=32MB",
		"-c", "min_wal_size=32MB", "-c", "log_checkpoints=on", "-c", "autovacuum_naptime=5s"}
	d.MustDocker("volume", "create", "-d", "snapvol", "pgdata")
	volumes = append(volumes, "pgdata")
	containers = append(containers, "pg-prod")
	prod, err := RunPostgres(d, "pg-prod", []string{"-v", "pgdata:" + PGData}, pgArgs...)
	if err != nil {
		t.Fatal(err)
	}
	if err := prod.WaitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := PGSchema(prod, writers); err != nil {
		t.Fatal(err)
	}
	load, err := StartPGLoad(prod, seed, writers, rate)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = load.Stop() })
	loadStart := time.Now()
	time.Sleep(5 * time.Second) // data, and a checkpoint or two, before the first clone
	if err := load.Err(); err != nil {
		t.Fatal(err)
	}

	type clone struct {
		srv   *PGServer
		facts PGFacts
	}
	var made []clone
	var recoveries []time.Duration
	var rowsChecked int
	redoRe := regexp.MustCompile(`redo starts at ([0-9A-F]+/[0-9A-F]+)[\s\S]*redo done at ([0-9A-F]+/[0-9A-F]+)`)
	for i := 1; i <= clones; i++ {
		name := fmt.Sprintf("pgdata@now+c%d", i)
		cname := fmt.Sprintf("pg-clone-%d", i)
		volumes = append(volumes, name)
		containers = append(containers, cname)
		// The ways people name a clone: claimed with no driver, --mount with
		// the snap: prefix, docker volume create first, --volume-driver.
		var run []string
		before := load.Acked()
		t0 := time.Now()
		switch i % 4 {
		case 1:
			run = []string{"-v", name + ":" + PGData}
		case 2:
			name = "snap:" + name
			volumes[len(volumes)-1] = name
			run = []string{"--mount", "type=volume,src=" + name + ",dst=" + PGData + ",volume-driver=snapvol"}
		case 3:
			d.MustDocker("volume", "create", "-d", "snapvol", name)
			run = []string{"-v", name + ":" + PGData}
		case 0:
			run = []string{"--volume-driver", "snapvol", "-v", name + ":" + PGData}
		}
		srv, err := RunPostgres(d, cname, run, "-c", "shared_buffers=16MB")
		after := load.Sent()
		mounted := time.Now()
		if err != nil {
			t.Fatalf("clone %s: %v", name, err)
		}
		if err := srv.WaitReady(60 * time.Second); err != nil {
			t.Fatalf("clone %s: %v", name, err)
		}
		recovery := time.Since(t0)
		recoveries = append(recoveries, recovery)
		logs := srv.Logs()
		if !strings.Contains(logs, "automatic recovery in progress") {
			t.Errorf("clone %s started without crash recovery: the snapshot was not taken of a live database?\n%s", name, logs)
		}
		redo := "?"
		if m := redoRe.FindStringSubmatch(logs); m != nil {
			redo = fmt.Sprintf("%.1f MB", float64(pgLSN(m[2])-pgLSN(m[1]))/1e6)
		}

		facts, err := CheckPG(srv, seed, writers, before, after)
		if err != nil {
			t.Errorf("clone %s is not a consistent copy of production:\n%v\nits log:\n%s", name, err, logs)
		}
		ac := time.Now()
		if err := srv.Amcheck(); err != nil {
			t.Errorf("clone %s: %v", name, err)
		}
		amcheck := time.Since(ac)
		rowsChecked += facts.Rows

		// The clone is writable, and what it writes stays in it.
		if _, err := srv.SQL(`BEGIN;
INSERT INTO items (writer, seq, payload, sum) VALUES (0, 1, 'written in the clone', md5('written in the clone'));
UPDATE accounts SET balance = balance + 1;
DELETE FROM items WHERE writer = 1 AND seq <= 100;
CREATE TABLE clone_only AS SELECT g FROM generate_series(1, 10000) g;
COMMIT;
CHECKPOINT;`); err != nil {
			t.Errorf("clone %s is not writable: %v", name, err)
		}
		if out, err := srv.SQL(`SELECT (SELECT count(*) FROM items WHERE writer = 0), (SELECT sum(balance) FROM accounts), (SELECT count(*) FROM clone_only);`); err != nil || strings.TrimSpace(out) != fmt.Sprintf("1|%d|10000", pgAccts*pgBalance+pgAccts) {
			t.Errorf("clone %s after its own writes: %q %v", name, out, err)
		}
		if out, err := prod.SQL(`SELECT (SELECT count(*) FROM items WHERE writer = 0), (SELECT count(*) FROM items WHERE writer = 1 AND seq <= 100), (SELECT sum(balance) FROM accounts), to_regclass('clone_only') IS NULL;`); err != nil || strings.TrimSpace(out) != fmt.Sprintf("0|100|%d|t", pgAccts*pgBalance) {
			t.Errorf("production after clone %s's writes: got %q (%v), want 0|100|%d|t: a clone's writes reached production", name, out, err, pgAccts*pgBalance)
		}
		if err := load.Err(); err != nil {
			t.Fatalf("the load failed while clone %s was made and checked: %v", name, err)
		}
		t.Logf("clone %d %s: docker run returned in %v, ready after %v (redo %s), %d commits (acked before %d, sent after %d), newest row %v before the mount returned, rows checked %d, amcheck %v",
			i, name, mounted.Sub(t0).Round(time.Millisecond), recovery.Round(time.Millisecond), redo, facts.Total(), pgSum(before), pgSum(after),
			mounted.Sub(facts.Newest).Round(time.Millisecond), facts.Rows, amcheck.Round(time.Millisecond))
		facts.Committed[1] -= 100 // the clone deleted 100 of writer 1's items; 1..100 are gone
		made = append(made, clone{srv, facts})
		time.Sleep(time.Duration(500+rand.IntN(1500)) * time.Millisecond)
	}

	// Production: every acknowledged commit, and nothing else.
	if err := load.Stop(); err != nil {
		t.Fatalf("the load: %v", err)
	}
	loadTime := time.Since(loadStart)
	acked := load.Acked()
	facts, err := CheckPG(prod, seed, writers, acked, load.Sent())
	if err != nil {
		t.Errorf("production after the load is not consistent:\n%v", err)
	}
	if err := prod.Amcheck(); err != nil {
		t.Error(err)
	}
	rowsChecked += facts.Rows
	lat := load.Latencies()
	if len(lat) == 0 {
		t.Fatal("no commits were acknowledged")
	}
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))].Round(10 * time.Microsecond) }
	t.Logf("production: %d commits in %v (%.0f/s), %d checkpoints, commit latency p50 %v p99 %v max %v", facts.Total(), loadTime.Round(time.Millisecond),
		float64(facts.Total())/loadTime.Seconds(), strings.Count(prod.Logs(), "checkpoint complete"), p(0.5), p(0.99), lat[len(lat)-1].Round(time.Millisecond))
	if lat[len(lat)-1] > 10*time.Second {
		t.Errorf("a production commit took %v while clones were made: production stalled", lat[len(lat)-1])
	}

	// The clones still hold what they held: production's later writes never
	// reached them.
	for _, c := range made {
		rows, err := c.srv.Rows("SELECT writer, count(*) FROM items WHERE writer > 0 GROUP BY writer ORDER BY writer")
		if err != nil {
			t.Errorf("%s: %v", c.srv.Name, err)
			continue
		}
		got := make([]int64, writers+1)
		for _, r := range rows {
			w, _ := strconv.Atoi(r[0])
			n, _ := strconv.ParseInt(r[1], 10, 64)
			if w <= writers {
				got[w] = n
			}
		}
		if fmt.Sprint(got[1:]) != fmt.Sprint(c.facts.Committed[1:]) {
			t.Errorf("%s: items per writer now %v, %v when it was checked: production's writes reached a clone", c.srv.Name, got[1:], c.facts.Committed[1:])
		}
	}

	// Clones go with their volumes while production runs on.
	for i, c := range made {
		d.MustDocker("rm", "-f", c.srv.Name)
		d.MustDocker("volume", "rm", volumes[i+1])
	}
	if out := strings.Fields(d.MustDocker("volume", "ls", "-q")); len(out) != 1 || out[0] != "pgdata" {
		t.Errorf("volumes after removing the clones: %v, want only pgdata", out)
	}
	if _, err := prod.SQL("SELECT 1"); err != nil {
		t.Errorf("production after the clones were removed: %v", err)
	}

	var maxRec time.Duration
	for _, r := range recoveries {
		maxRec = max(maxRec, r)
	}
	t.Logf("%d live clones, each recovered and checked; slowest ready in %v; %d rows checked against what was written; %v in all",
		len(made), maxRec.Round(time.Millisecond), rowsChecked, time.Since(began).Round(time.Second))
}

// pgLSN is a WAL position "X/Y" as a byte offset.
func pgLSN(s string) uint64 {
	hi, lo, _ := strings.Cut(s, "/")
	h, _ := strconv.ParseUint(hi, 16, 64)
	l, _ := strconv.ParseUint(lo, 16, 64)
	return h<<32 | l
}

func pgSum(c []int64) int64 {
	var n int64
	for _, x := range c {
		n += x
	}
	return n
}
