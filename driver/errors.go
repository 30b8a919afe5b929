package driver

import "errors"

// Sentinel errors callers branch on; every returned error wraps one of
// these or a storage/names sentinel and names the volume.
var (
	ErrNoSuchVolume = errors.New("no such volume")
	ErrInUse        = errors.New("volume in use")
	ErrNotAllowed   = errors.New("source not allowed")
	ErrNoSource     = errors.New("source volume does not exist")
)
