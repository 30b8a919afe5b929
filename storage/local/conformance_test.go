package local

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/storage/storagetest"
)

// outsider is the local backend with what people do to a pool by hand
// (storagetest.Outsider): btrfs-progs, not snapvol's ioctls.
type outsider struct{ *Backend }

func (o outsider) ForeignVolume(ctx context.Context, name string) (storage.Object, error) {
	if err := btrfs("subvolume", "create", filepath.Join(o.root, dirVolumes, name)); err != nil {
		return storage.Object{}, err
	}
	return o.Volume(ctx, name)
}

func (o outsider) ForeignSnapshot(ctx context.Context, source storage.Object, name string) (storage.Object, error) {
	dir := filepath.Join(o.root, dirSnapshots, source.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return storage.Object{}, err
	}
	if err := btrfs("subvolume", "snapshot", "-r", filepath.Join(o.root, source.ID), filepath.Join(dir, name)); err != nil {
		return storage.Object{}, err
	}
	return o.SnapshotByName(ctx, source, name)
}

func btrfs(args ...string) error {
	if out, err := exec.Command("btrfs", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("btrfs %v: %w: %s", args, err, out)
	}
	return nil
}

// The local backend keeps the contract on a real btrfs pool, one fresh
// loop-mounted pool per check.
func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		b, err := OpenDir(testPool(t))
		if err != nil {
			t.Fatal(err)
		}
		return outsider{b}
	})
}

// And with space isolation on: clone limits and a reserve on simple
// quotas change nothing the contract says.
func TestConformanceWithQuotas(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		b, err := Open(Config{Pool: testPool(t), CloneSize: 64 << 20, Reserve: Reserve{Percent: 10}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return outsider{b}
	})
}
