package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/sirupsen/logrus"
	"github.com/snapvol/snapvol/internal/tick"
)

// systemd's notify protocol, for snapvol run on a host by a Type=notify
// unit (contrib/systemd/snapvol.service): READY=1 once reconcile is done
// and the VolumeDriver socket answers, STOPPING=1 at SIGTERM, WATCHDOG=1
// while the socket keeps answering when the unit sets WatchdogSec. Without
// NOTIFY_SOCKET (a managed plugin, a shell) nothing is sent.
type notifier struct {
	log *logrus.Logger
	on  bool
}

func newNotifier(log *logrus.Logger) *notifier {
	return &notifier{log: log, on: os.Getenv("NOTIFY_SOCKET") != ""}
}

func (n *notifier) send(state string) {
	if !n.on {
		return
	}
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.WithError(err).WithField("state", strings.ReplaceAll(state, "\n", " ")).Warn("systemd notification")
	}
}

func (n *notifier) ready(status string) { n.send(daemon.SdNotifyReady + "\nSTATUS=" + status) }

func (n *notifier) stopping() { n.send(daemon.SdNotifyStopping + "\nSTATUS=stopping") }

// watchdog sends WATCHDOG=1 at half of WatchdogSec for as long as check
// passes, until ctx ends: a plugin whose socket stopped answering stops
// petting the watchdog, and systemd restarts it.
func (n *notifier) watchdog(ctx context.Context, check func(context.Context) error) {
	if !n.on {
		return
	}
	every, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		n.log.WithError(err).Warn("systemd watchdog settings")
		return
	}
	if every <= 0 {
		return
	}
	every /= 2
	n.log.WithField("every", every.String()).Info("systemd watchdog on")
	tick.Every(ctx, every, func() {
		cctx, cancel := context.WithTimeout(ctx, every/2)
		err := check(cctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				n.log.WithError(err).Warn("the VolumeDriver socket does not answer: not petting systemd's watchdog")
			}
			return
		}
		n.send(daemon.SdNotifyWatchdog)
	})
}

// activate asks the VolumeDriver socket what Docker asks a plugin first,
// retrying for up to timeout.
func activate(socket string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		err := activateCtx(ctx, socket)
		if err == nil || ctx.Err() != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func activateCtx(ctx context.Context, socket string) error {
	c := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://plugin/Plugin.Activate", bytes.NewReader([]byte("{}")))
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("VolumeDriver")) {
		return fmt.Errorf("Plugin.Activate answered %s: %s", resp.Status, body)
	}
	return nil
}
