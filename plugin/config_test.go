package main

import (
	"encoding/json"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/snapvol/snapvol/storage/portworx"
)

// Both managed plugin configs (config.json, the local bundle, and
// config.portworx.json) carry every setting with the binary's default (the
// Portworx one with BACKEND=portworx), settable with docker plugin set
// except the three that managed mode fixes (its mounts and dockerd's socket
// directory), and ask only for the privileges their backend needs.
func TestConfigJSONHasEverySetting(t *testing.T) {
	for file, backend := range map[string]string{"config.json": "local", "config.portworx.json": "portworx"} {
		t.Run(file, func(t *testing.T) { checkConfig(t, file, backend) })
	}
}

func checkConfig(t *testing.T, file, backend string) {
	data, err := os.ReadFile("../" + file)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Entrypoint []string
		Interface  struct {
			Types  []string
			Socket string
		}
		PropagatedMount string
		Network         struct{ Type string }
		Linux           struct {
			Capabilities    []string
			AllowAllDevices bool
			Devices         []struct{ Path string }
		}
		Mounts []struct {
			Name, Description, Source, Destination, Type string
			Options, Settable                            []string
		}
		Env []struct {
			Name        string
			Description string
			Value       *string
			Settable    []string
		}
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("config.json: %v", err)
	}
	fixed := map[string]bool{"STATE_DIR": true, "DATA_ROOT": true, "SOCKET": true}
	seen := map[string]bool{}
	for _, e := range cfg.Env {
		seen[e.Name] = true
		def, ok := defaults[e.Name]
		if e.Name == "BACKEND" {
			def = backend
		}
		if !ok {
			t.Errorf("config.json env %s is not a setting of the binary", e.Name)
			continue
		}
		// A settable value is empty, meaning the default, so that a value
		// equal to the default is one someone set (the state marker
		// tells it from a setting docker plugin upgrade dropped).
		if fixed[e.Name] || e.Name == "BACKEND" && backend != "local" {
			if e.Value == nil || *e.Value != def {
				t.Errorf("config.json env %s = %v, want %q", e.Name, e.Value, def)
			}
		} else if e.Value == nil || *e.Value != "" {
			t.Errorf("config.json env %s = %v, want empty (the default)", e.Name, e.Value)
		} else if def != "" && !strings.Contains(e.Description, def) {
			t.Errorf("config.json env %s: the description does not name the default %q", e.Name, def)
		}
		settable := len(e.Settable) == 1 && e.Settable[0] == "value"
		if settable == fixed[e.Name] {
			t.Errorf("config.json env %s: settable=%v, want %v", e.Name, settable, !fixed[e.Name])
		}
	}
	var missing []string
	for k := range defaults {
		if !seen[k] {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("%s lacks settings %v", file, missing)
	}
	if len(cfg.Interface.Types) != 1 || cfg.Interface.Types[0] != "docker.volumedriver/1.0" || cfg.Interface.Socket != "snapvol.sock" {
		t.Errorf("interface %+v", cfg.Interface)
	}
	if defaults["SOCKET"] != "/run/docker/plugins/"+cfg.Interface.Socket {
		t.Errorf("SOCKET default %s is not where dockerd looks for %s", defaults["SOCKET"], cfg.Interface.Socket)
	}
	if cfg.PropagatedMount != defaults["DATA_ROOT"] {
		t.Errorf("propagatedMount %s, want DATA_ROOT %s", cfg.PropagatedMount, defaults["DATA_ROOT"])
	}
	// Least privilege: mounting needs CAP_SYS_ADMIN in both; only the local
	// pool file needs loop devices, only an OpenStorage endpoint a network.
	if len(cfg.Linux.Capabilities) != 1 || cfg.Linux.Capabilities[0] != "CAP_SYS_ADMIN" {
		t.Errorf("capabilities %v, want only CAP_SYS_ADMIN", cfg.Linux.Capabilities)
	}
	switch backend {
	case "local":
		if cfg.Network.Type != "none" {
			t.Errorf("the local bundle has network %q: it sends no traffic, want none", cfg.Network.Type)
		}
		if !cfg.Linux.AllowAllDevices || len(cfg.Linux.Devices) != 1 || cfg.Linux.Devices[0].Path != "/dev/loop-control" {
			t.Errorf("the local bundle needs /dev/loop-control and the loop device it is given: %+v", cfg.Linux)
		}
	case "portworx":
		if cfg.Network.Type != "host" {
			t.Errorf("the Portworx bundle has network %q, want host (the endpoint is on the host)", cfg.Network.Type)
		}
		if cfg.Linux.AllowAllDevices || len(cfg.Linux.Devices) > 0 {
			t.Errorf("the Portworx bundle asks for devices it never uses: %+v", cfg.Linux)
		}
	}
	wantMounts := 1
	if backend == "portworx" {
		wantMounts = 2
	}
	if len(cfg.Mounts) != wantMounts || cfg.Mounts[0].Name != "state" || cfg.Mounts[0].Destination != defaults["STATE_DIR"] ||
		len(cfg.Mounts[0].Settable) != 1 || cfg.Mounts[0].Settable[0] != "source" {
		t.Errorf("mounts %+v, want a settable state mount at STATE_DIR (and pxmounts in the Portworx bundle)", cfg.Mounts)
	}
	if backend == "portworx" && len(cfg.Mounts) == 2 {
		// PX_MOUNT_DIR shared into the plugin where main looks for it, its
		// host side moved with the setting.
		m := cfg.Mounts[1]
		if m.Name != "pxmounts" || m.Source != defaults["PX_MOUNT_DIR"] || m.Destination != portworx.ManagedMountDir ||
			m.Type != "bind" || strings.Join(m.Options, ",") != "rbind,rshared" ||
			len(m.Settable) != 1 || m.Settable[0] != "source" || !strings.Contains(m.Description, "PX_MOUNT_DIR") {
			t.Errorf("pxmounts mount %+v, want PX_MOUNT_DIR's default bound rbind,rshared at %s, its source settable", m, portworx.ManagedMountDir)
		}
	}
}
