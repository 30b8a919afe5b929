package main

import (
	"strings"
	"testing"
	"time"
)

func TestDefaults(t *testing.T) {
	s, err := LoadSettings(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if s.Backend != "local" || s.StateDir != "/var/lib/snapvol" || s.DataRoot != "/mnt/snapvol" || s.PoolSize != 20<<30 ||
		s.Socket != "/run/docker/plugins/snapvol.sock" || s.LatestMaxAge != 5*time.Minute || s.IdleTTL != 24*time.Hour || s.SupersededTTL != time.Hour ||
		!s.Claim || s.Sources.String() != "*" || !s.Sources.Allows("anything", "latest") ||
		s.CloneSize != 0 || s.Reserve.Percent != 10 || s.ReserveSet || s.PXEndpoint != "http://127.0.0.1:9001" || s.PXDriver != "pxd" ||
		s.LogFormat != "text" || s.MetricsAddr != "" {
		t.Fatalf("defaults = %+v", s)
	}
}

func TestBadSettingsNameTheSetting(t *testing.T) {
	for k, v := range map[string]string{
		"BACKEND": "zfs", "STATE_DIR": "relative", "POOL_SIZE": "huge", "LATEST_MAX_AGE": "soon",
		"IDLE_TTL": "-1h", "SUPERSEDED_TTL": "soon", "CLAIM": "perhaps", "DATA_ROOT": "x", "SOURCES": "app-*,prod-[",
		"CLONE_SIZE": "lots", "POOL_RESERVE": "150%",
		"LOG_FORMAT": "xml", "METRICS_ADDR": "9478",
	} {
		_, err := LoadSettings(func(key string) string {
			if key == k {
				return v
			}
			return ""
		})
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%s: error %v should name the setting", k, v, err)
		}
	}
}

func TestMetricsAddrAndLogFormat(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:9478", ":9478", "[::1]:0", "localhost:9478"} {
		s, err := LoadSettings(func(k string) string {
			return map[string]string{"METRICS_ADDR": addr, "LOG_FORMAT": "json"}[k]
		})
		if err != nil || s.MetricsAddr != addr || s.LogFormat != "json" {
			t.Errorf("METRICS_ADDR=%s LOG_FORMAT=json: %+v, %v", addr, s, err)
		}
	}
	for _, addr := range []string{"127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", "/run/x.sock"} {
		if _, err := LoadSettings(func(k string) string { return map[string]string{"METRICS_ADDR": addr}[k] }); err == nil || !strings.Contains(err.Error(), "METRICS_ADDR") {
			t.Errorf("METRICS_ADDR=%s accepted or unnamed: %v", addr, err)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"20G": 20 << 30, "512M": 512 << 20, "1T": 1 << 40, "1GiB": 1 << 30, "134217728": 128 << 20} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "-1G", "1X", "1M", "99999999999T"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	f.Add("20G")
	f.Add("1")
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := ParseSize(s); err == nil && n < 128<<20 {
			t.Fatalf("ParseSize(%q) = %d below the minimum", s, n)
		}
	})
}
