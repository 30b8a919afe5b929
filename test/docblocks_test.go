package test

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// docGeneric are the tests that run every block of a mode registered to
// them (docBlocksOf) rather than asking for each by name.
var docGeneric = map[string]string{"TestE2EManagedPlugin": "managed"}

// Every code block of README.md and docs/*.md has a marker; every block
// that is run is registered to a test that exists and reads it (by name,
// or all of its mode through docBlocksOf); nothing registered is missing.
func TestDocBlocksTagged(t *testing.T) {
	blocks, err := parseDocBlocks(RepoRoot())
	if err != nil {
		t.Fatal(err)
	}
	sources := testSources(t)
	declared := regexp.MustCompile(`(?m)^func (Test\w+)\(t \*testing\.T\)`)
	tests := map[string]bool{}
	for f, src := range sources {
		for _, m := range declared.FindAllStringSubmatch(src, -1) {
			tests[m[1]] = true
		}
		_ = f
	}
	named := map[string]bool{}
	counts := map[string]int{}
	for _, b := range blocks {
		counts[b.Mode]++
		if b.Mode == "skip" {
			t.Logf("not run: %s: %s", b, b.Reason)
			continue
		}
		named[b.Name] = true
		runner, ok := docRunners[b.Name]
		if !ok {
			t.Errorf("%s: no test is registered to run it (docRunners)", b)
			continue
		}
		if !tests[runner] {
			t.Errorf("%s: registered to %s, which is not a test of this package", b, runner)
		}
		if docGeneric[runner] == b.Mode {
			continue
		}
		reads := false
		for f, src := range sources {
			if filepath.Base(f) != "docblocks.go" && strings.Contains(src, `"`+b.Name+`"`) {
				reads = true
			}
		}
		if !reads {
			t.Errorf("%s: registered to %s, but no test file asks for %q", b, runner, b.Name)
		}
	}
	var stale []string
	for n := range docRunners {
		if !named[n] {
			stale = append(stale, n)
		}
	}
	sort.Strings(stale)
	if len(stale) > 0 {
		t.Errorf("docRunners names blocks the documentation no longer has: %v", stale)
	}
	t.Logf("%d blocks: %v", len(blocks), counts)
}

// README.md stays short and points into docs/: at most 200 lines, and
// every docs/ link it (or a docs/ file) makes resolves.
func TestReadmeShortAndLinked(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(RepoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "\n"); n > 200 {
		t.Errorf("README.md has %d lines, want at most 200: move detail into docs/", n)
	}
	files, err := docFiles(RepoRoot())
	if err != nil {
		t.Fatal(err)
	}
	link := regexp.MustCompile(`\]\(([^)#]+\.md)(#[^)]*)?\)`)
	for _, f := range files {
		src, err := os.ReadFile(filepath.Join(RepoRoot(), f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range link.FindAllStringSubmatch(string(src), -1) {
			if strings.Contains(m[1], "://") {
				continue
			}
			target := filepath.Join(RepoRoot(), filepath.Dir(f), m[1])
			if _, err := os.Stat(target); err != nil {
				t.Errorf("%s links to %s, which does not exist", f, m[1])
			}
		}
	}
}

// testSources are this package's Go files, by path.
func testSources(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(RepoRoot(), "test", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[f] = string(b)
	}
	return out
}

// docs/design.md repeats the glossary and the lock order of driver/doc.go,
// the package doc the code is read with: the same terms, with the same
// definitions, and the same numbered lock levels.
func TestDesignDocMatchesDriverDoc(t *testing.T) {
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(RepoRoot(), p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// The package doc as text: comment markers off, one line per item.
	var doc []string
	for _, l := range strings.Split(read("driver/doc.go"), "\n") {
		if rest, ok := strings.CutPrefix(l, "//"); ok {
			doc = append(doc, strings.TrimSpace(rest))
		}
	}
	design := strings.Split(read("docs/design.md"), "\n")
	items := func(lines []string, from, to string, item *regexp.Regexp) map[string]string {
		out := map[string]string{}
		in, cur := false, ""
		for _, l := range lines {
			l = strings.TrimSpace(l)
			switch {
			case strings.HasPrefix(l, from):
				in = true
				continue
			case in && strings.HasPrefix(l, to):
				return out
			case !in:
				continue
			}
			if m := item.FindStringSubmatch(l); m != nil {
				cur = m[1]
				out[cur] = m[2]
			} else if l == "" {
				cur = ""
			} else if cur != "" {
				out[cur] += " " + l
			}
		}
		return out
	}
	term := regexp.MustCompile(`^- ([a-z][a-z ]*): (.*)$`)
	level := regexp.MustCompile(`^(\d)\. (.*)$`)
	for _, c := range []struct {
		what                         string
		docFrom, docTo, mdFrom, mdTo string
		item                         *regexp.Regexp
	}{
		{"glossary", "Glossary", "Lock order.", "## Glossary", "## Lock order", term},
		{"lock order", "Lock order.", "So a Mount", "## Lock order", "So a Mount", level},
	} {
		d, m := items(doc, c.docFrom, c.docTo, c.item), items(design, c.mdFrom, c.mdTo, c.item)
		if len(d) == 0 {
			t.Errorf("driver/doc.go: no %s found", c.what)
		}
		for k, v := range d {
			if m[k] != v {
				t.Errorf("%s, %q: driver/doc.go says %q, docs/design.md %q", c.what, k, v, m[k])
			}
		}
		for k := range m {
			if _, ok := d[k]; !ok {
				t.Errorf("%s: docs/design.md has %q, driver/doc.go does not", c.what, k)
			}
		}
	}
}
