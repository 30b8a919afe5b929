package test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
)

// The documentation's code blocks are a contract: every fenced or
// indented block of README.md and docs/*.md carries, on the line just
// above it (blank lines between allowed), a marker the rendered page does
// not show:
//
//	<!-- test: MODE NAME -->       run by the test docRunners names, in MODE
//	<!-- test: skip: REASON -->    not run, and the reason why
//
// MODE says how the block is meant to be used, and so how its test runs
// it: host (the binary on the host), managed (against the managed plugin
// in a private dockerd), compose (a compose file or Compose command, with
// Compose v2 and 1.29 against the managed plugin) or synopsis (a command
// synopsis: every command and flag it shows must exist). docBlock is the
// one way tests read a block; TestDocBlocksTagged fails on a block without
// a marker, an unknown mode, a name no test is registered to run, or a
// registered test that no longer reads its block.

// DocBlock is one code block of the documentation.
type DocBlock struct {
	File   string // README.md or docs/NAME.md, from the repository root
	Line   int    // line of the block's first content line
	Mode   string // host, managed, compose, synopsis or skip
	Name   string // unique across the files; "" for skip
	Reason string // why a skip block is not run
	Text   string // the block's content, without fences or indentation
}

// Commands are the block's lines without blank lines, comment lines or
// surrounding space.
func (b DocBlock) Commands() []string {
	var out []string
	for _, l := range strings.Split(b.Text, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

func (b DocBlock) String() string {
	return fmt.Sprintf("%s:%d (%s %s)", b.File, b.Line, b.Mode, b.Name)
}

// docModes are the modes a marker may name.
var docModes = map[string]bool{"host": true, "managed": true, "compose": true, "synopsis": true}

// docRunners names, for every block that is run, the top-level test that
// runs it (docBlock checks the caller is that test).
var docRunners = map[string]string{
	// README.md
	"quickstart":      "TestE2EManagedPlugin",
	"compose-each":    "TestE2EManagedPlugin",
	"compose-command": "TestE2EManagedPlugin",
	// docs/usage.md
	"usage":        "TestE2EManagedPlugin",
	"compose-snap": "TestE2EManagedPlugin",
	"compose-job":  "TestE2EManagedPlugin",
	"gitlab-job":   "TestE2EManagedPlugin",
	"docker-api":   "TestE2EManagedPlugin",
	// docs/usage.md, Swarm and Testcontainers (test/clients_test.go)
	"swarm-service":     "TestE2ESwarm",
	"testcontainers-go": "TestE2ETestcontainers",
	// docs/settings.md
	"settings-change": "TestE2EManagedPlugin",
	"state-move":      "TestManagedSettingsChangesAndRefusals",
	// docs/operator.md
	"operator-synopsis": "TestREADMEOperatorCommandsExist",
	"mask-script":       "TestE2EMaskingRecipe",
	"mask-sources":      "TestE2EMaskingRecipe",
	"mask-ci":           "TestE2EMaskingRecipe",
	// docs/operating.md
	"metrics":          "TestReadmeOperating",
	"metrics-addr":     "TestReadmeOperating",
	"scrape-config":    "TestReadmeOperating",
	"logs-host":        "TestReadmeOperating",
	"systemd":          "TestReadmeOperating",
	"host-binary":      "TestReadmeOperating",
	"logs-managed":     "TestE2EManagedPlugin",
	"upgrade":          "TestUpgradeFromRegistry",
	"metrics-portworx": "TestE2EPortworxManagedPlugin",
	// docs/portworx.md
	"portworx-managed": "TestE2EPortworxManagedPlugin",
	"portworx-options": "TestE2EPortworxManagedPlugin",
	// docs/recover.md
	"recover-host":    "TestRecoverAfterDeletingTheStore",
	"recover-managed": "TestRecoverManagedPlugin",
	// docs/fleets.md
	"fleet-production":         "TestFleetPushPull",
	"fleet-ci":                 "TestFleetPushPull",
	"fleet-schedule":           "TestFleetSchedulePush",
	"fleet-install-production": "TestFleetManaged",
	"fleet-install-ci":         "TestFleetManaged",
	"fleet-refresh":            "TestFleetManaged",
	"fleet-ci-job":             "TestFleetManaged",
	"fleet-gitlab":             "TestFleetManaged",
	"fleet-tls-ca":             "TestFleetTLS",
	"fleet-tls-client":         "TestFleetTLS",
	// README.md, runner fleets
	"readme-fleet": "TestFleetManaged",
}

// docAlsoRunners names, for a block more than one test runs, the tests
// besides its docRunners entry.
var docAlsoRunners = map[string][]string{
	"mask-script": {"TestFleetManaged"},
}

var (
	marker    = regexp.MustCompile(`^<!-- test: (.*) -->$`)
	docsOnce  sync.Once
	docsAll   []DocBlock
	docsError error
)

// docFiles are README.md and docs/*.md, from the repository root.
func docFiles(root string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	out := []string{"README.md"}
	for _, f := range files {
		out = append(out, filepath.Join("docs", filepath.Base(f)))
	}
	return out, nil
}

// parseDocBlocks reads every code block of the documentation under root.
// A block without a valid marker is an error naming the file and line.
func parseDocBlocks(root string) ([]DocBlock, error) {
	files, err := docFiles(root)
	if err != nil {
		return nil, err
	}
	var all []DocBlock
	var errs []string
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return nil, err
		}
		blocks, e := parseMarkdownBlocks(f, string(data))
		all = append(all, blocks...)
		errs = append(errs, e...)
	}
	seen := map[string]DocBlock{}
	for _, b := range all {
		if b.Name == "" {
			continue
		}
		if o, ok := seen[b.Name]; ok {
			errs = append(errs, fmt.Sprintf("%s: block name %q is used by %s too", b, b.Name, o))
		}
		seen[b.Name] = b
	}
	if len(errs) > 0 {
		return all, fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return all, nil
}

// parseMarkdownBlocks finds the fenced (```) and indented (four spaces,
// after a blank line) code blocks of one Markdown file and reads each
// one's marker.
func parseMarkdownBlocks(file, text string) ([]DocBlock, []string) {
	lines := strings.Split(text, "\n")
	var blocks []DocBlock
	var errs []string
	// tag reads the marker on the nearest non-blank line above line i.
	tag := func(i int) (DocBlock, string) {
		b := DocBlock{File: file, Line: i + 2}
		j := i - 1
		for j >= 0 && strings.TrimSpace(lines[j]) == "" {
			j--
		}
		if j < 0 {
			return b, "no <!-- test: … --> marker above it"
		}
		m := marker.FindStringSubmatch(strings.TrimSpace(lines[j]))
		if m == nil {
			return b, "no <!-- test: … --> marker above it"
		}
		spec := strings.TrimSpace(m[1])
		if reason, ok := strings.CutPrefix(spec, "skip:"); ok {
			b.Mode, b.Reason = "skip", strings.TrimSpace(reason)
			if b.Reason == "" {
				return b, "a skip marker without a reason"
			}
			return b, ""
		}
		f := strings.Fields(spec)
		if len(f) != 2 || !docModes[f[0]] {
			return b, fmt.Sprintf("marker %q: want <!-- test: MODE NAME --> (MODE host, managed, compose or synopsis) or <!-- test: skip: REASON -->", spec)
		}
		b.Mode, b.Name = f[0], f[1]
		return b, ""
	}
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		trimmed := strings.TrimSpace(l)
		if strings.HasPrefix(trimmed, "```") {
			b, e := tag(i)
			indent := len(l) - len(strings.TrimLeft(l, " "))
			var body []string
			for i++; i < len(lines) && !strings.HasPrefix(strings.TrimSpace(lines[i]), "```"); i++ {
				s := lines[i]
				if len(s)-len(strings.TrimLeft(s, " ")) >= indent {
					s = s[indent:]
				}
				body = append(body, s)
			}
			b.Text = strings.Join(body, "\n") + "\n"
			if e != "" {
				errs = append(errs, fmt.Sprintf("%s:%d: code block: %s", file, b.Line-1, e))
			}
			blocks = append(blocks, b)
			continue
		}
		if strings.HasPrefix(l, "    ") && trimmed != "" && (i == 0 || strings.TrimSpace(lines[i-1]) == "") {
			b, e := tag(i - 1)
			b.Line = i + 1
			var body []string
			for ; i < len(lines) && (strings.HasPrefix(lines[i], "    ") || strings.TrimSpace(lines[i]) == ""); i++ {
				body = append(body, strings.TrimPrefix(lines[i], "    "))
			}
			i--
			for len(body) > 0 && strings.TrimSpace(body[len(body)-1]) == "" {
				body = body[:len(body)-1]
			}
			b.Text = strings.Join(body, "\n") + "\n"
			if e != "" {
				errs = append(errs, fmt.Sprintf("%s:%d: indented code block: %s", file, b.Line, e))
			}
			blocks = append(blocks, b)
		}
	}
	return blocks, errs
}

// allDocBlocks are the documentation's blocks, read once per test binary.
func allDocBlocks(t testing.TB) []DocBlock {
	t.Helper()
	docsOnce.Do(func() { docsAll, docsError = parseDocBlocks(RepoRoot()) })
	if docsError != nil {
		t.Fatalf("the documentation's code blocks:\n%v", docsError)
	}
	return docsAll
}

// docBlock is the block named name, which must be marked with mode and
// registered in docRunners to the test calling it.
func docBlock(t testing.TB, mode, name string) DocBlock {
	t.Helper()
	if top := strings.SplitN(t.Name(), "/", 2)[0]; docRunners[name] != top && !slices.Contains(docAlsoRunners[name], top) {
		t.Fatalf("block %q is registered to %q in docRunners, not to %s", name, docRunners[name], top)
	}
	for _, b := range allDocBlocks(t) {
		if b.Name == name {
			if b.Mode != mode {
				t.Fatalf("%s is marked %s, this test runs it as %s", b, b.Mode, mode)
			}
			return b
		}
	}
	t.Fatalf("no documentation block is marked <!-- test: %s %s -->", mode, name)
	return DocBlock{}
}

// docBlocksOf are the blocks of mode registered to the calling test, in
// the order of the files (README.md first) and within them.
func docBlocksOf(t testing.TB, mode string) []DocBlock {
	t.Helper()
	top := strings.SplitN(t.Name(), "/", 2)[0]
	var out []DocBlock
	for _, b := range allDocBlocks(t) {
		if b.Mode == mode && docRunners[b.Name] == top {
			out = append(out, b)
		}
	}
	return out
}
