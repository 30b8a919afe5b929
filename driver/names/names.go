// Package names holds the volume name grammar of snapvol:
//
//	name   = [ "snap:" ] source "@" ref [ "+" tag ]
//	word   = [A-Za-z0-9][A-Za-z0-9_.-]{0,62}
//
// and the per-volume options (-o) that can stand in for it on a plain name.
// Nothing here touches the filesystem: a name is only ever validated, and
// every backend object name is derived from it elsewhere.
package names

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Grammar is shown in every rejection so the user sees the expected form.
const Grammar = `expected a plain name WORD, or [snap:]SOURCE@REF[+TAG] where REF is "latest", "now" or a snapshot name, ` +
	`TAG is a word ("each" = one clone per container), every WORD matches [A-Za-z0-9][A-Za-z0-9_.-]{0,62}, ` +
	`and a plain name may be up to 200 characters`

// Reserved refs and tags.
const (
	RefLatest = "latest"
	RefNow    = "now"
	TagEach   = "each"
	Prefix    = "snap:"
	maxWord   = 63
	// MaxPlain is the longest plain name. Docker sets no limit of its own
	// short of the file name limit (255 bytes) its local driver meets, and
	// GitLab Runner names its cache volumes with 95 characters: they must
	// be plain volumes when volume_driver routes them here. A backend
	// derives file names from the name with a few bytes around it (local:
	// labels/volumes%NAME.json.tmp), so 200 leaves room under 255. Words
	// in the clone grammar keep the grammar's 63.
	MaxPlain = 200
)

// ErrInvalid is wrapped by every grammar or option rejection.
var ErrInvalid = errors.New("invalid volume name or options")

// Name is a parsed volume name. A plain name has only Source set and
// IsClone false: it names a plain volume.
type Name struct {
	Raw    string
	Source string
	Ref    string
	Tag    string
	clone  bool
}

// IsClone reports whether the name asks for a clone of Source.
func (n Name) IsClone() bool { return n.clone }

// Each reports whether every mount gets its own clone.
func (n Name) Each() bool { return n.clone && n.Tag == TagEach }

func invalid(raw, format string, args ...any) error {
	return fmt.Errorf("%w: volume %q: %s; %s", ErrInvalid, raw, fmt.Sprintf(format, args...), Grammar)
}

// CheckWord returns why w is not a word, or "" if it is one.
func CheckWord(w string) string { return checkChars(w, maxWord) }

func checkChars(w string, limit int) string {
	if w == "" {
		return "is empty"
	}
	if len(w) > limit {
		return fmt.Sprintf("is %d characters long, the limit is %d", len(w), limit)
	}
	for i := 0; i < len(w); i++ {
		c := w[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		case i == 0 && (c == '_' || c == '.' || c == '-'):
			return fmt.Sprintf("starts with %q, it must start with a letter or digit", c)
		default:
			return fmt.Sprintf("contains %s, only letters, digits, '_', '.' and '-' are allowed", describe(w, i))
		}
	}
	return ""
}

func describe(w string, i int) string {
	c := w[i]
	switch {
	case c == 0:
		return "a NUL byte"
	case c == '/':
		return "'/'"
	case c < 0x20 || c == 0x7f:
		return fmt.Sprintf("control byte 0x%02x", c)
	case c >= 0x80:
		return "a non-ASCII character"
	default:
		return fmt.Sprintf("%q", rune(c))
	}
}

// Parse parses a Docker volume name.
func Parse(raw string) (Name, error) {
	if len(raw) > MaxPlain+len(Prefix)+2 {
		// Short-circuit huge inputs before any further work; the message
		// does not echo them back.
		return Name{}, fmt.Errorf("%w: volume name of %d bytes is too long; %s", ErrInvalid, len(raw), Grammar)
	}
	s := raw
	prefixed := strings.HasPrefix(s, Prefix)
	if prefixed {
		s = s[len(Prefix):]
	}
	at := strings.IndexByte(s, '@')
	if at < 0 {
		if prefixed {
			return Name{}, invalid(raw, "the snap: prefix needs @REF after the source")
		}
		if why := checkChars(s, MaxPlain); why != "" {
			return Name{}, invalid(raw, "plain volume name %s", why)
		}
		return Name{Raw: raw, Source: s}, nil
	}
	n := Name{Raw: raw, clone: true, Source: s[:at]}
	rest := s[at+1:]
	if plus := strings.IndexByte(rest, '+'); plus >= 0 {
		n.Ref, n.Tag = rest[:plus], rest[plus+1:]
		if why := CheckWord(n.Tag); why != "" {
			return Name{}, invalid(raw, "tag %s", why)
		}
	} else {
		n.Ref = rest
	}
	if why := CheckWord(n.Source); why != "" {
		return Name{}, invalid(raw, "source %s", why)
	}
	if why := CheckWord(n.Ref); why != "" {
		return Name{}, invalid(raw, "ref (after '@') %s", why)
	}
	if n.Ref == TagEach {
		return Name{}, invalid(raw, `"each" is a tag, not a ref: write SOURCE@latest+each`)
	}
	return n, nil
}

// Options are the per-volume settings given with -o.
type Options struct {
	// TTL is how long an idle clone may live; nil means the plugin default.
	TTL *time.Duration
	// Backend holds keys the backend accepted (e.g. OpenStorage spec keys).
	Backend map[string]string
}

// WithOptions combines a parsed name with its -o options. On a plain name,
// from= turns it into a clone volume of that source; from/ref on a grammar
// name are refused because the name already says both. backendKey reports
// whether the backend understands a key; nil accepts none.
func WithOptions(n Name, opts map[string]string, backendKey func(string) bool) (Name, Options, error) {
	var o Options
	from, hasFrom := opts["from"]
	ref, hasRef := opts["ref"]
	for k, v := range opts {
		switch k {
		case "from", "ref":
			if n.clone {
				return n, o, invalid(n.Raw, "option %s= is not allowed on a name that already says SOURCE@REF; use a plain name with -o from=SOURCE", k)
			}
		case "ttl":
			d, err := time.ParseDuration(v)
			if v == "0" {
				d, err = 0, nil
			}
			if err != nil || d < 0 {
				return n, o, invalid(n.Raw, "option ttl=%q is not a duration like 30m or 2h (0 = never expire)", v)
			}
			o.TTL = &d
		default:
			if backendKey == nil || !backendKey(k) {
				return n, o, invalid(n.Raw, "unknown option %q; known options are from, ref, ttl and the backend's own keys", k)
			}
			if o.Backend == nil {
				o.Backend = map[string]string{}
			}
			o.Backend[k] = v
		}
	}
	if hasRef && !hasFrom {
		return n, o, invalid(n.Raw, "option ref= needs from=SOURCE")
	}
	if hasFrom {
		if why := CheckWord(from); why != "" {
			return n, o, invalid(n.Raw, "option from= %s", why)
		}
		if from == n.Source {
			return n, o, invalid(n.Raw, "a volume cannot be a clone of itself")
		}
		if !hasRef {
			ref = RefLatest
		}
		if why := CheckWord(ref); why != "" {
			return n, o, invalid(n.Raw, "option ref= %s", why)
		}
		if ref == TagEach {
			return n, o, invalid(n.Raw, `ref=each is not allowed; "each" is a tag`)
		}
		n = Name{Raw: n.Raw, clone: true, Source: from, Ref: ref}
	}
	return n, o, nil
}
