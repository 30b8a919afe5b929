package osdserver

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/snapvol/snapvol/mountpoint"
	"golang.org/x/sys/unix"
)

// The server mounts in a mount namespace of its own, as Portworx does: it
// runs in a container, and only what it mounts under a directory shared
// with the host (its own Docker plugin's /var/lib/osd/mounts, bound
// rshared into its container) shows on the host. A mount anywhere else is
// made, reported, and invisible to snapvol: the path snapvol's mount
// check exists for.
//
// The namespace is held by a helper process, unshare(1) keeping the
// host's propagation (--propagation unchanged), so the shared mount root
// (Server.MountRoot) made before it is a peer of the host's: mounts under
// it propagate both ways. Everything else is cut off: mounts other tests
// made are detached in the helper (a private copy would keep their
// filesystems busy after they unmount them), and mounts that are shared
// (on hosts whose / is shared) are made slaves, so the host's changes
// still arrive and the helper's do not leave. Mount calls run on a thread
// that joins the namespace and dies with its goroutine.
type mountNS struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	ns    *os.File // the helper's /proc/PID/ns/mnt
}

// startMountNS starts the helper and tidies its namespace: root is the
// shared mount root, keep the mounts it must hold on to (the pool).
func startMountNS(root string, keep []string) (*mountNS, error) {
	self, err := os.Readlink("/proc/thread-self/ns/mnt")
	if err != nil {
		return nil, err
	}
	// cat holds the namespace until its stdin closes: at Close, or when
	// this process dies, so no helper outlives its test.
	cmd := exec.Command("unshare", "--mount", "--propagation", "unchanged", "--", "cat")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("osdserver: starting the mount namespace helper (unshare from util-linux): %w", err)
	}
	m := &mountNS{cmd: cmd, stdin: stdin}
	nsPath := fmt.Sprintf("/proc/%d/ns/mnt", cmd.Process.Pid)
	deadline := time.Now().Add(5 * time.Second)
	for {
		// unshare(1) execs cat once the namespace is made.
		if l, err := os.Readlink(nsPath); err == nil && l != self {
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid)); filepath.Base(exe) == "cat" {
				break
			}
		}
		if time.Now().After(deadline) {
			m.stop()
			return nil, fmt.Errorf("osdserver: the mount namespace helper did not start: %s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if m.ns, err = os.Open(nsPath); err != nil {
		m.stop()
		return nil, err
	}
	if err := m.tidy(root, keep); err != nil {
		m.stop()
		return nil, err
	}
	return m, nil
}

// run calls fn in the helper's mount namespace.
func (m *mountNS) run(fn func() error) error {
	ch := make(chan error, 1)
	go func() {
		// Never unlocked: the thread leaves this process's mount
		// namespace and so must exit with the goroutine. Go cannot end
		// the main thread, though: a locked goroutine that returns on it
		// leaves it wedged, still the thread /proc/self names. So the
		// thread goes back to this process's namespace before it ends,
		// or every /proc/self/mountinfo read after it would list the
		// server's mounts instead of the host's (the harness then missed
		// the mounts of every later test and left them behind).
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/mnt")
		if err != nil {
			ch <- fmt.Errorf("osdserver: %w", err)
			return
		}
		defer home.Close()
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			ch <- fmt.Errorf("osdserver: unshare(CLONE_FS): %w", err)
			return
		}
		if err := unix.Setns(int(m.ns.Fd()), unix.CLONE_NEWNS); err != nil {
			ch <- fmt.Errorf("osdserver: joining the server's mount namespace: %w", err)
			return
		}
		defer func() { _ = unix.Setns(int(home.Fd()), unix.CLONE_NEWNS) }()
		ch <- fn()
	}()
	return <-ch
}

// stop ends the helper: its namespace, and every mount only it held, go
// with it.
func (m *mountNS) stop() {
	if m.ns != nil {
		m.ns.Close()
	}
	m.stdin.Close()
	done := make(chan struct{})
	go func() { _ = m.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = m.cmd.Process.Kill()
		<-done
	}
}

type mountEntry struct {
	id, parent int
	path       string
	shared     bool
}

// mountInfo parses /proc/PID/mountinfo.
func mountInfo(pid int) ([]mountEntry, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 7 {
			continue
		}
		id, _ := strconv.Atoi(fs[0])
		parent, _ := strconv.Atoi(fs[1])
		e := mountEntry{id: id, parent: parent, path: mountpoint.UnescapePath(fs[4])}
		for _, opt := range fs[6:] {
			if opt == "-" {
				break
			}
			if strings.HasPrefix(opt, "shared:") {
				e.shared = true
			}
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

func under(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// tidy leaves the helper's namespace with what a storage server's
// container has: the system mounts, the pool, and the shared mount root;
// see mountNS.
func (m *mountNS) tidy(root string, keep []string) error {
	mounts, err := mountInfo(m.cmd.Process.Pid)
	if err != nil {
		return err
	}
	needed := func(p string) bool {
		if p == "/" || under(p, "/proc") || under(p, "/sys") || under(p, "/dev") || under(p, root) {
			return true
		}
		for _, k := range append([]string{root}, keep...) {
			if under(p, k) || under(k, p) { // kept, or on the way to it
				return true
			}
		}
		return false
	}
	byID := map[int]mountEntry{}
	for _, e := range mounts {
		byID[e.id] = e
	}
	return m.run(func() error {
		for _, e := range mounts {
			switch {
			case needed(e.path):
				if e.shared && !under(e.path, root) {
					if err := unix.Mount("", e.path, "", unix.MS_SLAVE, ""); err != nil && !errors.Is(err, unix.EINVAL) {
						return fmt.Errorf("osdserver: making %s a slave mount in the server's namespace: %w", e.path, err)
					}
				}
			case needed(byID[e.parent].path) || byID[e.parent].id == 0:
				// The outermost mount of a foreign tree: made private
				// first, so that detaching it here does not propagate to
				// the host.
				if err := unix.Mount("", e.path, "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
					return fmt.Errorf("osdserver: making %s private in the server's namespace: %w", e.path, err)
				}
				if err := unix.Unmount(e.path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
					return fmt.Errorf("osdserver: detaching %s in the server's namespace: %w", e.path, err)
				}
			}
		}
		return nil
	})
}
