package storage

// What a clone volume's record says beyond its name and source ("clone
// volume" in the glossary, docs/design.md), written on its clones so
// snapvol recover can rebuild the record when the store is lost. labels.go
// holds the schema every object's labels follow; this file, the labels a
// clone carries of its clone volume. Without these a recovered operator
// volume came back as a Docker clone volume (listed, mountable under
// SOURCES, removable through Docker: a --secret clone of raw production
// handed to every Docker user), a -o ttl=0 clone was reaped after
// IDLE_TTL, and a plain-named clone of @now came back as @latest. A clone
// labelled before these existed carries none of them and is what it was:
// a Docker clone volume, IDLE_TTL, its ref from its snapshot's registered
// name.
const (
	// LabelOperator marks the clone of an operator volume (snapvol volume
	// create) and says what Docker users may do with it: OperatorNone,
	// OperatorDocker or OperatorSecret. Absent: not an operator volume.
	LabelOperator = "snapvol.operator"
	// LabelRef is the ref the volume asked for (latest, now or a snapshot
	// name); the grammar name says it too, a plain name (-o from=, snapvol
	// volume create) does not.
	LabelRef = "snapvol.ref"
	// LabelTTL is the volume's -o ttl as a Go duration ("0s": never
	// reaped); absent: IDLE_TTL applies.
	LabelTTL = "snapvol.ttl"

	OperatorNone   = "none"
	OperatorDocker = "docker"
	OperatorSecret = "secret"
)
