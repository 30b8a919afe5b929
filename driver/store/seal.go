package store

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/snapvol/snapvol/internal/atomicfile"
)

// The store is never silently new. A database that is missing, emptied
// (": > snapvol.db") or restored from an older copy used to start a fresh
// state, and the sweep then destroyed every clone and snapshot the lost
// records owned, under running containers. So the database carries an
// identity (a random ID) and a generation, bumped by every committed write
// transaction, and the same pair is kept outside it, in a small file
// beside it (SealName): a database without an identity while the file has
// one, with another identity, or with an older generation is refused.
//
// The file follows the database, never leads it: it is written only with
// a generation the database has committed, so a crash between the two
// leaves the file behind (accepted: the database is newer), never ahead.
// Writing it costs an fsync, so it is not written inside each commit: a
// background writer catches up after commits, coalescing a burst into one
// write, and Open and Close write it synchronously. A restored copy is
// caught whenever anything was committed after the copy was taken and the
// writer caught up; a copy restored with the file from the same time is
// not (the pool check below covers only a database with no records).
//
// A database that holds no records and has no file is fresh: the caller
// checks the pool for objects the plugin labelled (which a new state
// cannot have made) before calling Seal, and the run that made the store
// destroys nothing (Fresh).

// SealName is the identity file's name beside the database.
const SealName = "snapvol.store"

// ErrRefused means the database is not the state the identity file and
// the pool say exists: missing, emptied, another store's, or older.
var ErrRefused = errors.New("state database refused")

var (
	keyStoreID    = []byte("store_id")
	keyGeneration = []byte("generation")
)

// seal is the identity file's content.
type seal struct {
	Store      string    `json:"store"`
	Generation uint64    `json:"generation"`
	Written    time.Time `json:"written"`
}

func readSeal(path string) (*seal, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s seal
	if err := json.Unmarshal(data, &s); err != nil || s.Store == "" {
		return nil, fmt.Errorf("%w: %s is not a snapvol store identity (%v); it says which snapvol.db belongs here, so restore it, or run snapvol recover (docs/recover.md)", ErrRefused, path, err)
	}
	return &s, nil
}

func writeSeal(path, id string, gen uint64) error {
	data, err := json.Marshal(seal{Store: id, Generation: gen, Written: time.Now().UTC()})
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing the store identity %s: %w", path, err)
	}
	// The rename is durable once the directory is.
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func newStoreID() (string, error) {
	buf := make([]byte, 16)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	return hex.EncodeToString(buf), nil
}

// generation reads the generation in meta (0 if none).
func generation(meta *bolt.Bucket) uint64 {
	v := meta.Get(keyGeneration)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// bump advances the generation inside a write transaction and returns
// it; the caller tells the sealer once the transaction committed.
func bump(tx *bolt.Tx) (uint64, error) {
	meta := tx.Bucket(bucketMeta)
	g := generation(meta) + 1
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], g)
	return g, meta.Put(keyGeneration, buf[:])
}

// hasState reports whether the database holds anything a user made.
func hasState(tx *bolt.Tx) bool {
	for _, name := range [][]byte{bucketVolumes, bucketSnapshots, bucketSchedules} {
		if b := tx.Bucket(name); b != nil {
			if k, _ := b.Cursor().First(); k != nil {
				return true
			}
		}
	}
	return false
}

// checkIdentity decides, inside Open's transaction, whether the database
// is the state the identity file (sl, nil if there is none) stands for,
// stamps an identity on a database without one, and bumps the
// generation. fresh: the database holds nothing and no file vouches for
// it, so the pool must be checked before it is sealed.
func (s *Store) checkIdentity(tx *bolt.Tx, sl *seal, sealPath string) (fresh bool, err error) {
	meta := tx.Bucket(bucketMeta)
	id := string(meta.Get(keyStoreID))
	gen := generation(meta)
	what := "restore the snapvol.db that belongs to it, or run snapvol recover to rebuild the records from the pool (docs/recover.md)"
	switch {
	case id == "" && sl != nil:
		return false, fmt.Errorf("%w: %s has no store identity, but %s says store %s at generation %d was served here: it is a new or emptied database, or a copy from before snapvol kept identities; %s",
			ErrRefused, s.db.Path(), sealPath, sl.Store, sl.Generation, what)
	case id == "":
		if id, err = newStoreID(); err != nil {
			return false, err
		}
		if err := meta.Put(keyStoreID, []byte(id)); err != nil {
			return false, err
		}
		fresh = !hasState(tx)
	case sl == nil:
		// The file is gone but the database has an identity: either a
		// store made but never sealed (a start refused for the pool, or
		// killed before Seal), or the file was deleted; a database with
		// records is adopted.
		fresh = !hasState(tx)
	case sl.Store != id:
		return false, fmt.Errorf("%w: %s is store %s, but %s says store %s was served here: it is another state's database; %s",
			ErrRefused, s.db.Path(), id, sealPath, sl.Store, what)
	case gen < sl.Generation:
		return false, fmt.Errorf("%w: %s is at generation %d, but %s says generation %d was committed: it is an older copy, and serving it would destroy what was made since; %s",
			ErrRefused, s.db.Path(), gen, sealPath, sl.Generation, what)
	}
	s.id = id
	g, err := bump(tx)
	if err != nil {
		return false, err
	}
	s.gen.Store(g)
	return fresh, nil
}

// ID is the store's identity.
func (s *Store) ID() string { return s.id }

// Generation is the generation of the last committed write.
func (s *Store) Generation() uint64 { return s.gen.Load() }

// Fresh reports whether this run made the store (no records, no identity
// file): nothing the pool holds can be this store's to collect, so the
// run destroys nothing.
func (s *Store) Fresh() bool { return s.fresh }

// Seal writes the identity file of a fresh store, once the caller has
// checked the pool holds nothing the plugin labelled; from then on the
// store is never silently replaced. Sealing a sealed store is a no-op.
func (s *Store) Seal() error {
	if s.sealPath == "" || s.sealed.Load() {
		return nil
	}
	if err := writeSeal(s.sealPath, s.id, s.gen.Load()); err != nil {
		return err
	}
	s.written.Store(s.gen.Load())
	s.sealed.Store(true)
	s.startSealer()
	return nil
}

// committed tells the sealer the database reached generation g.
func (s *Store) committed(g uint64) {
	for {
		cur := s.gen.Load()
		if g <= cur || s.gen.CompareAndSwap(cur, g) {
			break
		}
	}
	if s.kick != nil {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

func (s *Store) startSealer() {
	if s.kick != nil {
		return
	}
	s.kick = make(chan struct{}, 1)
	s.sealerDone = make(chan struct{})
	go func() {
		defer close(s.sealerDone)
		for range s.kick {
			s.catchUp()
		}
	}()
}

// catchUp writes the identity file if the database moved on since it was
// last written. Serialised by its callers (the sealer goroutine, then
// Close once it has stopped).
func (s *Store) catchUp() {
	g := s.gen.Load()
	if g <= s.written.Load() {
		return
	}
	if err := writeSeal(s.sealPath, s.id, g); err != nil {
		s.sealErr.Store(&err)
		return
	}
	s.sealErr.Store(nil)
	s.written.Store(g)
}

// sealState is the part of Store that keeps the identity file.
type sealState struct {
	id       string
	fresh    bool
	sealPath string
	sealed   atomic.Bool
	gen      atomic.Uint64 // committed
	written  atomic.Uint64 // in the file
	sealErr  atomic.Pointer[error]

	kick       chan struct{}
	sealerDone chan struct{}
}

func (s *Store) stopSealer() error {
	if s.kick != nil {
		close(s.kick)
		<-s.sealerDone
		s.kick = nil
	}
	if s.sealed.Load() {
		s.catchUp()
	}
	if p := s.sealErr.Load(); p != nil {
		return *p
	}
	return nil
}
