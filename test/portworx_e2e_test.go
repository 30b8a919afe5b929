package test

import (
	"github.com/libopenstorage/openstorage/api"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/snapvol/snapvol/mountpoint"
	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/storage/portworx"
	"github.com/snapvol/snapvol/test/dockerd"
	"github.com/snapvol/snapvol/test/osdserver"
)

// TestE2EPortworxManagedPlugin: the managed plugin in a private dockerd,
// with BACKEND=portworx against the test OpenStorage server on loopback,
// installed with docs/portworx.md's settings. The server, like Portworx, mounts
// in a namespace of its own, under PX_MOUNT_DIR, a host directory it
// shares with the host and the plugin's pxmounts mount brings in; the plugin binds the clone under its
// propagated mount, which Docker binds into the container, and a container
// reads production's data through it.
func TestE2EPortworxManagedPlugin(t *testing.T) {
	dockerd.Require(t)
	dockerd.ForEachEngine(t, pxManagedPlugin)
}

// readmePXSettings are the PLUGIN_SETTINGS of docs/portworx.md's managed
// Portworx install line, with the test's endpoint, token and PX_MOUNT_DIR.
func readmePXSettings(t *testing.T, endpoint, mountDir string) []string {
	t.Helper()
	lines := docBlock(t, "managed", "portworx-managed").Commands()
	const prefix = "make install PLUGIN_CONFIG=config.portworx.json PLUGIN_SETTINGS="
	if len(lines) != 1 || !strings.HasPrefix(lines[0], prefix) {
		t.Fatalf("docs/portworx.md's portworx-managed block is %q, want one line starting %q", lines, prefix)
	}
	r := strings.NewReplacer("http://127.0.0.1:9001", endpoint, "$TOKEN", pxToken, "/srv/pxmounts", mountDir)
	settings := strings.Fields(r.Replace(strings.Trim(strings.TrimPrefix(lines[0], prefix), `"`)))
	for _, want := range []string{"pxmounts.source=" + mountDir, "PX_MOUNT_DIR=" + mountDir, "PX_ENDPOINT=" + endpoint} {
		if !slices.Contains(settings, want) {
			t.Fatalf("docs/portworx.md's managed Portworx settings %q lack %s", lines[0], want)
		}
	}
	return settings
}

// pxManagedPlugin is TestE2EPortworxManagedPlugin on one engine, with an
// OpenStorage server of its own.
func pxManagedPlugin(t *testing.T, eng dockerd.Engine) {
	srv := osdserver.ForTest(t, osdserver.Config{Token: pxToken})
	// Below the server's MountRoot, which it shares with the host (a
	// shared mount) as Portworx shares /var/lib/osd/mounts: the plugin's
	// pxmounts mount (rbind, rshared) sees the server's mounts there.
	mountDir := pxMountDir(t, srv)
	prodID, prodSum := pxProduction(t, srv)
	d := dockerd.Start(t, dockerd.Options{Engine: &eng})
	p := d.InstallPlugin(dockerd.BundleWith(t, Binary(t), "config.portworx.json"), "snapvol",
		append(readmePXSettings(t, srv.Endpoint(), mountDir), "BACKEND=portworx", "LOG_LEVEL=debug")...)
	id, err := p.ID()
	if err != nil {
		t.Fatal(err)
	}
	propagated := filepath.Join(d.Dir, "data", "plugins", id, "propagated-mount")
	if log := d.Log(); !strings.Contains(log, "mount_dir="+mountDir) || !strings.Contains(log, "mount_dir_local="+portworx.ManagedMountDir) {
		t.Errorf("the plugin does not log PX_MOUNT_DIR %s seen at %s:\n%s", mountDir, portworx.ManagedMountDir, d.LogTail(30))
	}

	// docker run -v with --volume-driver: read production, write the clone.
	out := d.MustDocker("run", "--rm", "--network", "none", "--volume-driver", "snapvol",
		"-v", "app-production@latest:/data", dockerd.Image, "sh", "-c",
		"cat /data/guestbook/0003.txt && echo overwritten > /data/guestbook/0001.txt && rm /data/schema.sql && ls /data")
	if !strings.Contains(out, Guestbook["guestbook/0003.txt"]) {
		t.Fatalf("the container did not read production's guestbook through the clone:\n%q", out)
	}
	if strings.Contains(out, "schema.sql") {
		t.Fatalf("the delete in the container did not happen: %q", out)
	}
	checkSourceUntouched(t, srv, prodID, prodSum)

	// A container holding a tagged clone: the server mounted it under
	// PX_MOUNT_DIR; the plugin bound that, nosuid,nodev, at its target in
	// the propagated mount, which Docker bound into the container.
	d.MustDocker("run", "-d", "--name", "holder", "--network", "none",
		"--mount", "type=volume,src=snap:app-production@latest+held,dst=/data,volume-driver=snapvol",
		dockerd.Image, "sleep", "600")
	clones, _ := pxObjects(srv)
	var held, heldID string
	for _, c := range clones {
		if c.Locator.VolumeLabels[storage.LabelVolume] == "snap:app-production@latest+held" {
			if len(c.AttachPath) != 1 || !strings.HasPrefix(c.AttachPath[0], mountDir+"/snapvol-") {
				t.Fatalf("the server mounted the clone at %v; want one path in %s/snapvol-<instance>", c.AttachPath, mountDir)
			}
			held, heldID = c.AttachPath[0], c.Id
		}
	}
	if held == "" {
		t.Fatalf("no clone of the held volume on the server: %s", describeVols(clones))
	}
	if got := d.MustDocker("exec", "holder", "cat", "/data/guestbook/0001.txt"); got != Guestbook["guestbook/0001.txt"] {
		t.Fatalf("the tagged clone is not pristine: %q", got)
	}
	if opts := d.MustDocker("exec", "holder", "awk", "$2 == \"/data\" {print $4}", "/proc/mounts"); !strings.Contains(opts, "nosuid") || !strings.Contains(opts, "nodev") {
		t.Errorf("the clone is mounted in the container with %q; want nosuid,nodev", strings.TrimSpace(opts))
	}
	d.MustDocker("exec", "holder", "sh", "-c", "echo from-the-container > /data/marker")
	for _, p := range []string{held, srv.DataPath(heldID)} {
		if got := ReadFile(t, filepath.Join(p, "marker")); got != "from-the-container\n" {
			t.Fatalf("the container's write is not in the clone at %s: %q", p, got)
		}
	}
	d.MustDocker("rm", "-f", "holder")
	if mountpoint.IsMountPoint(held) {
		t.Errorf("%s still mounted after the container stopped", held)
	}

	pxDocBlocks(t, d, srv)

	for _, v := range []string{"app-production@latest", "snap:app-production@latest+held"} {
		d.MustDocker("volume", "rm", v)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(pxCloneIDs(srv)) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	checkPXLeftovers(t, srv)
	checkSourceUntouched(t, srv, prodID, prodSum)
	// Mount points are directories; the plugin keeps a state marker file
	// in DATA_ROOT.
	ents, _ := os.ReadDir(propagated)
	var left []string
	for _, e := range ents {
		if e.IsDir() {
			left = append(left, e.Name())
		}
	}
	if len(left) != 0 {
		t.Errorf("mount points left in %s: %v", propagated, left)
	}
	if t.Failed() {
		t.Logf("dockerd log:\n%s", d.LogTail(80))
	}
}

// pxDocBlocks runs docs/portworx.md's cheaper-clone options and
// docs/operating.md's METRICS_ADDR block for the Portworx bundle (host
// network) against the managed plugin, as written but for the port.
func pxDocBlocks(t *testing.T, d *dockerd.Daemon, srv *osdserver.Server) {
	sh := func(script string, env ...string) string {
		t.Helper()
		cmd := d.Command("bash", "-euo", "pipefail", "-c", script)
		cmd.Env = append(cmd.Env, env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s\nscript:\n%s", err, out, script)
		}
		return string(out)
	}
	// The clone takes the options; production's own (repl 2, high) stay.
	sh(docBlock(t, "managed", "portworx-options").Text, "CI_JOB_ID=px1")
	out := d.MustDocker("run", "--rm", "--network", "none", "-v", "ci-px1:/data", dockerd.Image, "cat", "/data/guestbook/0003.txt")
	if out != Guestbook["guestbook/0003.txt"] {
		t.Errorf("the clone made with repl=1 io_priority=low reads %q", out)
	}
	found := false
	clones, _ := pxObjects(srv)
	for _, c := range clones {
		if c.Locator.VolumeLabels[storage.LabelVolume] == "ci-px1" {
			found = true
			if c.Spec.HaLevel != 1 || c.Spec.Cos != api.CosType_LOW {
				t.Errorf("the clone of ci-px1 has repl %d, io_priority %v; want 1, low", c.Spec.HaLevel, c.Spec.Cos)
			}
		}
	}
	if !found {
		t.Errorf("no clone of ci-px1 on the server: %s", describeVols(clones))
	}
	d.MustDocker("volume", "rm", "ci-px1")

	// METRICS_ADDR on the bundle with the host's network: served where the
	// host reaches it, and no warning that it is not.
	addr := freePort(t)
	mark := len(d.Log())
	out = sh(strings.ReplaceAll(docBlock(t, "managed", "metrics-portworx").Text, "127.0.0.1:9479", addr))
	if !strings.Contains(out, "snapvol_build_info{") {
		t.Errorf("METRICS_ADDR on the Portworx bundle: no snapvol_build_info in\n%s", out)
	}
	if log := d.Log()[mark:]; strings.Contains(log, "not reachable from the host") {
		t.Errorf("the Portworx bundle (host network) warned that METRICS_ADDR is unreachable:\n%s", lastLines(log, 20))
	}
}
