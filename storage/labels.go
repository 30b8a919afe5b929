package storage

// The label schema: every object the plugin makes carries labels saying so,
// what it is and whom it belongs to, so reconcile finds what it owns
// without trusting its own database. Backends store them (local: a file
// beside the object, written first; portworx: the volume locator's labels)
// and never decide on their own which labels an object gets: they call the
// constructors here and classify with KindOf.
const (
	LabelOwner  = "snapvol"        // always "1" on plugin-made objects
	LabelKind   = "snapvol.kind"   // "volume", "snapshot" or "clone"
	LabelVolume = "snapvol.volume" // the Docker volume a clone belongs to
	LabelSource = "snapvol.source" // the source name a snapshot was taken of
	// LabelSourceID is the Identity of the source a snapshot belongs to,
	// which a name is not: a removed source's name may be given to a new
	// volume, which must not inherit the old one's snapshots. Backends set
	// it in Snapshot; a caller that snapshots something else on a source's
	// behalf (a clone of it, after masking) sets it to the source's.
	LabelSourceID = "snapvol.source-id"
	// LabelInstance names the snapvol instance (one state database) that
	// made an object: a Portworx cluster is shared by hosts whose clones
	// are each their own, so one host's sweep must not destroy another's.
	LabelInstance = "snapvol.instance"
	// LabelHost is the hostname, for people reading pxctl output.
	LabelHost = "snapvol.host"
	// LabelName is the name the backend gave the object, where objects
	// inherit their parent's labels (OpenStorage: a clone carries its
	// snapshot's, a snapshot Portworx takes carries its volume's): labels
	// naming another object describe that one, not this.
	LabelName = "snapvol.name"
	// LabelSecretKey (OpenStorage) names the per-volume secret a clone of
	// an encrypted volume is attached with: the key's name in the
	// cluster's secret store, which Portworx needs on every attach, never
	// the passphrase itself.
	LabelSecretKey = "snapvol.secret-key"
	// LabelCreated marks a regular volume the plugin created (an explicit
	// docker volume create of a plain name): only those may be deleted.
	// Kept beside LabelKind because objects made before LabelKind have it.
	LabelCreated = "snapvol.created"
)

// VolumeLabels are the labels of a regular volume the plugin creates.
func VolumeLabels() map[string]string {
	return map[string]string{LabelOwner: "1", LabelKind: string(KindVolume), LabelCreated: "1"}
}

// SnapshotLabels are the labels of a snapshot the plugin takes of source.
func SnapshotLabels(source string) map[string]string {
	return map[string]string{LabelOwner: "1", LabelKind: string(KindSnapshot), LabelSource: source}
}

// CloneLabels are the labels of the clone Docker volume volume makes of a
// snapshot of source.
func CloneLabels(volume, source string) map[string]string {
	return map[string]string{LabelOwner: "1", LabelKind: string(KindClone), LabelVolume: volume, LabelSource: source}
}

// KindOf says what a plugin-made object is from its labels alone, and
// whether the plugin made it at all. Objects labelled before LabelKind
// existed follow the rule the code used then: a regular volume carries
// LabelCreated, a clone names its volume, a snapshot does not.
func KindOf(labels map[string]string) (Kind, bool) {
	if labels[LabelOwner] != "1" && labels[LabelCreated] != "1" {
		return "", false
	}
	switch k := Kind(labels[LabelKind]); k {
	case KindVolume, KindSnapshot, KindClone:
		return k, true
	}
	switch {
	case labels[LabelCreated] == "1":
		return KindVolume, true
	case labels[LabelVolume] != "":
		return KindClone, true
	}
	return KindSnapshot, true
}

// SnapshotParent is the Identity of the source a snapshot belongs to: the
// one its LabelSourceID names, or, for a snapshot without it (taken by
// hand, or by snapvol before the label), takenOf, the Identity of the
// volume the storage says it was taken of.
func SnapshotParent(labels map[string]string, takenOf string) string {
	if id := labels[LabelSourceID]; id != "" {
		return id
	}
	return takenOf
}

// WithSourceID returns labels with LabelSourceID set to identity unless
// they name a source already, leaving labels itself untouched.
func WithSourceID(labels map[string]string, identity string) map[string]string {
	out := make(map[string]string, len(labels)+1)
	for k, v := range labels {
		out[k] = v
	}
	if out[LabelSourceID] == "" && identity != "" {
		out[LabelSourceID] = identity
	}
	return out
}
