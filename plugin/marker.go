package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/snapvol/snapvol/internal/atomicfile"
	"github.com/snapvol/snapvol/mountpoint"
	"github.com/snapvol/snapvol/version"
)

// Never serve silently from the wrong state. Docker does not re-apply the
// settings a managed plugin was installed with after docker plugin upgrade
// (moby keeps them in the plugin's config and shows them in docker plugin
// inspect, but runs the new build with config.json's defaults): the
// upgraded plugin gets the default state.source, an empty state, and
// Docker then drops every snapvol volume. The one place that is the same
// host directory across an upgrade is the propagated mount, DATA_ROOT. So
// each start leaves a marker there naming the state it served (an ID that
// is also kept in STATE_DIR) and the settings it ran with; a start whose
// STATE_DIR does not hold that ID, or whose settings fell back to their
// defaults, refuses, naming what to set again.

// MarkerName is the marker's file name in DATA_ROOT (a file, so reconcile,
// which looks only at mount point directories, leaves it alone).
const MarkerName = ".snapvol-state.json"

// StateIDName is the file in STATE_DIR holding the ID of that state.
const StateIDName = "snapvol.id"

// marker is what a start leaves in DATA_ROOT.
type marker struct {
	// StateID is the ID in STATE_DIR/snapvol.id of the state served.
	StateID string `json:"state_id"`
	// StateSource is where that state is on the host: STATE_DIR on a
	// host, state.source in a managed plugin (as the mount table shows it).
	StateSource string `json:"state_source"`
	// Settings are the settings that were not their defaults (secrets as
	// a hash).
	Settings map[string]string `json:"settings"`
	Managed  bool              `json:"managed"`
	Version  string            `json:"version"`
	Commit   string            `json:"commit"`
	Written  time.Time         `json:"written"`
}

// fixedSettings are paths managed mode fixes (STATE_DIR's place is the
// state check's business, DATA_ROOT holds the marker).
var fixedSettings = map[string]bool{"STATE_DIR": true, "DATA_ROOT": true, "SOCKET": true}

// cosmeticSettings change what snapvol reports, not what it does to data
// or whom it lets clone what: back at their defaults they are warned
// about, not refused.
var cosmeticSettings = map[string]bool{"LOG_LEVEL": true, "LOG_FORMAT": true, "METRICS_ADDR": true}

// secretSettings are recorded as a hash.
var secretSettings = map[string]bool{"PX_TOKEN": true}

// changedSettings are the settings given a value (through getenv; empty
// means the default), secrets hashed. A value that equals the default
// counts: SOURCES=* set on purpose after SOURCES=app-production@masked*
// is a change, not a setting Docker dropped (both bundles leave every
// settable value empty, so only a value someone set is non-empty).
func changedSettings(getenv func(string) string) map[string]string {
	out := map[string]string{}
	for k := range defaults {
		v, ok := lookup(getenv, k)
		if fixedSettings[k] || !ok {
			continue
		}
		if secretSettings[k] {
			sum := sha256.Sum256([]byte(v))
			v = "sha256:" + hex.EncodeToString(sum[:8])
		}
		out[k] = v
	}
	return out
}

func markerPath(s Settings) string { return filepath.Join(s.DataRoot, MarkerName) }

func readMarker(s Settings) (*marker, error) {
	data, err := os.ReadFile(markerPath(s))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m marker
	if err := json.Unmarshal(data, &m); err != nil || m.StateID == "" {
		return nil, fmt.Errorf("%s is not a snapvol state marker (%v); delete it if it is not snapvol's", markerPath(s), err)
	}
	return &m, nil
}

// readStateID is the ID of the state in STATE_DIR, "" if it has none.
func readStateID(stateDir string) (string, error) {
	data, err := os.ReadFile(filepath.Join(stateDir, StateIDName))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	return strings.TrimSpace(string(data)), err
}

// checkState refuses a start on another state than the marker names, or
// with settings that fell back to their defaults; it reads, and writes
// nothing. Warnings are returned for settings that only change reporting.
func checkState(s Settings, getenv func(string) string) (warnings []string, err error) {
	m, err := readMarker(s)
	if err != nil || m == nil {
		return nil, err
	}
	id, err := readStateID(s.StateDir)
	if err != nil {
		return nil, fmt.Errorf("STATE_DIR %s: %w", s.StateDir, err)
	}
	if id != m.StateID {
		have := "holds no snapvol state"
		if id != "" {
			have = "holds another snapvol state (" + id + ")"
		} else if _, err := os.Stat(filepath.Join(s.StateDir, "snapvol.db")); err == nil {
			have = "holds a snapvol.db without an ID, not the one served last"
		}
		return nil, refusal{fmt.Errorf("refusing to start: STATE_DIR %s %s, but this snapvol last served state %s from %s (marker %s).%s"+
			" Set them again: %s. To start on this state instead, on purpose, delete the marker first",
			s.StateDir, have, m.StateID, m.StateSource, markerPath(s), dropped(m), setCommand(m, m.Settings, true))}
	}
	cur := changedSettings(getenv)
	refuse := map[string]string{}
	var keys []string
	for k, v := range m.Settings {
		if _, still := cur[k]; still || !knownSetting(k) {
			continue // unchanged, or changed on purpose to another value
		}
		if cosmeticSettings[k] {
			warnings = append(warnings, fmt.Sprintf("%s was %s when this state was served last and is now its default %q; set it again if Docker dropped it (docker plugin upgrade does)", k, v, defaults[k]))
			continue
		}
		refuse[k] = v
		keys = append(keys, k)
	}
	if len(refuse) == 0 {
		return warnings, nil
	}
	sort.Strings(keys)
	return warnings, refusal{fmt.Errorf("refusing to start: %s had other values when this state was served last and now have their defaults.%s"+
		" Set them again: %s. To run with the defaults on purpose, delete the marker %s first",
		strings.Join(keys, ", "), dropped(m), setCommand(m, refuse, false), markerPath(s))}
}

// dropped explains, for a managed plugin, why its settings are gone.
func dropped(m *marker) string {
	if !m.Managed {
		return ""
	}
	return " Docker does not re-apply the settings a plugin was installed with after docker plugin upgrade (docker plugin inspect still shows them)."
}

func knownSetting(k string) bool { _, ok := defaults[k]; return ok }

// setCommand is the command that gives the plugin settings (and, with
// state, its state.source) back: docker plugin set for a managed plugin,
// the service's environment on a host.
func setCommand(m *marker, settings map[string]string, state bool) string {
	var kv []string
	if state {
		if m.Managed {
			kv = append(kv, "state.source="+m.StateSource)
		} else {
			kv = append(kv, "STATE_DIR="+m.StateSource)
		}
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := settings[k]
		if secretSettings[k] {
			v = "<your " + k + ">"
		}
		kv = append(kv, k+"="+v)
	}
	if m.Managed {
		return "docker plugin disable snapvol; docker plugin set snapvol " + strings.Join(kv, " ") + "; docker plugin enable snapvol (snapvol: the plugin's name in docker plugin ls)"
	}
	return "start snapvol with " + strings.Join(kv, " ") + " in its environment (e.g. /etc/default/snapvol)"
}

// ensureStateID returns the ID of the state in STATE_DIR, making one on
// its first start.
func ensureStateID(stateDir string) (string, error) {
	id, err := readStateID(stateDir)
	if err != nil || id != "" {
		return id, err
	}
	buf := make([]byte, 8)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	id = hex.EncodeToString(buf)
	return id, atomicfile.Write(filepath.Join(stateDir, StateIDName), []byte(id+"\n"), 0o600)
}

// writeMarker records the state served and the settings it is served
// with, once the state has been opened.
func writeMarker(s Settings, getenv func(string) string, stateID string) error {
	v, c := version.Get()
	m := marker{
		StateID: stateID, StateSource: s.StateDir, Settings: changedSettings(getenv), Managed: managed(),
		Version: v, Commit: c, Written: time.Now().UTC(),
	}
	if m.Managed {
		// The state mount's directory as the mount table shows it: the
		// host path when it is on the host's root filesystem.
		if root, ok := mountpoint.MountRoot(filepath.Clean(s.StateDir)); ok && root != "/" {
			m.StateSource = root
		}
	}
	data, err := json.MarshalIndent(&m, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(markerPath(s), append(data, '\n'), 0o600)
}

// managed reports whether snapvol runs as a managed plugin: Docker starts
// a plugin as the first process of its own PID namespace.
func managed() bool { return os.Getpid() == 1 }
