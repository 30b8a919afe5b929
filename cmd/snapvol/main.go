// Command snapvol is the operator's command on a Docker host: it talks to
// the running plugin over the admin socket in STATE_DIR and links nothing
// of the daemon, so it starts in a few milliseconds. With no arguments,
// serve or recover it execs snapvold (the daemon, built from ./plugin),
// installed beside it: the same process then serves, keeping its PID,
// environment and arguments (a systemd unit's ExecStart=snapvol serve,
// Type=notify, still works).
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/snapvol/snapvol/cmd/snapvol/cli"
)

// daemonName is the daemon's file name, beside this command.
const daemonName = "snapvold"

func main() {
	d := cli.Daemon{
		Serve:   execDaemon,
		Recover: func(io.Writer, string, bool) error { return execDaemon() },
	}
	if err := cli.New(os.Stdout, os.Stderr, d).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "snapvol:", err)
		os.Exit(1)
	}
}

// execDaemon replaces this process with snapvold, same arguments: it
// parses them again and runs what was asked.
func execDaemon() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the daemon %s: %w", daemonName, err)
	}
	path := filepath.Join(filepath.Dir(exe), daemonName)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("this runs the daemon %s, which is not installed beside %s (make install-host installs both; the managed plugin needs neither: make install): %w", path, exe, err)
	}
	return syscall.Exec(path, append([]string{path}, os.Args[1:]...), os.Environ())
}
