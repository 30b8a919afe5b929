package driver

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/snapvol/snapvol/admin"
	"github.com/snapvol/snapvol/driver/sources"
	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/storage"
)

func policy(t *testing.T, list string) *sources.Policy {
	t.Helper()
	p, err := sources.Parse(list)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The masking recipe on the driver: an operator clone, a masked snapshot
// of it registered as app-production@masked, and SOURCES letting Docker
// users clone only that.
func TestMaskedSnapshotRecipe(t *testing.T) {
	d, b, st := newTestDriver(t)
	ctx := context.Background()
	d.cfg.Sources = policy(t, "app-production@masked*")

	// Docker users cannot clone raw production, and the refusal says what
	// they may clone.
	_, err := d.Mount(&volume.MountRequest{Name: "app-production@latest+ci", ID: "1"})
	if !errors.Is(err, ErrNotAllowed) || !strings.Contains(err.Error(), "SOURCES=app-production@masked*") || !strings.Contains(err.Error(), "masked*") {
		t.Fatalf("raw production: %v", err)
	}
	if _, err := d.Get(&volume.GetRequest{Name: "app-production@latest+ci"}); err == nil {
		t.Fatal("a forbidden ref is claimed")
	}

	// The operator's volume is made now, under a secret name the masking
	// container mounts whatever SOURCES says.
	v, err := d.Operator().Create(ctx, "mask", "app-production@now", store.AccessSecret)
	if err != nil {
		t.Fatal(err)
	}
	work := v.Name
	if v.Kind != "operator" || v.Access != "secret" || v.State != "materialized" || v.Snapshot == "" || !strings.HasPrefix(work, "mask-") || len(work) != len("mask-")+32 {
		t.Fatalf("operator volume: %+v", v)
	}
	if _, err := d.Operator().Create(ctx, work, "app-production", store.AccessNone); !errors.Is(err, ErrExists) {
		t.Fatalf("a second create of %s: %v", work, err)
	}
	if _, err := d.Mount(&volume.MountRequest{Name: work, ID: "m"}); err != nil {
		t.Fatalf("Docker mount of the operator's secret volume under SOURCES: %v", err)
	}
	if err := d.Unmount(&volume.UnmountRequest{Name: work, ID: "m"}); err != nil {
		t.Fatal(err)
	}

	masked, err := d.Operator().CreateSnapshot(ctx, "app-production", "masked", work, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Operator().CreateSnapshot(ctx, "app-production", "masked", work, false); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "--replace") {
		t.Fatalf("creating an existing name without --replace: %v", err)
	}
	if err := d.Operator().Remove(ctx, work); err != nil {
		t.Fatal(err)
	}

	// CI clones the masked snapshot.
	if _, err := d.Mount(&volume.MountRequest{Name: "app-production@masked+ci", ID: "1"}); err != nil {
		t.Fatalf("CI mount of the masked snapshot: %v", err)
	}
	r, _ := st.Get("app-production@masked+ci")
	if got := r.Attachment("").Snapshot; got != masked.Object {
		t.Fatalf("CI cloned %s, want the masked snapshot %s", got, masked.Object)
	}

	// A refresh moves the name; the running clone keeps the old snapshot.
	v2, err := d.Operator().Create(ctx, "mask", "app-production@now", store.AccessSecret)
	if err != nil {
		t.Fatal(err)
	}
	if v2.Name == work {
		t.Fatal("two secret volumes got one name")
	}
	work = v2.Name
	masked2, err := d.Operator().CreateSnapshot(ctx, "app-production", "masked", work, true)
	if err != nil {
		t.Fatal(err)
	}
	if masked2.Object == masked.Object {
		t.Fatal("--replace did not make a new snapshot")
	}
	snaps, err := d.Operator().SnapshotsOf(ctx, "app-production")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]admin.Snapshot{}
	for _, s := range snaps {
		kinds[s.Object] = s
	}
	if s := kinds[masked2.Object]; s.Name != "masked" || s.Kind != "named" || s.From != work {
		t.Errorf("snapshot ls of the new masked snapshot: %+v", s)
	}
	if s, ok := kinds[masked.Object]; !ok || len(s.Clones) != 1 || s.Clones[0] != "app-production@masked+ci" {
		t.Errorf("the old masked snapshot, still used by CI's clone: %+v (%v)", s, ok)
	}
	if err := d.Operator().RemoveSnapshot(ctx, "app-production", "masked"); err != nil {
		t.Fatalf("removing the new masked snapshot, which no clone uses: %v", err)
	}
	if _, err := d.Operator().CreateSnapshot(ctx, "app-production", "masked", work, false); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(&volume.RemoveRequest{Name: "app-production@masked+ci"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Owned(ctx); err != nil {
		t.Fatal(err)
	}
	owned, _ := b.Owned(ctx)
	for _, o := range owned {
		if o.ID == masked.Object {
			t.Fatal("the old masked snapshot outlived its last clone")
		}
	}
}

// snapshot rm is refused while clones use the snapshot, naming them, and
// for snapshots snapvol did not take.
func TestRemoveSnapshotRefusals(t *testing.T) {
	d, b, _ := newTestDriver(t)
	ctx := context.Background()
	if _, err := d.Operator().CreateSnapshot(ctx, "app-production", "nightly", "", false); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Mount(&volume.MountRequest{Name: "app-production@nightly+a", ID: "1"}); err != nil {
		t.Fatal(err)
	}
	err := d.Operator().RemoveSnapshot(ctx, "app-production", "nightly")
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "app-production@nightly+a") {
		t.Fatalf("removing a snapshot a clone uses: %v", err)
	}
	src, _ := b.Volume(ctx, "app-production")
	if _, err := b.ForeignSnapshot(ctx, src, "by-hand"); err != nil {
		t.Fatal(err)
	}
	if err := d.Operator().RemoveSnapshot(ctx, "app-production", "by-hand"); !errors.Is(err, storage.ErrProtected) {
		t.Fatalf("removing a snapshot made by hand: %v", err)
	}
	for _, bad := range []string{"latest", "now", "each", "a/b", ""} {
		if _, err := d.Operator().CreateSnapshot(ctx, "app-production", bad, "", false); err == nil {
			t.Errorf("snapshot named %q accepted", bad)
		}
	}
}

// A schedule keeps the newest N scheduled snapshots, never expires a named
// one, survives a restart (it is in the store), and @latest reuses a young
// scheduled snapshot instead of taking its own.
func TestScheduleKeepsNewestAndLatestReusesThem(t *testing.T) {
	d, b, st := newTestDriver(t)
	ctx := context.Background()
	if _, err := d.Operator().CreateSnapshot(ctx, "app-production", "keepme", "", false); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Operator().SetSchedule(ctx, "app-production", time.Second, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Operator().SetSchedule(ctx, "app-production", time.Millisecond, 2); err == nil {
		t.Fatal("a schedule shorter than 1s accepted")
	}
	if _, err := d.Operator().SetSchedule(ctx, "nope", time.Second, 2); !errors.Is(err, ErrNoSource) {
		t.Fatalf("a schedule of a missing source: %v", err)
	}
	base := time.Now()
	for i := 0; i < 4; i++ {
		at := base.Add(time.Duration(i) * time.Second)
		d.cfg.Now = func() time.Time { return at }
		d.takeScheduled(st.Schedules()[0], at.UTC())
	}
	var scheduled, named int
	for _, reg := range st.RegisteredSnapshots("app-production") {
		switch reg.Kind {
		case storage.TakenScheduled:
			scheduled++
		case storage.TakenNamed:
			named++
		}
	}
	if scheduled != 2 || named != 1 {
		t.Fatalf("%d scheduled and %d named snapshots registered, want 2 and 1", scheduled, named)
	}
	if n := b.Count(storage.KindSnapshot); n != 3 {
		t.Fatalf("%d snapshots in the backend, want 3 (expired ones collected)", n)
	}
	before := b.Count(storage.KindSnapshot)
	if _, err := d.Mount(&volume.MountRequest{Name: "app-production@latest+l", ID: "1"}); err != nil {
		t.Fatal(err)
	}
	if n := b.Count(storage.KindSnapshot); n != before {
		t.Fatal("@latest took a snapshot of its own though a scheduled one is seconds old")
	}
	if err := d.Operator().ClearSchedule("app-production"); err != nil {
		t.Fatal(err)
	}
	if n := len(st.Schedules()); n != 0 {
		t.Fatalf("%d schedules after --off", n)
	}
}

// SOURCES is checked at every Mount, not only when the record was made:
// narrowing it stops an existing volume from being cloned again.
func TestNarrowedSourcesApplyToExistingVolumes(t *testing.T) {
	d, _, _ := newTestDriver(t)
	const name = "app-production@latest+old"
	if err := d.Create(&volume.CreateRequest{Name: name}); err != nil {
		t.Fatal(err)
	}
	d.cfg.Sources = policy(t, "other-*")
	_, err := d.Mount(&volume.MountRequest{Name: name, ID: "1"})
	if !errors.Is(err, ErrNotAllowed) || !strings.Contains(err.Error(), "SOURCES=other-*") || !strings.Contains(err.Error(), name) {
		t.Fatalf("Mount under narrowed SOURCES: %v", err)
	}
}

// A removed source takes its registered names and schedule with it: a new
// volume of the same name does not resolve the old one's snapshots.
func TestRemovedSourceForgetsItsNames(t *testing.T) {
	d, _, st := newTestDriver(t)
	ctx := context.Background()
	if _, err := d.Operator().CreateSnapshot(ctx, "app-production", "nightly", "", false); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Operator().SetSchedule(ctx, "app-production", time.Hour, 1); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(&volume.RemoveRequest{Name: "app-production"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(&volume.CreateRequest{Name: "app-production"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(&volume.CreateRequest{Name: "app-production@nightly+x"}); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("the new app-production resolved the old one's nightly: %v", err)
	}
	if n := len(st.Schedules()); n != 0 {
		t.Fatalf("the removed source's schedule survived: %d", n)
	}
}
