package portworx

// SetDefaultMountDir makes d the MountDir of a Config that leaves it
// empty, so tests that do not name one never mount under the host's
// /var/lib/osd/mounts.
func SetDefaultMountDir(d string) { defaultMountDir = d }
