package main

import (
	"os"
	"sort"
	"strings"
	"testing"
)

// docs/settings.md's table is the settings' documentation: it has a row
// for every setting the binary reads, no row for one it does not, and
// each row's default is the code's (an empty default is written
// "(empty…)" there).
func TestSettingsTableMatchesDefaults(t *testing.T) {
	data, err := os.ReadFile("../docs/settings.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.HasPrefix(line, "| ") {
			continue
		}
		key, def := strings.TrimSpace(cells[1]), strings.TrimSpace(cells[2])
		if key == "setting" || strings.HasPrefix(key, "---") {
			continue
		}
		if _, dup := rows[key]; dup {
			t.Errorf("docs/settings.md has two rows for %s", key)
		}
		rows[key] = def
	}
	var missing []string
	for k, want := range defaults {
		got, ok := rows[k]
		if !ok {
			missing = append(missing, k)
			continue
		}
		if strings.HasPrefix(got, "(empty") {
			got = ""
		}
		if got != want {
			t.Errorf("docs/settings.md: %s defaults to %q, the code to %q", k, got, want)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("docs/settings.md has no row for %v", missing)
	}
	for k := range rows {
		if _, ok := defaults[k]; !ok {
			t.Errorf("docs/settings.md has a row for %s, which the binary does not read", k)
		}
	}
}
