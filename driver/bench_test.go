package driver

import (
	"fmt"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
)

// Benchmarks of the driver's hot paths on the in-memory backend with a real
// bbolt store (so every record write is a real fsync). `make bench` runs
// them; the socket-level numbers come from test/bench.

// populate adds n unmaterialized clone records next to app-production.
func populate(b *testing.B, d *Driver, n int) []string {
	b.Helper()
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("app-production@latest+job-%05d", i)
		if err := d.Create(&volume.CreateRequest{Name: out[i]}); err != nil {
			b.Fatal(err)
		}
	}
	return out
}

var sizes = []int{100, 1000, 10000}

func BenchmarkGet(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprintf("volumes=%d", n), func(b *testing.B) {
			d, _, _ := newTestDriver(b)
			vols := populate(b, d, n)
			// Materialize one so Status has clones, mount points and times.
			if _, err := d.Mount(&volume.MountRequest{Name: vols[0], ID: "1"}); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := d.Get(&volume.GetRequest{Name: vols[i%n]}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGetClaimed is Docker probing a name no plugin has created yet:
// the claim answer must come from the name and the index alone.
func BenchmarkGetClaimed(b *testing.B) {
	d, _, _ := newTestDriver(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := d.Get(&volume.GetRequest{Name: "app-production@latest+probe"}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkList(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprintf("volumes=%d", n), func(b *testing.B) {
			d, _, _ := newTestDriver(b)
			populate(b, d, n)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r, err := d.List()
				if err != nil || len(r.Volumes) != n+1 {
					b.Fatalf("list: %d volumes, %v", len(r.Volumes), err)
				}
			}
		})
	}
}

func BenchmarkCapabilities(b *testing.B) {
	d, _, _ := newTestDriver(b)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_ = d.Capabilities()
	}
}

// BenchmarkMountUnmount is a container start/stop on a clone that exists:
// count up, bind (in memory here), count down, unbind; two record writes.
func BenchmarkMountUnmount(b *testing.B) {
	d, _, _ := newTestDriver(b)
	name := "app-production@latest+bench"
	if _, err := d.Mount(&volume.MountRequest{Name: name, ID: "0"}); err != nil {
		b.Fatal(err)
	}
	if err := d.Unmount(&volume.UnmountRequest{Name: name, ID: "0"}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := d.Mount(&volume.MountRequest{Name: name, ID: "1"}); err != nil {
			b.Fatal(err)
		}
		if err := d.Unmount(&volume.UnmountRequest{Name: name, ID: "1"}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCloneLifecycle is one CI job: a claimed @latest+TAG name is
// mounted (record, snapshot reuse, clone, mount), unmounted and removed.
func BenchmarkCloneLifecycle(b *testing.B) {
	for _, ref := range []string{"latest", "now"} {
		b.Run("ref="+ref, func(b *testing.B) {
			d, _, _ := newTestDriver(b)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				name := fmt.Sprintf("app-production@%s+job-%d", ref, i)
				if _, err := d.Mount(&volume.MountRequest{Name: name, ID: "1"}); err != nil {
					b.Fatal(err)
				}
				if err := d.Unmount(&volume.UnmountRequest{Name: name, ID: "1"}); err != nil {
					b.Fatal(err)
				}
				if err := d.Remove(&volume.RemoveRequest{Name: name}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkConcurrentJobs runs the CI-job lifecycle from many goroutines:
// record writes and snapshot collection must not serialise the jobs more
// than they need to.
func BenchmarkConcurrentJobs(b *testing.B) {
	for _, jobs := range []int{1, 32} {
		b.Run(fmt.Sprintf("jobs=%d", jobs), func(b *testing.B) {
			d, _, _ := newTestDriver(b)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var wg sync.WaitGroup
				errs := make(chan error, jobs)
				for j := 0; j < jobs; j++ {
					wg.Add(1)
					go func(j int) {
						defer wg.Done()
						name := fmt.Sprintf("app-production@latest+r%d-j%d", i, j)
						if _, err := d.Mount(&volume.MountRequest{Name: name, ID: "1"}); err != nil {
							errs <- err
							return
						}
						if err := d.Unmount(&volume.UnmountRequest{Name: name, ID: "1"}); err != nil {
							errs <- err
							return
						}
						if err := d.Remove(&volume.RemoveRequest{Name: name}); err != nil {
							errs <- err
						}
					}(j)
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
			}
		})
	}
}
