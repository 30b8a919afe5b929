// Command osdserver runs the test OpenStorage server on its own, to try
// bin/snapvol with BACKEND=portworx by hand:
//
//	go run ./test/osdserver/cmd -state /tmp/osd -listen 127.0.0.1:9001 &
//	mkdir -p /tmp/osd/mounts/pxmounts
//	BACKEND=portworx PX_ENDPOINT=http://127.0.0.1:9001 PX_MOUNT_DIR=/tmp/osd/mounts/pxmounts bin/snapvol
//
// It needs root (a loop-mounted btrfs pool file in -state) and serves
// until SIGINT or SIGTERM, then unmounts what it mounted.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/snapvol/snapvol/test/osdserver"
)

func main() {
	var cfg osdserver.Config
	flag.StringVar(&cfg.StateDir, "state", "/var/lib/osdserver", "directory for the pool file and its mount point")
	flag.Int64Var(&cfg.PoolSize, "size", 1<<30, "pool file size in bytes, when it is created")
	flag.StringVar(&cfg.Listen, "listen", "127.0.0.1:9001", "host:port or unix:///path.sock")
	flag.StringVar(&cfg.Driver, "driver", "pxd", "driver name served")
	flag.StringVar(&cfg.Token, "token", "", "bearer token; with one, requests without an Authorization header are guests (empty: security off)")
	flag.StringVar(&cfg.Node, "node", "node-1", "node reported as attached_on")
	flag.BoolVar(&cfg.NoAttach, "no-attach", false, "behave like a filesystem driver: attach and detach are not supported")
	flag.IntVar(&cfg.MaxSnapshots, "max-snapshots", 0, "read-only snapshots allowed per volume (Portworx: 64; 0: no limit)")
	flag.Parse()
	srv, err := osdserver.Start(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("OpenStorage test server for driver %s at %s, pool in %s\n", cfg.Driver, srv.Endpoint(), cfg.StateDir)
	// It mounts in a namespace of its own, as Portworx does: only below
	// this directory do its mounts show on the host.
	fmt.Printf("mounts shared with the host below %s (PX_MOUNT_DIR=%s/pxmounts)\n", srv.MountRoot(), srv.MountRoot())
	fmt.Printf("a gRPC-looking port (as Portworx's SDK 9020) at %s, a gossip-looking one (9002) at %s\n", srv.SDKEndpoint(), srv.GossipEndpoint())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	if err := srv.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
