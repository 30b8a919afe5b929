package local

import (
	"os"
	"path/filepath"
	"testing"
)

// Labels are kept in an extended attribute of the label file (metadata,
// durable with the object's transaction, no fsync); label files an older
// snapvol wrote with the JSON as content still read.
func TestLabelFilesOldAndNew(t *testing.T) {
	root := testPool(t)
	dir := filepath.Join(root, "labeltest")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	const want = `{"snapvol":"1","snapvol.kind":"clone","snapvol.volume":"ci"}`
	newer := filepath.Join(dir, "new.json")
	if err := writeLabelFile(newer, []byte(want)); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(newer); err != nil || fi.Size() != 0 {
		t.Fatalf("label file %v %v: want an empty file with the attribute", fi, err)
	}
	if _, err := os.Stat(newer + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("temporary label file left: %v", err)
	}
	older := filepath.Join(dir, "old.json")
	if err := os.WriteFile(older, []byte(want), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{newer, older} {
		got, err := readLabelFile(p)
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v", p, got, err)
		}
	}
}
