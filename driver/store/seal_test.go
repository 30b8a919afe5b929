package store

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func openSealed(t *testing.T, dir string) (*Store, error) {
	t.Helper()
	return OpenWith(filepath.Join(dir, "snapvol.db"), Options{Seal: filepath.Join(dir, SealName), Timeout: time.Second})
}

// sealedStore makes a sealed store holding a few records, closed, and
// returns its directory.
func sealedStore(t *testing.T, records int) string {
	t.Helper()
	dir := t.TempDir()
	st, err := openSealed(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Fresh() {
		t.Fatal("a first open is not Fresh")
	}
	if err := st.Seal(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < records; i++ {
		if err := st.Put(&Record{Name: "v" + strings.Repeat("x", i%50) + string(rune('a'+i%26)), Created: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestFirstOpenIsFreshThenSealed(t *testing.T) {
	dir := sealedStore(t, 3)
	st, err := openSealed(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.Fresh() {
		t.Fatal("a sealed store with records is Fresh again")
	}
	sl, err := readSeal(filepath.Join(dir, SealName))
	if err != nil || sl == nil || sl.Store != st.ID() || sl.Generation != st.Generation() {
		t.Fatalf("identity file %+v, %v; store %s at %d", sl, err, st.ID(), st.Generation())
	}
}

// An unsealed store (a start refused for the pool, or killed before Seal)
// stays Fresh, so the pool is checked again.
func TestUnsealedStoreStaysFresh(t *testing.T) {
	dir := t.TempDir()
	st, err := openSealed(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	st, err = openSealed(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if !st.Fresh() {
		t.Fatal("an unsealed store without records is not Fresh")
	}
}

func TestEmptiedOrMissingStoreIsRefused(t *testing.T) {
	for _, c := range []struct {
		name string
		do   func(path string) error
	}{
		{"emptied", func(p string) error { return os.Truncate(p, 0) }},
		{"missing", os.Remove},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := sealedStore(t, 3)
			db := filepath.Join(dir, "snapvol.db")
			if err := c.do(db); err != nil {
				t.Fatal(err)
			}
			_, err := openSealed(t, dir)
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "snapvol recover") {
				t.Fatalf("open of a %s store: %v; want ErrRefused naming snapvol recover", c.name, err)
			}
			// Nothing was made in its place.
			if fi, err := os.Stat(db); c.name == "missing" && err == nil || c.name == "emptied" && (err != nil || fi.Size() != 0) {
				t.Fatalf("the refused open wrote %s: %v %v", db, fi, err)
			}
		})
	}
}

func TestOlderCopyIsRefused(t *testing.T) {
	dir := sealedStore(t, 3)
	db := filepath.Join(dir, "snapvol.db")
	old, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	st, err := openSealed(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(&Record{Name: "later", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if err := os.WriteFile(db, old, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = openSealed(t, dir)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "older copy") {
		t.Fatalf("open of an older copy: %v; want ErrRefused, older copy", err)
	}
}

// Another state's database in this STATE_DIR is refused too.
func TestOtherStoresDatabaseIsRefused(t *testing.T) {
	a, b := sealedStore(t, 1), sealedStore(t, 1)
	data, err := os.ReadFile(filepath.Join(b, "snapvol.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a, "snapvol.db"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openSealed(t, a); !errors.Is(err, ErrRefused) {
		t.Fatalf("open of another store's database: %v; want ErrRefused", err)
	}
}

// The identity file follows the database within moments of a write, and
// exactly at Close.
func TestIdentityFileFollowsWrites(t *testing.T) {
	dir := sealedStore(t, 0)
	st, err := openSealed(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if err := st.Put(&Record{Name: "v", Created: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		sl, _ := readSeal(filepath.Join(dir, SealName))
		if sl != nil && sl.Generation == st.Generation() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("identity file at %+v, store at %d", sl, st.Generation())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := st.Put(&Record{Name: "w", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	gen := st.Generation()
	st.Close()
	if sl, _ := readSeal(filepath.Join(dir, SealName)); sl == nil || sl.Generation != gen {
		t.Fatalf("after Close the identity file is %+v, want generation %d", sl, gen)
	}
}

// corrupt damages a closed database in place.
func corrupt(t *testing.T, path, how string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()
	if len(data) < 4*page {
		t.Fatalf("%s has %d bytes, too small to damage", path, len(data))
	}
	switch how {
	case "garbage pages":
		_, _ = rand.Read(data[2*page:])
	case "zeroed pages":
		clear(data[2*page:])
	case "zeroed meta pages":
		clear(data[:2*page])
	case "truncated":
		data = data[:3*page]
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Garbage or zeroed pages made bbolt panic ("assertion failed: Page
// expected to be ..."), a truncated file SIGBUS: each is ErrCorrupt now,
// and the file is not written to.
func TestDamagedStoreIsCorruptNotAPanic(t *testing.T) {
	for _, how := range []string{"garbage pages", "zeroed pages", "zeroed meta pages", "truncated"} {
		t.Run(how, func(t *testing.T) {
			dir := sealedStore(t, 400)
			db := filepath.Join(dir, "snapvol.db")
			corrupt(t, db, how)
			before, _ := os.ReadFile(db)
			_, err := openSealed(t, dir)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), db) {
				t.Fatalf("open of a store with %s: %v; want ErrCorrupt naming %s", how, err, db)
			}
			if after, _ := os.ReadFile(db); string(after) != string(before) {
				t.Fatal("the refused open changed the damaged file")
			}
		})
	}
}
