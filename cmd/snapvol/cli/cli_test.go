package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/snapvol/snapvol/admin"
)

func i64(n int64) *int64 { return &n }

// snapvol ls fits 100 columns with the names the docs use, and EXPIRES
// holds a word or a short duration (it held sentences, ~160 columns).
func TestLsFits100Columns(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	created := now.Add(-26 * time.Hour)
	vols := []admin.Volume{
		{Name: "app-production", Kind: "volume", Created: created, State: "ready", Mounts: 1, Bytes: i64(3 << 30)},
		{Name: "app-production@latest+job-4711", Kind: "clone", Source: "app-production", Ref: "latest", Tag: "job-4711",
			Created: created, State: "materialized", Mounts: 1, Clones: 1, TTLSeconds: i64(86400), Bytes: i64(12 << 20)},
		{Name: "app-production@latest+each", Kind: "clone", Source: "app-production", Ref: "latest", Tag: "each", Each: true,
			Created: created, State: "materialized", Mounts: 2, Clones: 2, TTLSeconds: i64(86400), Bytes: i64(1536 << 20)},
		{Name: "ci-4711", Kind: "clone", Source: "app-production", Ref: "masked", Created: created, State: "materialized",
			TTLSeconds: i64(7200), Expires: now.Add(100 * time.Minute), Bytes: i64(999)},
		{Name: "mask-work-0123456789abcdef", Kind: "operator", Access: "secret", Source: "app-production", Ref: "now",
			Created: created, State: "pending remove", TTLSeconds: i64(0)},
		{Name: "app-production@nightly", Kind: "clone", Source: "app-production", Ref: "nightly", Created: created,
			State: "not materialized", TTLSeconds: i64(86400)},
	}
	cmd := lsCommand(nil)
	var out bytes.Buffer
	cmd.SetOut(&out)
	if err := printVolumes(cmd, vols, now); err != nil {
		t.Fatal(err)
	}
	t.Logf("snapvol ls:\n%s", out.String())
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(vols)+1 {
		t.Fatalf("%d lines for %d volumes", len(lines), len(vols))
	}
	for _, l := range lines {
		if len(l) > 100 {
			t.Errorf("%d columns, want at most 100: %q", len(l), l)
		}
	}
	want := map[string]string{
		"app-production":                 "-",
		"app-production@latest+job-4711": "idle 24h",
		"app-production@latest+each":     "unmount",
		"ci-4711":                        "in 1h40m",
		"mask-work-0123456789abcdef":     "never",
		"app-production@nightly":         "-",
	}
	for _, v := range vols {
		if got := expires(v, now); got != want[v.Name] {
			t.Errorf("EXPIRES of %s = %q, want %q", v.Name, got, want[v.Name])
		}
	}
}

func TestShortDurations(t *testing.T) {
	for d, want := range map[time.Duration]string{
		45 * time.Second: "45s", 12*time.Minute + 3*time.Second: "12m", 3*time.Hour + 20*time.Minute: "3h20m",
		3 * time.Hour: "3h", 26 * time.Hour: "26h", 72 * time.Hour: "3d",
	} {
		if got := short(d); got != want {
			t.Errorf("short(%v) = %q, want %q", d, got, want)
		}
	}
}

// A typo gets a suggestion, and never reaches Serve.
func TestTyposSuggestAndNeverServe(t *testing.T) {
	served := false
	d := Daemon{Serve: func() error { served = true; return nil }}
	for args, want := range map[string]string{
		"sl": "ls", "lss": "ls", "verison": "version", "inspect": "volume inspect", "snapshot sl": "ls", "volume crate": "create",
	} {
		var out bytes.Buffer
		root := New(&out, &out, d)
		root.SetArgs(strings.Fields(args))
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), "Did you mean this?\n\t"+want) {
			t.Errorf("snapvol %s: %v, want a suggestion of %q", args, err, want)
		}
	}
	if served {
		t.Fatal("a typo started the daemon")
	}
}
