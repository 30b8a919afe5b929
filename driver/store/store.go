// Package store keeps snapvol's volume records in bbolt, mirrored in memory
// so that Docker's Get and List never wait for disk or for the backend.
package store

import (
	"crypto/rand"
	"encoding/hex"
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

// SchemaVersion is bumped whenever Record changes incompatibly; Open
// migrates older versions forward (see migrate.go) and refuses newer ones.
const SchemaVersion = 2

var (
	bucketMeta    = []byte("meta")
	bucketVolumes = []byte("volumes")
	keySchema     = []byte("schema")
	keyInstance   = []byte("instance")
)

// Op is what an intent is about to do.
type Op string

// Operations an intent can record. Making a clone needs none: the clone's
// labels, written before it, say whose it is, so a crash before its record
// leaves a labelled orphan the sweep destroys.
const (
	OpCreate  Op = "create"  // making a plain volume's backend object
	OpRelease Op = "release" // destroying one attachment, keeping the record
	OpRemove  Op = "remove"  // destroying every attachment and the record
)

// Intent is written to a record before a backend change and cleared in the
// write that records its outcome, so reconcile knows what a crash
// interrupted and finishes or undoes it.
type Intent struct {
	Op Op `json:"op"`
	// Key is the attachment a release destroys.
	Key   string    `json:"key,omitempty"`
	Since time.Time `json:"since"`
}

// Attachment is one backend object Docker mounts, with its mount target
// and count: a plain volume's object, a clone volume's clone, or one +each
// clone. The snapshot fields are empty for a plain volume.
type Attachment struct {
	Object string `json:"object"`
	Target string `json:"target,omitempty"`
	Mounts int    `json:"mounts"`
	// Holders counts Mounts by the process that sent them (see the
	// driver's caller.go); mounts counted before holders were recorded
	// are in Mounts only.
	Holders map[string]int `json:"holders,omitempty"`

	Snapshot     string    `json:"snapshot,omitempty"`
	SnapshotName string    `json:"snapshot_name,omitempty"`
	SnapshotTime time.Time `json:"snapshot_time,omitempty"`
	Made         time.Time `json:"made,omitempty"`
	// InProgressSince is when a mount the storage carried on with past
	// its request (storage.ErrInProgress) was left unfinished: the sweep
	// leaves what it mounts alone for a while, so the retry finds it.
	// The stored key stays "pending", the field's old name; in the code
	// "pending" now means an intent only.
	InProgressSince time.Time `json:"pending,omitempty"`
}

// Record is one Docker volume.
type Record struct {
	Name   string `json:"name"`
	Source string `json:"source,omitempty"` // empty: a plain volume
	Ref    string `json:"ref,omitempty"`
	Tag    string `json:"tag,omitempty"`
	Each   bool   `json:"each,omitempty"`
	// Operator marks a volume an operator made (snapvol volume create).
	// It is the operator's: Docker users see, mount or remove it only as
	// Access allows.
	Operator bool `json:"operator,omitempty"`
	// Access is what Docker users may do with an operator volume (see
	// the driver's operator.go): AccessNone (nothing; also every operator
	// volume recorded before Access existed), AccessDocker or
	// AccessSecret.
	Access  string            `json:"access,omitempty"`
	TTL     *time.Duration    `json:"ttl,omitempty"`
	Options map[string]string `json:"options,omitempty"`
	Created time.Time         `json:"created"`

	// Attachments by key (see Key): "" holds a plain volume's object or a
	// clone volume's clone, a Docker mount ID one +each clone.
	Attachments map[string]*Attachment `json:"attachments,omitempty"`

	// LastUsed is when the last mount ended (idle reaping counts from it).
	LastUsed time.Time `json:"last_used"`
	Intent   *Intent   `json:"intent,omitempty"`
}

// What Docker users may do with an operator volume (Record.Access).
const (
	// AccessNone: nothing. Docker's Get and List do not show it, and
	// Create, Mount and Remove of its name are refused.
	AccessNone = ""
	// AccessDocker (snapvol volume create --docker): a Docker volume like
	// one made with -o from=SOURCE -o ref=REF: listed, mountable under
	// SOURCES at every Mount, removable.
	AccessDocker = "docker"
	// AccessSecret (snapvol volume create --secret): mountable by whoever
	// the operator gives its name to, a random one nobody can guess or
	// take first; not listed, not removable through Docker, and SOURCES
	// does not apply (the operator handed it out).
	AccessSecret = "secret"
)

// IsClone reports whether the record is a clone volume.
func (r *Record) IsClone() bool { return r.Source != "" }

// Key is the attachment key of a mount with Docker mount ID id: the ID
// itself for +each, where every mount has its own clone, else "".
func (r *Record) Key(id string) string {
	if r.Each {
		return id
	}
	return ""
}

// Attachment returns the attachment of key, nil if none.
func (r *Record) Attachment(key string) *Attachment { return r.Attachments[key] }

// SetAttachment records a under key.
func (r *Record) SetAttachment(key string, a *Attachment) {
	if r.Attachments == nil {
		r.Attachments = map[string]*Attachment{}
	}
	r.Attachments[key] = a
}

// Keys returns the attachment keys, sorted.
func (r *Record) Keys() []string {
	keys := make([]string, 0, len(r.Attachments))
	for k := range r.Attachments {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Clones returns the record's clones (none for a plain volume), in key
// order.
func (r *Record) Clones() []*Attachment {
	if !r.IsClone() {
		return nil
	}
	out := make([]*Attachment, 0, len(r.Attachments))
	for _, k := range r.Keys() {
		out = append(out, r.Attachments[k])
	}
	return out
}

// TotalMounts counts every mount of the volume.
func (r *Record) TotalMounts() int {
	n := 0
	for _, a := range r.Attachments {
		n += a.Mounts
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
	if r.Attachments != nil {
		c.Attachments = make(map[string]*Attachment, len(r.Attachments))
		for k, v := range r.Attachments {
			a := *v
			if v.Holders != nil {
				a.Holders = make(map[string]int, len(v.Holders))
				for h, n := range v.Holders {
					a.Holders[h] = n
				}
			}
			c.Attachments[k] = &a
		}
	}
	if r.Intent != nil {
		i := *r.Intent
		c.Intent = &i
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

	sealState
}

// write is one Put (data set) or Delete (data nil) waiting to commit.
type write struct {
	name string
	data []byte
	rec  *Record // the copy published in the index once durable
	err  error
	done chan bool // true: committed (see err); false: lead the next batch
}

// Options are what OpenWith checks besides the database itself.
type Options struct {
	// Seal is the identity file kept beside the database (see seal.go):
	// STATE_DIR/snapvol.store for the plugin. Empty: no identity checks
	// (tests of the store alone).
	Seal string
	// Timeout is how long to wait for another process's lock (5 s if 0).
	Timeout time.Duration
}

// Open opens (creating if needed) the database at path and loads the
// index, without identity checks.
func Open(path string) (*Store, error) { return OpenWith(path, Options{}) }

// OpenWith opens the database at path, refusing one that is damaged
// (ErrCorrupt) or is not the state the identity file says was served
// (ErrRefused), creates it only where nothing says a state existed, and
// loads the index. A store it made is Fresh until Seal.
func OpenWith(path string, o Options) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	var sl *seal
	if o.Seal != "" {
		var err error
		if sl, err = readSeal(o.Seal); err != nil {
			return nil, err
		}
	}
	if err := checkBeforeOpen(path, o, sl); err != nil {
		return nil, err
	}
	s := &Store{idx: map[string]*Record{}}
	s.sealPath = o.Seal
	err := guard(func() error {
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: o.Timeout})
		if err != nil {
			return openError(path, err)
		}
		s.db = db
		return db.Update(func(tx *bolt.Tx) error { return s.load(tx, path, sl, o.Seal) })
	})
	if err != nil {
		if s.db != nil {
			s.db.Close()
		}
		return nil, err
	}
	for n := range s.idx {
		s.names = append(s.names, n)
	}
	sort.Strings(s.names)
	if o.Seal != "" && !s.fresh {
		if err := s.Seal(); err != nil {
			s.db.Close()
			return nil, err
		}
	}
	return s, nil
}

// checkBeforeOpen verifies the database at path, if it holds anything,
// and refuses to let bbolt make a new one where the seal sl says a store
// was served.
func checkBeforeOpen(path string, o Options, sl *seal) error {
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.Size() > 0:
		if err := verify(path, o.Timeout); err != nil {
			return err
		}
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("state database %s: %w", path, err)
	case sl != nil:
		// Before bbolt makes a new file here: nothing may be written.
		state := "missing"
		if err == nil {
			state = "empty (0 bytes)"
		}
		return fmt.Errorf("%w: %s is %s, but %s says store %s at generation %d was served here; starting a new state would destroy that state's clones and snapshots. Restore snapvol.db from a backup (the same or a newer one), or run snapvol recover to rebuild the records from the pool (docs/recover.md)",
			ErrRefused, path, state, o.Seal, sl.Store, sl.Generation)
	}
	return nil
}

// load makes the buckets, upgrades the records, checks the store's
// identity against the seal at sealPath (when there is one) and reads
// every record into the index.
func (s *Store) load(tx *bolt.Tx, path string, sl *seal, sealPath string) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	vols, err := tx.CreateBucketIfNotExists(bucketVolumes)
	if err != nil {
		return err
	}
	if err := upgrade(path, meta, vols); err != nil {
		return err
	}
	if sealPath != "" {
		if s.fresh, err = s.checkIdentity(tx, sl, sealPath); err != nil {
			return err
		}
	}
	return vols.ForEach(func(k, v []byte) error {
		var r Record
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("record %q in %s: %w", k, path, err)
		}
		s.idx[r.Name] = &r
		return nil
	})
}

// Close closes the database, leaving the identity file at its last
// generation.
func (s *Store) Close() error {
	serr := s.stopSealer()
	if err := s.db.Close(); err != nil {
		return err
	}
	return serr
}

// writeTx runs fn in a write transaction that also bumps the generation,
// and tells the identity file's writer once it committed.
func (s *Store) writeTx(fn func(tx *bolt.Tx) error) error {
	var g uint64
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		var err error
		g, err = bump(tx)
		return err
	})
	if err == nil {
		s.committed(g)
	}
	return err
}

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
	err := s.writeTx(func(tx *bolt.Tx) error {
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
			w.err = s.writeTx(func(tx *bolt.Tx) error { return put(tx, w) })
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

// Instance returns the ID of this snapvol instance: the one this database
// stands for, which the backends label their objects with (a Portworx
// cluster shared by hosts tells each host's clones apart by it). It lives
// in the database so that a restored snapvol.db keeps owning its clones.
// The first call keeps legacy (an ID an older version kept in a side
// file) if there is one, else makes a new ID.
func (s *Store) Instance(legacy string) (string, error) {
	var id string
	err := s.writeTx(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyInstance); v != nil {
			id = string(v)
			return nil
		}
		id = legacy
		if id == "" {
			buf := make([]byte, 8)
			if _, err := rand.Read(buf); err != nil {
				return err
			}
			id = hex.EncodeToString(buf)
		}
		return meta.Put(keyInstance, []byte(id))
	})
	if err != nil {
		return "", fmt.Errorf("instance ID in %s: %w", s.db.Path(), err)
	}
	return id, nil
}

// Path is the database file.
func (s *Store) Path() string { return s.db.Path() }
