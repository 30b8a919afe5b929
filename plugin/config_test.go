package main

import (
	"encoding/json"
	"os"
	"sort"
	"testing"
)

// config.json, the managed plugin's config, carries every setting with the
// binary's default, settable with docker plugin set except the three that
// managed mode fixes (its mounts and dockerd's socket directory).
func TestConfigJSONHasEverySetting(t *testing.T) {
	data, err := os.ReadFile("../config.json")
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
		Mounts          []struct {
			Name, Source, Destination string
			Settable                  []string
		}
		Env []struct {
			Name     string
			Value    *string
			Settable []string
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
		if !ok {
			t.Errorf("config.json env %s is not a setting of the binary", e.Name)
			continue
		}
		if e.Value == nil || *e.Value != def {
			t.Errorf("config.json env %s = %v, want the default %q", e.Name, e.Value, def)
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
		t.Errorf("config.json lacks settings %v", missing)
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
	if len(cfg.Mounts) != 1 || cfg.Mounts[0].Name != "state" || cfg.Mounts[0].Destination != defaults["STATE_DIR"] ||
		len(cfg.Mounts[0].Settable) != 1 || cfg.Mounts[0].Settable[0] != "source" {
		t.Errorf("mounts %+v, want one settable state mount at STATE_DIR", cfg.Mounts)
	}
}
