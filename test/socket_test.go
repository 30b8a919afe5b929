package test

import (
	"os"
	"path/filepath"
	"testing"
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

func TestSocketScenarioLocal(t *testing.T) {
	SocketScenario(t, nil, localClones)
}
