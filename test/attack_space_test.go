package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snapvol/snapvol/admin"
)

// rewrite writes size bytes of fresh data over dir/name and syncs it, as
// a database rewriting a table does; it returns the first error.
func rewrite(t *testing.T, dir, name string, size int, round int) error {
	t.Helper()
	if dir == "" || !filepath.IsAbs(dir) || filepath.Clean(dir) == "/" {
		t.Fatalf("refusing to write below %q", dir)
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*7 + round) // never all zero, never the same twice
	}
	for n := 0; n < size; n += len(buf) {
		if _, err := f.Write(buf); err != nil {
			return err
		}
	}
	return f.Sync()
}

// Idle clones pin production's old data (issue 20, item 4). Seven @now
// clones, left idle, production rewriting a 150 MiB file between them, on
// a small pool: at 65aeefa production got ENOSPC in round 7 (simple quotas
// bill every old copy a snapshot keeps alive to production, which no clone
// limit can stop) and snapvol df named production as the consumer. Now
// the clones are refused with an error naming snapvol df before free
// space drops below POOL_RESERVE, production keeps writing, snapvol df
// shows the pinned bytes per source and snapshot, and with SUPERSEDED_TTL
// short the idle clones of superseded snapshots go, the space with them.
func TestAttackIdleClonesPinProduction(t *testing.T) {
	p := StartPlugin(t, map[string]string{"POOL_SIZE": "1280M", "POOL_RESERVE": "25%", "CLONE_SIZE": "32M"})
	const prod, size = "app-production", 150 << 20
	if err := p.Create(prod, nil); err != nil {
		t.Fatal(err)
	}
	db := p.MustMount(prod, "db") // the database runs throughout
	if err := rewrite(t, db, "table", size, 0); err != nil {
		t.Fatal(err)
	}
	made, refused := 0, 0
	for round := 1; round <= 7; round++ {
		name := fmt.Sprintf("%s@now+job%d", prod, round)
		if _, err := p.Mount(name, "job"); err != nil {
			if !strings.Contains(err.Error(), "snapvol df") {
				t.Fatalf("round %d: the clone failed, not naming snapvol df: %v", round, err)
			}
			refused++
			t.Logf("round %d: refused: %v", round, err)
		} else {
			made++
			if err := p.Unmount(name, "job"); err != nil {
				t.Fatal(err)
			}
		}
		if err := rewrite(t, db, "table", size, round); err != nil {
			t.Fatalf("round %d: production's write failed: %v (%d clones made, %d refused)", round, err, made, refused)
		}
	}
	if made < 2 || refused == 0 {
		t.Fatalf("%d clones made, %d refused; want clones until the reserve, then refusals", made, refused)
	}
	u, err := admin.NewClient(admin.SocketPath(p.StateDir)).Usage()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("df: size %dM free %dM reserve %dM pinned %+v", u.Size>>20, u.Free>>20, u.Reserve>>20, u.Pinned)
	if u.Free < u.Reserve*9/10 {
		t.Errorf("free %dM fell below the reserve %dM", u.Free>>20, u.Reserve>>20)
	}
	var total int64
	var snaps []admin.Pinned
	for _, e := range u.Pinned {
		switch {
		case e.Source == prod && e.Snapshot == "":
			total = e.Bytes
		case e.Source == prod:
			snaps = append(snaps, e)
		}
	}
	if want := int64(made) * size; total < want*9/10 || total > want*11/10 {
		t.Errorf("df: %s pinned %dM; want about %dM, one rewritten copy per snapshot", prod, total>>20, want>>20)
	}
	if len(snaps) != made {
		t.Errorf("df: %d snapshots pin production's data; want %d: %+v", len(snaps), made, snaps)
	}
	for _, s := range snaps {
		if s.Bytes < size*9/10 || len(s.Clones) != 1 {
			t.Errorf("df: snapshot %s pins %dM for clones %v; want its own copy, one clone", s.Snapshot, s.Bytes>>20, s.Clones)
		}
	}

	// Superseded clones go after SUPERSEDED_TTL; the newest stays (IDLE_TTL
	// is a day), and new clones can be made again.
	p.Stop()
	p.Env["SUPERSEDED_TTL"] = "2s"
	p.Start()
	deadline := time.Now().Add(time.Minute)
	for len(localClones(p)) > 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d clones left a minute after SUPERSEDED_TTL=2s; want the newest one only", len(localClones(p)))
		}
		time.Sleep(250 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // SUPERSEDED_TTL again: the newest must not go
	if n := len(localClones(p)); n != 1 {
		t.Fatalf("%d clones left; the newest one is not superseded and must stay", n)
	}
	// btrfs frees a deleted snapshot's extents in the background, after
	// a transaction commit (every 30 s): a job retries meanwhile.
	for deadline = time.Now().Add(90 * time.Second); ; time.Sleep(time.Second) {
		_, err := p.Mount(prod+"@now+after", "job")
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "snapvol df") || time.Now().After(deadline) {
			t.Fatalf("a clone once the superseded ones are gone: %v", err)
		}
	}
	if err := rewrite(t, db, "table", size, 99); err != nil {
		t.Fatal(err)
	}
}
