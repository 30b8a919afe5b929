package local

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/mountpoint"
	"github.com/snapvol/snapvol/storage"
)

// Pool health. A btrfs pool that hits an I/O error it cannot recover from
// (a sparse pool file whose host filesystem filled up, a failing disk)
// aborts its transaction and turns itself read-only; every later write
// fails with EROFS, reads may fail with EIO, and deleting does not work
// either. Health says so before the driver makes a clone there, cheaply:
// a statfs for the read-only flag on every call, a small write and fsync
// in the pool at most every probeEvery (and at the next call after any
// backend call saw EIO or EROFS), each bounded by probeTimeout; a healthy
// pool's periodic probe runs in the background.

const (
	probeEvery   = 5 * time.Second
	probeTimeout = 3 * time.Second
	probeFile    = ".snapvol-health"
)

type health struct {
	root string

	mu       sync.Mutex
	probed   time.Time
	probeErr error
	seen     error         // EIO or EROFS a backend call saw since the last good probe
	inflight chan struct{} // closed when the running probe ends
}

// noted passes err on as wrapErr does, remembering an EIO or EROFS for
// Health.
func (b *Backend) noted(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.EIO) || errors.Is(err, unix.EROFS) {
		b.health.mu.Lock()
		b.health.seen = err
		b.health.mu.Unlock()
	}
	return wrapErr(err)
}

// Health implements storage.Checker: nil, or an error wrapping
// storage.ErrUnhealthy that names the pool and what the kernel says.
func (b *Backend) Health(ctx context.Context) error {
	h := &b.health
	var st unix.Statfs_t
	if err := unix.Statfs(h.root, &st); err != nil {
		return h.unhealthy(fmt.Sprintf("statfs failed: %v", err))
	}
	if st.Flags&unix.ST_RDONLY != 0 {
		return h.unhealthy("it is read-only: " + readOnlyReason(h.root))
	}
	if why := sparsePoolFile(b.poolFile()); why != "" {
		return h.unhealthy(why)
	}
	h.mu.Lock()
	// Only a pool in doubt makes the caller wait for the probe: one never
	// probed, one whose last probe failed, or one a backend call saw fail.
	// The periodic probe of a healthy pool runs behind the answer, so a
	// clone does not wait for its fsync every probeEvery.
	wait := h.seen != nil || h.probeErr != nil || h.probed.IsZero()
	if h.inflight == nil && (h.seen != nil || time.Since(h.probed) >= probeEvery) {
		done := make(chan struct{})
		h.inflight = done
		go func() {
			err := probe(h.root)
			h.mu.Lock()
			h.probeErr, h.probed, h.inflight = err, time.Now(), nil
			if err == nil {
				h.seen = nil
			}
			h.mu.Unlock()
			close(done)
		}()
	}
	done := h.inflight
	h.mu.Unlock()
	if done != nil && wait {
		t := time.NewTimer(probeTimeout)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			return h.unhealthy(fmt.Sprintf("a %d-byte write and fsync in it has not finished after %s", probeSize, probeTimeout))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	h.mu.Lock()
	err := h.probeErr
	h.mu.Unlock()
	if err != nil {
		why := fmt.Sprintf("a small write and fsync in it failed: %v", err)
		if errors.Is(err, unix.EROFS) || errors.Is(err, unix.EIO) {
			why += "; " + readOnlyReason(h.root)
		}
		return h.unhealthy(why)
	}
	return nil
}

const probeSize = 512

// poolFile is the pool file in STATE_DIR when the pool is one (POOL
// empty), "" otherwise.
func (b *Backend) poolFile() string {
	if b.cfg.Pool != "" || b.cfg.StateDir == "" {
		return ""
	}
	return filepath.Join(b.cfg.StateDir, "pool.img")
}

// sparsePoolFile says why a pool file is not fully allocated on the
// filesystem under it ("" when it is, or there is none). The pool file is
// allocated when it is made and at every start, so that filesystem can
// never fail the pool's writes; a hole punched in it later (a discard or
// fstrim that reached the loop device, a copy that made it sparse) lets
// the pool promise space the host may not have, and a write it
// acknowledged can then be lost when the host fills up. A stat is cheap
// enough for every Health call.
func sparsePoolFile(img string) string {
	if img == "" {
		return ""
	}
	var st unix.Stat_t
	if err := unix.Stat(img, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return "" // a btrfs mounted at STATE_DIR/pool by hand: no file to check
		}
		return fmt.Sprintf("cannot stat its file %s: %v", img, err)
	}
	have := st.Blocks * 512
	if have >= st.Size {
		return ""
	}
	return fmt.Sprintf("its file %s is sparse: only %s (%d bytes) of its %s (%d bytes) are allocated on the filesystem under it, so that filesystem may fail (and lose) the pool's writes when it fills up; "+
		"holes were punched in it (fstrim, or a discard that reached its loop device); allocate it again, keeping its data: fallocate -l %d %s (the same file in STATE_DIR on the host), after freeing %s there if needed; or restart snapvol, which allocates it at start",
		img, human(have), have, human(st.Size), st.Size, st.Size, img, human(st.Size-have))
}

// probe writes and fsyncs a small file in the pool. A full pool (ENOSPC)
// is not a failure of the pool: it takes no new data, and frees up as
// clones go.
func probe(root string) error {
	p := filepath.Join(root, probeFile)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return okIfFull(err)
	}
	buf := make([]byte, probeSize)
	copy(buf, time.Now().UTC().Format(time.RFC3339Nano))
	_, err = f.Write(buf)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return okIfFull(err)
}

func okIfFull(err error) error {
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		return nil
	}
	return err
}

func (h *health) unhealthy(why string) error {
	return fmt.Errorf("%w: pool %s%s: %s", storage.ErrUnhealthy, h.root, describeFS(h.root), why)
}

// describeFS is " (btrfs FSID on DEVICE)" for messages, as far as it can
// be told.
func describeFS(root string) string {
	fsid, err := fsID(root)
	m, ok := mountOf(root)
	switch {
	case err == nil && ok:
		return fmt.Sprintf(" (btrfs %s on %s)", fsid, m.source)
	case err == nil:
		return fmt.Sprintf(" (btrfs %s)", fsid)
	case ok:
		return fmt.Sprintf(" (on %s)", m.source)
	}
	return ""
}

// readOnlyReason tells a pool someone mounted read-only from one the
// kernel forced read-only after an error, from the mount's options and
// the filesystem's device error counters.
func readOnlyReason(root string) string {
	var why string
	m, ok := mountOf(root)
	switch {
	case !ok:
		why = "the kernel reports the filesystem read-only"
	case hasOpt(m.opts, "ro"):
		why = fmt.Sprintf("%s is mounted read-only (mount options %s)", m.point, m.opts)
	case hasOpt(m.superOpts, "ro"):
		why = fmt.Sprintf("the kernel forced the filesystem read-only after an error (mount %s is rw, the filesystem ro); the kernel log (dmesg) says why; it stays read-only until it is unmounted, checked and mounted again", m.point)
	default:
		why = "the filesystem refuses writes"
	}
	if fsid, err := fsID(root); err == nil {
		if s := deviceErrors(fsid); s != "" {
			why += "; device errors: " + s
		}
	}
	return why
}

func hasOpt(opts, o string) bool {
	for _, x := range strings.Split(opts, ",") {
		if x == o {
			return true
		}
	}
	return false
}

type mountEntry struct {
	point, opts, superOpts, source string
}

// mountOf finds the mount root is on in /proc/self/mountinfo (the last,
// longest mount point that is root or above it).
func mountOf(root string) (mountEntry, bool) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return mountEntry{}, false
	}
	defer f.Close()
	root = filepath.Clean(root)
	var best mountEntry
	found := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 6 || len(fields) < sep+4 {
			continue
		}
		point := mountpoint.UnescapePath(fields[4])
		if point != root && !strings.HasPrefix(root, strings.TrimSuffix(point, "/")+"/") {
			continue
		}
		if !found || len(point) >= len(best.point) {
			best = mountEntry{point: point, opts: fields[5], source: fields[sep+2], superOpts: fields[sep+3]}
			found = true
		}
	}
	return best, found
}

// fsInfoArgs is struct btrfs_ioctl_fs_info_args (1024 bytes).
type fsInfoArgs struct {
	maxID, numDevices uint64
	fsid              [16]byte
	rest              [992]byte
}

const iocFsInfo = 0x8400941f // _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args)

var (
	_ [1024 - unsafe.Sizeof(fsInfoArgs{})]byte
	_ [unsafe.Sizeof(fsInfoArgs{}) - 1024]byte
)

// fsID is the filesystem's UUID, as /sys/fs/btrfs names it.
func fsID(root string) (string, error) {
	f, err := openDir(root)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var a fsInfoArgs
	if err := ioctl(f.Fd(), iocFsInfo, unsafe.Pointer(&a)); err != nil {
		return "", err
	}
	return uuidString(a.fsid), nil
}

// deviceErrors sums up the filesystem's non-zero device error counters
// (/sys/fs/btrfs/FSID/devinfo/*/error_stats), "" when all are zero.
func deviceErrors(fsid string) string {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/btrfs", fsid, "devinfo", "*", "error_stats"))
	var out []string
	for _, p := range dirs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			k, v, ok := strings.Cut(strings.TrimSpace(line), " ")
			if ok && v != "0" {
				out = append(out, k+" "+v)
			}
		}
	}
	return strings.Join(out, ", ")
}
