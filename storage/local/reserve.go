package local

// POOL_RESERVE and the size syntax of CLONE_SIZE and -o size=, and the
// reserve group's limit that keeps the reserve free (see quota.go).

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Reserve is POOL_RESERVE: the space clones together may never take from
// the pool, as a share of its size or in bytes.
type Reserve struct {
	Percent float64 // of the pool's size, 0-100
	Bytes   int64
}

// Of is the reserve in bytes of a pool of size bytes.
func (r Reserve) Of(size int64) int64 {
	if r.Percent > 0 {
		return int64(float64(size) * r.Percent / 100)
	}
	return r.Bytes
}

// IsZero reports whether there is no reserve.
func (r Reserve) IsZero() bool { return r.Percent <= 0 && r.Bytes <= 0 }

func (r Reserve) String() string {
	if r.Percent > 0 {
		return strconv.FormatFloat(r.Percent, 'f', -1, 64) + "%"
	}
	return strconv.FormatInt(r.Bytes, 10)
}

// ParseReserve parses POOL_RESERVE: "10%" (of the pool's size), a size
// such as "2G" or "512M", or "0" for none.
func ParseReserve(v string) (Reserve, error) {
	s := strings.TrimSpace(v)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || f < 0 || f >= 100 || math.IsNaN(f) {
			return Reserve{}, fmt.Errorf("%q is not a share of the pool like 10%%", v)
		}
		return Reserve{Percent: f}, nil
	}
	n, err := ParseBytes(s)
	if err != nil {
		return Reserve{}, fmt.Errorf("%q is neither a share of the pool like 10%% nor a size like 2G", v)
	}
	return Reserve{Bytes: n}, nil
}

// ParseBytes parses a size: a number of bytes with an optional K, M, G or
// T suffix (powers of 1024, with or without a trailing B or iB), or "0".
// It is the syntax of CLONE_SIZE and of a clone's -o size=.
func ParseBytes(v string) (int64, error) {
	s := strings.ToUpper(strings.TrimSpace(v))
	s = strings.TrimSuffix(s, "B")
	s = strings.TrimSuffix(s, "I")
	mult := int64(1)
	if s != "" {
		switch s[len(s)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			s = s[:len(s)-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is not a size like 10G or 512M (0 for none)", v)
	}
	return n * mult, nil
}

// minCloneSize is the smallest clone limit accepted: below it a clone
// cannot even hold the metadata of a few files.
const minCloneSize = 1 << 20

// ParseCloneSize parses CLONE_SIZE or a clone's -o size=: a size of at
// least 1M, or 0 for no limit.
func ParseCloneSize(v string) (int64, error) {
	n, err := ParseBytes(v)
	if err != nil {
		return 0, err
	}
	if n != 0 && n < minCloneSize {
		return 0, fmt.Errorf("%q is below the smallest clone size, 1M (0 for no limit)", v)
	}
	return n, nil
}

// refreshLocked: clones may hold what they hold plus the free space above
// the reserve; never less than they hold (the limit stops growth, it
// does not undo it). The limit in force is the kernel's, read in groups:
// one that is not what snapvol set was changed by hand, and is set again.
func (q *quotas) refreshLocked(f *os.File, groups map[uint64]qgroupUsage) error {
	size, _, free, err := statPool(q.root)
	if err != nil {
		return err
	}
	g := groups[reserveGroupID]
	held := g.excl
	if q.set != 0 && g.limit != q.set {
		q.logger().WithFields(logrus.Fields{"qgroup": qgroupName(reserveGroupID), "limit": g.limit, "set": q.set}).
			Warn("the limit of the clones' reserve group (POOL_RESERVE) was changed by hand; setting it again")
		q.set = 0
	}
	limit := held + free - q.reserve.Of(size)
	if limit < held {
		limit = held
	}
	if limit < 1 {
		limit = 1
	}
	// A tighter limit is written at once; a looser one once it moved by
	// a 64th of the pool (at most 64M), sparing a transaction per round.
	slack := min(size/64, 64<<20)
	if d := limit - q.set; q.set != 0 && d >= 0 && d < slack {
		return nil
	}
	if err := qgroupSetLimit(f, reserveGroupID, limit); err != nil {
		return err
	}
	q.set = limit
	return nil
}

// statPool is the pool's size, used and free bytes (free: what a write
// may still take).
func statPool(root string) (size, used, free int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return 0, 0, 0, err
	}
	bs := int64(st.Bsize)
	return int64(st.Blocks) * bs, int64(st.Blocks-st.Bfree) * bs, int64(st.Bavail) * bs, nil
}
