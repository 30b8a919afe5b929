package driver

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/storage"
)

// Issue 21 item 5: operator volumes were a raw-production tap for every
// Docker user. Each abuse of the README's masking recipe (with
// SOURCES=app-production@masked*), through the VolumeDriver calls Docker
// makes; each passed on 65aeefa.

func isOperatorRefusal(err error) bool {
	return errors.Is(err, ErrNotAllowed) && errors.Is(err, ErrOperatorVolume)
}

// A Docker user cannot see, mount (read raw data, write into what becomes
// app-production@masked), take over with Create, or remove an operator's
// volume made without an opt-in; the operator still can do all of it.
func TestOperatorVolumeIsNotDockers(t *testing.T) {
	d, b, st := newTestDriver(t)
	d.cfg.Sources = policy(t, "app-production@masked*")
	ctx := context.Background()
	if _, err := d.Operator().Create(ctx, "mask-work", "app-production@now", store.AccessNone); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Get(&volume.GetRequest{Name: "mask-work"}); !errors.Is(err, ErrNoSuchVolume) {
		t.Fatalf("Docker's Get of the operator's volume: %v, want no such volume", err)
	}
	if _, err := d.Path(&volume.PathRequest{Name: "mask-work"}); !errors.Is(err, ErrNoSuchVolume) {
		t.Fatalf("Docker's Path of the operator's volume: %v", err)
	}
	l, _ := d.List()
	for _, v := range l.Volumes {
		if v.Name == "mask-work" {
			t.Fatal("Docker's List shows the operator's volume")
		}
	}
	// Mount during masking: refused, and no mount made.
	_, err := d.Mount(&volume.MountRequest{Name: "mask-work", ID: "ci"})
	if !isOperatorRefusal(err) || !strings.Contains(err.Error(), `"mask-work"`) || !strings.Contains(err.Error(), "--docker") {
		t.Fatalf("Docker's Mount of the operator's volume: %v, want a refusal naming it and the opt-in", err)
	}
	if m := b.Mounts(); len(m) != 0 {
		t.Fatalf("the refused Mount mounted something: %v", m)
	}
	// Take-over: a Docker Create of its name is refused and changes nothing.
	err = d.Create(&volume.CreateRequest{Name: "mask-work"})
	if !isOperatorRefusal(err) {
		t.Fatalf("Docker's Create of the operator's name: %v, want a refusal", err)
	}
	// Swap: a Docker Remove (between docker rm masker and snapshot create
	// --from) is refused; the clone and the record stay.
	if err := d.Remove(&volume.RemoveRequest{Name: "mask-work"}); !isOperatorRefusal(err) || !strings.Contains(err.Error(), "snapvol volume rm mask-work") {
		t.Fatalf("Docker's Remove of the operator's volume: %v, want a refusal naming snapvol volume rm", err)
	}
	r, ok := st.Get("mask-work")
	if !ok || !r.Operator || r.Attachment("") == nil || b.Count(storage.KindClone) != 1 {
		t.Fatalf("the operator's volume after Docker's attempts: %+v %v, %d clones", r, ok, b.Count(storage.KindClone))
	}
	// The operator's own commands still work.
	if _, err := d.Operator().CreateSnapshot(ctx, "app-production", "masked", "mask-work", false); err != nil {
		t.Fatalf("snapshot create --from the operator's volume: %v", err)
	}
	if err := d.Operator().Remove(ctx, "mask-work"); err != nil {
		t.Fatalf("snapvol volume rm: %v", err)
	}
}

// Squatting the other way: a name a Docker user made first is never the
// operator's (what the user wrote there would become the masked snapshot).
func TestOperatorCreateOfADockerNameIsRefused(t *testing.T) {
	d, _, _ := newTestDriver(t)
	ctx := context.Background()
	for _, name := range []string{"mask-work", "app-production@latest+mask"} {
		req := &volume.CreateRequest{Name: name}
		if !strings.Contains(name, "@") {
			req.Options = map[string]string{"from": "app-production", "ref": "now"}
		}
		if err := d.Create(req); err != nil {
			t.Fatal(err)
		}
	}
	_, err := d.Operator().Create(ctx, "mask-work", "app-production@now", store.AccessNone)
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "Docker users made it") || !strings.Contains(err.Error(), "--secret") {
		t.Fatalf("operator create of a name a Docker user made: %v", err)
	}
	if _, err := d.Operator().Create(ctx, "app-production@latest+mask", "app-production@now", store.AccessNone); !errors.Is(err, names.ErrInvalid) {
		t.Fatalf("operator create of a grammar name: %v", err)
	}
	// A secret name is new every time: nothing can have taken it.
	seen := map[string]bool{}
	for i := 0; i < 3; i++ {
		v, err := d.Operator().Create(ctx, "mask-work", "app-production@now", store.AccessSecret)
		if err != nil {
			t.Fatal(err)
		}
		if seen[v.Name] || !strings.HasPrefix(v.Name, "mask-work-") || len(v.Name) != len("mask-work-")+32 {
			t.Fatalf("secret name %q (seen %v)", v.Name, seen)
		}
		seen[v.Name] = true
	}
}

// snapvol snapshot create --from takes only operator volumes: a Docker
// user's clone volume (a tagged name, a plain name with -o from=) holds
// whatever they wrote.
func TestSnapshotFromTakesOnlyOperatorVolumes(t *testing.T) {
	d, _, st := newTestDriver(t)
	ctx := context.Background()
	if err := d.Create(&volume.CreateRequest{Name: "mask-work", Options: map[string]string{"from": "app-production", "ref": "now"}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"mask-work", "app-production@now+mask"} {
		if _, err := d.Mount(&volume.MountRequest{Name: name, ID: "ci"}); err != nil {
			t.Fatal(err)
		}
		_, err := d.Operator().CreateSnapshot(ctx, "app-production", "masked", name, true)
		if !errors.Is(err, names.ErrInvalid) || !strings.Contains(err.Error(), "not an operator volume") {
			t.Fatalf("snapshot create --from %s (a Docker user's): %v", name, err)
		}
	}
	if _, ok := st.RegisteredSnapshot("app-production", "masked"); ok {
		t.Fatal("a Docker user's volume was registered as app-production@masked")
	}
}

// A reaped operator volume is never made again by a Mount: that was a
// fresh raw @now clone for whoever asked, every time.
func TestReapedOperatorVolumeIsNotRemade(t *testing.T) {
	for _, access := range []string{store.AccessDocker, store.AccessSecret} {
		t.Run(access, func(t *testing.T) {
			d, b, st := newTestDriver(t)
			d.cfg.IdleTTL = time.Minute
			ctx := context.Background()
			v, err := d.Operator().Create(ctx, "mask-work", "app-production@now", access)
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now().Add(2 * time.Minute)
			d.cfg.Now = func() time.Time { return now }
			d.Reap()
			if r, _ := st.Get(v.Name); r.Attachment("") != nil || b.Count(storage.KindClone) != 0 {
				t.Fatalf("the idle operator volume was not reaped: %+v", r)
			}
			snaps := b.Count(storage.KindSnapshot)
			_, err = d.Mount(&volume.MountRequest{Name: v.Name, ID: "ci"})
			if !isOperatorRefusal(err) || !strings.Contains(err.Error(), "recreate it") || !strings.Contains(err.Error(), "snapvol volume create "+v.Name+" --from app-production@now") {
				t.Fatalf("Mount of a reaped operator volume: %v, want a refusal saying how to recreate it", err)
			}
			if b.Count(storage.KindClone) != 0 || b.Count(storage.KindSnapshot) != snaps {
				t.Fatalf("the refused Mount made a clone or a snapshot: %d clones, %d snapshots (was %d)", b.Count(storage.KindClone), b.Count(storage.KindSnapshot), snaps)
			}
			if _, err := d.Operator().CreateSnapshot(ctx, "app-production", "masked", v.Name, false); !errors.Is(err, ErrNoSuchVolume) || !strings.Contains(err.Error(), "recreate") {
				t.Fatalf("snapshot create --from a reaped operator volume: %v", err)
			}
		})
	}
}

// The opt-ins. --docker: a Docker volume under SOURCES at every Mount,
// listed and removable. --secret: mounted by its secret name whatever
// SOURCES says (the masking container), neither listed nor removable
// through Docker.
func TestOperatorVolumeOptIns(t *testing.T) {
	d, _, st := newTestDriver(t)
	ctx := context.Background()
	shared, err := d.Operator().Create(ctx, "fixture", "app-production@now", store.AccessDocker)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := d.Operator().Create(ctx, "mask", "app-production@now", store.AccessSecret)
	if err != nil {
		t.Fatal(err)
	}
	if shared.Access != "docker" || secret.Access != "secret" {
		t.Fatalf("snapvol ls access: %q, %q", shared.Access, secret.Access)
	}
	listed := map[string]bool{}
	l, _ := d.List()
	for _, v := range l.Volumes {
		listed[v.Name] = true
	}
	if !listed["fixture"] || listed[secret.Name] {
		t.Fatalf("Docker's List: %v; want fixture and not the secret volume", listed)
	}
	for _, name := range []string{"fixture", secret.Name} {
		if _, err := d.Get(&volume.GetRequest{Name: name}); err != nil {
			t.Fatalf("Docker's Get of %s: %v", name, err)
		}
	}
	// SOURCES narrowed to the masked snapshots: the shared volume (a raw
	// @now clone) is refused at its next Mount; the secret one is not.
	d.cfg.Sources = policy(t, "app-production@masked*")
	if _, err := d.Mount(&volume.MountRequest{Name: "fixture", ID: "ci"}); !errors.Is(err, ErrNotAllowed) || !strings.Contains(err.Error(), "SOURCES") {
		t.Fatalf("Mount of a --docker operator volume SOURCES forbids: %v", err)
	}
	if _, err := d.Mount(&volume.MountRequest{Name: secret.Name, ID: "masker"}); err != nil {
		t.Fatalf("Mount of the secret volume: %v", err)
	}
	if err := d.Unmount(&volume.UnmountRequest{Name: secret.Name, ID: "masker"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(&volume.RemoveRequest{Name: secret.Name}); !isOperatorRefusal(err) {
		t.Fatalf("Docker's Remove of the secret volume: %v", err)
	}
	d.cfg.Sources = nil
	if _, err := d.Mount(&volume.MountRequest{Name: "fixture", ID: "ci"}); err != nil {
		t.Fatalf("Mount of a --docker operator volume SOURCES allows: %v", err)
	}
	if err := d.Unmount(&volume.UnmountRequest{Name: "fixture", ID: "ci"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(&volume.RemoveRequest{Name: "fixture"}); err != nil {
		t.Fatalf("Docker's Remove of a --docker operator volume: %v", err)
	}
	if _, ok := st.Get("fixture"); ok {
		t.Fatal("fixture is still recorded")
	}
	if _, err := d.Operator().Create(ctx, "x", "app-production@now", "everyone"); !errors.Is(err, names.ErrInvalid) {
		t.Fatalf("an unknown access: %v", err)
	}
}
