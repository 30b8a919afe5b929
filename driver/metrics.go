package driver

import (
	"time"
)

// What the driver tells an operator beyond its answers: events for
// metrics (Config.Observer, which package metrics implements). (The
// request id on every log line of one request is request.go's.)

// Observer is told what the driver does. Its methods must be cheap and
// must not block: they run inside requests.
type Observer interface {
	// CloneMade: a clone was made (and mounted, and recorded) in took.
	CloneMade(took time.Duration)
	// CloneDestroyed: a clone was unmounted and deleted in took.
	CloneDestroyed(took time.Duration)
	// CloneReaped: the reaper destroyed a clone (each: a +each clone its
	// Unmount left, else an idle one).
	CloneReaped(each bool)
	// Repaired: reconcile repaired something; repair is one of the
	// Repair constants.
	Repaired(repair string)
}

// What reconcile repairs, as Observer.Repaired names it.
const (
	RepairCreate        = "create"         // an interrupted create finished or undone
	RepairRelease       = "release"        // an interrupted clone destruction finished
	RepairRemove        = "remove"         // an interrupted remove finished
	RepairRestoredMount = "restored_mount" // a counted mount made again (e.g. after a restart in a new namespace)
	RepairStaleMount    = "stale_mount"    // a mount no count holds dropped
	RepairStrayMount    = "stray_mount"    // a mount under DATA_ROOT no record knows dropped
	RepairOrphanClone   = "orphan_clone"   // a plugin clone no record owns destroyed
)

type noObserver struct{}

func (noObserver) CloneMade(time.Duration)      {}
func (noObserver) CloneDestroyed(time.Duration) {}
func (noObserver) CloneReaped(bool)             {}
func (noObserver) Repaired(string)              {}

// obs is the configured Observer, or one that does nothing.
func (d *Driver) obs() Observer {
	if d.cfg.Observer == nil {
		return noObserver{}
	}
	return d.cfg.Observer
}
