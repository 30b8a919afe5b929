package storage

import "time"

// SnapshotName is the name a backend gives a snapshot it takes at t:
// "snapvol-YYYYMMDD-HHMMSS-" and 8 random hex digits. It is a valid
// snapvol word, so users can name the snapshot as @REF, and the random
// part keeps names taken in one second apart (on Portworx also those of
// two snapvols sharing a cluster, where names are unique). Nothing parses
// it: when a snapshot was taken is in its metadata.
func SnapshotName(t time.Time) string {
	return "snapvol-" + t.UTC().Format("20060102-150405") + "-" + RandomHex(4)
}
