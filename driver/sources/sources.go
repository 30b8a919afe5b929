// Package sources holds SOURCES, the policy of what Docker users may
// clone: comma-separated globs, each SOURCE (any ref of it) or
// SOURCE@REFGLOB (only those refs), e.g. "app-production@masked*" lets CI
// clone the masked snapshots of app-production and nothing else of it.
// Admin commands are the operator's and are not subject to it.
package sources

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// ErrPattern is wrapped by every rejection of a malformed pattern.
var ErrPattern = errors.New("invalid SOURCES pattern")

type pattern struct {
	raw, source, ref string // ref "" = any ref
}

// Policy is a parsed SOURCES. The zero Policy allows everything.
type Policy struct {
	raw      string
	patterns []pattern
}

// Parse parses SOURCES; empty entries are ignored, and an empty list
// allows everything.
func Parse(list string) (*Policy, error) {
	p := &Policy{raw: list}
	for _, e := range strings.Split(list, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		src, ref, hasRef := strings.Cut(e, "@")
		if src == "" || hasRef && ref == "" || strings.Contains(ref, "@") {
			return nil, fmt.Errorf("%w %q: write SOURCE or SOURCE@REFGLOB (globs: * ? [a-z]), comma-separated", ErrPattern, e)
		}
		for _, g := range []string{src, ref} {
			if _, err := path.Match(g, ""); err != nil {
				return nil, fmt.Errorf("%w %q: %w (globs: * ? [a-z])", ErrPattern, e, err)
			}
		}
		p.patterns = append(p.patterns, pattern{raw: e, source: src, ref: ref})
	}
	return p, nil
}

// String is SOURCES as given.
func (p *Policy) String() string {
	if p == nil || len(p.patterns) == 0 {
		return "*"
	}
	return p.raw
}

// Allows reports whether Docker users may clone ref of source.
func (p *Policy) Allows(source, ref string) bool {
	if p == nil || len(p.patterns) == 0 {
		return true
	}
	for _, e := range p.patterns {
		if ok, _ := path.Match(e.source, source); !ok {
			continue
		}
		if e.ref == "" {
			return true
		}
		if ok, _ := path.Match(e.ref, ref); ok {
			return true
		}
	}
	return false
}

// AllowsSource reports whether any ref of source may be cloned.
func (p *Policy) AllowsSource(source string) bool {
	return len(p.Refs(source)) > 0
}

// Refs lists the ref globs SOURCES allows for source ("*" when every ref
// is), for refusals that say what would be allowed.
func (p *Policy) Refs(source string) []string {
	if p == nil || len(p.patterns) == 0 {
		return []string{"*"}
	}
	var out []string
	for _, e := range p.patterns {
		if ok, _ := path.Match(e.source, source); !ok {
			continue
		}
		if e.ref == "" {
			return []string{"*"}
		}
		out = append(out, e.ref)
	}
	return out
}

// Refusal says why source@ref may not be cloned and what may be.
func (p *Policy) Refusal(source, ref string) string {
	refs := p.Refs(source)
	if len(refs) == 0 {
		return fmt.Sprintf("source %q does not match SOURCES=%s; add a pattern for it with `docker plugin set snapvol SOURCES=...`", source, p)
	}
	return fmt.Sprintf("%s@%s is not allowed by SOURCES=%s; the refs of %s Docker users may clone are %s (e.g. %s@%s)",
		source, ref, p, source, strings.Join(refs, ", "), source, strings.TrimRight(refs[0], "*?"))
}
