package store

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// testdata/schema1.db was written by the driver of commit b1149bd (schema
// 1, the last before attachments) through its real Create/Mount/Unmount
// calls on its in-memory backend; testdata/schema1_gen.go.txt is the test
// that wrote it. Every record must load with its objects, mount counts and
// intents where schema 2 keeps them.
func TestMigratesSchema1FileWrittenByOldCode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snapvol.db")
	data, err := os.ReadFile("testdata/schema1.db")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	get := func(name string) *Record {
		t.Helper()
		r, ok := s.Get(name)
		if !ok {
			t.Fatalf("record %q lost in the migration; have %v", name, s.Names())
		}
		return r
	}
	prod := get("app-production")
	if a := prod.Attachment(""); a == nil || a.Object == "" || a.Mounts != 2 || a.Target == "" || prod.IsClone() {
		t.Errorf("plain volume mounted twice: %+v / %+v", prod, a)
	}
	if a := get("scratch").Attachment(""); a == nil || a.Object == "" || a.Mounts != 0 {
		t.Errorf("plain volume never mounted: %+v", a)
	}
	ci := get("ci-1")
	if a := ci.Attachment(""); !ci.IsClone() || ci.Ref != "now" || ci.TTL == nil || a == nil || a.Mounts != 1 || a.Snapshot == "" || a.SnapshotName == "" || a.SnapshotTime.IsZero() {
		t.Errorf("mounted -o from= clone: %+v / %+v", ci, a)
	}
	each := get("app-production@latest+each")
	if !each.Each || len(each.Attachments) != 2 || each.Attachment("e1") == nil || each.Attachment("e2").Mounts != 1 || each.TotalMounts() != 2 {
		t.Errorf("+each with two mounts: %+v", each)
	}
	if later := get("snap:app-production@latest+later"); len(later.Attachments) != 0 || !later.IsClone() {
		t.Errorf("unmaterialized clone: %+v", later)
	}
	rm := get("app-production@latest+t")
	if rm.Intent == nil || rm.Intent.Op != OpRemove || rm.Attachment("") == nil || rm.Attachment("").Mounts != 0 {
		t.Errorf("interrupted remove: %+v", rm)
	}
	if half := get("half"); half.Intent == nil || half.Intent.Op != OpCreate || len(half.Attachments) != 0 {
		t.Errorf("interrupted create: %+v", half)
	}
	s.Close()
	// Migrated once: reopening reads schema 2 as it is.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error {
		if v := string(tx.Bucket(bucketMeta).Get(keySchema)); v != strconv.Itoa(SchemaVersion) {
			t.Errorf("schema after migration = %s, want %d", v, SchemaVersion)
		}
		return nil
	})
	db.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := len(s.Names()); n != 7 {
		t.Errorf("%d records after reopen, want 7", n)
	}
}

// A database written by a newer snapvol (a rollback) is refused with both
// versions named, and left as it was.
func TestRefusesNewerSchemaNamingBoth(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snapvol.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		b, _ := tx.CreateBucket(bucketMeta)
		return b.Put(keySchema, []byte("7"))
	})
	db.Close()
	_, err = Open(path)
	if !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), "version 7") || !strings.Contains(err.Error(), "version "+strconv.Itoa(SchemaVersion)) {
		t.Fatalf("opening a schema-7 database: %v", err)
	}
}

// The instance ID is kept in the database: a legacy ID is adopted once,
// and survives reopening; later calls ignore any other legacy value.
func TestInstanceLivesInTheStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snapvol.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.Instance("0123456789abcdef")
	if err != nil || id != "0123456789abcdef" {
		t.Fatalf("adopting the legacy ID: %q, %v", id, err)
	}
	s.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if id, _ := s.Instance("ffffffffffffffff"); id != "0123456789abcdef" {
		t.Fatalf("instance after reopen = %q", id)
	}
	fresh, _ := Open(filepath.Join(t.TempDir(), "snapvol.db"))
	defer fresh.Close()
	if id, _ := fresh.Instance(""); len(id) != 16 {
		t.Fatalf("new instance ID %q", id)
	}
}
