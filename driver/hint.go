package driver

import "errors"

// backendHint is the advice a backend error carries that says more than
// its sentinel (a Hint() string method, e.g. portworx's "PX_TOKEN is not
// set … guest" on a source it cannot see). Where there is one, it is shown
// in place of the driver's own advice for the sentinel, which may be wrong
// then: "create it first" fails on a volume the backend only hides.
func backendHint(err error) (string, bool) {
	var h interface{ Hint() string }
	if errors.As(err, &h) && h.Hint() != "" {
		return h.Hint(), true
	}
	return "", false
}
