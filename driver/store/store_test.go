package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestRecordsSurviveReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snapvol.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ttl := 2 * time.Hour
	r := &Record{Name: "app@latest+each", Source: "app", Ref: "latest", Tag: "each", Each: true, TTL: &ttl,
		Attachments: map[string]*Attachment{"id1": {Object: "clones/c-1", Mounts: 2}},
		Intent:      &Intent{Op: OpRelease, Key: "id2"}}
	if err := s.Put(r); err != nil {
		t.Fatal(err)
	}
	// The index holds a copy: changing the caller's record changes nothing.
	r.Attachments["id1"].Mounts = 99
	if got, _ := s.Get(r.Name); got.Attachments["id1"].Mounts != 2 {
		t.Fatalf("index shares state with the caller")
	}
	s.Close()
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, ok := s.Get(r.Name)
	if !ok || got.Attachments["id1"].Object != "clones/c-1" || *got.TTL != ttl || got.Intent.Key != "id2" || got.TotalMounts() != 2 {
		t.Fatalf("after reopen: %+v", got)
	}
	if err := s.Delete(r.Name); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Get(r.Name); ok {
		t.Fatal("deleted record still there")
	}
}

func TestRefusesOtherSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snapvol.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		b, _ := tx.CreateBucket(bucketMeta)
		return b.Put(keySchema, []byte("99"))
	})
	db.Close()
	if _, err := Open(path); !errors.Is(err, ErrSchema) {
		t.Fatalf("opening a schema-99 database: %v, want ErrSchema", err)
	}
}

// Concurrent writers share commits; every write is durable and published
// when its Put or Delete returns, and survives a reopen.
func TestConcurrentWritesAreDurable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snapvol.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 32, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				r := &Record{Name: fmt.Sprintf("v%d-%d", w, i), Source: "app", Ref: "latest", Attachments: map[string]*Attachment{"": {Mounts: i}}}
				if err := s.Put(r); err != nil {
					errs <- err
					return
				}
				if got, ok := s.Get(r.Name); !ok || got.Attachments[""].Mounts != i {
					errs <- fmt.Errorf("%s not published when Put returned", r.Name)
					return
				}
				if i%2 == 1 {
					if err := s.Delete(r.Name); err != nil {
						errs <- err
						return
					}
					if _, ok := s.Get(r.Name); ok {
						errs <- fmt.Errorf("%s still published after Delete returned", r.Name)
						return
					}
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := len(s.Names()); n != writers*each/2 {
		t.Fatalf("%d records after reopen, want %d", n, writers*each/2)
	}
	for w := 0; w < writers; w++ {
		for i := 0; i < each; i++ {
			_, ok := s.Get(fmt.Sprintf("v%d-%d", w, i))
			if ok != (i%2 == 0) {
				t.Fatalf("v%d-%d present=%v after reopen", w, i, ok)
			}
		}
	}
}

// A write bolt refuses fails alone, not the writes committed with it.
func TestBadWriteFailsAlone(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "snapvol.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	good := &Record{Name: "good"}
	data, _ := json.Marshal(good)
	batch := []*write{{name: "good", data: data, rec: good.Copy()}, {name: "", data: []byte("{}"), rec: &Record{}}, {name: "gone"}}
	s.apply(batch)
	if batch[0].err != nil || batch[2].err != nil || batch[1].err == nil {
		t.Fatalf("errors %v, %v, %v: want only the empty key to fail", batch[0].err, batch[1].err, batch[2].err)
	}
	if _, ok := s.Get("good"); !ok {
		t.Fatal("the good write was not published")
	}
	if err := s.Put(&Record{}); err == nil {
		t.Fatal("Put of a record without a name succeeded")
	}
}

// Each visits records in name order, kept up to date by inserts and
// deletes in any order, and after a reopen.
func TestEachIsSorted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snapvol.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 300; i++ {
		name := fmt.Sprintf("v%03d", rng.IntN(100))
		if want[name] && rng.IntN(2) == 0 {
			if err := s.Delete(name); err != nil {
				t.Fatal(err)
			}
			delete(want, name)
			continue
		}
		if err := s.Put(&Record{Name: name}); err != nil {
			t.Fatal(err)
		}
		want[name] = true
	}
	if err := s.Delete("never-there"); err != nil {
		t.Fatal(err)
	}
	check := func(s *Store) {
		t.Helper()
		got := s.Names()
		if !sort.StringsAreSorted(got) || len(got) != len(want) || s.Len() != len(want) {
			t.Fatalf("names %v (len %d), want the %d sorted", got, s.Len(), len(want))
		}
		for _, n := range got {
			if !want[n] {
				t.Fatalf("%s listed but deleted", n)
			}
		}
	}
	check(s)
	s.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check(s)
}
