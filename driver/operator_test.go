package driver

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/storage"
)

// snapvol volume rm is the operator's, who holds no mount: it is refused
// while any counted mount's holder runs or cannot be seen, in a managed
// plugin (Docker's mounts counted under CallerUnknown, as the operator's
// request was on 65aeefa, so they looked like its own and were dropped as
// stale: the volume went from under its container) as in host mode
// (Docker's pid). A holder known to be gone holds nothing. After the
// container stops, the remove goes through.
func TestOperatorRemoveRefusedWhileAnyoneHoldsAMount(t *testing.T) {
	for _, tc := range []struct {
		mode   string
		docker Caller
	}{
		{"managed plugin (no pids)", CallerUnknown},
		{"host mode", "4242:7"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			d, b, st := newTestDriver(t)
			d.cfg.Alive = func(c Caller) bool { return c == CallerUnknown || c == "4242:7" }
			ctx := context.Background()
			if err := d.Create(&volume.CreateRequest{Name: "plainx"}); err != nil {
				t.Fatal(err)
			}
			if _, err := d.Operator().Create(ctx, "mask-work", "app-production@now", store.AccessDocker); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"plainx", "mask-work", "app-production"} {
				if _, err := d.As(tc.docker).Mount(&volume.MountRequest{Name: name, ID: "ctr-" + name}); err != nil {
					t.Fatal(err)
				}
			}
			for _, name := range []string{"plainx", "mask-work", "app-production"} {
				err := d.Operator().Remove(ctx, name)
				if !errors.Is(err, ErrInUse) {
					t.Fatalf("snapvol volume rm %s under a running container: %v, want ErrInUse", name, err)
				}
				for _, want := range []string{`"` + name + `"`, "still running", "docker volume rm " + name, "docker ps -a --filter volume=" + name} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("refusal %q does not say %q", err, want)
					}
				}
				if r, ok := st.Get(name); !ok || r.TotalMounts() != 1 {
					t.Fatalf("%s after a refused remove: %+v %v", name, r, ok)
				}
			}
			if n := b.Count(storage.KindClone); n != 1 {
				t.Fatalf("%d clones after refused removes, want mask-work's", n)
			}
			// The container stops: now it goes.
			for _, name := range []string{"mask-work", "plainx", "app-production"} {
				if err := d.As(tc.docker).Unmount(&volume.UnmountRequest{Name: name, ID: "ctr-" + name}); err != nil {
					t.Fatal(err)
				}
				if err := d.Operator().Remove(ctx, name); err != nil {
					t.Fatalf("snapvol volume rm %s after its container stopped: %v", name, err)
				}
				if _, ok := st.Get(name); ok {
					t.Fatalf("%s still recorded after its remove", name)
				}
			}
		})
	}
}

// Counts with no holder recorded (made before holders were) cannot be
// told to be stale: the operator is refused. Counts whose holder is known
// to be gone (a dockerd that exited while live-restore kept the count) go.
func TestOperatorRemoveHoldersUnknownAndGone(t *testing.T) {
	d, _, st := newTestDriver(t)
	d.cfg.Alive = func(c Caller) bool { return c == CallerUnknown }
	ctx := context.Background()
	if err := d.Create(&volume.CreateRequest{Name: "old"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Mount(&volume.MountRequest{Name: "old", ID: "1"}); err != nil {
		t.Fatal(err)
	}
	r, _ := st.Get("old")
	r.Attachment("").Holders = nil // as recorded before holders were
	if err := st.Put(r); err != nil {
		t.Fatal(err)
	}
	if err := d.Operator().Remove(ctx, "old"); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "cannot see") {
		t.Fatalf("operator remove of a count without a holder: %v", err)
	}
	if err := d.Create(&volume.CreateRequest{Name: "gone"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.As("999:1").Mount(&volume.MountRequest{Name: "gone", ID: "1"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Operator().Remove(ctx, "gone"); err != nil {
		t.Fatalf("operator remove of a count whose holder is gone: %v", err)
	}
}
