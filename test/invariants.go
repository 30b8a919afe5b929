package test

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
)

// CheckLocalInvariants checks what the product promises after any crash
// and restart, on the local backend: every record's storage exists, no
// clone exists without a record, no intent is left, mount points match
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
	mountinfo, _ := os.ReadFile("/proc/self/mountinfo")
	ents, _ := os.ReadDir(p.DataRoot)
	for _, e := range ents {
		mp := filepath.Join(p.DataRoot, e.Name())
		switch {
		case targets[mp]:
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
	data, err := os.ReadFile("/proc/self/mountinfo")
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
