package store

import (
	"errors"
	"path/filepath"
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
		EachClones: map[string]*Clone{"id1": {Object: "clones/c-1", Mounts: 2}},
		Pending:    &Pending{Op: OpMaterialize, MountID: "id2"}}
	if err := s.Put(r); err != nil {
		t.Fatal(err)
	}
	// The index holds a copy: changing the caller's record changes nothing.
	r.EachClones["id1"].Mounts = 99
	if got, _ := s.Get(r.Name); got.EachClones["id1"].Mounts != 2 {
		t.Fatalf("index shares state with the caller")
	}
	s.Close()
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, ok := s.Get(r.Name)
	if !ok || got.EachClones["id1"].Object != "clones/c-1" || *got.TTL != ttl || got.Pending.MountID != "id2" || got.TotalMounts() != 2 {
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
