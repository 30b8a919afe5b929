package local

// Labels: the JSON in an extended attribute of an empty file under labels/,
// written before the object it describes (see the package doc).

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

func labelFile(root, id string) string {
	return filepath.Join(root, dirLabels, strings.ReplaceAll(id, "/", "%")+".json")
}

func (b *Backend) writeLabels(id string, labels map[string]string) error {
	data, err := json.Marshal(labels)
	if err != nil {
		return err
	}
	return writeLabelFile(labelFile(b.root, id), data)
}

// labelXattr holds a label file's JSON. In an extended attribute the labels
// are metadata, committed by the btrfs transaction of the snapshot or
// subvolume creation that follows them, with no fsync: as file data they
// would be delayed allocation, which a transaction commit does not flush,
// so a power cut could leave the object with an empty label (a plugin
// snapshot would then look made by hand and never be collected), unless
// fsynced first, which cost 0.7 ms of every clone.
const labelXattr = "user.snapvol.labels"

// writeLabelFile makes the label file path holding data, whole or not at
// all: an empty file gets the attribute under a temporary name and is
// renamed into place, all of it metadata ordered before the object that
// is made next.
func writeLabelFile(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	if err := unix.Setxattr(tmp, labelXattr, data, 0); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("labels of %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

// readLabelFile reads a label file's JSON: from its attribute, or from its
// content where an older snapvol wrote it there.
func readLabelFile(path string) ([]byte, error) {
	buf := make([]byte, 4096)
	for {
		n, err := unix.Getxattr(path, labelXattr, buf)
		if errors.Is(err, unix.ERANGE) && len(buf) < 1<<20 {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if errors.Is(err, unix.ENODATA) {
			return os.ReadFile(path)
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

func (b *Backend) readLabels(id string) map[string]string {
	data, err := readLabelFile(labelFile(b.root, id))
	if err != nil {
		return nil
	}
	var l map[string]string
	if json.Unmarshal(data, &l) != nil {
		return nil
	}
	return l
}

// dropStaleLabels removes label files whose object is gone (a crash between
// deleting an object and its labels). Only called when nothing else runs.
func (b *Backend) dropStaleLabels() {
	ents, _ := os.ReadDir(filepath.Join(b.root, dirLabels))
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			os.Remove(filepath.Join(b.root, dirLabels, name))
			continue
		}
		id := strings.ReplaceAll(strings.TrimSuffix(name, ".json"), "%", "/")
		if p, _, err := b.path(id); err == nil && !isSubvolume(p) {
			os.Remove(filepath.Join(b.root, dirLabels, name))
		}
	}
}
