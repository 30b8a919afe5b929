package driver

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/snapvol/snapvol/storage"
)

// What the driver knows of the storage's state without asking it: Get and
// List answer from memory, so the health of the pool and the bytes each
// clone holds are refreshed by clone attempts and by the background loop,
// and shown from this cache.
type poolState struct {
	mu      sync.Mutex
	health  error // nil: healthy, or not a storage.Checker
	checked bool
	usage   map[string]storage.ObjectUsage
}

// checkHealth asks a storage.Checker backend how it is, logs a change, and
// returns its error (nil when healthy or when the backend cannot tell).
func (d *Driver) checkHealth(ctx context.Context) error {
	c, ok := d.b.(storage.Checker)
	if !ok {
		return nil
	}
	err := c.Health(ctx)
	d.pool.mu.Lock()
	was, checked := d.pool.health, d.pool.checked
	d.pool.health, d.pool.checked = err, true
	d.pool.mu.Unlock()
	switch {
	case err != nil && (was == nil || was.Error() != err.Error()):
		d.log.WithError(err).Error("storage unhealthy: new clones are refused until it is repaired")
	case err == nil && was != nil && checked:
		d.log.Info("storage healthy again: new clones are made")
	}
	return err
}

// refreshUsage reloads the bytes each object holds (a storage.Usager).
func (d *Driver) refreshUsage(ctx context.Context) {
	u := d.objectUsage(ctx)
	d.pool.mu.Lock()
	d.pool.usage = u
	d.pool.mu.Unlock()
}

// cachedUsage is what the last refresh knew of object id.
func (d *Driver) cachedUsage(id string) (storage.ObjectUsage, bool) {
	d.pool.mu.Lock()
	defer d.pool.mu.Unlock()
	u, ok := d.pool.usage[id]
	return u, ok
}

// poolHealth is what Status shows of the storage: "" when the backend
// cannot tell, "healthy", or why it is not.
func (d *Driver) poolHealth() string {
	d.pool.mu.Lock()
	defer d.pool.mu.Unlock()
	switch {
	case !d.pool.checked:
		return ""
	case d.pool.health != nil:
		return "unhealthy: " + d.pool.health.Error()
	}
	return "healthy"
}

// errUnhealthy refuses a new clone of volume on unhealthy storage.
func errUnhealthy(volName string, err error) error {
	return fmt.Errorf("volume %q: %w; new clones are refused until the storage is repaired (existing volumes keep answering)", volName, err)
}

// watchPool refreshes health and usage; Run calls it every sweep.
func (d *Driver) watchPool() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = d.checkHealth(ctx)
	d.refreshUsage(ctx)
}
