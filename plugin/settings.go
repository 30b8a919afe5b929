package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/snapvol/snapvol/driver/sources"
	"github.com/snapvol/snapvol/fleet"
	"github.com/snapvol/snapvol/storage/local"
)

// Settings are read from the environment (config.json's env in managed
// mode, the shell's when run on a host). docs/settings.md has the table.
type Settings struct {
	Backend      string
	StateDir     string
	DataRoot     string
	Pool         string
	PoolSize     int64
	Socket       string
	LatestMaxAge time.Duration
	IdleTTL      time.Duration
	// SupersededTTL is SUPERSEDED_TTL: idle clones of a superseded
	// snapshot go after this, sooner than IdleTTL (0 = IdleTTL only).
	SupersededTTL time.Duration
	Sources       *sources.Policy
	Claim         bool
	PXEndpoint    string
	PXDriver      string
	PXToken       string
	// PXMountDir is PX_MOUNT_DIR: the host directory Portworx is told to
	// mount clones under (where its own Docker plugin mounts), which the
	// managed plugin sees through its pxmounts mount.
	PXMountDir string
	// PXMountRootSet is PX_MOUNT_ROOT's value when it is still set: that
	// setting is no longer used (PX_MOUNT_DIR replaced it).
	PXMountRootSet string
	LogLevel       string
	// LogFormat is text or json (one JSON object a line).
	LogFormat string
	// MetricsAddr is the host:port /metrics is served on over TCP; empty
	// serves it only on the admin socket.
	MetricsAddr string
	// CloneSize is CLONE_SIZE: the most one clone may hold alone (local;
	// 0 = no limit; a volume's -o size= overrides it).
	CloneSize int64
	// Reserve is POOL_RESERVE: free space clones together never take
	// (local), and ReserveSet whether it was set rather than defaulted.
	Reserve    local.Reserve
	ReserveSet bool
	// Runner fleets (fleet.go, docs/fleets.md): PUBLISH, REPLICAS,
	// PULL_EVERY, REGISTRY_CONFIG.
	Publish        fleet.Publish
	Replicas       map[string]fleet.Repo
	PullEvery      time.Duration
	RegistryConfig string
}

var defaults = map[string]string{
	"BACKEND":         "local",
	"STATE_DIR":       "/var/lib/snapvol",
	"DATA_ROOT":       "/mnt/snapvol",
	"POOL":            "",
	"POOL_SIZE":       "20G",
	"SOCKET":          "/run/docker/plugins/snapvol.sock",
	"LATEST_MAX_AGE":  "5m",
	"IDLE_TTL":        "24h",
	"SUPERSEDED_TTL":  "1h",
	"SOURCES":         "*",
	"CLAIM":           "true",
	"PX_ENDPOINT":     "http://127.0.0.1:9001",
	"PX_DRIVER":       "pxd",
	"PX_TOKEN":        "",
	"PX_MOUNT_DIR":    "/var/lib/osd/mounts",
	"LOG_LEVEL":       "info",
	"LOG_FORMAT":      "text",
	"METRICS_ADDR":    "",
	"CLONE_SIZE":      "0",
	"POOL_RESERVE":    "10%",
	"PUBLISH":         "",
	"REPLICAS":        "",
	"PULL_EVERY":      "1m",
	"REGISTRY_CONFIG": "",
}

// LoadSettings reads settings through getenv, naming the setting in every
// error so a user knows what to fix.
func LoadSettings(getenv func(string) string) (Settings, error) {
	get := func(k string) string {
		if v, ok := lookup(getenv, k); ok {
			return v
		}
		return defaults[k]
	}
	var s Settings
	var err error
	s.Backend = get("BACKEND")
	if s.Backend != "local" && s.Backend != "portworx" {
		return s, fmt.Errorf("BACKEND=%q: must be local or portworx", s.Backend)
	}
	s.StateDir, s.DataRoot, s.Pool, s.Socket = get("STATE_DIR"), get("DATA_ROOT"), get("POOL"), get("SOCKET")
	for k, v := range map[string]string{"STATE_DIR": s.StateDir, "DATA_ROOT": s.DataRoot, "SOCKET": s.Socket} {
		if !strings.HasPrefix(v, "/") {
			return s, fmt.Errorf("%s=%q: must be an absolute path", k, v)
		}
	}
	if s.PoolSize, err = ParseSize(get("POOL_SIZE")); err != nil {
		return s, fmt.Errorf("POOL_SIZE: %w", err)
	}
	if s.LatestMaxAge, err = parseDuration(get("LATEST_MAX_AGE")); err != nil {
		return s, fmt.Errorf("LATEST_MAX_AGE: %w", err)
	}
	if s.IdleTTL, err = parseDuration(get("IDLE_TTL")); err != nil {
		return s, fmt.Errorf("IDLE_TTL: %w", err)
	}
	if s.SupersededTTL, err = parseDuration(get("SUPERSEDED_TTL")); err != nil {
		return s, fmt.Errorf("SUPERSEDED_TTL: %w", err)
	}
	// A malformed pattern matches nothing: refusing it here beats refusing
	// every source later without saying why.
	if s.Sources, err = sources.Parse(get("SOURCES")); err != nil {
		return s, fmt.Errorf("SOURCES: %w", err)
	}
	if s.Claim, err = strconv.ParseBool(get("CLAIM")); err != nil {
		return s, fmt.Errorf("CLAIM=%q: must be true or false", get("CLAIM"))
	}
	s.PXEndpoint, s.PXDriver, s.PXToken, s.LogLevel = get("PX_ENDPOINT"), get("PX_DRIVER"), get("PX_TOKEN"), get("LOG_LEVEL")
	if s.LogFormat = get("LOG_FORMAT"); s.LogFormat != "text" && s.LogFormat != "json" {
		return s, fmt.Errorf("LOG_FORMAT=%q: must be text or json", s.LogFormat)
	}
	if s.MetricsAddr = get("METRICS_ADDR"); s.MetricsAddr != "" {
		if err := checkHostPort(s.MetricsAddr); err != nil {
			return s, fmt.Errorf("METRICS_ADDR=%q: %w", s.MetricsAddr, err)
		}
	}
	if s.CloneSize, err = local.ParseCloneSize(get("CLONE_SIZE")); err != nil {
		return s, fmt.Errorf("CLONE_SIZE: %w", err)
	}
	if s.Reserve, err = local.ParseReserve(get("POOL_RESERVE")); err != nil {
		return s, fmt.Errorf("POOL_RESERVE: %w", err)
	}
	_, s.ReserveSet = lookup(getenv, "POOL_RESERVE")
	if s.PXMountDir = get("PX_MOUNT_DIR"); !strings.HasPrefix(s.PXMountDir, "/") {
		return s, fmt.Errorf("PX_MOUNT_DIR=%q: must be an absolute host path", s.PXMountDir)
	}
	s.PXMountRootSet = getenv("PX_MOUNT_ROOT")
	if s.Publish, err = fleet.ParsePublish(get("PUBLISH")); err != nil {
		return s, fmt.Errorf("PUBLISH: %w", err)
	}
	if s.Replicas, err = fleet.ParseReplicas(get("REPLICAS")); err != nil {
		return s, fmt.Errorf("REPLICAS: %w", err)
	}
	if s.PullEvery, err = parseDuration(get("PULL_EVERY")); err != nil {
		return s, fmt.Errorf("PULL_EVERY: %w", err)
	}
	if s.RegistryConfig = get("REGISTRY_CONFIG"); s.RegistryConfig != "" && !strings.HasPrefix(s.RegistryConfig, "/") {
		return s, fmt.Errorf("REGISTRY_CONFIG=%q: must be an absolute path (the directory of docker's config.json)", s.RegistryConfig)
	}
	return s, nil
}

// lookup treats an empty variable as unset: docker plugin set cannot unset
// a variable, so KEY= must mean the default (empty for POOL, PX_TOKEN and METRICS_ADDR).
func lookup(getenv func(string) string, k string) (string, bool) {
	v := getenv(k)
	return v, v != ""
}

// checkHostPort accepts HOST:PORT with a numeric port (HOST may be empty
// for every address, or an IPv6 address in brackets).
func checkHostPort(v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("want HOST:PORT, e.g. 127.0.0.1:9478 (%v)", err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

func parseDuration(v string) (time.Duration, error) {
	if v == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration like 90s, 5m or 2h", v)
	}
	return d, nil
}

// ParseSize parses POOL_SIZE: a size like 20G, 512M, 1T or a byte count
// (local.ParseBytes's syntax), at least btrfs's practical minimum.
func ParseSize(v string) (int64, error) {
	size, err := local.ParseBytes(v)
	if err != nil || size <= 0 {
		return 0, fmt.Errorf("%q is not a size like 20G or 512M", v)
	}
	if size < 128<<20 {
		return 0, fmt.Errorf("%q is below btrfs's practical minimum of 128M", v)
	}
	return size, nil
}

// environ is the real environment.
func environ(k string) string { return os.Getenv(k) }
