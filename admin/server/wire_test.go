package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/snapvol/snapvol/driver"
	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/internal/route"
	"github.com/snapvol/snapvol/storage"
)

// statusBefore is the admin socket's own error table as it was before the
// status came from the one error table (metrics/classes.go), kept here to
// show every kind of error still gets the status it got.
func statusBefore(err error) int {
	switch {
	case errors.Is(err, driver.ErrNoSuchVolume), errors.Is(err, driver.ErrNoSource), errors.Is(err, storage.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, driver.ErrInUse), errors.Is(err, driver.ErrExists), errors.Is(err, storage.ErrProtected):
		return http.StatusConflict
	case errors.Is(err, names.ErrInvalid), errors.Is(err, errBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, storage.ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func TestStatusIsTheOneTablesAsBefore(t *testing.T) {
	errs := []error{
		driver.ErrNoSuchVolume, driver.ErrNoSource, storage.ErrNotFound, driver.ErrInUse, driver.ErrExists,
		storage.ErrProtected, names.ErrInvalid, fmt.Errorf("%w: unexpected EOF", errBadRequest), storage.ErrUnavailable,
		driver.ErrNotAllowed, fmt.Errorf("%w: %w: x", driver.ErrNotAllowed, driver.ErrOperatorVolume),
		context.DeadlineExceeded, fmt.Errorf("%w: gave up: %w", driver.ErrLockTimeout, context.DeadlineExceeded),
		storage.ErrNoSpace, storage.ErrUnhealthy, storage.ErrBusy, storage.ErrDenied, context.Canceled, errors.New("other"),
	}
	for _, e := range errs {
		err := fmt.Errorf("volume %q: %w", "v", e)
		if got, want := status(err), statusBefore(err); got != want {
			t.Errorf("%v: status %d, before %d", err, got, want)
		}
	}
}

// A body the admin API cannot read is a 400 saying "bad request" and why;
// a route that answers nothing is a 204; JSON it has is written as it is.
func TestWireAnswers(t *testing.T) {
	mux := http.NewServeMux()
	sk := route.Socket{Mux: mux, Wire: wire{}}
	route.Handle(sk, "POST /body", "body", func(*http.Request, *struct{ Name string }) (any, error) { return nil, nil })
	route.Handle(sk, "GET /raw", "raw", func(*http.Request, *route.None) (any, error) { return []byte("[\n{}]"), nil })
	for _, c := range []struct {
		method, path, body string
		code               int
		answer             string
	}{
		{"POST", "/body", "{", http.StatusBadRequest, `{"error":"bad request: unexpected EOF"}` + "\n"},
		{"POST", "/body", `{"Name":"x"}`, http.StatusNoContent, ""},
		{"GET", "/raw", "", http.StatusOK, "[\n{}]"},
	} {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest(c.method, c.path, strings.NewReader(c.body)))
		if w.Code != c.code || w.Body.String() != c.answer || w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s %s %q: %d %q (%s), want %d %q", c.method, c.path, c.body, w.Code, w.Body.String(), w.Header().Get("Content-Type"), c.code, c.answer)
		}
	}
}
