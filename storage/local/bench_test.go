package local

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/snapvol/snapvol/storage"
)

// BenchmarkCloneMount times what a container's first mount of a clone
// volume costs the backend, Clone then Mount, with space isolation off
// and on (a clone limit and a reserve, on simple quotas), on one loop
// pool each, with a source of 2,000 files. Compare the two ns/op:
//
//	SNAPVOL_ROOT_TESTS=1 go test -run '^$' -bench CloneMount -benchtime 200x -count 5 ./storage/local
func BenchmarkCloneMount(b *testing.B) {
	for _, q := range []struct {
		name string
		cfg  Config
	}{
		{"quota=off", Config{}},
		{"quota=on", Config{CloneSize: 1 << 30, Reserve: Reserve{Percent: 10}}},
	} {
		b.Run(q.name, func(b *testing.B) {
			root := testPoolSize(b, 1<<30)
			cfg := q.cfg
			cfg.Pool = root
			be, err := Open(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer be.Close()
			ctx := context.Background()
			src, err := be.CreateVolume(ctx, "prod", nil)
			if err != nil {
				b.Fatal(err)
			}
			dir := filepath.Join(root, src.ID)
			for i := 0; i < 2000; i++ {
				if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%04d", i)), make([]byte, 8192), 0o644); err != nil {
					b.Fatal(err)
				}
			}
			snap, err := be.Snapshot(ctx, src, storage.SnapshotLabels("prod"))
			if err != nil {
				b.Fatal(err)
			}
			targets := b.TempDir()
			type made struct{ id, target string }
			var all []made
			defer func() {
				for _, m := range all {
					_ = be.Unmount(ctx, m.id, m.target)
					_ = be.Delete(ctx, m.id)
				}
			}()
			time.Sleep(100 * time.Millisecond)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c, err := be.Clone(ctx, snap, storage.CloneLabels(fmt.Sprintf("prod@latest+%d", i), "prod"), nil)
				if err != nil {
					b.Fatal(err)
				}
				target := filepath.Join(targets, c.Name)
				if err := be.Mount(ctx, c.ID, target); err != nil {
					b.Fatal(err)
				}
				all = append(all, made{c.ID, target})
			}
			b.StopTimer()
		})
	}
}

// BenchmarkObjectUsage times one ObjectUsage of a pool holding 2,000
// clones (SNAPVOL_BENCH_OBJECTS sets another number).
func BenchmarkObjectUsage(b *testing.B) {
	n := 2000
	if v, err := strconv.Atoi(os.Getenv("SNAPVOL_BENCH_OBJECTS")); err == nil && v > 0 {
		n = v
	}
	root := testPoolSize(b, 2<<30)
	be, err := Open(Config{Pool: root, CloneSize: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	ctx := context.Background()
	src, err := be.CreateVolume(ctx, "prod", nil)
	if err != nil {
		b.Fatal(err)
	}
	snap, err := be.Snapshot(ctx, src, storage.SnapshotLabels("prod"))
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := be.Clone(ctx, snap, storage.CloneLabels(fmt.Sprint(i), "prod"), nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		u, err := be.ObjectUsage(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if len(u) != n+2 {
			b.Fatalf("ObjectUsage has %d objects, want %d", len(u), n+2)
		}
	}
}
