package driver

import (
	"fmt"

	"github.com/snapvol/snapvol/driver/store"
)

// Failpoints are the steps at which a crash test may kill the plugin: every
// point between an intent's write and its clearing, and between the
// backend calls of a clone being made (whose labels are its intent). The
// crash and chaos tests iterate this list, and a unit test checks that
// each one is reached.
var Failpoints = []string{
	"create:intent", "create:made",
	"materialize:snapshot", "materialize:clone", "materialize:mount",
	"release:intent", "release:destroyed",
	"destroy:unmounted",
	"remove:intent", "remove:destroyed",
}

var knownFailpoint = func() map[string]bool {
	m := map[string]bool{}
	for _, f := range Failpoints {
		m[f] = true
	}
	return m
}()

func (d *Driver) failpoint(name string) {
	if !knownFailpoint[name] {
		panic("driver: failpoint " + name + " is not in Failpoints")
	}
	if d.cfg.Failpoint != nil {
		d.cfg.Failpoint(name)
	}
}

// intentPolicy says which failures of an intent's work leave the intent
// in place for reconcile (true) instead of withdrawing it.
type intentPolicy func(error) bool

// retrying is the policy of reconcile finishing an intent: whatever fails
// is tried again at the next sweep.
func retrying(error) bool { return true }

// withIntent is the intent protocol, written once (containerd's
// WithTransaction has the same shape): op's intent on r is made durable,
// then work changes the backend and r; on success the outcome is recorded
// with the intent cleared in one write (a remove deletes the record). On
// failure, policy decides: the intent stays for reconcile to finish, or it
// is withdrawn and r saved as work left it (whole, so Docker and the user
// can try again; a create that made nothing leaves no record). An intent
// already on r (reconcile finishing it) is not written again.
func (d *Driver) withIntent(r *store.Record, op store.Op, key string, policy intentPolicy, work func() error) error {
	if r.Intent == nil || r.Intent.Op != op || r.Intent.Key != key {
		r.Intent = &store.Intent{Op: op, Key: key, Since: d.now()}
		if err := d.st.Put(r); err != nil {
			return err
		}
	}
	d.failpoint(string(op) + ":intent")
	if err := work(); err != nil {
		if policy != nil && policy(err) {
			return err
		}
		d.withdraw(r)
		return err
	}
	r.Intent = nil
	if op == store.OpRemove {
		return d.st.Delete(r.Name)
	}
	return d.st.Put(r)
}

// withdraw clears a failed request's intent, keeping what is left
// recorded; a create that made nothing leaves nothing to record.
func (d *Driver) withdraw(r *store.Record) {
	op := r.Intent.Op
	r.Intent = nil
	var err error
	if op == store.OpCreate && len(r.Attachments) == 0 {
		err = d.st.Delete(r.Name)
	} else {
		err = d.st.Put(r)
	}
	if err != nil {
		d.log.WithError(err).WithField("volume", r.Name).Error("could not withdraw intent; reconcile will finish it")
	}
}

// errUnfinished refuses a request on a volume whose intent a failed
// reconcile left (the backend was down); Run retries it every sweep.
func errUnfinished(r *store.Record) error {
	return fmt.Errorf("%w: volume %q: an interrupted %s is being finished; retry in a minute", ErrInUse, r.Name, r.Intent.Op)
}
