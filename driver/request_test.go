package driver

import (
	"context"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// A request is made once where it enters and read below from its context:
// every line a Docker Mount logs (the clone made deep in attach.go
// included) carries its one req id, op and volume, and the last says how it
// ended; the caller As names is the one its mount is counted under; an
// operator's request is CallerOperator's, within operatorBudget; outside a
// request there is none.
func TestOneRequestFromEntryToAnswer(t *testing.T) {
	d, _, _ := newTestDriver(t)
	hook := logtest.NewLocal(d.log)
	const name = "app-production@latest+req"
	if _, err := d.As("100:1").Mount(&volume.MountRequest{Name: name, ID: "1"}); err != nil {
		t.Fatal(err)
	}
	ids := map[any]bool{}
	var last *logrus.Entry
	for _, e := range hook.AllEntries() {
		ids[e.Data["req"]] = true
		if e.Data["op"] != "mount" || e.Data["volume"] != name {
			t.Errorf("line %q of the Mount has op %v, volume %v", e.Message, e.Data["op"], e.Data["volume"])
		}
		last = e
	}
	if len(ids) != 1 || ids[nil] || len(hook.AllEntries()) < 2 {
		t.Fatalf("the Mount's %d lines carry req ids %v; want one, on every line", len(hook.AllEntries()), ids)
	}
	if last.Message != "mount" || last.Data["ms"] == nil {
		t.Fatalf("the Mount's last line is %q %v; want its outcome with ms", last.Message, last.Data)
	}
	r, _ := d.st.Get(name)
	if a := r.Attachment(""); a == nil || a.Holders["100:1"] != 1 {
		t.Fatalf("the mount is not counted under the caller As named: %+v", a)
	}

	ctx, cancel := d.enterOperator(context.Background(), "volume rm", name)
	defer cancel()
	if c := callerOf(ctx); c != CallerOperator {
		t.Fatalf("an operator's request is %q's", c)
	}
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > operatorBudget {
		t.Fatalf("an operator's request has deadline %v (%v); want within %v", dl, ok, operatorBudget)
	}
	if e := d.logOf(ctx); e.Data["op"] != "volume rm" || e.Data["req"] == nil {
		t.Fatalf("an operator's request logs with %v", e.Data)
	}
	bg := context.Background()
	step(bg, "outside a request")
	if requestOf(bg) != nil || callerOf(bg) != CallerUnknown || d.logOf(bg).Data["req"] != nil {
		t.Fatal("work that is not a request's has a request")
	}
}
