// Package route serves one HTTP route of a snapvol socket: decode the JSON
// request, call the driver, encode the answer or the error. Both sockets
// use it: the VolumeDriver socket Docker talks to (plugin/socket.go, the
// helper's wire) and the admin socket the snapvol command talks to
// (admin/server, package admin's wire). Each socket brings its Wire; the
// driver makes the request itself where it enters (driver/request.go).
package route

import (
	"net/http"
	"time"

	"github.com/snapvol/snapvol/metrics"
)

// Wire is how one socket encodes its requests and answers.
type Wire interface {
	// Decode reads the body of r into v. When it cannot, it has answered
	// (a 400 saying why) and returns false.
	Decode(w http.ResponseWriter, r *http.Request, v any) bool
	// Encode answers res, or err when it is not nil.
	Encode(w http.ResponseWriter, res any, err error)
}

// Meter counts each request by op and outcome (*metrics.Metrics).
type Meter interface {
	RequestStarted() time.Time
	RequestDone(op, outcome string, start time.Time)
}

// Socket is where routes are served: its mux, its wire, and its meter
// (nil: requests are not counted).
type Socket struct {
	Mux   *http.ServeMux
	Wire  Wire
	Meter Meter
}

// None is the request of a route that reads no body.
type None struct{}

// Handle serves pattern: decode a Req (nothing for None), call, encode
// what call returns; the request counts as op, with the outcome the one
// error table gives (metrics.Outcome), or bad_request when the body could
// not be read.
func Handle[Req any](s Socket, pattern, op string, call func(*http.Request, *Req) (any, error)) {
	s.Mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		var start time.Time
		if s.Meter != nil {
			start = s.Meter.RequestStarted()
		}
		req := new(Req)
		if _, none := any(req).(*None); !none && !s.Wire.Decode(w, r, req) {
			if s.Meter != nil {
				s.Meter.RequestDone(op, "bad_request", start)
			}
			return
		}
		res, err := call(r, req)
		s.Wire.Encode(w, res, err)
		if s.Meter != nil {
			s.Meter.RequestDone(op, metrics.Outcome(err), start)
		}
	})
}
