package store

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Snapshot registers a snapshot under a name of its source, so SOURCE@NAME
// clones it. The name lives here, not in the backend, so that --replace
// moves it in one transaction whatever the backend, and a snapshot of a
// masked clone can carry its source's name.
type Snapshot struct {
	Source string `json:"source"`
	// SourceID is the source's Identity: a name registered for a removed
	// source never resolves for a new volume of the same name.
	SourceID string `json:"source_id,omitempty"`
	Name     string `json:"name"`
	Object   string `json:"object"`
	// Kind is why it was taken, in the words of the snapshot's
	// snapvol.taken label: storage.TakenNamed (snapvol snapshot create)
	// or storage.TakenScheduled (a schedule).
	Kind string    `json:"kind"`
	Time time.Time `json:"time"`
	// From is the clone volume it was taken of, "" for the source itself.
	From string `json:"from,omitempty"`
}

// ScheduledName is the name a schedule registers the snapshot it takes at
// t under (a @REF word); snapvol recover rebuilds it from the snapshot's
// time, so both call this. A second one in the same second gets the
// milliseconds appended where it is taken.
func ScheduledName(t time.Time) string { return "scheduled-" + t.UTC().Format("20060102-150405") }

// Schedule makes the plugin snapshot Source every Every, keeping the
// newest Keep scheduled snapshots.
type Schedule struct {
	Source string        `json:"source"`
	Every  time.Duration `json:"every"`
	Keep   int           `json:"keep"`
	Last   time.Time     `json:"last,omitempty"`
	// Push is where each scheduled snapshot is pushed (REGISTRY/REPO:TAG,
	// "" for none; driver/fleet.go); Pushed is when a scheduled push last
	// worked, PushTried when one was last started, PushError its error
	// ("" once one works).
	Push      string    `json:"push,omitempty"`
	Pushed    time.Time `json:"pushed,omitempty"`
	PushTried time.Time `json:"push_tried,omitempty"`
	PushError string    `json:"push_error,omitempty"`
}

var (
	bucketSnapshots = []byte("snapshots")
	bucketSchedules = []byte("schedules")
)

func snapKey(source, name string) []byte { return []byte(source + "\x00" + name) }

// update runs fn in a write transaction on bucket, made if missing.
func (s *Store) update(bucket []byte, fn func(b *bolt.Bucket) error) error {
	return s.writeTx(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		return fn(b)
	})
}

func (s *Store) view(bucket []byte, fn func(b *bolt.Bucket) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		if b == nil {
			return nil
		}
		return fn(b)
	})
}

// RegisterSnapshot names snap, replacing (and returning) the snapshot the
// name had, in one transaction: nothing ever sees the name unset.
func (s *Store) RegisterSnapshot(snap Snapshot) (old *Snapshot, err error) {
	data, err := json.Marshal(snap)
	if err != nil {
		return nil, err
	}
	err = s.update(bucketSnapshots, func(b *bolt.Bucket) error {
		k := snapKey(snap.Source, snap.Name)
		if v := b.Get(k); v != nil {
			old = &Snapshot{}
			if err := json.Unmarshal(v, old); err != nil {
				return err
			}
		}
		return b.Put(k, data)
	})
	if err != nil {
		return nil, fmt.Errorf("registering snapshot %s@%s: %w", snap.Source, snap.Name, err)
	}
	return old, nil
}

// UnregisterSnapshot drops the name; the object is the caller's to delete.
func (s *Store) UnregisterSnapshot(source, name string) error {
	err := s.update(bucketSnapshots, func(b *bolt.Bucket) error { return b.Delete(snapKey(source, name)) })
	if err != nil {
		return fmt.Errorf("unregistering snapshot %s@%s: %w", source, name, err)
	}
	return nil
}

// RegisteredSnapshot returns the snapshot registered as source@name.
func (s *Store) RegisteredSnapshot(source, name string) (Snapshot, bool) {
	var out Snapshot
	found := false
	_ = s.view(bucketSnapshots, func(b *bolt.Bucket) error {
		if v := b.Get(snapKey(source, name)); v != nil && json.Unmarshal(v, &out) == nil {
			found = true
		}
		return nil
	})
	return out, found
}

// RegisteredSnapshots returns the registered snapshots of source ("" for
// every source), oldest first.
func (s *Store) RegisteredSnapshots(source string) []Snapshot {
	var out []Snapshot
	_ = s.view(bucketSnapshots, func(b *bolt.Bucket) error {
		return b.ForEach(func(_, v []byte) error {
			var sn Snapshot
			if json.Unmarshal(v, &sn) == nil && (source == "" || sn.Source == source) {
				out = append(out, sn)
			}
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.Before(out[j].Time)
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// PutSchedule sets (or replaces) the schedule of sc.Source.
func (s *Store) PutSchedule(sc Schedule) error {
	data, err := json.Marshal(sc)
	if err != nil {
		return err
	}
	if err := s.update(bucketSchedules, func(b *bolt.Bucket) error { return b.Put([]byte(sc.Source), data) }); err != nil {
		return fmt.Errorf("saving the schedule of %s: %w", sc.Source, err)
	}
	return nil
}

// DeleteSchedule turns the schedule of source off.
func (s *Store) DeleteSchedule(source string) error {
	if err := s.update(bucketSchedules, func(b *bolt.Bucket) error { return b.Delete([]byte(source)) }); err != nil {
		return fmt.Errorf("deleting the schedule of %s: %w", source, err)
	}
	return nil
}

// Schedules returns every schedule, by source.
func (s *Store) Schedules() []Schedule {
	var out []Schedule
	_ = s.view(bucketSchedules, func(b *bolt.Bucket) error {
		return b.ForEach(func(_, v []byte) error {
			var sc Schedule
			if json.Unmarshal(v, &sc) == nil {
				out = append(out, sc)
			}
			return nil
		})
	})
	return out
}
