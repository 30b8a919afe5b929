package main

import (
	"strings"
	"testing"
)

// PX_MOUNT_DIR defaults to where Portworx's own plugin mounts, must be
// absolute, and PX_MOUNT_ROOT, no longer used, is only noted (main warns).
func TestPXMountDir(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	s, err := LoadSettings(env(nil))
	if err != nil || s.PXMountDir != "/var/lib/osd/mounts" || s.PXMountRootSet != "" {
		t.Fatalf("default PX_MOUNT_DIR = %q (PX_MOUNT_ROOT %q), %v; want /var/lib/osd/mounts", s.PXMountDir, s.PXMountRootSet, err)
	}
	s, err = LoadSettings(env(map[string]string{"PX_MOUNT_DIR": "/srv/pxmounts"}))
	if err != nil || s.PXMountDir != "/srv/pxmounts" {
		t.Fatalf("PX_MOUNT_DIR = %q, %v", s.PXMountDir, err)
	}
	if _, err := LoadSettings(env(map[string]string{"PX_MOUNT_DIR": "relative"})); err == nil || !strings.Contains(err.Error(), "PX_MOUNT_DIR") {
		t.Fatalf("relative PX_MOUNT_DIR: %v", err)
	}
	s, err = LoadSettings(env(map[string]string{"PX_MOUNT_ROOT": "/var/lib/docker/plugins/x/propagated-mount"}))
	if err != nil || s.PXMountRootSet != "/var/lib/docker/plugins/x/propagated-mount" || s.PXMountDir != "/var/lib/osd/mounts" {
		t.Fatalf("PX_MOUNT_ROOT set: %+v, %v; want it noted and PX_MOUNT_DIR at its default", s, err)
	}
}
