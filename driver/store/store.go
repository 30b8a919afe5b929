// Package store keeps snapvol's volume records in bbolt, mirrored in memory
// so that Docker's Get and List never wait for disk or for the backend.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is bumped whenever Record changes incompatibly.
const SchemaVersion = 1

var (
	bucketMeta    = []byte("meta")
	bucketVolumes = []byte("volumes")
	keySchema     = []byte("schema")
)

// Operations an intent can record.
const (
	OpCreate      = "create"      // making a plain volume
	OpMaterialize = "materialize" // making a clone
	OpRelease     = "release"     // destroying a clone, keeping the record
	OpRemove      = "remove"      // destroying a clone and its record
)

// Pending is an intent written before a backend change and cleared after
// it, so that reconcile knows what a crash interrupted.
type Pending struct {
	Op      string    `json:"op"`
	MountID string    `json:"mount_id,omitempty"`
	Object  string    `json:"object,omitempty"`
	Since   time.Time `json:"since"`
}

// Clone is one materialized clone of a volume.
type Clone struct {
	Object       string    `json:"object"`
	Snapshot     string    `json:"snapshot"`
	SnapshotName string    `json:"snapshot_name"`
	SnapshotTime time.Time `json:"snapshot_time"`
	Made         time.Time `json:"made"`
	Mounts       int       `json:"mounts"`
	Target       string    `json:"target,omitempty"`
}

// Record is one Docker volume.
type Record struct {
	Name    string            `json:"name"`
	Source  string            `json:"source,omitempty"` // empty: a plain volume
	Ref     string            `json:"ref,omitempty"`
	Tag     string            `json:"tag,omitempty"`
	Each    bool              `json:"each,omitempty"`
	TTL     *time.Duration    `json:"ttl,omitempty"`
	Options map[string]string `json:"options,omitempty"`
	Created time.Time         `json:"created"`

	// Object is the backend object of a plain volume.
	Object string `json:"object,omitempty"`
	// Mounts counts the mounts of a plain volume.
	Mounts int `json:"mounts,omitempty"`
	// Target is where a plain volume is mounted.
	Target string `json:"target,omitempty"`

	// Clone is the clone of a (non-each) clone volume, nil when not
	// materialized; Each holds +each clones by Docker mount ID.
	Clone      *Clone            `json:"clone,omitempty"`
	EachClones map[string]*Clone `json:"each_clones,omitempty"`

	// LastUsed is when the last mount ended (idle reaping counts from it).
	LastUsed time.Time `json:"last_used"`
	Pending  *Pending  `json:"pending,omitempty"`
}

// IsClone reports whether the record is a clone volume.
func (r *Record) IsClone() bool { return r.Source != "" }

// Clones returns every materialized clone of the record.
func (r *Record) Clones() []*Clone {
	var out []*Clone
	if r.Clone != nil {
		out = append(out, r.Clone)
	}
	ids := make([]string, 0, len(r.EachClones))
	for id := range r.EachClones {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		out = append(out, r.EachClones[id])
	}
	return out
}

// TotalMounts counts every mount of the volume.
func (r *Record) TotalMounts() int {
	n := r.Mounts
	for _, c := range r.Clones() {
		n += c.Mounts
	}
	return n
}

// Copy returns a deep copy, so callers never share mutable state with the
// in-memory index.
func (r *Record) Copy() *Record {
	c := *r
	if r.TTL != nil {
		t := *r.TTL
		c.TTL = &t
	}
	if r.Options != nil {
		c.Options = make(map[string]string, len(r.Options))
		for k, v := range r.Options {
			c.Options[k] = v
		}
	}
	if r.Clone != nil {
		cl := *r.Clone
		c.Clone = &cl
	}
	if r.EachClones != nil {
		c.EachClones = make(map[string]*Clone, len(r.EachClones))
		for k, v := range r.EachClones {
			cl := *v
			c.EachClones[k] = &cl
		}
	}
	if r.Pending != nil {
		p := *r.Pending
		c.Pending = &p
	}
	return &c
}

// ErrSchema means the database was written by an incompatible version.
var ErrSchema = errors.New("unsupported state schema")

// Store is the record database.
type Store struct {
	db  *bolt.DB
	mu  sync.RWMutex
	idx map[string]*Record
}

// Open opens (creating if needed) the database at path and loads the index.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening state database %s (is another snapvol running?): %w", path, err)
	}
	s := &Store{db: db, idx: map[string]*Record{}}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(keySchema); v == nil {
			if err := meta.Put(keySchema, []byte(fmt.Sprint(SchemaVersion))); err != nil {
				return err
			}
		} else if string(v) != fmt.Sprint(SchemaVersion) {
			return fmt.Errorf("%w: %s has version %s, this snapvol reads version %d", ErrSchema, path, v, SchemaVersion)
		}
		vols, err := tx.CreateBucketIfNotExists(bucketVolumes)
		if err != nil {
			return err
		}
		return vols.ForEach(func(k, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("record %q in %s: %w", k, path, err)
			}
			s.idx[r.Name] = &r
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Get returns a copy of the record named name.
func (s *Store) Get(name string) (*Record, bool) {
	s.mu.RLock()
	r, ok := s.idx[name]
	s.mu.RUnlock()
	if !ok {
		return nil, false
	}
	return r.Copy(), true
}

// Each calls fn on every record, sorted by name, without copying; fn must
// not keep or modify them.
func (s *Store) Each(fn func(*Record)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	names := make([]string, 0, len(s.idx))
	for n := range s.idx {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fn(s.idx[n])
	}
}

// Names returns every record name.
func (s *Store) Names() []string {
	var out []string
	s.Each(func(r *Record) { out = append(out, r.Name) })
	return out
}

// Put writes r durably, then publishes it in the index.
func (s *Store) Put(r *Record) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketVolumes).Put([]byte(r.Name), data)
	}); err != nil {
		return fmt.Errorf("saving record of volume %q: %w", r.Name, err)
	}
	s.mu.Lock()
	s.idx[r.Name] = r.Copy()
	s.mu.Unlock()
	return nil
}

// Delete removes the record named name.
func (s *Store) Delete(name string) error {
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketVolumes).Delete([]byte(name))
	}); err != nil {
		return fmt.Errorf("deleting record of volume %q: %w", name, err)
	}
	s.mu.Lock()
	delete(s.idx, name)
	s.mu.Unlock()
	return nil
}
