package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/snapvol/snapvol/driver"
	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/metrics"
	"github.com/snapvol/snapvol/storage"
)

// One table names errors for both labels, and each label keeps its own
// values: what a request's outcome and a backend call's error were
// before the two tables became one (plugin/socket.go Outcome and
// metrics/backend.go ErrorClass at 65aeefa).
func TestOneErrorTableTwoLabels(t *testing.T) {
	wrap := func(e error) error { return fmt.Errorf("volume %q: %w", "v", e) }
	for _, c := range []struct {
		err              error
		outcome, backend string
	}{
		{nil, "ok", ""},
		{wrap(names.ErrInvalid), "invalid", "other"},
		{wrap(driver.ErrNoSuchVolume), "not_found", "other"},
		{wrap(driver.ErrNoSource), "no_source", "other"},
		{wrap(driver.ErrNotAllowed), "not_allowed", "other"},
		{wrap(driver.ErrInUse), "in_use", "other"},
		{wrap(storage.ErrNotFound), "error", "not_found"},
		{wrap(storage.ErrUnavailable), "unavailable", "unavailable"},
		{wrap(context.DeadlineExceeded), "timeout", "timeout"},
		{wrap(context.Canceled), "error", "canceled"},
		{wrap(storage.ErrNoSpace), "no_space", "no_space"},
		{wrap(syscall.ENOSPC), "no_space", "no_space"},
		{wrap(syscall.EDQUOT), "no_space", "no_space"},
		{wrap(storage.ErrUnhealthy), "unhealthy", "unhealthy"},
		{wrap(storage.ErrDenied), "error", "denied"},
		{wrap(storage.ErrBusy), "error", "busy"},
		{wrap(storage.ErrProtected), "error", "protected"},
		{wrap(storage.ErrForeign), "error", "foreign"},
		{errors.New("boom"), "error", "other"},
		// Both kinds at once: each label's own order decides.
		{fmt.Errorf("%w: %w", driver.ErrNoSuchVolume, storage.ErrUnavailable), "not_found", "unavailable"},
		{fmt.Errorf("%w: %w", storage.ErrNotFound, storage.ErrUnavailable), "unavailable", "not_found"},
		{fmt.Errorf("%w: %w", context.Canceled, storage.ErrNoSpace), "no_space", "canceled"},
	} {
		if got := metrics.Outcome(c.err); got != c.outcome {
			t.Errorf("Outcome(%v) = %q; want %q", c.err, got, c.outcome)
		}
		if got := metrics.ErrorClass(c.err); got != c.backend {
			t.Errorf("ErrorClass(%v) = %q; want %q", c.err, got, c.backend)
		}
	}
}
