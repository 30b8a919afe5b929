package osdserver

import (
	"os"
	"testing"

	"github.com/snapvol/snapvol/mountpoint"

	"github.com/snapvol/snapvol/internal/roottest"
	"github.com/snapvol/snapvol/test/leakcheck"
)

// MountDir makes a fresh directory below MountRoot, where the server's
// mounts show on the host as Portworx's do under /var/lib/osd/mounts: a
// test's PX_MOUNT_DIR. When the test ends it goes if only empty
// directories are left in it (it is never walked into through a mount).
func (s *Server) MountDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp(s.MountRoot(), "pxmounts-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := mountpoint.RemoveEmptyTree(dir); err != nil {
			t.Logf("left %s in place: %v", dir, err)
		}
	})
	return dir
}

// ForTest starts a server on a fresh pool for one test and closes it,
// unmounting everything, when the test ends. It fails the test, never
// skips it, when root or mkfs.btrfs is missing: the server needs both to
// move real data.
func ForTest(t testing.TB, cfg Config) *Server {
	t.Helper()
	roottest.Require(t, "the test OpenStorage server: a loop-mounted btrfs pool and bind mounts", roottest.Btrfs)
	dir, err := leakcheck.Dir(t, "osdserver-")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StateDir == "" {
		cfg.StateDir = dir
	}
	s, err := Start(cfg)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("starting the test OpenStorage server: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("closing the test OpenStorage server: %v", err)
		}
		// Whatever Close could not unmount is detached lazily before the
		// removal, which then never walks into a mounted pool; left
		// mounted, the pool's loop device stayed attached to a deleted
		// file for good.
		leakcheck.UnmountUnder(dir)
		os.RemoveAll(dir)
	})
	return s
}
