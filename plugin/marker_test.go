package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// markerEnv is a host-mode environment on dirs under root.
func markerEnv(root, state string, extra map[string]string) (Settings, func(string) string) {
	env := map[string]string{"STATE_DIR": filepath.Join(root, state), "DATA_ROOT": filepath.Join(root, "data"), "SOCKET": filepath.Join(root, "s.sock")}
	for k, v := range extra {
		env[k] = v
	}
	getenv := func(k string) string { return env[k] }
	s, err := LoadSettings(getenv)
	if err != nil {
		panic(err)
	}
	return s, getenv
}

// serveOnce is what a start does to the marker and the state ID.
func serveOnce(t *testing.T, s Settings, getenv func(string) string) {
	t.Helper()
	if _, err := checkState(s, getenv); err != nil {
		t.Fatalf("start refused: %v", err)
	}
	for _, d := range []string{s.StateDir, s.DataRoot} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	id, err := ensureStateID(s.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeMarker(s, getenv, id); err != nil {
		t.Fatal(err)
	}
}

func TestMarkerAcceptsItsOwnState(t *testing.T) {
	root := t.TempDir()
	s, env := markerEnv(root, "state", map[string]string{"POOL_SIZE": "2G", "SOURCES": "app-*", "PX_TOKEN": "secret"})
	serveOnce(t, s, env)
	serveOnce(t, s, env) // a restart
	data, _ := os.ReadFile(filepath.Join(s.DataRoot, MarkerName))
	if strings.Contains(string(data), "secret") || !strings.Contains(string(data), `"POOL_SIZE": "2G"`) {
		t.Fatalf("marker:\n%s", data)
	}
	// A setting changed on purpose to another value is accepted and
	// becomes the one recorded.
	s2, env2 := markerEnv(root, "state", map[string]string{"POOL_SIZE": "3G", "SOURCES": "app-*", "PX_TOKEN": "secret"})
	serveOnce(t, s2, env2)
	// The state moved (same ID): accepted.
	if err := os.Rename(filepath.Join(root, "state"), filepath.Join(root, "moved")); err != nil {
		t.Fatal(err)
	}
	s3, env3 := markerEnv(root, "moved", map[string]string{"POOL_SIZE": "3G", "SOURCES": "app-*", "PX_TOKEN": "secret"})
	serveOnce(t, s3, env3)
}

// The upgrade case: the state directory and every setting back at their
// defaults. The refusal names the state and every setting to set again.
func TestMarkerRefusesAnotherState(t *testing.T) {
	root := t.TempDir()
	s, env := markerEnv(root, "state", map[string]string{"POOL_SIZE": "2G", "LOG_LEVEL": "debug", "PX_TOKEN": "secret"})
	serveOnce(t, s, env)
	for _, c := range []struct{ name, state, want string }{
		{"empty", "empty", "holds no snapvol state"},
		{"another", "other", "holds another snapvol state"},
	} {
		other, oenv := markerEnv(root, c.state, nil)
		if c.state == "other" {
			if err := os.MkdirAll(other.StateDir, 0o700); err != nil {
				t.Fatal(err)
			}
			if _, err := ensureStateID(other.StateDir); err != nil {
				t.Fatal(err)
			}
		}
		_, err := checkState(other, oenv)
		if err == nil {
			t.Fatalf("%s: started on %s", c.name, other.StateDir)
		}
		for _, w := range []string{c.want, "STATE_DIR=" + s.StateDir, "POOL_SIZE=2G", "LOG_LEVEL=debug", "PX_TOKEN=<your PX_TOKEN>", MarkerName} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: refusal does not say %q:\n%v", c.name, w, err)
			}
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("refusal shows the token: %v", err)
		}
	}
	// Nothing was written to the state refused.
	if _, err := os.Stat(filepath.Join(root, "empty")); !os.IsNotExist(err) {
		t.Errorf("the refused STATE_DIR was made: %v", err)
	}
}

// The state is right but settings fell back to their defaults (only
// state.source was set again after an upgrade): refused, naming them;
// ones that only change reporting are warned about.
func TestMarkerRefusesSettingsBackAtDefaults(t *testing.T) {
	root := t.TempDir()
	s, env := markerEnv(root, "state", map[string]string{"POOL_SIZE": "2G", "SOURCES": "app-*", "LOG_LEVEL": "debug"})
	serveOnce(t, s, env)
	s2, env2 := markerEnv(root, "state", map[string]string{"POOL_SIZE": "2G"})
	warn, err := checkState(s2, env2)
	if err == nil || !strings.Contains(err.Error(), "SOURCES=app-*") || strings.Contains(err.Error(), "POOL_SIZE") || strings.Contains(err.Error(), "LOG_LEVEL") {
		t.Fatalf("refusal: %v", err)
	}
	if len(warn) != 1 || !strings.Contains(warn[0], "LOG_LEVEL") {
		t.Fatalf("warnings %q", warn)
	}
	// Deleting the marker is the way to the defaults on purpose.
	if err := os.Remove(filepath.Join(s.DataRoot, MarkerName)); err != nil {
		t.Fatal(err)
	}
	serveOnce(t, s2, env2)
}

// A setting put back to its default on purpose (SOURCES=* after the
// masking recipe's SOURCES=app-production@masked*) is a change, accepted
// and recorded; the same setting left empty, as docker plugin upgrade
// leaves it, is still refused.
func TestMarkerTellsAChosenDefaultFromADroppedSetting(t *testing.T) {
	root := t.TempDir()
	s, env := markerEnv(root, "state", map[string]string{"SOURCES": "app-production@masked*"})
	serveOnce(t, s, env)
	dropped, denv := markerEnv(root, "state", nil)
	if _, err := checkState(dropped, denv); err == nil || !strings.Contains(err.Error(), "SOURCES=app-production@masked*") {
		t.Fatalf("SOURCES dropped to empty: %v, want a refusal naming SOURCES=app-production@masked*", err)
	}
	chosen, cenv := markerEnv(root, "state", map[string]string{"SOURCES": "*"})
	serveOnce(t, chosen, cenv)
	data, _ := os.ReadFile(filepath.Join(chosen.DataRoot, MarkerName))
	if !strings.Contains(string(data), `"SOURCES": "*"`) {
		t.Fatalf("the chosen SOURCES=* is not recorded:\n%s", data)
	}
	// Recorded, it is protected like any other value.
	if _, err := checkState(dropped, denv); err == nil || !strings.Contains(err.Error(), "SOURCES=*") {
		t.Fatalf("SOURCES=* dropped to empty: %v, want a refusal", err)
	}
}

func TestHostPathsRewritesWholePathsOnly(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"STATE_DIR /var/lib/snapvol holds no state", "STATE_DIR /srv/s holds no state"},
		{"marker /var/lib/snapvol/.snapvol-state.json)", "marker /srv/s/.snapvol-state.json)"},
		{"at /var/lib/snapvol.", "at /srv/s."},
		{"/var/lib/snapvol2 and /x/var/lib/snapvol", "/var/lib/snapvol2 and /x/var/lib/snapvol"},
	} {
		if got := replacePathPrefix(c.in, "/var/lib/snapvol", "/srv/s"); got != c.want {
			t.Errorf("%q: got %q, want %q", c.in, got, c.want)
		}
	}
}
