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
	// materialized; EachClones holds +each clones by Docker mount ID.
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

// CloneKey is the key of the clone a mount with Docker mount ID id uses:
// the ID itself for +each, where every mount has its own, else "".
func (r *Record) CloneKey(id string) string {
	if r.Each {
		return id
	}
	return ""
}

// CloneFor returns the clone of key (see CloneKey), nil if not made.
func (r *Record) CloneFor(key string) *Clone {
	if r.Each {
		return r.EachClones[key]
	}
	return r.Clone
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
	// names holds the keys of idx in order, kept up to date on insert and
	// delete, so Each (Docker's List) does not sort 10,000 names per call.
	names []string

	// Group commit: writes that arrive while a transaction is being
	// committed wait and go into the next one together, so N concurrent
	// writers cost a few fsyncs instead of N (bbolt commits one writer at
	// a time, two fdatasyncs each). A lone writer commits at once: unlike
	// bolt's Batch there is no delay to wait for company.
	wmu     sync.Mutex
	queue   []*write
	leading bool
}

// write is one Put (data set) or Delete (data nil) waiting to commit.
type write struct {
	name string
	data []byte
	rec  *Record // the copy published in the index once durable
	err  error
	done chan bool // true: committed (see err); false: lead the next batch
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
	for n := range s.idx {
		s.names = append(s.names, n)
	}
	sort.Strings(s.names)
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
	for _, n := range s.names {
		fn(s.idx[n])
	}
}

// Len is the number of records.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.idx)
}

// publish puts rec in the index (nil: deletes name); s.mu is held.
func (s *Store) publish(name string, rec *Record) {
	_, had := s.idx[name]
	switch {
	case rec != nil:
		s.idx[name] = rec
		if !had {
			i := sort.SearchStrings(s.names, name)
			s.names = append(s.names, "")
			copy(s.names[i+1:], s.names[i:])
			s.names[i] = name
		}
	case had:
		delete(s.idx, name)
		i := sort.SearchStrings(s.names, name)
		s.names = append(s.names[:i], s.names[i+1:]...)
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
	if err := s.commit(&write{name: r.Name, data: data, rec: r.Copy()}); err != nil {
		return fmt.Errorf("saving record of volume %q: %w", r.Name, err)
	}
	return nil
}

// Delete removes the record named name.
func (s *Store) Delete(name string) error {
	if err := s.commit(&write{name: name}); err != nil {
		return fmt.Errorf("deleting record of volume %q: %w", name, err)
	}
	return nil
}

// commit queues w and returns once it is durable (and published) or failed.
// The first writer to find no commit running leads: it commits everything
// queued so far in one transaction, then hands the lead to the first writer
// that queued meanwhile. Writes commit and publish in arrival order.
func (s *Store) commit(w *write) error {
	w.done = make(chan bool, 1)
	s.wmu.Lock()
	s.queue = append(s.queue, w)
	if s.leading {
		s.wmu.Unlock()
		if <-w.done {
			return w.err
		}
		s.wmu.Lock() // handed the lead, with w still queued
	}
	s.leading = true
	batch := s.queue
	s.queue = nil
	s.wmu.Unlock()

	s.apply(batch)

	s.wmu.Lock()
	if len(s.queue) > 0 {
		s.queue[0].done <- false
	} else {
		s.leading = false
	}
	s.wmu.Unlock()
	for _, o := range batch {
		if o != w {
			o.done <- true
		}
	}
	return w.err
}

// apply commits a batch in one transaction. If that fails and the batch
// holds more than one write, each is retried alone, so one bad write never
// fails the others.
func (s *Store) apply(batch []*write) {
	put := func(tx *bolt.Tx, w *write) error {
		b := tx.Bucket(bucketVolumes)
		if w.data == nil {
			return b.Delete([]byte(w.name))
		}
		return b.Put([]byte(w.name), w.data)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, w := range batch {
			if err := put(tx, w); err != nil {
				return err
			}
		}
		return nil
	})
	for _, w := range batch {
		w.err = err
	}
	if err != nil && len(batch) > 1 {
		for _, w := range batch {
			w.err = s.db.Update(func(tx *bolt.Tx) error { return put(tx, w) })
		}
	}
	s.mu.Lock()
	for _, w := range batch {
		if w.err == nil {
			s.publish(w.name, w.rec)
		}
	}
	s.mu.Unlock()
}
