package driver

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/snapvol/snapvol/driver/store"
)

// Operator volumes (snapvol volume create) belong to the operator. On
// 65aeefa any Docker user could mount one whatever SOURCES said: mount
// the masking recipe's mask-work during masking and read raw production,
// write into what becomes app-production@masked, remake a fresh raw @now
// clone after the reaper took it, take the name before the operator, or
// remove it and make their own between the masker's end and snapshot
// create --from. So what Docker may do with one is the operator's choice
// at create (Record.Access):
//
//   - AccessNone (the default): nothing. Get and List do not show it (to
//     Docker the name is free, so a run without a driver gets Docker's
//     local driver, never this data); Create, Mount and Remove of its name
//     through the VolumeDriver are refused.
//   - AccessDocker (--docker): a Docker volume like one made with -o
//     from=SOURCE -o ref=REF: listed, removable, and mountable only while
//     SOURCES allows SOURCE@REF (checked at every Mount).
//   - AccessSecret (--secret): for a masking container, which must read
//     the raw data SOURCES keeps from CI. The plugin makes the name: the
//     operator's NAME plus 128 random bits, which nobody can guess or take
//     first; only the operator learns it. It is mountable by that name
//     alone (not listed, SOURCES not applied: the operator handed it to
//     one container), and Docker cannot remove it.
//
// For all three: a clone the reaper destroyed is never made again
// implicitly (a Mount says to recreate the volume: an operator's clone is
// of the moment the operator chose, and a fresh @now behind their back is
// raw production again), and only the operator's commands remove it or
// take a snapshot of it (snapvol snapshot create --from takes nothing
// else: a Docker user's volume holds whatever they wrote). An operator
// create of a name Docker users already have is refused, as is a Docker
// Create of an operator's name: neither side takes the other's.

// ErrOperatorVolume is wrapped (with ErrNotAllowed) by every refusal of a
// Docker request on an operator volume.
var ErrOperatorVolume = errors.New("an operator's volume")

// dockerSees reports whether Docker's Get and Path answer for r.
func dockerSees(r *store.Record) bool {
	return !r.Operator || r.Access == store.AccessDocker || r.Access == store.AccessSecret
}

// dockerLists reports whether Docker's List shows r.
func dockerLists(r *store.Record) bool {
	return !r.Operator || r.Access == store.AccessDocker
}

// errOperatorOnly refuses Docker request what on operator volume r.
func errOperatorOnly(r *store.Record, what string) error {
	return fmt.Errorf("%w: %w: volume %q belongs to the operator (snapvol volume create); Docker users cannot %s it (the operator can share one with snapvol volume create NAME --from SOURCE@REF --docker)",
		ErrNotAllowed, ErrOperatorVolume, r.Name, what)
}

// dockerMount says why a Docker Mount of operator volume r is refused, if
// it is; SOURCES is checked by the caller.
func dockerMount(r *store.Record) error {
	if r.Access != store.AccessDocker && r.Access != store.AccessSecret {
		return errOperatorOnly(r, "mount")
	}
	if r.Attachment("") == nil {
		return errReaped(r)
	}
	return nil
}

// errReaped refuses to remake the clone of operator volume r.
func errReaped(r *store.Record) error {
	return fmt.Errorf("%w: %w: volume %q: its clone was destroyed (idle longer than its ttl) and an operator's volume is never made again behind the operator's back; recreate it: snapvol volume rm %s && snapvol volume create %s --from %s@%s",
		ErrNotAllowed, ErrOperatorVolume, r.Name, r.Name, r.Name, r.Source, r.Ref)
}

// dockerRemove says why a Docker Remove of r is refused, if it is.
func dockerRemove(r *store.Record) error {
	if r.Operator && r.Access != store.AccessDocker {
		return fmt.Errorf("%w: %w: volume %q belongs to the operator (snapvol volume create); remove it with snapvol volume rm %s",
			ErrNotAllowed, ErrOperatorVolume, r.Name, r.Name)
	}
	return nil
}

// secretName is name with 128 random bits appended: the name of an
// AccessSecret volume.
func secretName(name string) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("volume %q: making a secret name: %w", name, err)
	}
	return name + "-" + hex.EncodeToString(b[:]), nil
}
