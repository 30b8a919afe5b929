// Package version names the build: set with
// -ldflags "-X github.com/snapvol/snapvol/version.Version=… -X github.com/snapvol/snapvol/version.Commit=…"
// (the Makefile does), else read from the Go build info.
package version

import (
	"runtime/debug"
	"sync"
)

// Set by the build.
var (
	Version = ""
	Commit  = ""
)

var once sync.Once

func fill() {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	if Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && Commit == "" {
			Commit = s.Value
		}
	}
}

// Get returns the version and commit, "dev" and "unknown" when the build
// did not say.
func Get() (version, commit string) {
	once.Do(fill)
	v, c := Version, Commit
	if v == "" {
		v = "dev"
	}
	if c == "" {
		c = "unknown"
	}
	return v, c
}

// String is "snapvol VERSION (commit COMMIT)".
func String() string {
	v, c := Get()
	return "snapvol " + v + " (commit " + c + ")"
}
