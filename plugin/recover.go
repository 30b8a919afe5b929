package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/driver"
	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/mountpoint"
	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/storage/local"
)

// runRecover is snapvol recover (its command is in cmd/snapvol/cli): it
// rebuilds the store from the pool's labels when snapvol.db is lost,
// emptied, damaged or an older copy, which the plugin refuses to start
// on. It runs with the plugin stopped, not through the admin socket:
// there is no plugin serving to ask (it refused to start), and records
// rebuilt while Docker mounts and removes volumes would race with them.
// bbolt's lock on snapvol.db keeps it from running beside a plugin that
// serves the same STATE_DIR.
func runRecover(out io.Writer, stateDir string, force bool) (err error) {
	s, err := LoadSettings(environ)
	if err != nil {
		return err
	}
	if stateDir != "" {
		s.StateDir = stateDir
	}
	if s.Backend != "local" {
		return fmt.Errorf("snapvol recover rebuilds local (btrfs) pools only; BACKEND=%s: restore snapvol.db and %s from a backup", s.Backend, store.SealName)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	dbPath := filepath.Join(s.StateDir, "snapvol.db")
	sealPath := filepath.Join(s.StateDir, store.SealName)

	// A store the plugin would serve needs no recovery, unless asked.
	if st, err := store.OpenWith(dbPath, store.Options{Seal: sealPath, Timeout: time.Second}); err == nil {
		n := st.Len()
		fresh := st.Fresh()
		st.Close()
		if n > 0 && !fresh && !force {
			return fmt.Errorf("%s opens and holds %d records: nothing to recover (use --force to rebuild it anyway)", dbPath, n)
		}
	} else if errors.Is(err, store.ErrRefused) || errors.Is(err, store.ErrCorrupt) || errors.Is(err, store.ErrSchema) {
		fmt.Fprintf(out, "snapvol.db is refused: %v\n", err)
	} else {
		return err // another snapvol holds it, most likely
	}

	stamp := time.Now().UTC().Format("20060102-150405")
	for _, p := range []string{dbPath, sealPath} {
		if _, err := os.Stat(p); err == nil {
			aside := p + ".before-recover-" + stamp
			if err := os.Rename(p, aside); err != nil {
				return err
			}
			fmt.Fprintf(out, "kept %s as %s\n", filepath.Base(p), aside)
		}
	}
	st, err := store.OpenWith(dbPath, store.Options{Seal: sealPath})
	if err != nil {
		return err
	}
	defer st.Close()
	// A pool recover mounts to read is unmounted again (unmountPool);
	// registered before the backend's Close, so it runs after it.
	poolMnt := filepath.Join(s.StateDir, "pool")
	if !mountpoint.IsMountPoint(poolMnt) {
		defer func() {
			if !mountpoint.IsMountPoint(poolMnt) {
				return
			}
			if uerr := unmountPool(poolMnt); err == nil {
				err = uerr
			}
		}()
	}
	b, err := openBackend(s, st, log)
	if err != nil {
		return fmt.Errorf("backend %s: %w", s.Backend, err)
	}
	defer b.Close()
	root := ""
	if lb, ok := b.(*local.Backend); ok {
		root = lb.Root()
	}
	d := driver.New(driver.Config{Backend: b, Store: st, DataRoot: s.DataRoot, Log: log})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := d.Operator().Recover(ctx, mountHolders(root, s.DataRoot))
	if err != nil {
		return err
	}
	if err := st.Seal(); err != nil {
		return err
	}
	printRecovered(out, rep, dbPath)
	return nil
}

// unmountPool unmounts the pool at mnt, which recover mounted (a pool
// file or device: it found nothing mounted there). A managed plugin's
// pool is mounted in the plugin's own namespace only: left mounted on the
// host after a recover, the state directory would show the whole pool (a
// cp -a of it, as docs/settings.md moves a state, copies every volume
// file by file) and the host's namespace would hold the pool's filesystem
// for good. A host-mode pool the plugin left mounted is found mounted and
// stays so. The filesystem itself lives on while containers hold clones.
func unmountPool(mnt string) error {
	if err := unix.Unmount(mnt, 0); err != nil {
		// Still busy with a file of this process: gone from the host's
		// mount table now, released when recover exits.
		if derr := unix.Unmount(mnt, unix.MNT_DETACH); derr != nil {
			return fmt.Errorf("unmounting the pool %s recover mounted: %w", mnt, derr)
		}
	}
	return nil
}

// printRecovered tells the operator what recover rebuilt into dbPath, and
// what it could not.
func printRecovered(out io.Writer, rep driver.RecoverReport, dbPath string) {
	fmt.Fprintf(out, "recovered %d volumes (%d clones), %d named snapshots into %s\n", len(rep.Volumes), rep.Clones, len(rep.Snapshots), dbPath)
	for _, v := range rep.Volumes {
		if access, ok := rep.Operator[v]; ok {
			fmt.Fprintf(out, "  volume %s (the operator's, access %s)\n", v, access)
			continue
		}
		fmt.Fprintf(out, "  volume %s\n", v)
	}
	for _, sn := range rep.Snapshots {
		fmt.Fprintf(out, "  snapshot %s\n", sn)
	}
	if len(rep.Mounted) > 0 {
		fmt.Fprintf(out, "in use now (mounts counted, kept until unmounted): %s\n", strings.Join(rep.Mounted, ", "))
	}
	for _, sk := range rep.Skipped {
		fmt.Fprintf(out, "  not recovered: %s\n", sk)
	}
	fmt.Fprintln(out, "not in labels, so not recovered: backend -o options (size), schedules (set them again with snapvol snapshot schedule); clones made before this version also lack their operator mark and ttl (see docs/recover.md)")
}

// mountInfo is one line of /proc/PID/mountinfo: device, root of the mount
// within its filesystem, and mount point.
type mountInfo struct{ dev, root, point string }

func readMountInfo(path string) []mountInfo {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []mountInfo
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		out = append(out, mountInfo{dev: f[2], root: unescapeMount(f[3]), point: unescapeMount(f[4])})
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var n int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &n); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountHolders counts, for each object of the local pool at root, the
// mount namespaces other than this one that have it mounted: a container
// holds its volume through a bind mount in its own namespace, which
// outlives the plugin's mount at DATA_ROOT. A mount shows as the
// filesystem's device and the object's path within it, whichever path it
// was mounted through. Mounts in this namespace under dataRoot give the
// target of a +each clone, whose mount ID is lost.
func mountHolders(root, dataRoot string) driver.Holders {
	if root == "" {
		return nil
	}
	self := readMountInfo("/proc/self/mountinfo")
	// The mount holding the pool root: its device and the pool's path
	// within that filesystem.
	var pool mountInfo
	for _, m := range self {
		if (root == m.point || strings.HasPrefix(root, strings.TrimSuffix(m.point, "/")+"/")) && len(m.point) >= len(pool.point) {
			pool = m
		}
	}
	if pool.point == "" {
		return nil
	}
	base := filepath.Join(pool.root, strings.TrimPrefix(root, pool.point))
	count := map[string]int{}
	target := map[string]string{}
	for _, m := range self {
		if m.dev == pool.dev && strings.HasPrefix(m.point, dataRoot+"/") {
			target[m.root] = m.point
		}
	}
	myNS, _ := os.Readlink("/proc/self/ns/mnt")
	seen := map[string]bool{myNS: true}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if p.Name()[0] < '0' || p.Name()[0] > '9' {
			continue
		}
		ns, err := os.Readlink("/proc/" + p.Name() + "/ns/mnt")
		if err != nil || seen[ns] {
			continue
		}
		seen[ns] = true
		held := map[string]bool{}
		for _, m := range readMountInfo("/proc/" + p.Name() + "/mountinfo") {
			if m.dev == pool.dev {
				held[m.root] = true
			}
		}
		for r := range held {
			count[r]++
		}
	}
	return func(o storage.Object) (int, string) {
		p := filepath.Join(base, o.ID)
		return count[p], target[p]
	}
}
