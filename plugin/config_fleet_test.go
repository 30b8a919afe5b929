package main

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
)

// config.fleet.json is the local bundle with the host's network (for
// snapvol push and pulls of replica sources): it must stay config.json in
// everything else, so a setting, mount, device or capability added to one
// is never missing from the other. Only "description" and "network" may
// differ, and the network must be the host's.
func TestConfigFleetIsConfigWithNetwork(t *testing.T) {
	read := func(file string) map[string]any {
		t.Helper()
		data, err := os.ReadFile("../" + file)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		return m
	}
	local, fleet := read("config.json"), read("config.fleet.json")
	if net, _ := fleet["network"].(map[string]any); net["type"] != "host" {
		t.Errorf("config.fleet.json network %v, want host: a registry is reached over the network", fleet["network"])
	}
	desc, _ := fleet["description"].(string)
	for _, want := range []string{"network", "registry", "PUBLISH", "REPLICAS"} {
		if !strings.Contains(desc, want) {
			t.Errorf("config.fleet.json's description %q does not say why it needs the network (no %q)", desc, want)
		}
	}
	for _, k := range []string{"description", "network"} {
		delete(local, k)
		delete(fleet, k)
	}
	for k := range local {
		if !reflect.DeepEqual(local[k], fleet[k]) {
			l, _ := json.MarshalIndent(local[k], "", "  ")
			f, _ := json.MarshalIndent(fleet[k], "", "  ")
			t.Errorf("%q differs between config.json and config.fleet.json (only description and network may):\nconfig.json:\n%s\nconfig.fleet.json:\n%s", k, l, f)
		}
	}
	for k := range fleet {
		if _, ok := local[k]; !ok {
			t.Errorf("config.fleet.json has %q, config.json does not", k)
		}
	}
}
