// Package atomicfile writes small files that must be whole after a crash:
// the data is fsynced before the file is renamed into place, so a reader
// finds the old file or the new one, never an empty or partial one.
package atomicfile

import "os"

// Write writes data to path.tmp, fsyncs it and renames it to path. The
// rename itself is durable once the directory is synced or, on btrfs, at
// the next transaction commit.
func Write(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := writeSynced(tmp, data, mode); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

func writeSynced(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
