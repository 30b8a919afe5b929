package test

import (
	"os"
	"path/filepath"
	"strings"
)

// dirNames lists the names in dir (none if it does not exist).
func dirNames(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// localClones lists the clone subvolumes in the local pool.
func localClones(p *Plugin) []string { return dirNames(filepath.Join(p.Pool(), "clones")) }

// snapshotsOf lists the snapshots of source in the local pool.
func snapshotsOf(p *Plugin, source string) []string {
	return dirNames(filepath.Join(p.Pool(), "snapshots", source))
}

func containsMount(mountinfo, p string) bool {
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == p {
			return true
		}
	}
	return false
}
