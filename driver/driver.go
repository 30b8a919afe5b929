package driver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/driver/sources"
	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/keylock"
	"github.com/snapvol/snapvol/storage"
)

// Config wires a Driver.
type Config struct {
	Backend  storage.Backend
	Store    *store.Store
	DataRoot string
	// LatestMaxAge is how old a snapshot @latest may reuse.
	LatestMaxAge time.Duration
	// IdleTTL is how long an unmounted clone lives (0 = forever).
	IdleTTL time.Duration
	// SupersededTTL is how long an unmounted clone of a superseded
	// snapshot lives, when shorter than its ttl (0: no shorter); see
	// space.go.
	SupersededTTL time.Duration
	// Pinner measures what snapshots and clones pin for snapvol df; nil:
	// the Backend's, if it is one.
	Pinner storage.Pinner
	// Sources is SOURCES: what Docker users may clone (nil: anything).
	Sources *sources.Policy
	// Claim makes Get answer for grammar names not yet created.
	Claim bool
	// OpTimeout bounds the backend calls of one request together, well
	// inside Docker's 30 s.
	OpTimeout time.Duration
	// MountTimeout bounds Create and Mount, which make and mount clones
	// (0: OpTimeout). Docker gives a legacy socket plugin 2 minutes for
	// those two (moby's volume plugin proxy, longTimeout) and a managed
	// plugin 30 s; a backend whose work outlives it carries on and
	// answers storage.ErrInProgress, and the next request picks it up.
	MountTimeout time.Duration
	// SlowAfter is how long a request runs before its progress is logged
	// (and again every SlowAfter); 0 means 2 s.
	SlowAfter time.Duration
	Log       *logrus.Logger
	Now       func() time.Time
	// Failpoint, when set, is called at every step of Failpoints; crash
	// tests make it kill the process.
	Failpoint func(name string)
	// Alive, when set, says whether a Caller is still running (tests);
	// nil reads /proc.
	Alive func(Caller) bool
	// Observer is told of clones made, destroyed and reaped and of
	// reconcile's repairs (metrics); nil tells nobody.
	Observer Observer
}

// Driver implements volume.Driver.
type Driver struct {
	cfg   Config
	b     storage.Backend
	st    *store.Store
	log   *logrus.Logger
	refs  *refs
	locks keylock.Map // one per volume name
	pool  poolState
	space spaceState // space.go

	inflight sync.WaitGroup

	claimMu    sync.Mutex
	claimCache map[string]claimEntry

	// unreconciled are the volumes reconcile at start did not finish (its
	// budget ran out, or the backend failed): Run retries them.
	unreconciledMu sync.Mutex
	unreconciled   map[string]bool

	replicas Replicas  // fleet.go; nil: no replica sources
	pushes   pushState // fleet.go: scheduled pushes
}

type claimEntry struct {
	ok bool
	at time.Time
}

var _ volume.Driver = (*Driver)(nil)

// New returns a driver; call Reconcile before serving.
func New(cfg Config) *Driver {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.OpTimeout == 0 {
		cfg.OpTimeout = 25 * time.Second
	}
	if cfg.SlowAfter == 0 {
		cfg.SlowAfter = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	d := &Driver{
		cfg: cfg, b: cfg.Backend, st: cfg.Store, log: cfg.Log,
		claimCache: map[string]claimEntry{}, unreconciled: map[string]bool{},
	}
	// Through d, so a test that moves the clock moves it for both.
	d.refs = &refs{b: cfg.Backend, st: cfg.Store, maxAge: cfg.LatestMaxAge, now: func() time.Time { return d.cfg.Now() }}
	return d
}

func (d *Driver) now() time.Time { return d.cfg.Now().UTC() }

func (d *Driver) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d.cfg.OpTimeout)
}

// Drain waits up to timeout for requests in flight to finish.
func (d *Driver) Drain(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { d.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// target is where attachment key of volume name is mounted. It is derived
// from the name, never the name itself, so no name reaches the filesystem
// as a path.
func (d *Driver) target(name, key string) string {
	sum := sha256.Sum256([]byte(name + "\x00" + key))
	safe := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, name)
	if len(safe) > 80 {
		safe = safe[:80]
	}
	return filepath.Join(d.cfg.DataRoot, safe+"-"+hex.EncodeToString(sum[:6]))
}

// isTargetName reports whether a directory name under DATA_ROOT has the
// shape target gives, so reconcile leaves anything else there alone.
func isTargetName(n string) bool {
	i := strings.LastIndexByte(n, '-')
	if i < 0 || len(n)-i-1 != 12 {
		return false
	}
	if _, err := hex.DecodeString(n[i+1:]); err != nil || strings.ToLower(n[i+1:]) != n[i+1:] {
		return false
	}
	for _, r := range n[:i] {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// allowed reports whether SOURCES lets Docker users clone r. An operator's
// secret volume is not subject to it (the operator handed its name to one
// container); every other clone volume is, an operator's --docker one
// included (operator.go).
func (d *Driver) allowed(r *store.Record) bool {
	return !r.IsClone() || r.Operator && r.Access == store.AccessSecret || d.cfg.Sources.Allows(r.Source, r.Ref)
}

func (d *Driver) errNotAllowed(r *store.Record) error {
	return fmt.Errorf("%w: volume %q: %s", ErrNotAllowed, r.Name, d.cfg.Sources.Refusal(r.Source, r.Ref))
}
