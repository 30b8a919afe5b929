package storage

import "testing"

// KindOf classifies what the constructors label, and what snapvol labelled
// before LabelKind existed: those objects are still in pools and clusters.
func TestKindOf(t *testing.T) {
	for _, c := range []struct {
		what   string
		labels map[string]string
		kind   Kind
		ours   bool
	}{
		{"VolumeLabels", VolumeLabels(), KindVolume, true},
		{"SnapshotLabels", SnapshotLabels("app"), KindSnapshot, true},
		{"CloneLabels", CloneLabels("app@latest", "app"), KindClone, true},
		{"old clone", map[string]string{LabelOwner: "1", LabelVolume: "app@latest", LabelSource: "app"}, KindClone, true},
		{"old snapshot", map[string]string{LabelOwner: "1", LabelSource: "app"}, KindSnapshot, true},
		{"old portworx volume (no owner label)", map[string]string{LabelCreated: "1", LabelInstance: "0123456789abcdef", LabelHost: "h"}, KindVolume, true},
		{"kind wins over the old rule", map[string]string{LabelOwner: "1", LabelKind: "snapshot", LabelVolume: "x"}, KindSnapshot, true},
		{"unknown kind falls back", map[string]string{LabelOwner: "1", LabelKind: "bogus"}, KindSnapshot, true},
		{"no labels", nil, "", false},
		{"someone else's", map[string]string{"team": "ci", LabelVolume: "x"}, "", false},
		{"owner not 1", map[string]string{LabelOwner: "yes", LabelKind: "clone"}, "", false},
	} {
		kind, ours := KindOf(c.labels)
		if kind != c.kind || ours != c.ours {
			t.Errorf("%s: KindOf(%v) = %q, %v; want %q, %v", c.what, c.labels, kind, ours, c.kind, c.ours)
		}
		if got := (Object{Labels: c.labels}).Owned(); got != c.ours {
			t.Errorf("%s: Owned() = %v, want %v", c.what, got, c.ours)
		}
	}
}

func TestSnapshotParent(t *testing.T) {
	if got := SnapshotParent(nil, "u1"); got != "u1" {
		t.Errorf("unlabelled: %q", got)
	}
	l := WithSourceID(SnapshotLabels("app"), "u1")
	if got := SnapshotParent(l, "u2"); got != "u1" {
		t.Errorf("labelled u1, taken of u2: %q, want the label's", got)
	}
	// A label already naming a source (a snapshot of a clone, registered
	// as its source's) is kept.
	if got := WithSourceID(l, "u3")[LabelSourceID]; got != "u1" {
		t.Errorf("WithSourceID replaced the source: %q", got)
	}
	if _, ok := SnapshotLabels("app")[LabelSourceID]; ok {
		t.Error("WithSourceID changed its argument")
	}
}
