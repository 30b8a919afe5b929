package main

import (
	"net"
	"strings"
	"testing"
)

// METRICS_ADDR in a managed plugin whose network namespace has only a
// loopback interface (the local bundle) is reported; on a host, with host
// networking, or unset, it is not.
func TestMetricsUnreachableWarning(t *testing.T) {
	lo := net.Interface{Index: 1, Name: "lo", Flags: net.FlagUp | net.FlagLoopback}
	eth := net.Interface{Index: 2, Name: "eth0", Flags: net.FlagUp | net.FlagBroadcast}
	only := func(l ...net.Interface) func() ([]net.Interface, error) {
		return func() ([]net.Interface, error) { return l, nil }
	}
	if w := metricsUnreachable("127.0.0.1:9479", true, only(lo)); !strings.Contains(w, "not reachable from the host") || !strings.Contains(w, "snapvol metrics --listen") {
		t.Errorf("managed, loopback only: %q", w)
	}
	for _, c := range []struct {
		addr    string
		managed bool
		ifaces  func() ([]net.Interface, error)
	}{
		{"127.0.0.1:9479", true, only(lo, eth)},
		{"127.0.0.1:9479", false, only(lo)},
		{"", true, only(lo)},
	} {
		if w := metricsUnreachable(c.addr, c.managed, c.ifaces); w != "" {
			t.Errorf("addr %q managed %v: warned %q", c.addr, c.managed, w)
		}
	}
}
