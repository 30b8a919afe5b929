package dockerd

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// DepsScript builds and installs what the end-to-end tests need: the
// current Docker Engine, its runc, Compose v2 and Debian's packages.
const DepsScript = "scripts/test-deps.sh"

// Engine is a Docker engine the end-to-end tests run on.
type Engine struct {
	// Key is what SNAPVOL_ENGINES selects: "debian" (Debian's dockerd
	// 20.10) or "current" (the Docker Engine scripts/test-deps.sh builds).
	Key string
	// Name is the subtest name: "docker-" and the major.minor version.
	Name    string
	Version string // as dockerd reports it
	Dockerd string // the dockerd binary
	// PathDir, when set, comes first in the PATH of this dockerd (and so of
	// its containerd and shims): it holds the runc the engine needs.
	PathDir string
}

// The engines, in the order tests run them.
const (
	EngineDebian  = "debian"
	EngineCurrent = "current"
)

// CacheDir is where scripts/test-deps.sh keeps its builds:
// $SNAPVOL_CI_CACHE, else /var/cache/snapvol-ci (the script's default as
// root; the tests run as root).
func CacheDir() string {
	if d := os.Getenv("SNAPVOL_CI_CACHE"); d != "" {
		return d
	}
	return "/var/cache/snapvol-ci"
}

var (
	debianOnce    sync.Once
	debianEngine  Engine
	debianEngErr  string
	versionNumber = regexp.MustCompile(`version ([0-9]+)\.([0-9]+)[.0-9a-z+~-]*`)
)

// Debian is Debian's dockerd, found in PATH. It fails the test if there is
// none.
func Debian(t testing.TB) Engine {
	t.Helper()
	debianOnce.Do(func() {
		path, err := exec.LookPath("dockerd")
		if err != nil {
			debianEngErr = "dockerd not found: apt-get install -y docker.io (" + DepsScript + " installs everything the tests need)"
			return
		}
		out, err := exec.Command(path, "--version").Output()
		m := versionNumber.FindStringSubmatch(string(out))
		if err != nil || m == nil {
			debianEngErr = path + " --version: " + strings.TrimSpace(string(out)) + " " + errString(err)
			return
		}
		debianEngine = Engine{Key: EngineDebian, Name: "docker-" + m[1] + "." + m[2], Version: versionOf(string(out)), Dockerd: path}
	})
	if debianEngErr != "" {
		t.Fatal(debianEngErr)
	}
	return debianEngine
}

// Current is the Docker Engine scripts/test-deps.sh builds into
// CacheDir()/engine (dockerd, runc, VERSION). It fails the test, naming
// the script, if it is not built.
func Current(t testing.TB) Engine {
	t.Helper()
	dir := filepath.Join(CacheDir(), "engine")
	for _, f := range []string{"dockerd", "runc", "VERSION"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("the current Docker Engine is not built (%v): run %s as root (make test and .ci/run do), or SNAPVOL_ENGINES=debian to test on Debian's dockerd only", err, DepsScript)
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "VERSION"))
	v := strings.TrimSpace(string(b))
	name := "docker-" + v
	if m := regexp.MustCompile(`^([0-9]+)\.([0-9]+)`).FindStringSubmatch(v); m != nil {
		name = "docker-" + m[1] + "." + m[2]
	}
	return Engine{Key: EngineCurrent, Name: name, Version: v, Dockerd: filepath.Join(dir, "dockerd"), PathDir: dir}
}

// Engines are the engines the end-to-end tests run on: SNAPVOL_ENGINES, a
// comma-separated list of "debian" and "current", else both. A requested
// engine that is missing fails the test.
func Engines(t testing.TB) []Engine {
	t.Helper()
	keys := []string{EngineDebian, EngineCurrent}
	if v := strings.TrimSpace(os.Getenv("SNAPVOL_ENGINES")); v != "" {
		keys = nil
		for _, k := range strings.Split(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				keys = append(keys, k)
			}
		}
	}
	var out []Engine
	for _, k := range keys {
		switch k {
		case EngineDebian:
			out = append(out, Debian(t))
		case EngineCurrent:
			out = append(out, Current(t))
		default:
			t.Fatalf("SNAPVOL_ENGINES=%q: unknown engine %q (want debian, current or both)", os.Getenv("SNAPVOL_ENGINES"), k)
		}
	}
	if len(out) == 0 {
		t.Fatalf("SNAPVOL_ENGINES=%q names no engine", os.Getenv("SNAPVOL_ENGINES"))
	}
	return out
}

// ForEachEngine runs f as a subtest per engine (named after it, e.g.
// docker-20.10 and docker-29.8), each engine after the other.
func ForEachEngine(t *testing.T, f func(t *testing.T, eng Engine)) {
	t.Helper()
	Require(t)
	for _, eng := range Engines(t) {
		t.Run(eng.Name, func(t *testing.T) {
			t.Logf("engine %s: dockerd %s (%s)", eng.Name, eng.Version, eng.Dockerd)
			f(t, eng)
		})
	}
}

func versionOf(s string) string {
	f := strings.Fields(s)
	for i, w := range f {
		if w == "version" && i+1 < len(f) {
			return strings.TrimSuffix(f[i+1], ",")
		}
	}
	return strings.TrimSpace(s)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
