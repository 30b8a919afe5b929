package portworx

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/snapvol/snapvol/storage"
)

// ErrEndpoint: what answers at PX_ENDPOINT is not an OpenStorage REST v1
// API (another port of Portworx, such as the SDK gateway, or another
// server). Callers treat it as a setting to fix, not an outage to wait out.
var ErrEndpoint = errors.New("not an OpenStorage REST v1 endpoint")

// How a current OpenStorage server reports errors. Its REST v1 handlers
// (api/server/volume.go) forward to its gRPC SDK and pass the gRPC error
// on as text, "rpc error: code = <Code> desc = <message>": in a 200 body
// for create, delete, snapshot and the set actions, as plain text with
// 400 (set with a spec, inspect by VolumeID, snapshot enumerate), 404
// (inspect by path) or 500 (enumerate). Servers before the SDK (and
// openstorage v1.0.0) pass the driver's text on bare. There is no
// not-found status: a missing volume is an empty inspect answer or one of
// the messages below, never an HTTP 404, which only a router gives (a
// wrong PX_ENDPOINT).
var rpcErrorRe = regexp.MustCompile(`rpc error: code = (\w+) desc = (.*)`)

// missingVolumeRe are the messages that mean "no such volume": the SDK's
// (VolumeServer.Inspect, used by every call on a volume ID: "Volume id %s
// not found"; SnapshotCreate's driver path "Id %s not found"; Clone's
// "unable to get parent volume information"; older SDKs' "No volumes found
// for locator" and "Volume %s was not found") and the pre-SDK ones (the
// v1.0.0 REST delete's "Volume %s does not exist", volume.ErrEnoEnt
// "Volume does not exist.").
var missingVolumeRe = regexp.MustCompile(`^(?:` + strings.Join([]string{
	`Volume id \S+ not found`,
	`Id \S+ not found`,
	`unable to get parent volume information: .*`,
	`No volumes found for locator.*`,
	`Volume \S+ was not found`,
	`Volume \S+ does not exist\.?`,
	`Volume does not exist\.?`,
}, "|") + `)$`)

// The SDK's authentication interceptor (api/server/sdk/server_interceptors.go):
// these are about the token itself, the others with code PermissionDenied
// about what its user may do.
var tokenTexts = []string{
	"Invalid or missing authentication token",
	"Unable to obtain token issuer",
	"Unable to obtain issuer from token",
	"is not a trusted issuer",
	"Unable to authenticate token",
	"Access denied without authentication token",
	"Request unauthenticated with bearer",
}

// classify turns an error the server reported (code is the HTTP status,
// 200 for errors carried in a body) into an error naming the operation,
// wrapping the sentinel callers branch on.
func (r *rest) classify(what string, code int, msg string) error {
	msg = strings.TrimSpace(msg)
	if len(msg) > 512 {
		msg = msg[:512] + "…"
	}
	rpcCode, desc := "", msg
	if m := rpcErrorRe.FindStringSubmatch(msg); m != nil {
		rpcCode, desc = m[1], strings.TrimSpace(m[2])
	}
	switch {
	case missingVolumeRe.MatchString(desc):
		return fmt.Errorf("%s: %w: %s", what, storage.ErrNotFound, msg)
	case rpcCode == "Unauthenticated" || (rpcCode == "PermissionDenied" || rpcCode == "") && tokenText(desc):
		return fmt.Errorf("%s: %w: the OpenStorage server at %s did not accept PX_TOKEN (%s): it is wrong, expired, not signed by an issuer the cluster trusts, or missing: %s",
			what, storage.ErrDenied, r.endpoint, tokenState(r.token), msg)
	case rpcCode == "PermissionDenied":
		return fmt.Errorf("%s: %w: PX_TOKEN's user may not do this on the OpenStorage server at %s; snapvol needs an admin token (clones and snapshots of other users' volumes, and deleting them): %s",
			what, storage.ErrDenied, r.endpoint, msg)
	case rpcCode == "Unavailable" || rpcCode == "DeadlineExceeded" || rpcCode == "ResourceExhausted" || rpcCode == "Aborted":
		return fmt.Errorf("%s: %w: the OpenStorage server at %s is not ready: %s", what, storage.ErrUnavailable, r.endpoint, msg)
	case hasSnapsText(desc):
		return fmt.Errorf("%s: %w: the OpenStorage server said: %s", what, storage.ErrBusy, msg)
	case rpcCode != "" || code == http.StatusOK:
		return fmt.Errorf("%s: the OpenStorage server said: %s", what, msg)
	// What follows is HTTP without an OpenStorage error in it: proxies,
	// routers and servers that are not OpenStorage's.
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return fmt.Errorf("%s: %w: the server at %s refused the request (HTTP %d): PX_TOKEN (%s) is wrong, expired or missing: %s",
			what, storage.ErrDenied, r.endpoint, code, tokenState(r.token), msg)
	case code == http.StatusNotFound || code == http.StatusMethodNotAllowed:
		return fmt.Errorf("%s: %w: the server at PX_ENDPOINT=%s has no such route (HTTP %d %q): %s",
			what, ErrEndpoint, r.endpoint, code, msg, portsHint)
	case code == http.StatusServiceUnavailable, code == http.StatusBadGateway, code == http.StatusGatewayTimeout:
		return fmt.Errorf("%s: %w: the OpenStorage server at %s answered HTTP %d: %s", what, storage.ErrUnavailable, r.endpoint, code, msg)
	default:
		return fmt.Errorf("%s: the OpenStorage server at %s answered HTTP %d: %s", what, r.endpoint, code, msg)
	}
}

func tokenText(desc string) bool {
	for _, t := range tokenTexts {
		if strings.Contains(desc, t) {
			return true
		}
	}
	return false
}

func tokenState(tok string) string {
	if tok == "" {
		return "not set"
	}
	return fmt.Sprintf("set, %d characters", len(tok))
}

// hasSnapsText recognises volume.ErrVolHasSnaps ("Volume has snapshots
// associated"): the server keeps a volume while snapshots or clones of it
// exist.
func hasSnapsText(msg string) bool {
	return strings.Contains(strings.ToLower(msg), "has snapshots")
}

// hinted is an error with advice that says more than its sentinel (a
// storage.ErrNotFound that may be a volume hidden by the server's access
// rules): the driver shows Hint instead of its own advice for the
// sentinel.
type hinted struct {
	err  error
	hint string
}

func (h *hinted) Error() string { return h.err.Error() + "; " + h.hint }
func (h *hinted) Unwrap() error { return h.err }

// Hint is the advice, for callers that show it in place of their own.
func (h *hinted) Hint() string { return h.hint }
