package server

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/admin"
	"github.com/snapvol/snapvol/driver"
	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/storage/memory"
)

// The admin API over a real unix socket, on a driver with the in-memory
// backend: the socket is 0600, every command round-trips, and errors come
// back with the driver's message.
func TestAdminSocketRoundTrip(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "snapvol.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := logrus.New()
	log.SetOutput(io.Discard)
	d := driver.New(driver.Config{Backend: memory.New(), Store: st, DataRoot: t.TempDir(), LatestMaxAge: time.Minute, IdleTTL: time.Hour, Claim: true, Log: log})
	if err := d.Create(&volume.CreateRequest{Name: "app-production"}); err != nil {
		t.Fatal(err)
	}
	sock := admin.SocketPath(dir)
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	srv := New(d, "memory")
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())
	c := admin.NewClient(sock)

	if v, err := c.Version(); err != nil || v.Version == "" || v.Commit == "" {
		t.Fatalf("version: %+v %v", v, err)
	}
	if v, err := c.CreateVolume("mask-work", "app-production@now", ""); err != nil || v.Kind != "operator" {
		t.Fatalf("volume create: %+v %v", v, err)
	}
	if s, err := c.CreateSnapshot("app-production", "masked", "mask-work", false); err != nil || s.Kind != "named" || s.From != "mask-work" {
		t.Fatalf("snapshot create: %+v %v", s, err)
	}
	if _, err := c.CreateSnapshot("app-production", "masked", "", false); err == nil || !strings.Contains(err.Error(), "--replace") {
		t.Fatalf("a second create without --replace: %v", err)
	}
	snaps, err := c.Snapshots("app-production")
	if err != nil || len(snaps) == 0 {
		t.Fatalf("snapshot ls: %v %v", snaps, err)
	}
	if sc, err := c.SetSchedule("app-production", time.Hour, 3); err != nil || sc.Every != time.Hour || sc.Keep != 3 {
		t.Fatalf("schedule: %+v %v", sc, err)
	}
	if scs, err := c.Schedules(); err != nil || len(scs) != 1 {
		t.Fatalf("schedules: %+v %v", scs, err)
	}
	if err := c.ClearSchedule("app-production"); err != nil {
		t.Fatal(err)
	}
	vols, err := c.Volumes()
	if err != nil || len(vols) != 2 {
		t.Fatalf("ls: %+v %v", vols, err)
	}
	if _, err := c.Usage(); err != nil {
		t.Fatalf("df: %v", err)
	}
	if err := c.RemoveVolume("nope"); err == nil || !strings.Contains(err.Error(), "no such volume") {
		t.Fatalf("rm of a missing volume: %v", err)
	}
	if err := c.RemoveVolume("mask-work"); err != nil {
		t.Fatal(err)
	}
	if err := admin.NewClient(filepath.Join(dir, "none.sock")).RemoveVolume("x"); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("a client of no socket: %v", err)
	}
}
