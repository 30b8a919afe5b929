package main

import (
	"strings"
	"testing"
)

func TestPXMountRoot(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	s, err := LoadSettings(env(nil))
	if err != nil || s.PXMountRoot != "" {
		t.Fatalf("default PX_MOUNT_ROOT = %q, %v; want empty (detected)", s.PXMountRoot, err)
	}
	s, err = LoadSettings(env(map[string]string{"PX_MOUNT_ROOT": "/var/lib/docker/plugins/x/propagated-mount"}))
	if err != nil || s.PXMountRoot != "/var/lib/docker/plugins/x/propagated-mount" {
		t.Fatalf("PX_MOUNT_ROOT = %q, %v", s.PXMountRoot, err)
	}
	if _, err := LoadSettings(env(map[string]string{"PX_MOUNT_ROOT": "relative"})); err == nil || !strings.Contains(err.Error(), "PX_MOUNT_ROOT") {
		t.Fatalf("relative PX_MOUNT_ROOT: %v", err)
	}
}
