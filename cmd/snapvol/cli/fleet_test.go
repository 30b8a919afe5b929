package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/snapvol/snapvol/admin"
)

// The REPLICAS section of snapvol ls and df fits 100 columns, even with a
// long repository and a long registry error, and says how old the copy
// clones get is when the registry fails.
func TestReplicasFit100Columns(t *testing.T) {
	now := time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)
	pulled := now.Add(-30 * time.Second)
	reps := []admin.Replica{
		{Source: "app-production", Repository: "registry.example.com/data/app-production", Checked: &pulled, Tags: []admin.ReplicaTag{
			{Tag: "masked", UUID: "8d2f3c1e-0b6a-4f7e-9c3d-2a1b0c9d8e7f", Snapshot: "s1", Time: now.Add(-12 * time.Minute), AgeSeconds: 720},
			{Tag: "nightly", UUID: "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9", Snapshot: "s2", Time: now.Add(-9 * time.Hour), AgeSeconds: 9 * 3600},
		}},
		{Source: "billing-production-with-a-long-name", Repository: "registry.internal.example.com:5443/platform/ci-data/billing-production-with-a-long-name",
			Error: "registry registry.internal.example.com:5443/platform/ci-data/billing-production-with-a-long-name: reading tag masked: Get \"https://registry.internal.example.com:5443/v2/\": dial tcp 10.0.0.7:5443: connect: connection refused",
			Tags:  []admin.ReplicaTag{{Tag: "masked", UUID: "u", Snapshot: "s3", Time: now.Add(-2 * time.Hour), AgeSeconds: 7200}}},
		{Source: "fresh", Repository: "127.0.0.1:5000/fresh", Tags: []admin.ReplicaTag{}},
	}
	var out bytes.Buffer
	if err := printReplicas(&out, reps, now); err != nil {
		t.Fatal(err)
	}
	t.Logf("snapvol ls, replicas:\n%s", out.String())
	text := out.String()
	for _, l := range strings.Split(text, "\n") {
		if len([]rune(l)) > 100 {
			t.Errorf("%d columns, want at most 100: %q", len([]rune(l)), l)
		}
	}
	for _, want := range []string{
		"masked   12m  30s ago  ok", "nightly  9h   30s ago  ok", "masked   2h   -        failing",
		"billing-production-with-a-long-name: the last pull FAILED; clones get the newest copy here, 2h old\n  registry registry.internal",
		"connect: connection refused\n", "fresh                                -        -    -        -        127.0.0.1:5000/fresh",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in:\n%s", want, text)
		}
	}
	out.Reset()
	if err := printReplicas(&out, nil, now); err != nil || out.Len() != 0 {
		t.Errorf("no replica sources: %q %v; want nothing", out.String(), err)
	}
}

// A schedule that pushes says where, and when its last push failed, why;
// snapvol ls shows only failing pushes, in 100 columns.
func TestSchedulePushShown(t *testing.T) {
	now := time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)
	ok := admin.Schedule{Source: "app", Every: time.Hour, Keep: 24, Last: now, Push: "127.0.0.1:5000/data/app:scheduled", Pushed: now}
	if got := scheduleLine(ok, true, "app"); !strings.Contains(got, "each pushed to 127.0.0.1:5000/data/app:scheduled (last pushed 2026-12-07T01:00:00Z)") {
		t.Errorf("schedule line: %q", got)
	}
	bad := ok
	bad.PushTried, bad.PushError = now.Add(-time.Minute), "registry 127.0.0.1:5000/data/app: uploading layer sha256:"+strings.Repeat("ab", 32)+": connection refused"
	if got := scheduleLine(bad, true, "app"); !strings.Contains(got, "the push at 2026-12-07T00:59:00Z FAILED (retried with the next snapshot): registry 127.0.0.1:5000/data/app") {
		t.Errorf("schedule line of a failed push: %q", got)
	}
	var out bytes.Buffer
	if err := printPushFailures(&out, []admin.Schedule{ok, bad, {Source: "plain", Every: time.Hour, Keep: 1}}, now); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[1], "app -> 127.0.0.1:5000/data/app:scheduled: failed 1m ago: registry 127.0.0.1:5000/data/app") {
		t.Errorf("ls push failures:\n%s", out.String())
	}
	for _, l := range lines {
		if len(l) > 100 {
			t.Errorf("%d columns: %q", len(l), l)
		}
	}
}
