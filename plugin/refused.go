package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/mountpoint"
)

// A managed plugin that refuses to start. docker plugin enable only dials
// the plugin's socket: when nothing listens it fails after about 13 s with
// "dial unix …/snapvol.sock: no such file or directory", and the reason is
// only in dockerd's log, under the plugin's ID and with paths as the
// plugin sees them. So a refused managed plugin serves its socket with no
// state behind it: every VolumeDriver call answers the refusal, and docker
// run -v, docker volume create/inspect/rm and docker volume ls (a warning)
// print it to the user who typed them, with host paths. Nothing is opened
// or written: the refusal stands until the plugin is disabled, set right
// and enabled again.
//
// Docker forgets its own record of a volume whose Get fails (its labels and
// -o options; at a dockerd start while refused, the record itself). The
// volume is the plugin's: once the plugin serves again its List and Get
// give it back to Docker, data and mount counts untouched.

// refusedDriver answers every request with why the plugin does not serve.
type refusedDriver struct{ why error }

func (r refusedDriver) Create(*volume.CreateRequest) error { return r.why }
func (r refusedDriver) List() (*volume.ListResponse, error) {
	return nil, r.why
}
func (r refusedDriver) Get(*volume.GetRequest) (*volume.GetResponse, error) { return nil, r.why }
func (r refusedDriver) Remove(*volume.RemoveRequest) error                  { return r.why }
func (r refusedDriver) Path(*volume.PathRequest) (*volume.PathResponse, error) {
	return nil, r.why
}
func (r refusedDriver) Mount(*volume.MountRequest) (*volume.MountResponse, error) {
	return nil, r.why
}
func (r refusedDriver) Unmount(*volume.UnmountRequest) error { return r.why }
func (r refusedDriver) Capabilities() *volume.CapabilitiesResponse {
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: "local"}}
}

// serveRefused serves the managed plugin's socket with the refusal until
// SIGTERM, then returns the refusal (the exit status stays 78).
func serveRefused(cause error, log *logrus.Logger) error {
	msg := "snapvol is not serving: " + hostPaths(cause.Error()) +
		" (then: docker plugin disable -f snapvol; docker plugin enable snapvol)"
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	sock := defaults["SOCKET"] // fixed in managed mode
	l, err := listen(sock)
	if err != nil {
		log.WithError(err).Error("snapvol cannot serve its refusal either: waiting to be stopped")
		<-ctx.Done()
		return cause
	}
	srv := volumeServer(volumeHandler(refusedDriver{errors.New(msg)}, nil), log)
	go func() { _ = srv.Serve(l) }()
	log.WithField("socket", sock).Error(msg + ": every Docker request answers this until then")
	<-ctx.Done()
	_ = srv.Close()
	os.Remove(sock)
	return cause
}

// hostPaths rewrites, in a managed plugin's message, the paths of its two
// host mounts (STATE_DIR, the state mount; DATA_ROOT, the propagated
// mount) as the host names them, so a user can act on them from the host.
func hostPaths(msg string) string {
	for _, in := range []string{defaults["STATE_DIR"], defaults["DATA_ROOT"]} {
		root, ok := mountpoint.MountRoot(filepath.Clean(in))
		if !ok || root == "/" || root == in {
			continue
		}
		msg = replacePathPrefix(msg, in, root)
	}
	return msg
}

// replacePathPrefix replaces in with host where in stands as a whole path
// or a path's first directories, never inside a longer name.
func replacePathPrefix(msg, in, host string) string {
	var b strings.Builder
	for {
		i := strings.Index(msg, in)
		if i < 0 {
			b.WriteString(msg)
			return b.String()
		}
		end := i + len(in)
		after := end == len(msg) || msg[end] == '/' || !isPathByte(msg[end]) ||
			msg[end] == '.' && (end+1 == len(msg) || msg[end+1] == ' ')
		whole := (i == 0 || !isPathByte(msg[i-1])) && after
		b.WriteString(msg[:i])
		if whole {
			b.WriteString(host)
		} else {
			b.WriteString(in)
		}
		msg = msg[end:]
	}
}

func isPathByte(c byte) bool {
	return c == '/' || c == '.' || c == '-' || c == '_' ||
		'0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}
