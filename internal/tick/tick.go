// Package tick runs a function at a fixed interval until its context
// ends: the one loop the plugin's background work (the reaper, snapshot
// schedules, the quota refresh, the systemd watchdog) is driven by.
package tick

import (
	"context"
	"time"
)

// Every calls f every interval, the first time one interval from now,
// until ctx ends; it returns once ctx has ended, never while f runs. A
// call that takes longer than the interval delays the next one (ticks
// are dropped, not queued), as a time.Ticker does. interval must be
// positive.
func Every(ctx context.Context, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}
