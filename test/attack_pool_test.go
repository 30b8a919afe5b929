package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The pool file must stay allocated (issue 20, item 5): its host
// filesystem here is a small tmpfs, as on a host whose disk fills up.
// Deleting clones gives no space back to that filesystem (65aeefa's pool,
// mounted with btrfs's own discard=async, punched the deleted clones'
// space out of the file); and a hole punched in the file from outside (a
// host fstrim) makes Status say so and new clones be refused, with the
// fallocate that repairs it, until it is allocated again.
func TestAttackPoolFileGoesSparse(t *testing.T) {
	RequireRoot(t)
	RequireTool(t, "fallocate", "util-linux")
	host := filepath.Join(t.TempDir(), "host")
	if err := os.Mkdir(host, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", host, "tmpfs", 0, "size=400m"); err != nil {
		t.Fatal(err)
	}
	// Registered before the plugin's own cleanup, so it runs after it.
	t.Cleanup(func() {
		UnmountUnder(host)
	})
	const poolSize = 300 << 20
	p := StartPlugin(t, map[string]string{"STATE_DIR": host, "POOL_SIZE": fmt.Sprint(poolSize), "POOL_RESERVE": "0"})
	img := filepath.Join(host, "pool.img")
	allocated := func() int64 {
		var st unix.Stat_t
		if err := unix.Stat(img, &st); err != nil {
			t.Fatal(err)
		}
		if st.Size != poolSize {
			t.Fatalf("pool file %s is %d bytes, want %d", img, st.Size, poolSize)
		}
		return st.Blocks * 512
	}
	if have := allocated(); have < poolSize {
		t.Fatalf("fresh pool file: %d of %d bytes allocated", have, poolSize)
	}

	if err := p.Create("prod", nil); err != nil {
		t.Fatal(err)
	}
	prod := p.MustMount("prod", "m-prod")
	writeMiB(t, prod, "data", 48)
	for _, name := range []string{"prod@now+a", "prod@now+b"} {
		dir := p.MustMount(name, "m-"+name)
		writeMiB(t, dir, "ci", 24)
		if err := p.Unmount(name, "m-"+name); err != nil {
			t.Fatal(err)
		}
	}
	writeMiB(t, prod, "data", 48) // production moves on: the snapshots hold the old data alone
	for _, name := range []string{"prod@now+a", "prod@now+b"} {
		if err := p.Remove(name); err != nil {
			t.Fatal(err)
		}
	}
	// Commit often so the cleaner frees the deleted clones' space as soon
	// as it can; 65aeefa's pool lost much of it from the file within 45 s (the cleaner runs at each 30 s commit).
	pool, err := os.Open(filepath.Join(host, "pool"))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	start := time.Now()
	for time.Since(start) < 75*time.Second {
		_ = unix.Syncfs(int(pool.Fd()))
		if have := allocated(); have < poolSize {
			t.Fatalf("%s after removing 2 clones the pool file has %d of its %d bytes allocated: the pool gave its space back to the host filesystem",
				time.Since(start).Round(time.Second), have, poolSize)
		}
		time.Sleep(time.Second)
	}

	// A host fstrim, or anything else, punches a hole in the file.
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, poolSize-32<<20, 32<<20)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Mount("prod@now+c", "m-c")
	repair := fmt.Sprintf("fallocate -l %d %s", poolSize, img)
	if err == nil || !strings.Contains(err.Error(), "sparse") || !strings.Contains(err.Error(), repair) || !strings.Contains(err.Error(), "prod@now+c") {
		t.Fatalf("a new clone on a sparse pool file: Mount = %v; want a refusal naming the volume and %q", err, repair)
	}
	t.Logf("refused: %v", err)
	v, err := p.Get("prod")
	if err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprint(v.Status["pool"]); !strings.HasPrefix(s, "unhealthy") || !strings.Contains(s, "sparse") {
		t.Fatalf("Status of prod says pool %q; want it unhealthy because the pool file is sparse", s)
	}
	// Existing volumes keep working.
	writeMiB(t, prod, "more", 1)

	// What the message says to do repairs it.
	if out, err := exec.Command("sh", "-c", repair).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", repair, err, out)
	}
	dir := p.MustMount("prod@now+c", "m-c")
	if _, err := os.Stat(filepath.Join(dir, "data")); err != nil {
		t.Fatalf("the clone made after fallocate: %v", err)
	}
	if v, err := p.Get("prod"); err != nil || v.Status["pool"] != "healthy" {
		t.Fatalf("Status after fallocate: pool %v (%v); want healthy", v.Status["pool"], err)
	}
	if err := p.Unmount("prod@now+c", "m-c"); err != nil {
		t.Fatal(err)
	}
	if err := p.Unmount("prod", "m-prod"); err != nil {
		t.Fatal(err)
	}
}

// writeMiB writes n MiB of non-zero bytes to dir/name and fsyncs it.
func writeMiB(t *testing.T, dir, name string, n int) {
	t.Helper()
	if dir == "" || !filepath.IsAbs(dir) || filepath.Clean(dir) == "/" {
		t.Fatalf("refusing to write below %q", dir)
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*13 + 1)
	}
	for i := 0; i < n; i++ {
		if _, err := f.Write(buf); err != nil {
			t.Fatalf("writing %s/%s: %v", dir, name, err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}
