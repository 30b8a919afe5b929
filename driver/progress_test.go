package driver

import (
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// A request that runs long is reported in the log while Docker waits,
// naming the volume and the step it is stuck at, and the reports stop
// when it ends.
func TestSlowRequestReportsItsStep(t *testing.T) {
	d, m, _ := newTestDriver(t)
	hook := logtest.NewLocal(d.log)
	b := newBudgetBackend(m)
	b.setHang("Clone", true)
	d.b = b
	d.cfg.OpTimeout = 500 * time.Millisecond
	d.cfg.SlowAfter = 50 * time.Millisecond
	const name = "app-production@latest+slow"
	if _, err := d.Mount(&volume.MountRequest{Name: name, ID: "1"}); err == nil {
		t.Fatal("Mount succeeded though cloning hung")
	}
	reports := func() (n int, last *logrus.Entry) {
		for _, e := range hook.AllEntries() {
			if e.Level == logrus.WarnLevel && strings.HasPrefix(e.Message, "mount still running") {
				n, last = n+1, e
			}
		}
		return n, last
	}
	n, last := reports()
	if n == 0 {
		t.Fatalf("no progress report of a Mount that ran %v with SlowAfter %v", d.cfg.OpTimeout, d.cfg.SlowAfter)
	}
	if last.Data["volume"] != name || !strings.Contains(last.Message, `cloning snapshot`) || !strings.Contains(last.Message, `"app-production"`) {
		t.Fatalf("report %q %v does not name the volume and the step (cloning)", last.Message, last.Data)
	}
	time.Sleep(4 * d.cfg.SlowAfter)
	if again, _ := reports(); again != n {
		t.Fatalf("%d more progress reports after the request ended", again-n)
	}
}
