package test

import (
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/snapvol/snapvol/driver"
)

// chaosModel is what the test knows was acknowledged: volumes created and
// not removed, and mount counts per volume and mount ID.
type chaosModel struct {
	vols   map[string]bool
	mounts map[string]map[string]int
}

func (m *chaosModel) total(v string) int {
	n := 0
	for _, c := range m.mounts[v] {
		n += c
	}
	return n
}

type chaosOp struct {
	kind, name, id string
	opts           map[string]string
}

func (o chaosOp) String() string { return fmt.Sprintf("%s(%s,%s)", o.kind, o.name, o.id) }

func (o chaosOp) run(p *Plugin) error {
	switch o.kind {
	case "create":
		return p.Create(o.name, o.opts)
	case "mount":
		_, err := p.Mount(o.name, o.id)
		return err
	case "unmount":
		return p.Unmount(o.name, o.id)
	default:
		return p.Remove(o.name)
	}
}

// apply records an acknowledged op in the model.
func (m *chaosModel) apply(o chaosOp) {
	switch o.kind {
	case "create":
		m.vols[o.name] = true
	case "mount":
		m.vols[o.name] = true
		if m.mounts[o.name] == nil {
			m.mounts[o.name] = map[string]int{}
		}
		m.mounts[o.name][o.id]++
	case "unmount":
		if m.mounts[o.name][o.id] > 0 {
			m.mounts[o.name][o.id]--
		}
	case "remove":
		delete(m.vols, o.name)
		delete(m.mounts, o.name)
	}
}

func randomOp(r *rand.Rand, m *chaosModel) chaosOp {
	names := []string{
		"app-production@latest+t1", "app-production@latest+t2", "snap:app-production@now+t3",
		"app-production@latest+each", "ci-job", "scratch",
	}
	name := names[r.Intn(len(names))]
	var opts map[string]string
	if name == "ci-job" {
		opts = map[string]string{"from": "app-production", "ref": "now"}
	}
	ids := []string{"a", "b", "c"}
	switch k := r.Intn(10); {
	case k < 2:
		return chaosOp{kind: "create", name: name, opts: opts}
	case k < 6:
		if name == "ci-job" || name == "scratch" {
			if !m.vols[name] {
				return chaosOp{kind: "create", name: name, opts: opts}
			}
		}
		return chaosOp{kind: "mount", name: name, id: ids[r.Intn(len(ids))]}
	case k < 9:
		// Docker only unmounts what it mounted; a spurious Unmount is sent
		// only where nothing is mounted, since a count cannot tell IDs apart.
		var mounted []string
		for id, n := range m.mounts[name] {
			if n > 0 {
				mounted = append(mounted, id)
			}
		}
		if len(mounted) == 0 {
			return chaosOp{kind: "unmount", name: name, id: ids[r.Intn(len(ids))]}
		}
		sort.Strings(mounted)
		return chaosOp{kind: "unmount", name: name, id: mounted[r.Intn(len(mounted))]}
	default:
		return chaosOp{kind: "remove", name: name}
	}
}

// TestChaosRandomKills runs random Create/Mount/Unmount/Remove sequences
// and SIGKILLs the plugin in the middle of a request, round after round.
// After every restart: every record has its storage, no orphan, no stray
// mount, mount counts as acknowledged (the killed request may or may not
// have happened), no acknowledged volume lost, the source unchanged.
// SNAPVOL_CHAOS_ROUNDS sets the rounds (make chaos runs more);
// SNAPVOL_CHAOS_SEED replays a failure.
func TestChaosRandomKills(t *testing.T) {
	rounds := 1200
	if v, err := strconv.Atoi(os.Getenv("SNAPVOL_CHAOS_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	seed := time.Now().UnixNano()
	if v, err := strconv.ParseInt(os.Getenv("SNAPVOL_CHAOS_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("chaos seed %d (replay with SNAPVOL_CHAOS_SEED=%d), %d rounds", seed, seed, rounds)
	r := rand.New(rand.NewSource(seed))

	// Short ttls, so the reaper and snapshot collection run between and
	// during the requests, and get killed too.
	p := StartPlugin(t, map[string]string{"LOG_LEVEL": "warn", "IDLE_TTL": "1s", "LATEST_MAX_AGE": "2s"})
	sources := SeedProduction(t, p)
	m := &chaosModel{vols: map[string]bool{"app-production": true}, mounts: map[string]map[string]int{}}
	var killed, acked, refused int
	for round := 0; round < rounds && !t.Failed(); round++ {
		// Requests run back to back until a kill lands; half the rounds kill
		// at a random time, half at a random failpoint inside a request.
		var o chaosOp
		inFlight := false
		fired := make(chan struct{})
		timer := time.AfterFunc(time.Duration(r.Intn(4000))*time.Microsecond, func() { p.Kill(); close(fired) })
		if round%2 == 1 && timer.Stop() {
			close(fired)
		}
		for i := 0; i < 8 && !inFlight; i++ {
			o = randomOp(r, m)
			err := o.run(p)
			switch {
			case err != nil && strings.Contains(err.Error(), "transport"):
				inFlight = true
			case err != nil:
				refused++
			default:
				acked++
				m.apply(o)
			}
		}
		if timer.Stop() {
			close(fired)
		}
		<-fired // the timer's Kill, if it ran, has finished
		p.Kill()
		if inFlight {
			killed++
		}
		delete(p.Env, "SNAPVOL_FAILPOINT")
		if round%2 == 0 {
			p.Env["SNAPVOL_FAILPOINT"] = driver.Failpoints[r.Intn(len(driver.Failpoints))]
		}
		p.Start()

		CheckLocalInvariants(t, p, sources)
		vols, lerr := p.List()
		if lerr != nil {
			t.Fatalf("round %d: list: %v", round, lerr)
		}
		listed := map[string]bool{}
		for _, v := range vols {
			listed[v.Name] = true
		}
		for name := range m.vols {
			if !listed[name] && !(inFlight && o.kind == "remove" && o.name == name) {
				t.Errorf("round %d (seed %d): acknowledged volume %q lost (killed during %v)", round, seed, name, o)
			}
		}
		if inFlight && o.kind == "remove" && !listed[o.name] {
			m.apply(o)
		}
		for name := range listed {
			if !m.vols[name] {
				if inFlight && (o.kind == "create" || o.kind == "mount") && o.name == name {
					m.vols[name] = true
					continue
				}
				t.Errorf("round %d (seed %d): volume %q exists but was never acknowledged (killed during %v)", round, seed, name, o)
			}
		}
		for name := range m.vols {
			v, err := p.Get(name)
			if err != nil {
				continue
			}
			got := int(v.Status["mounts"].(float64))
			want := m.total(name)
			if inFlight && o.name == name && o.kind == "mount" && got == want+1 {
				m.apply(o)
				continue
			}
			if inFlight && o.name == name && o.kind == "unmount" && got == want-1 {
				m.apply(o)
				continue
			}
			if got != want {
				t.Errorf("round %d (seed %d): %q counts %d mounts, acknowledged %d (killed during %v)", round, seed, name, got, want, o)
			}
		}
	}
	t.Logf("chaos: %d rounds, %d requests killed in flight, %d acknowledged, %d refused as expected, orphans found 0", rounds, killed, acked, refused)
	if killed < rounds/4 {
		t.Errorf("only %d of %d kills hit a request in flight; the test is not exercising crashes", killed, rounds)
	}
}
