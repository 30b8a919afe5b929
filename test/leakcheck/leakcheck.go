// Package leakcheck finds what root tests left behind: mounts (in any
// mount namespace on the host) and loop devices below the temporary
// directories the tests made. A killed daemon leaves its pool and clones
// mounted, a process holding a mount namespace keeps copies of them, and a
// loop device whose file was deleted stays attached while anything still
// mounts it; none of that fails a test by itself, so it piled up unseen
// across runs.
//
// Only directories registered here are looked at (Dir, TempDir, Track):
// other test processes on the same host make their own directories at the
// same time, and what they hold is not this process's leak.
package leakcheck

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/snapvol/snapvol/mountpoint"
	"golang.org/x/sys/unix"
)

var (
	mu   sync.Mutex
	dirs = map[string]string{} // directory -> the test that made it
)

// Track registers dir, made by the test named owner, for Leaks.
func Track(dir, owner string) {
	mu.Lock()
	defer mu.Unlock()
	dirs[filepath.Clean(dir)] = owner
}

// Dir makes a fresh directory in the system temp dir, as os.MkdirTemp("",
// pattern) does, and registers it as t's. Its name carries this process's
// pid (PATTERN-PID-RANDOM, pattern ending in "-"), so that a later run can
// tell the directories of a test process that died (a -timeout panic, a
// kill) from those of test processes still running: see SweepDead.
func Dir(t testing.TB, pattern string) (string, error) {
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", pattern, os.Getpid()))
	if err == nil {
		Track(dir, t.Name())
	}
	return dir, err
}

// deadDir matches the names Dir gives: PATTERN-PID-RANDOM.
var deadDir = regexp.MustCompile(`^((?:snapvol|osdserver)(?:-[a-z]+)*)-([0-9]+)-[0-9]+$`)

// SweepDead detaches the mounts and loop devices left below directories
// Dir made for a test process that no longer runs, and removes those
// directories: a test binary that dies (go test's -timeout panic, a kill)
// runs no cleanup, and what its tests had mounted stayed for good. A
// directory some running process still uses (its working directory, or
// named in its command line or environment: a daemon the dead run
// started) is left alone and named. It returns what it did.
func SweepDead() []string {
	ents, err := os.ReadDir(os.TempDir())
	if err != nil {
		return nil
	}
	var dead []string
	for _, e := range ents {
		m := deadDir.FindStringSubmatch(e.Name())
		if m == nil || !e.IsDir() {
			continue
		}
		if _, err := os.Stat("/proc/" + m[2]); err == nil {
			continue // its process runs (or the pid was reused: left for later)
		}
		dead = append(dead, filepath.Join(os.TempDir(), e.Name()))
	}
	var did []string
	for _, dir := range dead {
		if users := usersOf(dir); len(users) > 0 {
			did = append(did, fmt.Sprintf("left %s: processes %s use it", dir, strings.Join(users, " ")))
			continue
		}
		Track(dir, "a test process that died")
	}
	leaks := Leaks()
	for _, l := range leaks {
		if l.Owner == "a test process that died" {
			did = append(did, "cleared "+l.String())
		}
	}
	Clear(leaks)
	mu.Lock()
	for _, dir := range dead {
		if dirs[dir] == "a test process that died" {
			delete(dirs, dir)
			if err := os.RemoveAll(dir); err != nil {
				did = append(did, fmt.Sprintf("left %s: %v", dir, err))
			}
		}
	}
	mu.Unlock()
	return did
}

// usersOf lists the processes whose working directory, command line or
// environment names dir or a path below it.
func usersOf(dir string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cwd, _ := os.Readlink("/proc/" + e.Name() + "/cwd")
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		environ, _ := os.ReadFile("/proc/" + e.Name() + "/environ")
		if cwd == dir || strings.HasPrefix(cwd, dir+"/") || bytes.Contains(cmdline, []byte(dir)) || bytes.Contains(environ, []byte(dir)) {
			out = append(out, e.Name()+"("+comm(e.Name())+")")
		}
	}
	return out
}

// TempDir is t.TempDir, registered: for a test that mounts below it.
func TempDir(t testing.TB) string {
	dir := t.TempDir()
	Track(dir, t.Name())
	return dir
}

// Leak is one thing left behind: a mount or a loop device.
type Leak struct {
	Owner string // the test that made the directory
	What  string // "mount" or "loop"
	Path  string // the mount point, or the loop device's backing file
	Where string // the mount namespace and the pids in it, or the device
	Dev   string // the loop device (/dev/loopN), for a loop
}

func (l Leak) String() string {
	return fmt.Sprintf("%s: %s %s (%s)", l.Owner, l.What, l.Path, l.Where)
}

// Leaks lists what is mounted, in any mount namespace, or attached to a
// loop device below a registered directory.
func Leaks() []Leak {
	mu.Lock()
	owners := make(map[string]string, len(dirs))
	for d, o := range dirs {
		owners[d] = o
	}
	mu.Unlock()
	ownerOf := func(p string) (string, bool) {
		for d, o := range owners {
			if p == d || strings.HasPrefix(p, d+"/") {
				return o, true
			}
		}
		return "", false
	}
	var out []Leak
	for _, l := range loops() {
		if o, ok := ownerOf(l.file); ok {
			out = append(out, Leak{Owner: o, What: "loop", Path: l.file + l.deleted, Where: l.dev, Dev: l.dev})
		}
	}
	self, _ := os.Readlink("/proc/thread-self/ns/mnt")
	for ns, m := range namespaces() {
		where := fmt.Sprintf("%s, held by pids %s", ns, strings.Join(m.pids, " "))
		if ns == self {
			where = ns + ", this process's mount namespace"
		}
		for _, p := range m.paths {
			if o, ok := ownerOf(p); ok {
				out = append(out, Leak{Owner: o, What: "mount", Path: p, Where: where})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

type loop struct{ dev, file, deleted string }

// loops lists the attached loop devices and their backing files.
func loops() []loop {
	var out []loop
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		file := strings.TrimSpace(string(b))
		l := loop{dev: "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(f))), file: file}
		if s, ok := strings.CutSuffix(file, " (deleted)"); ok {
			l.file, l.deleted = s, " (deleted)"
		}
		out = append(out, l)
	}
	return out
}

type nsMounts struct {
	pids  []string
	paths []string
}

// namespaces reads the mount points of every mount namespace a process
// is in, once per namespace.
func namespaces() map[string]*nsMounts {
	out := map[string]*nsMounts{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		ns, err := os.Readlink("/proc/" + e.Name() + "/ns/mnt")
		if err != nil {
			continue
		}
		if cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline"); len(cmdline) == 0 {
			continue // a kernel thread, in the initial namespace
		}
		if m, ok := out[ns]; ok {
			if len(m.pids) < 5 {
				m.pids = append(m.pids, e.Name()+"("+comm(e.Name())+")")
			}
			continue
		}
		paths, err := MountPoints("/proc/" + e.Name() + "/mountinfo")
		if err != nil {
			continue
		}
		out[ns] = &nsMounts{pids: []string{e.Name() + "(" + comm(e.Name()) + ")"}, paths: paths}
	}
	return out
}

func comm(pid string) string {
	b, _ := os.ReadFile("/proc/" + pid + "/comm")
	return strings.TrimSpace(string(b))
}

// MountPoints lists the mount points in a mountinfo file, in its order
// (parents before their children), unescaped.
func MountPoints(mountinfo string) ([]string, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 4 {
			out = append(out, mountpoint.UnescapePath(fs[4]))
		}
	}
	return out, sc.Err()
}

// UnmountUnder lazily detaches every mount at or below dir in this
// process's mount namespace, deepest first. MNT_DETACH, because a killed
// daemon's clones may still be open somewhere: they go when the last user
// does, and the path is free at once.
func UnmountUnder(dir string) {
	paths, err := MountPoints("/proc/thread-self/mountinfo")
	if err != nil {
		return
	}
	dir = filepath.Clean(dir)
	for i := len(paths) - 1; i >= 0; i-- {
		if p := paths[i]; p == dir || strings.HasPrefix(p, dir+"/") {
			_ = unix.Unmount(p, unix.MNT_DETACH)
		}
	}
}

// Clear undoes the leaks it can, after Leaks named them: mounts in this
// process's namespace are detached, and loop devices left without a user
// are detached (a device still mounted in another namespace goes by
// itself once that namespace is gone: the pool's loop devices are set up
// to clear automatically).
func Clear(leaks []Leak) {
	self, _ := os.Readlink("/proc/thread-self/ns/mnt")
	for _, l := range leaks {
		if l.What == "mount" && strings.HasPrefix(l.Where, self+", this process's") {
			_ = unix.Unmount(l.Path, unix.MNT_DETACH)
		}
	}
	for _, l := range leaks {
		if l.What == "loop" {
			if f, err := os.OpenFile(l.Dev, os.O_RDONLY, 0); err == nil {
				_ = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
				f.Close()
			}
		}
	}
}

// Main sweeps what dead test runs left (SweepDead), runs the tests, then
// fails the run (exit status 1) naming every mount and loop device left
// below a registered directory, and clears what it can so the next run
// starts clean.
func Main(m *testing.M) int {
	if os.Geteuid() == 0 {
		for _, l := range SweepDead() {
			fmt.Fprintf(os.Stderr, "leakcheck: from a test run that died: %s\n", l)
		}
	}
	code := m.Run()
	leaks := Leaks()
	if len(leaks) == 0 {
		return code
	}
	fmt.Fprintf(os.Stderr, "FAIL: the tests left %d mounts and loop devices behind:\n", len(leaks))
	for _, l := range leaks {
		fmt.Fprintf(os.Stderr, "  %s\n", l)
	}
	Clear(leaks)
	if rest := Leaks(); len(rest) > 0 {
		fmt.Fprintf(os.Stderr, "still there after clearing (held by the processes named):\n")
		for _, l := range rest {
			fmt.Fprintf(os.Stderr, "  %s\n", l)
		}
	}
	return 1
}
