package driver

import (
	"testing"
	"time"

	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/storage"
)

// What a clone volume's record says beyond its name and source survives
// the round trip through its clone's labels (cloneLabels, then
// recordFromLabels in snapvol recover); a clone labelled before the
// labels existed is what it was, and an operator value this version does
// not know is the operator's with the least access. Root-free; the
// recover itself runs in TestRecoverAfterDeletingTheStore (test/).
func TestCloneLabelsRebuildTheRecord(t *testing.T) {
	zero, hour := time.Duration(0), time.Hour
	for _, want := range []store.Record{
		{Name: "mask-work", Source: "app-production", Ref: "now", Operator: true, Access: store.AccessNone},
		{Name: "mask-0123", Source: "app-production", Ref: "now", Operator: true, Access: store.AccessSecret},
		{Name: "fixture", Source: "app-production", Ref: "masked", Operator: true, Access: store.AccessDocker},
		{Name: "keeper", Source: "app-production", Ref: "latest", TTL: &zero},
		{Name: "hourly", Source: "app-production", Ref: "now", TTL: &hour},
	} {
		l := cloneLabels(&want)
		got := store.Record{Name: want.Name, Source: l[storage.LabelSource], Ref: "latest"}
		recordFromLabels(&got, l, true)
		if got.Source != want.Source || got.Ref != want.Ref || got.Operator != want.Operator || got.Access != want.Access ||
			(got.TTL == nil) != (want.TTL == nil) || got.TTL != nil && *got.TTL != *want.TTL {
			t.Errorf("%s: labels %v rebuild %+v, want %+v", want.Name, l, got, want)
		}
	}

	old := store.Record{Name: "mask-work", Source: "app-production", Ref: "latest"}
	recordFromLabels(&old, storage.CloneLabels("mask-work", "app-production"), true)
	if old.Operator || old.TTL != nil || old.Ref != "latest" {
		t.Errorf("a clone labelled before the operator, ref and ttl labels: %+v, want a Docker clone volume as before", old)
	}

	l := storage.CloneLabels("mask-work", "app-production")
	l[storage.LabelOperator] = "everyone"
	l[storage.LabelTTL] = "-1h"
	l[storage.LabelRef] = "../x"
	odd := store.Record{Name: "mask-work", Source: "app-production", Ref: "latest"}
	recordFromLabels(&odd, l, true)
	if !odd.Operator || odd.Access != store.AccessNone || odd.TTL != nil || odd.Ref != "latest" {
		t.Errorf("labels this version does not know (%v): %+v, want the operator's with access none, IDLE_TTL, ref latest", l, odd)
	}
}
