package sources

import (
	"errors"
	"strings"
	"testing"
)

func TestAllows(t *testing.T) {
	tests := []struct {
		sources, source, ref string
		want                 bool
	}{
		{"", "app", "latest", true},
		{"*", "app", "now", true},
		{"app-*", "app-production", "latest", true},
		{"app-*", "db", "latest", false},
		{"app-production@masked*", "app-production", "masked", true},
		{"app-production@masked*", "app-production", "masked-2026", true},
		{"app-production@masked*", "app-production", "latest", false},
		{"app-production@masked*", "app-production", "now", false},
		{"app-production@masked*", "app-staging", "masked", false},
		// A bare entry for the source still allows every ref.
		{"app-production@masked*,app-production", "app-production", "now", true},
		{"app-*@nightly, db", "db", "x", true},
		{"app-*@nightly, db", "app-x", "nightly", true},
		{"app-*@nightly, db", "app-x", "latest", false},
	}
	for _, tt := range tests {
		p, err := Parse(tt.sources)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tt.sources, err)
		}
		if got := p.Allows(tt.source, tt.ref); got != tt.want {
			t.Errorf("SOURCES=%q Allows(%s@%s) = %v, want %v", tt.sources, tt.source, tt.ref, got, tt.want)
		}
	}
}

func TestRefusalNamesSourcesAndAllowedRefs(t *testing.T) {
	p, _ := Parse("app-production@masked*,other")
	msg := p.Refusal("app-production", "latest")
	for _, want := range []string{"SOURCES=app-production@masked*,other", "masked*", "app-production@latest"} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal %q does not mention %q", msg, want)
		}
	}
	if msg := p.Refusal("db", "latest"); !strings.Contains(msg, `source "db" does not match SOURCES=`) {
		t.Errorf("refusal of an unlisted source: %q", msg)
	}
}

func TestParseRefusesMalformed(t *testing.T) {
	for _, bad := range []string{"prod-[", "@x", "app@", "app@x@y", "app@[", "a,@b"} {
		if _, err := Parse(bad); !errors.Is(err, ErrPattern) {
			t.Errorf("Parse(%q) = %v, want ErrPattern", bad, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "*", "app-*@masked*,db", "a@b@c", "[", "x@"} {
		f.Add(s, "app", "latest")
	}
	f.Fuzz(func(t *testing.T, list, source, ref string) {
		p, err := Parse(list)
		if err != nil {
			return
		}
		allowed := p.Allows(source, ref)
		if allowed && !p.AllowsSource(source) {
			t.Fatalf("SOURCES=%q allows %s@%s but no ref of %s", list, source, ref, source)
		}
		if !allowed && p.Refusal(source, ref) == "" {
			t.Fatal("empty refusal")
		}
	})
}
