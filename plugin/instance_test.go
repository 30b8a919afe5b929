package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/snapvol/snapvol/driver/store"
)

// The Portworx instance ID lives in the store; a state from before keeps
// the ID its STATE_DIR/portworx.instance names, adopted once and left in
// place for a rollback.
func TestPortworxInstanceFromTheStore(t *testing.T) {
	open := func(dir string) *store.Store {
		st, err := store.Open(filepath.Join(dir, "snapvol.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	// A new state: an ID is made, no side file.
	fresh := t.TempDir()
	s := Settings{StateDir: fresh}
	id, err := portworxInstance(s, open(fresh))
	if err != nil || len(id) < 16 {
		t.Fatalf("new state: %q, %v", id, err)
	}
	if _, err := os.Stat(filepath.Join(fresh, "portworx.instance")); !os.IsNotExist(err) {
		t.Errorf("a portworx.instance file was made: %v", err)
	}
	// A legacy state: its ID is adopted, and stays the store's once the
	// file says something else.
	legacy := t.TempDir()
	const old = "0123456789abcdef"
	if err := os.WriteFile(filepath.Join(legacy, "portworx.instance"), []byte(old+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st := open(legacy)
	if id, err := portworxInstance(Settings{StateDir: legacy}, st); err != nil || id != old {
		t.Fatalf("legacy state: %q, %v; want %s adopted", id, err, old)
	}
	if err := os.WriteFile(filepath.Join(legacy, "portworx.instance"), []byte("fedcba9876543210\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if id, err := portworxInstance(Settings{StateDir: legacy}, st); err != nil || id != old {
		t.Fatalf("after adoption: %q, %v; want the store's %s", id, err, old)
	}
	if _, err := os.Stat(filepath.Join(legacy, "portworx.instance")); err != nil {
		t.Errorf("the legacy file was removed: %v", err)
	}
	// A malformed legacy file is an error, not a new identity.
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "portworx.instance"), []byte("nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := portworxInstance(Settings{StateDir: bad}, open(bad)); err == nil {
		t.Fatal("a malformed portworx.instance was accepted")
	}
}
