package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEachCloneIsPerMountID(t *testing.T) {
	p := StartPlugin(t, nil)
	sources := SeedProduction(t, p)
	const name = "app-production@latest+each"
	a := p.MustMount(name, "ctr-a")
	b := p.MustMount(name, "ctr-b")
	if a == b {
		t.Fatalf("two mount IDs share %s", a)
	}
	WriteTree(t, a, map[string]string{"guestbook/0001.txt": "written by A\n"})
	if got := ReadFile(t, filepath.Join(b, "guestbook/0001.txt")); got != Guestbook["guestbook/0001.txt"] {
		t.Fatalf("container B sees A's write: %q", got)
	}
	// docker cp on a running container reuses the mount ID: same clone,
	// counted twice, destroyed only at the last Unmount.
	if again := p.MustMount(name, "ctr-a"); again != a {
		t.Fatalf("reused ID got a new clone %s, want %s", again, a)
	}
	if err := p.Unmount(name, "ctr-a"); err != nil {
		t.Fatal(err)
	}
	if got := ReadFile(t, filepath.Join(a, "guestbook/0001.txt")); got != "written by A\n" {
		t.Fatalf("clone A destroyed while still mounted once: %q", got)
	}
	if err := p.Unmount(name, "ctr-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(a, "guestbook")); err == nil {
		t.Fatalf("clone A still visible after its last Unmount")
	}
	if got := len(localClones(p)); got != 1 {
		t.Fatalf("%d clones left, want 1 (B's)", got)
	}
	// An extra Unmount (docker create's pairing) is harmless.
	if err := p.Unmount(name, "ctr-a"); err != nil {
		t.Fatalf("extra unmount: %v", err)
	}
	c := p.MustMount(name, "ctr-c")
	if got := TreeSum(t, c); got != TreeSum(t, filepath.Join(p.Pool(), "volumes/app-production")) {
		t.Fatalf("a later container does not start pristine")
	}
	for _, id := range []string{"ctr-b", "ctr-c"} {
		if err := p.Unmount(name, id); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(localClones(p)); got != 0 {
		t.Fatalf("%d clones left after every +each container stopped", got)
	}
	CheckLocalInvariants(t, p, sources)
}

func TestMountCountsNeverGoBelowZero(t *testing.T) {
	p := StartPlugin(t, nil)
	SeedProduction(t, p)
	const name = "app-production@latest+count"
	mp := p.MustMount(name, "x")
	p.MustMount(name, "y")
	for i := 0; i < 4; i++ { // two real, two spurious
		if err := p.Unmount(name, "x"); err != nil {
			t.Fatal(err)
		}
	}
	v, _ := p.Get(name)
	if v.Status["mounts"].(float64) != 0 || isMountPoint(mp) {
		t.Fatalf("after extra unmounts: mounts=%v mounted=%v", v.Status["mounts"], isMountPoint(mp))
	}
	// Unmount never deletes data of a non-each clone: a remount sees it.
	WriteTree(t, p.MustMount(name, "z"), map[string]string{"kept.txt": "yes"})
	p.Unmount(name, "z")
	if got := ReadFile(t, filepath.Join(p.MustMount(name, "w"), "kept.txt")); got != "yes" {
		t.Fatalf("data lost across unmount/mount")
	}
	p.Unmount(name, "w")
	v, _ = p.Get(name)
	if v.Status["mounts"].(float64) != 0 {
		t.Fatalf("mounts = %v", v.Status["mounts"])
	}
}

func TestIdleClonesAreReaped(t *testing.T) {
	p := StartPlugin(t, map[string]string{"IDLE_TTL": "3s"})
	sources := SeedProduction(t, p)
	const name = "app-production@latest+idle"
	mp := p.MustMount(name, "a")
	WriteTree(t, mp, map[string]string{"scratch.txt": "test output"})
	if err := p.Unmount(name, "a"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for len(localClones(p)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("idle clone not reaped within a minute")
		}
		time.Sleep(200 * time.Millisecond)
	}
	v, err := p.Get(name)
	if err != nil {
		t.Fatalf("Get after reaping: %v", err)
	}
	if v.Status["state"] != "not materialized" {
		t.Fatalf("state after reaping = %v", v.Status["state"])
	}
	mp = p.MustMount(name, "b")
	if _, err := os.Stat(filepath.Join(mp, "scratch.txt")); err == nil {
		t.Fatalf("the next Mount is not a fresh clone")
	}
	if got := ReadFile(t, filepath.Join(mp, "guestbook/0003.txt")); got != Guestbook["guestbook/0003.txt"] {
		t.Fatalf("fresh clone lacks production data")
	}
	// A per-volume ttl=0 keeps the clone however idle.
	if err := p.Create("keep-me", map[string]string{"from": "app-production", "ttl": "0"}); err != nil {
		t.Fatal(err)
	}
	p.MustMount("keep-me", "k")
	p.Unmount("keep-me", "k")
	time.Sleep(5 * time.Second)
	if v, _ := p.Get("keep-me"); v.Status["state"] != "materialized" || v.Status["expires"] != "never" {
		t.Fatalf("ttl=0 clone was reaped: %v", v.Status)
	}
	p.Unmount(name, "b")
	CheckLocalInvariants(t, p, sources)
}

func TestSourcesAllowlist(t *testing.T) {
	p := StartPlugin(t, map[string]string{"SOURCES": "app-*,staging"})
	SeedProduction(t, p)
	if err := p.Create("secrets", nil); err != nil {
		t.Fatal(err)
	}
	err := p.Create("secrets@latest", nil)
	if err == nil || !strings.Contains(err.Error(), "SOURCES") || !strings.Contains(err.Error(), `"secrets"`) {
		t.Fatalf("clone of a source outside SOURCES: %v; want a refusal naming the setting", err)
	}
	if _, err := p.Mount("secrets@latest+x", "a"); err == nil {
		t.Fatalf("claimed mount of a disallowed source succeeded")
	}
	if _, err := p.Get("secrets@latest"); err == nil {
		t.Fatalf("Get claims a disallowed source")
	}
	if len(localClones(p)) != 0 {
		t.Fatalf("refusal left a clone")
	}
	p.MustMount("app-production@latest", "ok")
}

func TestClaimedNamesWriteNothingUntilMount(t *testing.T) {
	p := StartPlugin(t, nil)
	SeedProduction(t, p)
	v, err := p.Get("app-production@latest+claimed")
	if err != nil {
		t.Fatalf("Get of a claimable name: %v", err)
	}
	if v.Status["state"] != "not materialized" {
		t.Fatalf("claimed Status = %v", v.Status)
	}
	if vols, _ := p.List(); hasVolume(vols, "app-production@latest+claimed") {
		t.Fatalf("Get of a claimed name wrote a record")
	}
	if len(localClones(p)) != 0 || len(snapshotsOf(p, "app-production")) != 0 {
		t.Fatalf("Get of a claimed name touched the backend")
	}
	for _, name := range []string{"unknown-source@latest", "plain-name", "../x@latest", "app-production@latest:bad"} {
		if _, err := p.Get(name); err == nil {
			t.Errorf("Get(%q) answered; it is not ours", name)
		}
	}
	mp := p.MustMount("app-production@latest+claimed", "ctr")
	if got := ReadFile(t, filepath.Join(mp, "guestbook/0001.txt")); got != Guestbook["guestbook/0001.txt"] {
		t.Fatalf("claimed clone content = %q", got)
	}
	if vols, _ := p.List(); !hasVolume(vols, "app-production@latest+claimed") {
		t.Fatalf("mounted claimed volume not listed")
	}

	off := StartPlugin(t, map[string]string{"CLAIM": "false"})
	SeedProduction(t, off)
	if _, err := off.Get("app-production@latest"); err == nil {
		t.Fatalf("CLAIM=false still claims names")
	}
	if _, err := off.Mount("app-production@latest", "x"); err == nil {
		t.Fatalf("CLAIM=false mounts an uncreated volume")
	}
}

func TestSnapshotRefsAndCollection(t *testing.T) {
	p := StartPlugin(t, nil)
	sources := SeedProduction(t, p)
	// @latest within LATEST_MAX_AGE shares one snapshot; @now takes one.
	for _, n := range []string{"app-production@latest+a", "app-production@latest+b"} {
		p.MustMount(n, "m")
	}
	if got := len(snapshotsOf(p, "app-production")); got != 1 {
		t.Fatalf("two @latest clones made %d snapshots, want 1 shared", got)
	}
	p.MustMount("app-production@now+c", "m")
	if got := len(snapshotsOf(p, "app-production")); got != 2 {
		t.Fatalf("@now did not take its own snapshot: %d", got)
	}
	// A snapshot someone else took (here, btrfs-progs by hand) is usable
	// by name and never deleted by the plugin.
	RequireTool(t, "btrfs", "btrfs-progs")
	out, err := exec.Command("btrfs", "subvolume", "snapshot", "-r",
		filepath.Join(p.Pool(), "volumes/app-production"), filepath.Join(p.Pool(), "snapshots/app-production/nightly")).CombinedOutput()
	if err != nil {
		t.Fatalf("btrfs snapshot: %v %s", err, out)
	}
	mp := p.MustMount("app-production@nightly", "m")
	if got := ReadFile(t, filepath.Join(mp, "schema.sql")); got != Guestbook["schema.sql"] {
		t.Fatalf("@nightly content = %q", got)
	}
	// A plain source with clones is never deleted.
	if err := p.Remove("app-production"); err == nil || !strings.Contains(err.Error(), "source of") {
		t.Fatalf("remove of a source with clones: %v", err)
	}
	for _, n := range []string{"app-production@latest+a", "app-production@latest+b", "app-production@now+c", "app-production@nightly"} {
		p.Unmount(n, "m")
		if err := p.Remove(n); err != nil {
			t.Fatal(err)
		}
	}
	snaps := snapshotsOf(p, "app-production")
	var plugin []string
	for _, s := range snaps {
		if strings.HasPrefix(s, "snapvol-") {
			plugin = append(plugin, s)
		}
	}
	if len(plugin) > 1 || !contains(snaps, "nightly") {
		t.Fatalf("after removing every clone the snapshots are %v; want at most one plugin snapshot and nightly kept", snaps)
	}
	CheckLocalInvariants(t, p, sources)
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
