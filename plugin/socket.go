package main

import (
	"context"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"time"

	"github.com/docker/go-plugins-helpers/sdk"
	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/driver"
	"github.com/snapvol/snapvol/internal/route"
	"github.com/snapvol/snapvol/metrics"
)

// The VolumeDriver socket. go-plugins-helpers' volume.Handler serves the
// protocol on an http.Server of its own, with no body limit and no
// timeouts, and does not expose its handler: a 1 GB request body grew the
// plugin to 4.9 GB, and idle connections were held forever. So the same
// routes are served here, with the helper's request and response types and
// its encoders (sdk.DecodeRequest, sdk.EncodeResponse), on a server with
// limits; TestVolumeAPIMatchesHelper checks every route answers byte for
// byte what the helper's handler answers.

// Limits of the VolumeDriver socket. Docker's largest request is a Create
// with its options, a few hundred bytes; its plugin client keeps
// connections alive between requests and dials again when one was closed.
const (
	// MaxRequestBody is far above any request Docker sends.
	MaxRequestBody = 1 << 20
	// MaxHeaderBytes bounds the request line and headers.
	MaxHeaderBytes = 64 << 10
	// ReadHeaderTimeout closes a connection that sends no complete
	// request header in time, e.g. one opened and left idle.
	ReadHeaderTimeout = 10 * time.Second
	// ReadTimeout bounds reading one whole request, body included.
	ReadTimeout = 30 * time.Second
	// WriteTimeout bounds a request from its header to the end of the
	// answer: longer than any request may run (Docker gives up at 30 s).
	WriteTimeout = 2 * time.Minute
	// IdleTimeout closes a kept-alive connection with no next request.
	IdleTimeout = 30 * time.Second
)

// manifest is what Plugin.Activate answers, as the helper does.
const manifest = `{"Implements": ["VolumeDriver"]}`

// volumeHandler serves the VolumeDriver protocol of d, recording every
// request in m (nil: no metrics).
func volumeHandler(d volume.Driver, m *metrics.Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/Plugin.Activate", func(w http.ResponseWriter, _ *http.Request) {
		start := m.RequestStarted()
		w.Header().Set("Content-Type", sdk.DefaultContentTypeV1_1)
		fmt.Fprintln(w, manifest)
		m.RequestDone("activate", "ok", start)
	})
	// Mount, Unmount and Remove say who sent them (the socket's peer), so
	// a Remove never takes a volume from under another process's mount
	// (driver/caller.go): the driver as that caller sends to it.
	from := func(*http.Request) volume.Driver { return d }
	if as, ok := d.(callerDriver); ok {
		from = func(hr *http.Request) volume.Driver { return as.As(peer(hr)) }
	}
	s := route.Socket{Mux: mux, Wire: helperWire{}, Meter: m}
	route.Handle(s, "/VolumeDriver.Create", "create", func(_ *http.Request, r *volume.CreateRequest) (any, error) {
		return struct{}{}, d.Create(r)
	})
	route.Handle(s, "/VolumeDriver.Remove", "remove", func(hr *http.Request, r *volume.RemoveRequest) (any, error) {
		return struct{}{}, from(hr).Remove(r)
	})
	route.Handle(s, "/VolumeDriver.Mount", "mount", func(hr *http.Request, r *volume.MountRequest) (any, error) {
		return from(hr).Mount(r)
	})
	route.Handle(s, "/VolumeDriver.Path", "path", func(_ *http.Request, r *volume.PathRequest) (any, error) { return d.Path(r) })
	route.Handle(s, "/VolumeDriver.Get", "get", func(_ *http.Request, r *volume.GetRequest) (any, error) { return d.Get(r) })
	route.Handle(s, "/VolumeDriver.Unmount", "unmount", func(hr *http.Request, r *volume.UnmountRequest) (any, error) {
		return struct{}{}, from(hr).Unmount(r)
	})
	// List and Capabilities take no request body (the helper reads none).
	route.Handle(s, "/VolumeDriver.List", "list", func(*http.Request, *route.None) (any, error) { return d.List() })
	route.Handle(s, "/VolumeDriver.Capabilities", "capabilities", func(*http.Request, *route.None) (any, error) {
		return d.Capabilities(), nil
	})
	return mux
}

// helperWire encodes as go-plugins-helpers does: a body that is not JSON,
// or too large, is a 400 with the decoder's message (sdk.DecodeRequest);
// an error is {"Err": "..."} with a 500.
type helperWire struct{}

func (helperWire) Decode(w http.ResponseWriter, r *http.Request, v any) bool {
	return sdk.DecodeRequest(w, r, v) == nil
}

func (helperWire) Encode(w http.ResponseWriter, res any, err error) {
	if err != nil {
		sdk.EncodeResponse(w, volume.NewErrorResponse(err.Error()), true)
		return
	}
	sdk.EncodeResponse(w, res, false)
}

// volumeServer is the http.Server of the VolumeDriver socket, with the
// limits above; what net/http has to say (a handler panic, an accept
// error) goes to log.
func volumeServer(h http.Handler, log *logrus.Logger) *http.Server {
	return &http.Server{
		ConnContext:       func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) },
		Handler:           http.MaxBytesHandler(h, MaxRequestBody),
		MaxHeaderBytes:    MaxHeaderBytes,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		ErrorLog:          stdlog.New(log.WriterLevel(logrus.WarnLevel), "volume socket: ", 0),
	}
}

// callerDriver is a driver that takes who sent a request.
type callerDriver interface {
	As(driver.Caller) volume.Driver
}

type connKey struct{}

// peer is the process on the other end of the request's connection
// (SO_PEERCRED): CallerUnknown where it has no pid in the plugin's pid
// namespace (dockerd, for a managed plugin) or cannot be read.
func peer(r *http.Request) driver.Caller {
	c, _ := r.Context().Value(connKey{}).(*net.UnixConn)
	if c == nil {
		return driver.CallerUnknown
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return driver.CallerUnknown
	}
	pid := 0
	_ = raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return driver.ProcessCaller(pid)
}
