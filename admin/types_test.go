package admin

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// What MarshalJSON writes, the field tags read back: every key, and the
// same value.
func TestVolumeRoundTrip(t *testing.T) {
	ttl, n := int64(7200), int64(12345)
	at := time.Date(2025, 6, 1, 12, 0, 0, 123, time.UTC)
	for _, v := range []Volume{
		{Name: "app-production", Kind: "volume", Created: at, AgeSeconds: 3, State: "ready"},
		{Name: "ci-\"1\"<x>", Kind: "operator", Access: "secret", Source: "app-production", Ref: "now", Tag: "t", Each: true,
			Snapshot: "s1", SnapshotTime: at, Created: at, AgeSeconds: 9, Mounts: 2, Clones: 1, State: "materialized",
			TTLSeconds: &ttl, Expires: at.Add(time.Hour), Bytes: &n},
	} {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var back Volume
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		if !reflect.DeepEqual(back, v) {
			t.Errorf("round trip of %s:\n got %+v\nwant %+v", data, back, v)
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		rt := reflect.TypeOf(v)
		if len(m) != rt.NumField() {
			t.Errorf("%d keys for %d fields: %s", len(m), rt.NumField(), data)
		}
		for i := range rt.NumField() {
			key, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
			if _, ok := m[key]; !ok {
				t.Errorf("MarshalJSON writes no %q: %s", key, data)
			}
		}
	}
}

func TestScheduleRoundTrip(t *testing.T) {
	for _, s := range []Schedule{{Source: "a", Every: 90 * time.Minute, Keep: 3}, {Source: "b", Every: time.Second, Keep: 1, Last: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}} {
		data, _ := json.Marshal(s)
		var back Schedule
		if err := json.Unmarshal(data, &back); err != nil || !reflect.DeepEqual(back, s) {
			t.Errorf("%s: %+v %v", data, back, err)
		}
	}
}
