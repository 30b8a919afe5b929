package metrics

import (
	"context"
	"errors"
	"syscall"

	"github.com/snapvol/snapvol/driver"
	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/fleet"
	"github.com/snapvol/snapvol/storage"
)

// errorClass is one kind of error as the metrics' labels name it. One
// table serves both labels that name errors: a request's outcome
// (snapvol_requests_*, label outcome: Outcome) and a failed backend call
// (snapvol_backend_errors_total, label error: ErrorClass). Each label keeps
// the values it has always had, so a row says which of the two name it: a
// request's outcome has no class for, say, a canceled call (it is "error"),
// and the backend never returns the driver's errors. The first row that
// matches, among those its label names, wins.
type errorClass struct {
	label            string
	request, backend bool // named by Outcome, by ErrorClass
	is               []error
}

var errorClasses = []errorClass{
	{"invalid", true, false, []error{names.ErrInvalid}},
	{"not_found", true, false, []error{driver.ErrNoSuchVolume}},
	{"no_source", true, false, []error{driver.ErrNoSource}},
	{"not_allowed", true, false, []error{driver.ErrNotAllowed}},
	{"in_use", true, false, []error{driver.ErrInUse}},
	{"not_found", false, true, []error{storage.ErrNotFound}},
	{"unavailable", true, true, []error{storage.ErrUnavailable}},
	{"timeout", true, true, []error{context.DeadlineExceeded}},
	{"canceled", false, true, []error{context.Canceled}},
	{"no_space", true, true, []error{storage.ErrNoSpace, syscall.ENOSPC, syscall.EDQUOT}},
	{"unhealthy", true, true, []error{storage.ErrUnhealthy}},
	// The fleet's refusals and failures (a push PUBLISH refuses, a
	// registry that fails a push or a pull), after the kinds above so a
	// pull cut short by a full pool or a deadline keeps its outcome.
	{"not_published", true, false, []error{fleet.ErrPublish}},
	{"registry", true, false, []error{fleet.ErrRegistry}},
	{"denied", false, true, []error{storage.ErrDenied}},
	{"busy", false, true, []error{storage.ErrBusy}},
	{"protected", false, true, []error{storage.ErrProtected}},
	{"foreign", false, true, []error{storage.ErrForeign}},
}

// classify is the label of the first row that matches err among those
// the request label (request) or the backend label names; ok false when
// none does.
func classify(err error, request bool) (label string, ok bool) {
	for _, c := range errorClasses {
		if request && !c.request || !request && !c.backend {
			continue
		}
		for _, e := range c.is {
			if errors.Is(err, e) {
				return c.label, true
			}
		}
	}
	return "", false
}

// ErrorClass names the kind of a backend error for the error label: ""
// for none, "other" for an error no row names.
func ErrorClass(err error) string {
	if err == nil {
		return ""
	}
	if l, ok := classify(err, false); ok {
		return l
	}
	return "other"
}

// Outcome names how a request ended, for the outcome label: "ok", or
// "error" for an error no row names.
func Outcome(err error) string {
	if err == nil {
		return "ok"
	}
	if l, ok := classify(err, true); ok {
		return l
	}
	return "error"
}
