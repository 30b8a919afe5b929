package fleet

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Failpoints lists exactly the steps the code stops at: a step in the
// code but not in the list panics (and the crash test would miss it), and
// one in the list but not in the code is a kill round that never kills.
// The crash test (test/fleet_crash_test.go) kills at each one for real;
// this catches the two lists drifting apart without root.
func TestFailpointsAreTheStepsInTheCode(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	call := regexp.MustCompile(`f\.failpoint\("([^"]+)"\)`)
	inCode := map[string]bool{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range call.FindAllStringSubmatch(string(src), -1) {
			inCode[m[1]] = true
		}
	}
	for _, fp := range Failpoints {
		if !inCode[fp] {
			t.Errorf("failpoint %s is listed but no step calls it", fp)
		}
		if !strings.HasPrefix(fp, "push:") && !strings.HasPrefix(fp, "pull:") {
			t.Errorf("failpoint %s: the crash test runs push: and pull: rounds only", fp)
		}
	}
	for fp := range inCode {
		if !slices.Contains(Failpoints, fp) {
			t.Errorf("step %s is called but not in Failpoints", fp)
		}
	}
	var reached []string
	f := New(Config{Failpoint: func(name string) { reached = append(reached, name) }})
	f.failpoint("pull:manifest")
	if !slices.Equal(reached, []string{"pull:manifest"}) {
		t.Errorf("Config.Failpoint saw %v", reached)
	}
	defer func() {
		if recover() == nil {
			t.Error("an unlisted failpoint did not panic")
		}
	}()
	f.failpoint("pull:nowhere")
}
