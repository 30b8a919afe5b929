package test

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/snapvol/snapvol/admin"
)

// CheckLocalInvariants checks what the product promises after any crash
// and restart, on the local backend: every record's storage exists, no
// clone or plain volume exists without a record (but a replica source's
// anchor, which is empty), no intent is left, mount points match
// mount counts (and DATA_ROOT holds nothing else), and the sources'
// checksums are unchanged.
func CheckLocalInvariants(t testing.TB, p *Plugin, sources map[string]string) {
	t.Helper()
	vols, err := p.List()
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	referenced := map[string]bool{}
	targets := map[string]bool{}
	for _, lv := range vols {
		v, err := p.Get(lv.Name)
		if err != nil {
			t.Errorf("volume %q is listed but Get fails: %v", lv.Name, err)
			continue
		}
		if pend, ok := v.Status["pending"]; ok {
			t.Errorf("volume %q still has an unfinished %v after restart", v.Name, pend)
		}
		for _, o := range objects(v) {
			referenced[o] = true
			if _, err := os.Stat(filepath.Join(p.Pool(), o)); err != nil {
				t.Errorf("volume %q: record without storage: %s: %v", v.Name, o, err)
			}
		}
		for _, mp := range mountpoints(v) {
			targets[mp] = true
		}
		mounts, _ := v.Status["mounts"].(float64)
		if v.Mountpoint != "" && mounts > 0 && !isMountPoint(v.Mountpoint) {
			t.Errorf("volume %q counts %v mounts but %s is not mounted", v.Name, mounts, v.Mountpoint)
		}
	}
	mountinfo, _ := os.ReadFile("/proc/thread-self/mountinfo")
	ents, _ := os.ReadDir(p.DataRoot)
	for _, e := range ents {
		mp := filepath.Join(p.DataRoot, e.Name())
		switch {
		case e.Name() == StateMarker && !e.IsDir():
			// The state marker each start leaves (plugin/marker.go).
		case targets[mp]:
		case !e.IsDir() && strings.HasPrefix(e.Name(), ".snapvol"):
			// The plugin's own marker file (which state it serves).
		case containsMount(string(mountinfo), mp):
			t.Errorf("stray mount %s: no volume counts a mount there", mp)
		default:
			t.Errorf("leftover mount point %s: no volume is mounted there", mp)
		}
	}
	var orphans []string
	for _, c := range localClones(p) {
		if !referenced["clones/"+c] {
			orphans = append(orphans, c)
		}
	}
	sort.Strings(orphans)
	if len(orphans) > 0 {
		t.Errorf("orphaned clone subvolumes (no record): %v", orphans)
	}
	checkPoolLeftovers(t, p, referenced)
	for name, want := range sources {
		if got := TreeSum(t, filepath.Join(p.Pool(), "volumes", name)); got != want {
			t.Errorf("source %q changed", name)
		}
	}
}

func objects(v *volume.Volume) []string {
	raw, _ := v.Status["objects"].([]any)
	var out []string
	for _, o := range raw {
		if s, ok := o.(string); ok && s != "" {
			out = append(out, s)
		}
	}
	return out
}

func isMountPoint(p string) bool {
	data, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		return false
	}
	return containsMount(string(data), filepath.Clean(p))
}

func mountpoints(v *volume.Volume) []string {
	raw, _ := v.Status["mountpoints"].([]any)
	var out []string
	for _, o := range raw {
		if s, ok := o.(string); ok && s != "" {
			out = append(out, s)
		}
	}
	return out
}

// checkPoolLeftovers looks in the pool for what a crash may leave and
// reconcile must repair: plain volumes snapvol made (labelled) that no
// record names, label files without their object, anything in staging/,
// and plugin snapshots nothing needs (no clone uses them, no name is
// registered for them, and @latest would not reuse them).
func checkPoolLeftovers(t testing.TB, p *Plugin, referenced map[string]bool) {
	t.Helper()
	pool := p.Pool()
	if pool == "" {
		t.Fatal("empty pool path")
	}
	anchors := replicaAnchors(t, p)
	for _, v := range dirNames(filepath.Join(pool, "volumes")) {
		id := "volumes/" + v
		if !referenced[id] && labelled(pool, id) && !anchors[id] {
			t.Errorf("orphan plain volume %s: snapvol made it and no record names it", id)
		}
	}
	for _, l := range dirNames(filepath.Join(pool, "labels")) {
		id := strings.ReplaceAll(strings.TrimSuffix(l, ".json"), "%", "/")
		if !strings.HasSuffix(l, ".json") {
			t.Errorf("stray file in labels/: %s", l)
			continue
		}
		if _, err := os.Stat(filepath.Join(pool, id)); err != nil {
			t.Errorf("stale label %s: its object %s is gone", l, id)
		}
	}
	if left := dirNames(filepath.Join(pool, "staging")); len(left) > 0 {
		t.Errorf("staging leftovers: %v", left)
	}
	for _, src := range dirNames(filepath.Join(pool, "snapshots")) {
		if _, err := os.Stat(filepath.Join(pool, "volumes", src)); err != nil {
			// A removed source: only snapshots made by hand may stay.
			for _, s := range dirNames(filepath.Join(pool, "snapshots", src)) {
				if labelled(pool, "snapshots/"+src+"/"+s) {
					t.Errorf("plugin snapshot snapshots/%s/%s outlived its source", src, s)
				}
			}
			continue
		}
		if p.changes.Load() == 0 {
			// Collection is lazy between sweeps; right after a start,
			// reconcile's sweep has run.
			checkSnapshotsCollected(t, p, src)
		}
	}
}

// replicaAnchors are the anchor volumes of the plugin's replica sources
// (REPLICAS, as snapvol pull lists them): volumes/SOURCE, which the fleet
// makes at start (driver.Operator.ReplicaSource) so the pulled snapshots
// (made of replicas/SOURCE/UUID) have a source. An anchor has no record
// by design, so it is no orphan; but it must be there, be snapvol's, and
// hold nothing: nothing mounts or writes it.
func replicaAnchors(t testing.TB, p *Plugin) map[string]bool {
	t.Helper()
	reps, err := admin.NewClient(admin.SocketPath(p.StateDir)).Replicas()
	if err != nil {
		t.Errorf("snapvol pull's replica sources: %v", err)
		return nil
	}
	out := map[string]bool{}
	for _, r := range reps {
		id := "volumes/" + r.Source
		out[id] = true
		if !labelled(p.Pool(), id) {
			t.Errorf("replica source %s: no anchor volume %s that snapvol made", r.Source, id)
			continue
		}
		if ents, err := os.ReadDir(filepath.Join(p.Pool(), id)); err != nil || len(ents) > 0 {
			t.Errorf("replica source %s: its anchor volume %s holds %d entries (%v); nothing may write it", r.Source, id, len(ents), err)
		}
	}
	return out
}

// checkSnapshotsCollected asks the plugin (snapshot ls) which snapshots of
// source it keeps and why: every plugin-taken one must be used by a clone,
// except the newest snapshot, which @latest may still reuse.
func checkSnapshotsCollected(t testing.TB, p *Plugin, source string) {
	t.Helper()
	snaps, err := admin.NewClient(admin.SocketPath(p.StateDir)).Snapshots(source)
	if err != nil {
		t.Errorf("snapshot ls %s: %v", source, err)
		return
	}
	newest := -1
	for i, s := range snaps {
		if s.From == "" && (newest < 0 || s.Time.After(snaps[newest].Time)) {
			newest = i
		}
	}
	for i, s := range snaps {
		if s.Kind == "plugin" && len(s.Clones) == 0 && i != newest {
			t.Errorf("uncollected plugin snapshot %s@%s: no clone uses it and it is not the newest", source, s.Name)
		}
	}
}

// labelled reports whether the pool holds snapvol's label for object id.
func labelled(pool, id string) bool {
	_, err := os.Stat(filepath.Join(pool, "labels", strings.ReplaceAll(id, "/", "%")+".json"))
	return err == nil
}

// StateMarker is plugin.MarkerName: the file each start leaves in
// DATA_ROOT naming the state it served.
const StateMarker = ".snapvol-state.json"
