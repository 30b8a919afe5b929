package test

import (
	"os"
	"path/filepath"
	"strings"
)

// localClones lists the clone subvolumes in the local pool.
func localClones(p *Plugin) []string {
	ents, _ := os.ReadDir(filepath.Join(p.Pool(), "clones"))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
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
