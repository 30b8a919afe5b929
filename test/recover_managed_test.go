package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/test/dockerd"
	"github.com/snapvol/snapvol/test/leakcheck"
)

// docs/recover.md's managed-plugin block, as written, on both engines: a
// managed plugin with production (held by a running database container),
// a named snapshot, an operator volume and a CI clone of the snapshot held
// by a running job. The plugin is disabled and its snapvol.db deleted; the
// plugin enabled on that state serves only the refusal, which names the
// host's file and snapvol recover. The doc's block then disables it, runs
// the plugin's own binary (its rootfs /snapvol) on the host with the
// plugin's settings against the state directory, and enables it: no pool
// mount is left on the host, the records are what they were (snapvol ls,
// docker volume ls, the named snapshot), the job's clone is the same
// object under the running job, production's data is untouched, and no
// backend object is without a record nor a record without its object.
// Then the job stops and its volume removes through Docker as usual (its
// mount was counted), and the recovered operator volume still makes a
// named snapshot.
func TestRecoverManagedPlugin(t *testing.T) {
	dockerd.Require(t)
	RequireTool(t, "losetup", "mount")
	block := docBlock(t, "managed", "recover-managed")
	dockerd.ForEachEngine(t, func(t *testing.T, eng dockerd.Engine) {
		d := dockerd.Start(t, dockerd.Options{Engine: &eng})
		p := d.InstallPlugin(dockerd.Bundle(t, Binary(t)), "snapvol", "POOL_SIZE=1G", "LOG_LEVEL=debug")
		img := dockerd.Image
		snapvol := func(args ...string) string {
			t.Helper()
			out, err := cli(t, nil, append([]string{"--state-dir", p.StateDir}, args...)...)
			if err != nil {
				t.Fatalf("snapvol %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			return out
		}
		waitFor := func(ctr, file, want string) {
			t.Helper()
			deadline := time.Now().Add(20 * time.Second)
			for {
				out, err := d.Docker("exec", ctr, "cat", file)
				if err == nil && strings.TrimSpace(out) == want {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("container %s: %s reads %q (%v), want %q", ctr, file, out, err, want)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		// Production, held by its database for the whole test.
		d.MustDocker("volume", "create", "-d", "snapvol", "app-production")
		t.Cleanup(func() { _, _ = d.Docker("rm", "-f", "db", "job") })
		d.MustDocker("run", "-d", "--name", "db", "--network", "none", "-v", "app-production:/d", img,
			"sh", "-c", "mkdir -p /d/guestbook && echo row1 > /d/guestbook/0001.txt && echo ok > /d/ready && sleep 600")
		waitFor("db", "/d/ready", "ok")
		// The named snapshot, an operator volume of it (no --docker: not
		// Docker's), and a CI job running on a clone of it.
		snapvol("snapshot", "create", "app-production", "masked")
		snapvol("volume", "create", "mask-work", "--from", "app-production@masked")
		job := "app-production@masked+job1"
		d.MustDocker("run", "-d", "--name", "job", "--network", "none", "--volume-driver", "snapvol", "-v", job+":/d", img,
			"sh", "-c", "cat /d/guestbook/0001.txt > /d/seen && echo job > /d/ci.txt && sleep 600")
		waitFor("job", "/d/ci.txt", "job")
		waitFor("job", "/d/seen", "row1")

		before := managedRecords(t, snapvol)
		prodSum := TreeSum(t, filepath.Join(managedView(t, p).Pool(), "volumes", "app-production"))
		objs := managedObjects(t, managedView(t, p).Pool())
		if !slices.ContainsFunc(objs, func(o string) bool { return strings.HasPrefix(o, "snapshots/") }) || len(managedClones(managedView(t, p).Pool())) != 2 {
			t.Fatalf("the pool holds %v, want a snapshot and two clones (the job's and mask-work's)", objs)
		}

		// The store is lost while the plugin is disabled.
		d.MustDocker("plugin", "disable", "-f", "snapvol")
		db := filepath.Join(p.StateDir, "snapvol.db")
		if err := os.Remove(db); err != nil {
			t.Fatal(err)
		}
		// Enabled on it, the plugin refuses to serve: Docker's enable only
		// dials the socket, so the refusal is what every Docker request
		// answers, naming the host's file and the way back.
		if out, err := d.Docker("plugin", "enable", "snapvol"); err != nil {
			t.Logf("docker plugin enable on the lost store: %v %s", err, out)
		}
		out, err := d.Docker("volume", "create", "-d", "snapvol", "probe")
		if err == nil {
			t.Fatalf("docker volume create on a plugin whose snapvol.db is gone succeeded:\n%s", out)
		}
		for _, w := range []string{"snapvol is not serving", db + " is missing", "snapvol recover"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("the refusal does not say %q:\n%v", w, err)
			}
		}
		if _, err := os.Stat(db); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the refused plugin made %s: %v", db, err)
		}
		waitFor("job", "/d/ci.txt", "job") // the job ran on throughout

		// docs/recover.md, as written: the engine's docker, its data root
		// for /var/lib/docker and the plugin's state.source for
		// /var/lib/snapvol; the host's snapvol (the block's ls) finds the
		// admin socket there by STATE_DIR.
		bin := t.TempDir()
		for name, target := range map[string]string{"snapvol": Binary(t), "docker": dockerd.DockerCLI()} {
			if err := os.Symlink(target, filepath.Join(bin, name)); err != nil {
				t.Fatal(err)
			}
		}
		script := strings.NewReplacer("/var/lib/docker/", filepath.Join(d.Dir, "data")+"/", "/var/lib/snapvol", p.StateDir).Replace(block.Text)
		cmd := d.Command("bash", "-euo", "pipefail", "-c", script)
		cmd.Env = append(d.Env(), "PATH="+bin+":"+os.Getenv("PATH"), "STATE_DIR="+p.StateDir)
		start := time.Now()
		recovered, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s\nscript:\n%s\ndockerd:\n%s", block, err, recovered, script, d.LogTail(40))
		}
		t.Logf("%s (%v):\n%s", block, time.Since(start).Round(time.Millisecond), recovered)
		// A managed plugin's pool is mounted in its own namespace only;
		// recover mounts it on the host to read it, and must not leave it
		// there: the state directory would then hold the whole pool, which
		// a copy of it (docs/settings.md's state-move, cp -a) copies file by
		// file, and the host's own mount namespace keeps the pool's
		// filesystem alive for good.
		if held, err := leakcheck.MountPoints("/proc/thread-self/mountinfo"); err != nil {
			t.Fatal(err)
		} else if under := slices.DeleteFunc(held, func(m string) bool { return m != p.StateDir && !strings.HasPrefix(m, p.StateDir+"/") }); len(under) > 0 {
			t.Errorf("after the block the host has mounts in the plugin's state directory: %v", under)
		}
		for _, w := range []string{"snapvol.db is refused", "recovered 3 volumes (2 clones), 1 named snapshots",
			"  volume app-production\n", "  volume " + job + "\n", "  volume mask-work (the operator's, access none)",
			"  snapshot app-production@masked", "in use now"} {
			if !strings.Contains(string(recovered), w) {
				t.Errorf("snapvol recover does not report %q", w)
			}
		}
		// The block's last command, snapvol ls, lists the three volumes.
		_, ls, _ := strings.Cut(string(recovered), "not in labels, so not recovered")
		for _, v := range []string{"app-production ", job + " ", "mask-work "} {
			if !strings.Contains(ls, "\n"+v) {
				t.Errorf("the block's snapvol ls does not list %s:\n%s", v, ls)
			}
		}

		// The records are what they were, and Docker has its volumes
		// again (mask-work is the operator's: not Docker's).
		if after := managedRecords(t, snapvol); after != before {
			t.Errorf("snapvol ls --json after recover:\n%s\nbefore the store was lost:\n%s", after, before)
		}
		if ls := d.MustDocker("volume", "ls", "--format", "{{.Driver}} {{.Name}}"); ls != "snapvol:latest app-production\nsnapvol:latest "+job+"\n" {
			t.Errorf("docker volume ls after recover:\n%s", ls)
		}
		var snaps []struct{ Name, Kind string }
		if err := json.Unmarshal([]byte(snapvol("snapshot", "ls", "app-production", "--json")), &snaps); err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(snaps, func(s struct{ Name, Kind string }) bool { return s.Name == "masked" && s.Kind == "named" }) {
			t.Errorf("masked is not a named snapshot again: %+v", snaps)
		}
		// Nothing was destroyed, production's data is as it was, and
		// records and objects match.
		view := managedView(t, p)
		if got := managedObjects(t, view.Pool()); !slices.Equal(got, objs) {
			t.Errorf("the pool after recover and enable: %v, want %v", got, objs)
		}
		checkManagedInvariants(t, view, snapvol, true, map[string]string{"app-production": prodSum})

		// The job's clone is still the one under the job: what the job
		// writes now is in the clone the plugin has.
		waitFor("job", "/d/ci.txt", "job")
		d.MustDocker("exec", "job", "sh", "-c", "echo after-recover > /d/after.txt")
		var jobClone string
		for _, c := range managedClones(view.Pool()) {
			if labelsOf(t, view.Pool(), "clones/"+c)["snapvol.volume"] == job {
				jobClone = c
			}
		}
		if got, err := os.ReadFile(filepath.Join(view.Pool(), "clones", jobClone, "after.txt")); err != nil || string(got) != "after-recover\n" {
			t.Errorf("the job's write after recover is not in its clone %q: %q, %v", jobClone, got, err)
		}
		// Production is its database's still.
		d.MustDocker("exec", "db", "sh", "-c", "echo row2 > /d/guestbook/0002.txt")
		waitFor("db", "/d/guestbook/0001.txt", "row1")

		// The job's mount was counted: its end unmounts, and its volume
		// then removes through Docker.
		d.MustDocker("rm", "-f", "job")
		if out, err := d.Docker("volume", "rm", job); err != nil {
			t.Errorf("docker volume rm %s after its job ended: %v\n%s", job, err, out)
		}
		// A new job clones the snapshot, and the operator volume names a
		// snapshot as before.
		if got := d.MustDocker("run", "--rm", "--network", "none", "--volume-driver", "snapvol", "-v", "app-production@masked+job2:/d", img,
			"cat", "/d/guestbook/0001.txt"); strings.TrimSpace(got) != "row1" {
			t.Errorf("a new job's clone of masked reads %q", got)
		}
		d.MustDocker("volume", "rm", "app-production@masked+job2")
		snapvol("snapshot", "create", "app-production", "masked-again", "--from", "mask-work")
		d.MustDocker("rm", "-f", "db")
		checkManagedInvariants(t, managedView(t, p), snapvol, false, nil)
	})
}

// managedView is a read-only harness Plugin on a managed plugin, reached
// through its process's root (/proc/PID/root): its VolumeDriver socket,
// its admin socket and pool in STATE_DIR, its DATA_ROOT, all as the
// plugin has them.
func managedView(t *testing.T, p *dockerd.Plugin) *Plugin {
	t.Helper()
	pid, err := p.PID()
	if err != nil {
		t.Fatal(err)
	}
	root := fmt.Sprintf("/proc/%d/root", pid)
	v := &Plugin{
		t: t, StateDir: root + "/var/lib/snapvol", DataRoot: root + "/mnt/snapvol",
		Socket: root + "/run/docker/plugins/snapvol.sock", log: &lockedBuffer{},
	}
	v.client = unixClient(v.Socket)
	return v
}

// managedRecords is snapvol ls --json without what moves by itself (age,
// created, expiry, bytes), one volume a line.
func managedRecords(t *testing.T, snapvol func(...string) string) string {
	t.Helper()
	var vols []map[string]any
	if err := json.Unmarshal([]byte(snapvol("ls", "--json")), &vols); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, v := range vols {
		for _, k := range []string{"age_seconds", "created", "expires", "bytes", "snapshot_time"} {
			delete(v, k)
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, string(b))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// managedObjects lists the pool's volumes, clones and snapshots.
func managedObjects(t *testing.T, pool string) []string {
	t.Helper()
	var out []string
	for _, v := range dirNames(filepath.Join(pool, "volumes")) {
		out = append(out, "volumes/"+v)
	}
	for _, c := range managedClones(pool) {
		out = append(out, "clones/"+c)
	}
	for _, src := range dirNames(filepath.Join(pool, "snapshots")) {
		for _, s := range dirNames(filepath.Join(pool, "snapshots", src)) {
			out = append(out, "snapshots/"+src+"/"+s)
		}
	}
	slices.Sort(out)
	return out
}

func managedClones(pool string) []string { return dirNames(filepath.Join(pool, "clones")) }

// labelsOf reads the labels snapvol wrote for object id (storage/local's
// label file: JSON in an extended attribute, or the file's content).
func labelsOf(t *testing.T, pool, id string) map[string]string {
	t.Helper()
	path := filepath.Join(pool, "labels", strings.ReplaceAll(id, "/", "%")+".json")
	buf := make([]byte, 64<<10)
	n, err := unix.Getxattr(path, "user.snapvol.labels", buf)
	var data []byte
	switch {
	case err == nil:
		data = buf[:n]
	case errors.Is(err, unix.ENODATA):
		data, err = os.ReadFile(path)
	}
	if err != nil {
		t.Errorf("labels of %s: %v", id, err)
		return nil
	}
	var l map[string]string
	if err := json.Unmarshal(data, &l); err != nil {
		t.Errorf("labels of %s: %v", id, err)
	}
	return l
}

// checkManagedInvariants is CheckLocalInvariants for a managed plugin,
// seen through view (managedView): mount points are the plugin's, in its
// own mount namespace, and an operator volume Docker may not see (its Get
// fails by design) is known by snapvol ls and by its clone's label. Every
// record's objects exist, no clone or plain volume is without a record,
// nothing is pending, counted mounts are mounted and DATA_ROOT holds
// nothing else, the pool has no leftovers (fresh: right after a start,
// with no change since, so whatever the sweep collects is collected), and
// sources hold what they did.
func checkManagedInvariants(t *testing.T, view *Plugin, snapvol func(...string) string, fresh bool, sources map[string]string) {
	t.Helper()
	var records []struct {
		Name, Kind, Access string
		Mounts, Clones     int
	}
	if err := json.Unmarshal([]byte(snapvol("ls", "--json")), &records); err != nil {
		t.Fatal(err)
	}
	hidden := map[string]bool{} // operator volumes Docker does not see
	listed, err := view.List()
	if err != nil {
		t.Fatalf("VolumeDriver.List: %v", err)
	}
	for _, r := range records {
		if r.Kind == "operator" && r.Access != "docker" {
			hidden[r.Name] = true
		} else if !slices.ContainsFunc(listed, func(v *volume.Volume) bool { return v.Name == r.Name }) {
			t.Errorf("snapvol ls has %s, Docker's List does not", r.Name)
		}
	}
	mountinfo, err := os.ReadFile(strings.TrimSuffix(view.StateDir, "/root/var/lib/snapvol") + "/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	referenced := map[string]bool{}
	targets := map[string]bool{}
	for _, lv := range listed {
		v, err := view.Get(lv.Name)
		if err != nil {
			t.Errorf("volume %q is listed but Get fails: %v", lv.Name, err)
			continue
		}
		if pend, ok := v.Status["pending"]; ok {
			t.Errorf("volume %q has an unfinished %v", v.Name, pend)
		}
		for _, o := range objects(v) {
			referenced[o] = true
			if _, err := os.Stat(filepath.Join(view.Pool(), o)); err != nil {
				t.Errorf("volume %q: record without storage: %s: %v", v.Name, o, err)
			}
		}
		for _, mp := range mountpoints(v) {
			targets[mp] = true
		}
		if mounts, _ := v.Status["mounts"].(float64); v.Mountpoint != "" && mounts > 0 && !containsMount(string(mountinfo), v.Mountpoint) {
			t.Errorf("volume %q counts %v mounts but %s is not mounted in the plugin", v.Name, mounts, v.Mountpoint)
		}
	}
	for _, e := range dirNames(view.DataRoot) {
		mp := "/mnt/snapvol/" + e
		if e != StateMarker && !strings.HasPrefix(e, ".snapvol") && !targets[mp] {
			t.Errorf("DATA_ROOT holds %s, which no volume mounts (mounted: %v)", mp, containsMount(string(mountinfo), mp))
		}
	}
	var orphans []string
	for _, c := range managedClones(view.Pool()) {
		if referenced["clones/"+c] {
			continue
		}
		if l := labelsOf(t, view.Pool(), "clones/"+c); hidden[l["snapvol.volume"]] {
			continue // an operator volume's: its record is in snapvol ls
		}
		orphans = append(orphans, c)
	}
	if len(orphans) > 0 {
		t.Errorf("clones without a record: %v", orphans)
	}
	if !fresh {
		view.changes.Store(1) // not right after a start: collection is lazy
	}
	checkPoolLeftovers(t, view, referenced)
	for name, want := range sources {
		if got := TreeSum(t, filepath.Join(view.Pool(), "volumes", name)); got != want {
			t.Errorf("source %q changed", name)
		}
	}
}
