package main

import (
	"fmt"
	"net"
)

// metricsUnreachable says why METRICS_ADDR cannot be scraped from the
// host, or "" when it can. A managed plugin without host networking (the
// local bundle has "network": none) runs in a network namespace of its own
// holding only a loopback interface: a listener there answers nobody
// outside the plugin, so the setting would look on and serve nothing.
func metricsUnreachable(addr string, managed bool, ifaces func() ([]net.Interface, error)) string {
	if addr == "" || !managed {
		return ""
	}
	list, err := ifaces()
	if err != nil {
		return ""
	}
	for _, i := range list {
		if i.Flags&net.FlagLoopback == 0 {
			return ""
		}
	}
	return fmt.Sprintf("METRICS_ADDR %s is not reachable from the host: this managed plugin has no network of its own (the local bundle runs with network none), so /metrics is served inside its network namespace only; run snapvol metrics --listen %s on the host instead, which reads the admin socket", addr, addr)
}
