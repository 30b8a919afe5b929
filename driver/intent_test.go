package driver

import (
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
)

// Every name in Failpoints is reached by the requests that crash tests
// send, so a crash test armed with it really crashes there (and a step
// renamed in the code without the list fails here, not silently there).
func TestEveryFailpointIsReached(t *testing.T) {
	d, _, _ := newTestDriver(t)
	reached := map[string]bool{}
	d.cfg.Failpoint = func(name string) { reached[name] = true }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(d.Create(&volume.CreateRequest{Name: "scratch"}))
	_, err := d.Mount(&volume.MountRequest{Name: "app-production@now+x", ID: "1"})
	must(err)
	must(d.Unmount(&volume.UnmountRequest{Name: "app-production@now+x", ID: "1"}))
	must(d.Remove(&volume.RemoveRequest{Name: "app-production@now+x"}))
	_, err = d.Mount(&volume.MountRequest{Name: "app-production@latest+each", ID: "e"})
	must(err)
	must(d.Unmount(&volume.UnmountRequest{Name: "app-production@latest+each", ID: "e"}))
	for _, f := range Failpoints {
		if !reached[f] {
			t.Errorf("failpoint %s never reached", f)
		}
	}
	for f := range reached {
		if !knownFailpoint[f] {
			t.Errorf("failpoint %s reached but not in Failpoints", f)
		}
	}
}

// A step name that is not in Failpoints is a programming error caught at
// once, not a crash test that never crashes.
func TestUnknownFailpointPanics(t *testing.T) {
	d, _, _ := newTestDriver(t)
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "not in Failpoints") {
			t.Fatalf("recover() = %v", r)
		}
	}()
	d.failpoint("no:such")
}
