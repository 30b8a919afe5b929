package names

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	long := strings.Repeat("a", 63)
	tests := []struct {
		in      string
		source  string
		ref     string
		tag     string
		clone   bool
		each    bool
		wantErr string // substring of the error, "" = valid
	}{
		{in: "app-production", source: "app-production"},
		{in: "a", source: "a"},
		{in: "A.b_c-9", source: "A.b_c-9"},
		{in: long, source: long},
		{in: "app-production@latest", source: "app-production", ref: "latest", clone: true},
		{in: "snap:app-production@latest", source: "app-production", ref: "latest", clone: true},
		{in: "app-production@now", source: "app-production", ref: "now", clone: true},
		{in: "app-production@nightly-2026.11.20", source: "app-production", ref: "nightly-2026.11.20", clone: true},
		{in: "app-production@latest+job-4711", source: "app-production", ref: "latest", tag: "job-4711", clone: true},
		{in: "snap:app-production@latest+each", source: "app-production", ref: "latest", tag: "each", clone: true, each: true},
		{in: "snap", source: "snap"},

		{in: "", wantErr: "is empty"},
		{in: "../../etc@latest", wantErr: "source starts with '.'"},
		{in: "..", wantErr: "starts with '.'"},
		{in: "a/b@latest", wantErr: "source contains '/'"},
		{in: "/etc", wantErr: "contains '/'"},
		{in: "@latest", wantErr: "source is empty"},
		{in: "app-production@", wantErr: "ref (after '@') is empty"},
		{in: "x@latest:y", wantErr: "contains ':'"},
		{in: "x@latest+", wantErr: "tag is empty"},
		{in: "x@latest+a+b", wantErr: "tag contains '+'"},
		{in: "x@a@b", wantErr: "contains '@'"},
		{in: "snap:x", wantErr: "snap: prefix needs @REF"},
		{in: "snap:snap:x@latest", wantErr: "contains ':'"},
		{in: "x@each", wantErr: `"each" is a tag`},
		// GitLab Runner's cache volume (95 characters) is a plain volume.
		{in: "runner-abcdefgh-project-1234-concurrent-0-cache-3c3f060a0374fc8bc39395164f415a70-0123456789ab", source: "runner-abcdefgh-project-1234-concurrent-0-cache-3c3f060a0374fc8bc39395164f415a70-0123456789ab"},
		{in: strings.Repeat("p", 200), source: strings.Repeat("p", 200)},
		{in: strings.Repeat("p", 201), wantErr: "plain volume name is 201 characters long, the limit is 200"},
		{in: long + "a@latest", wantErr: "source is 64 characters"},
		{in: "x@" + long + "a", wantErr: "ref (after '@') is 64 characters"},
		{in: "a\x00b@latest", wantErr: "NUL"},
		{in: "caf\u00e9@latest", wantErr: "non-ASCII"},
		{in: "\u0430pp@latest", wantErr: "non-ASCII"}, // Cyrillic a, a look-alike
		{in: "a b", wantErr: "' '"},
		{in: "a\nb", wantErr: "control byte"},
		{in: "-x@latest", wantErr: "starts with '-'"},
		{in: strings.Repeat("x", 100000), wantErr: "too long"},
	}
	for _, tt := range tests {
		t.Run(strings.ToValidUTF8(tt.in[:min(len(tt.in), 40)], "?"), func(t *testing.T) {
			n, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("Parse(%q) = %+v, want error containing %q", tt.in, n, tt.wantErr)
				}
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "expected") {
					t.Fatalf("Parse(%q) error %q: want ErrInvalid mentioning %q and the grammar", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if n.Source != tt.source || n.Ref != tt.ref || n.Tag != tt.tag || n.IsClone() != tt.clone || n.Each() != tt.each {
				t.Fatalf("Parse(%q) = %+v", tt.in, n)
			}
		})
	}
}

func TestWithOptions(t *testing.T) {
	px := func(k string) bool { return k == "repl" || k == "io_priority" }
	two := 2 * time.Hour
	tests := []struct {
		name    string
		opts    map[string]string
		backend func(string) bool
		source  string
		ref     string
		clone   bool
		ttl     *time.Duration
		wantErr string
	}{
		{name: "ci-1", opts: nil, source: "ci-1"},
		{name: "ci-1", opts: map[string]string{"from": "app-production"}, source: "app-production", ref: "latest", clone: true},
		{name: "ci-1", opts: map[string]string{"from": "app-production", "ref": "now", "ttl": "2h"}, source: "app-production", ref: "now", clone: true, ttl: &two},
		{name: "app@latest", opts: map[string]string{"ttl": "0"}, source: "app", ref: "latest", clone: true, ttl: new(time.Duration)},
		{name: "ci-1", opts: map[string]string{"from": "app", "repl": "1"}, backend: px, source: "app", ref: "latest", clone: true},
		{name: "ci-1", opts: map[string]string{"repl": "1"}, wantErr: `unknown option "repl"`},
		{name: "ci-1", opts: map[string]string{"bogus": "1"}, backend: px, wantErr: `unknown option "bogus"`},
		{name: "ci-1", opts: map[string]string{"ref": "now"}, wantErr: "ref= needs from="},
		{name: "ci-1", opts: map[string]string{"from": "../etc"}, wantErr: "from="},
		{name: "ci-1", opts: map[string]string{"from": "ci-1"}, wantErr: "clone of itself"},
		{name: "ci-1", opts: map[string]string{"from": "a", "ref": "each"}, wantErr: "ref=each"},
		{name: "ci-1", opts: map[string]string{"from": "a", "ref": "x/y"}, wantErr: "ref="},
		{name: "ci-1", opts: map[string]string{"ttl": "soon"}, wantErr: "ttl="},
		{name: "ci-1", opts: map[string]string{"ttl": "-1h"}, wantErr: "ttl="},
		{name: "app@latest", opts: map[string]string{"from": "b"}, wantErr: "already says"},
	}
	for _, tt := range tests {
		n, err := Parse(tt.name)
		if err != nil {
			t.Fatal(err)
		}
		got, o, err := WithOptions(n, tt.opts, tt.backend)
		if tt.wantErr != "" {
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), tt.name) {
				t.Errorf("WithOptions(%q, %v) error = %v, want one naming the volume and %q", tt.name, tt.opts, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("WithOptions(%q, %v): %v", tt.name, tt.opts, err)
			continue
		}
		if got.Source != tt.source || got.Ref != tt.ref || got.IsClone() != tt.clone || got.Raw != tt.name {
			t.Errorf("WithOptions(%q, %v) = %+v", tt.name, tt.opts, got)
		}
		if (o.TTL == nil) != (tt.ttl == nil) || (o.TTL != nil && *o.TTL != *tt.ttl) {
			t.Errorf("WithOptions(%q, %v) ttl = %v, want %v", tt.name, tt.opts, o.TTL, tt.ttl)
		}
	}
}

// checkSafe asserts the property the rest of the code relies on: every
// word of a parsed name is a single, harmless path element.
func checkSafe(t *testing.T, n Name) {
	for _, w := range []string{n.Source, n.Ref, n.Tag} {
		if w == "" {
			continue
		}
		limit := maxWord
		if !n.IsClone() {
			limit = MaxPlain // a plain name is longer, never a grammar word
		}
		if why := checkChars(w, limit); why != "" {
			t.Fatalf("parsed word %q is not a word: %s", w, why)
		}
		root := "/mnt/snapvol"
		p := filepath.Join(root, w)
		if filepath.Dir(p) != root || strings.ContainsAny(w, "/\x00") || w == "." || w == ".." {
			t.Fatalf("word %q escapes DATA_ROOT as %s", w, p)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"app-production", "app-production@latest", "snap:a@now+each", "../../etc@latest", "a/b@latest", "@latest", "x@latest:y", "a\x00b", "snap:", "a@b+c+d", strings.Repeat("0", 64), strings.Repeat("p", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not wrapping ErrInvalid: %v", err)
			}
			return
		}
		checkSafe(t, n)
		if n.Raw != s {
			t.Fatalf("Raw = %q, want %q", n.Raw, s)
		}
		if n.IsClone() != strings.Contains(s, "@") {
			t.Fatalf("IsClone = %v for %q", n.IsClone(), s)
		}
	})
}

func FuzzWithOptions(f *testing.F) {
	f.Add("ci-1", "from", "app-production", "ref", "now")
	f.Add("app@latest", "ttl", "2h", "x", "y")
	f.Add("ci", "from", "../x", "ref", "each")
	f.Fuzz(func(t *testing.T, name, k1, v1, k2, v2 string) {
		n, err := Parse(name)
		if err != nil {
			return
		}
		got, _, err := WithOptions(n, map[string]string{k1: v1, k2: v2}, nil)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not wrapping ErrInvalid: %v", err)
			}
			return
		}
		checkSafe(t, got)
	})
}
