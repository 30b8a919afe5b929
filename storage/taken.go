package storage

// Why the plugin took a snapshot ("taken" in the glossary, docs/design.md),
// for snapvol snapshot ls and for the @latest rule (which reuses snapshots
// of the source itself, not of a masked clone of it). labels.go holds the
// schema every object's labels follow; this file, the labels of a
// snapshot's reason.
const (
	// LabelTaken says why: TakenPlugin (for @latest or @now), TakenNamed
	// (snapvol snapshot create) or TakenScheduled. Absent on snapshots
	// taken before it existed, which were all TakenPlugin.
	LabelTaken = "snapvol.taken"
	// LabelFrom names the clone volume a snapshot was taken of on its
	// source's behalf (after masking); absent for the source's own.
	LabelFrom = "snapvol.from"
	// LabelRegistered is the name snapvol snapshot create registered a
	// snapshot as (SOURCE@NAME). The registry lives in the store; the
	// label lets snapvol recover rebuild it when the store is lost (with
	// --replace the newest snapshot carrying a name holds it).
	LabelRegistered = "snapvol.registered"

	TakenPlugin    = "plugin"
	TakenNamed     = "named"
	TakenScheduled = "scheduled"
)

// TakenSnapshotLabels are the labels of a snapshot of source the plugin
// takes for the reason taken; from is the clone volume it is taken of,
// "" for the source itself.
func TakenSnapshotLabels(source, taken, from string) map[string]string {
	l := SnapshotLabels(source)
	l[LabelTaken] = taken
	if from != "" {
		l[LabelFrom] = from
	}
	return l
}

// NamedSnapshotLabels are the labels of a snapshot snapvol snapshot
// create takes of source (or of clone volume from) to register as name.
func NamedSnapshotLabels(source, name, from string) map[string]string {
	l := TakenSnapshotLabels(source, TakenNamed, from)
	l[LabelRegistered] = name
	return l
}

// Taken says why the plugin took snapshot o ("" if it did not).
func Taken(o Object) string {
	if !o.Owned() {
		return ""
	}
	if t := o.Labels[LabelTaken]; t != "" {
		return t
	}
	return TakenPlugin
}
