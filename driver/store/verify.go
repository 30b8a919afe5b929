package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrCorrupt means the database file is damaged: bbolt would panic on it
// (an assertion on a garbage or zeroed page) or die of SIGBUS (a file
// shorter than its own meta page says), so it is refused before bbolt
// walks it.
var ErrCorrupt = errors.New("state database is damaged")

// bbolt's on-disk format (go.etcd.io/bbolt internal/common): a page header
// of 16 bytes (id 8, flags 2, count 2, overflow 4), then, on pages 0 and
// 1, the meta: magic 4, version 4, page size 4, flags 4, root bucket 16,
// freelist 8, pgid (the high water mark) 8, txid 8, then an FNV-64a
// checksum of those 56 bytes. Native byte order; snapvol builds for
// little-endian Linux only.
const (
	boltMagic     = 0xED0CDAED
	boltVersion   = 2
	pageHeaderLen = 16
	metaLen       = 56 // the bytes the checksum covers
)

type boltMeta struct {
	pageSize uint32
	pgid     uint64
	txid     uint64
}

// readMeta parses the meta page at off, ok false if it is not a valid one.
func readMeta(f *os.File, off int64) (boltMeta, bool) {
	buf := make([]byte, pageHeaderLen+metaLen+8)
	if _, err := f.ReadAt(buf, off); err != nil {
		return boltMeta{}, false
	}
	m := buf[pageHeaderLen:]
	le := binary.LittleEndian
	if le.Uint32(m[0:]) != boltMagic || le.Uint32(m[4:]) != boltVersion {
		return boltMeta{}, false
	}
	h := fnv.New64a()
	h.Write(m[:metaLen])
	if h.Sum64() != le.Uint64(m[metaLen:]) {
		return boltMeta{}, false
	}
	return boltMeta{pageSize: le.Uint32(m[8:]), pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}, true
}

// checkMeta refuses a file whose meta pages are both invalid, or that is
// shorter than the pages its meta says are written. bbolt maps the file
// and reads pages below the high water mark without checking the file
// holds them: past the end of a truncated file that is SIGBUS, which no
// recover catches.
func checkMeta(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	// As bbolt does: meta 0 gives the page size; if it is damaged, meta 1
	// is looked for at the OS page size.
	m0, ok0 := readMeta(f, 0)
	off1 := int64(os.Getpagesize())
	if ok0 && m0.pageSize >= 512 && m0.pageSize <= 1<<16 {
		off1 = int64(m0.pageSize)
	}
	m1, ok1 := readMeta(f, off1)
	var m boltMeta
	switch {
	case ok0 && (!ok1 || m0.txid >= m1.txid):
		m = m0
	case ok1:
		m = m1
	default:
		return fmt.Errorf("%w: %s is not a bbolt database, or both of its meta pages are damaged", ErrCorrupt, path)
	}
	if m.pageSize < 512 || m.pageSize > 1<<16 || m.pageSize&(m.pageSize-1) != 0 {
		return fmt.Errorf("%w: %s has an impossible page size %d", ErrCorrupt, path, m.pageSize)
	}
	if need := int64(m.pgid) * int64(m.pageSize); fi.Size() < need {
		return fmt.Errorf("%w: %s is truncated: it holds %d bytes, its pages need %d", ErrCorrupt, path, fi.Size(), need)
	}
	return nil
}

// guard runs fn, turning a panic (bbolt asserts on pages it does not
// expect) or a memory fault in this goroutine into an error.
func guard(fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: bbolt: %v", ErrCorrupt, r)
		}
	}()
	return fn()
}

// verify checks an existing database before it is opened for writing:
// the meta pages and the file size first, then bbolt's own consistency
// check of every page, read-only, so a damaged file is neither written
// to nor allowed to crash the process.
func verify(path string, timeout time.Duration) error {
	if err := checkMeta(path); err != nil {
		return err
	}
	return guard(func() error {
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
		if err != nil {
			if errors.Is(err, ErrCorrupt) {
				return err
			}
			return openError(path, err)
		}
		defer db.Close()
		return db.View(func(tx *bolt.Tx) error {
			var errs []error
			for err := range tx.Check() {
				if len(errs) < 5 {
					errs = append(errs, err)
				}
			}
			if len(errs) > 0 {
				return fmt.Errorf("%w: %s fails bbolt's consistency check: %w", ErrCorrupt, path, errors.Join(errs...))
			}
			return nil
		})
	})
}

// openError explains why bbolt did not open path: another process holds
// it, or bbolt itself found it damaged.
func openError(path string, err error) error {
	if errors.Is(err, bolt.ErrTimeout) {
		return fmt.Errorf("opening state database %s (is another snapvol running?): %w", path, err)
	}
	if errors.Is(err, bolt.ErrInvalid) || errors.Is(err, bolt.ErrChecksum) || errors.Is(err, bolt.ErrVersionMismatch) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	}
	return fmt.Errorf("opening state database %s: %w", path, err)
}
