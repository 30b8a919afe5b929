package storage

import (
	"crypto/rand"
	"encoding/hex"
)

// RandomHex is n random bytes as hex: the part of a backend object's name
// that keeps names made in one instant (or by two snapvols on one
// cluster) apart. Every backend draws it here, so there is one helper,
// not one per backend.
func RandomHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf) // crypto/rand.Read does not fail (Go 1.24+ panics instead)
	return hex.EncodeToString(buf)
}
