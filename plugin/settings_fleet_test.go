package main

import (
	"strings"
	"testing"
	"time"
)

// The fleet settings default to nothing leaving the host and no replica
// source, so a host that sets none behaves as before issue 23; a value
// that does not parse is refused, naming the setting.
func TestFleetSettings(t *testing.T) {
	s, err := LoadSettings(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if s.Publish.Allows("app-production", "masked") || len(s.Replicas) != 0 || s.PullEvery != time.Minute || s.RegistryConfig != "" {
		t.Fatalf("defaults: publish %q replicas %v pull_every %v registry_config %q; want nothing published, no replicas, 1m, docker's",
			s.Publish, s.Replicas, s.PullEvery, s.RegistryConfig)
	}
	env := map[string]string{
		"PUBLISH": "app-production@masked*", "REPLICAS": "app-production=registry.example.com/data/app-production",
		"PULL_EVERY": "0", "REGISTRY_CONFIG": "/var/lib/snapvol/docker",
	}
	s, err = LoadSettings(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if !s.Publish.Allows("app-production", "masked") || s.Publish.Allows("app-production", "raw") || s.Publish.Allows("other", "masked") {
		t.Errorf("PUBLISH=app-production@masked*: %q allows the wrong refs", s.Publish)
	}
	if r := s.Replicas["app-production"]; r.Registry != "registry.example.com" || r.Path != "data/app-production" || s.PullEvery != 0 {
		t.Errorf("REPLICAS: %+v, PULL_EVERY %v", s.Replicas, s.PullEvery)
	}
	for k, v := range map[string]string{
		"PUBLISH":         "app-production@[",
		"REPLICAS":        "app-production",
		"PULL_EVERY":      "often",
		"REGISTRY_CONFIG": "docker",
	} {
		if _, err := LoadSettings(func(x string) string { return map[string]string{k: v}[x] }); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%s: %v; want a refusal naming %s", k, v, err, k)
		}
	}
	for _, v := range []string{"a=registry.example.com/x:tag", "a=noregistry", "a=r.example.com/x,a=r.example.com/y", "a/b=r.example.com/x"} {
		if _, err := LoadSettings(func(x string) string { return map[string]string{"REPLICAS": v}[x] }); err == nil {
			t.Errorf("REPLICAS=%s accepted", v)
		}
	}
}
