package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snapvol/snapvol/mountpoint"
	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/test/dockerd"
	"github.com/snapvol/snapvol/test/osdserver"
)

// TestE2EPortworxManagedPlugin: the managed plugin in a private dockerd,
// with BACKEND=portworx against the test OpenStorage server on loopback.
// The server, like Portworx, mounts in the host's namespace; the plugin
// finds the host path of its propagated mount by itself, so the directory
// Docker binds into the container is the clone the server mounted, and a
// container reads production's data through it.
func TestE2EPortworxManagedPlugin(t *testing.T) {
	dockerd.Require(t)
	dockerd.ForEachEngine(t, pxManagedPlugin)
}

// pxManagedPlugin is TestE2EPortworxManagedPlugin on one engine, with an
// OpenStorage server of its own.
func pxManagedPlugin(t *testing.T, eng dockerd.Engine) {
	srv := osdserver.ForTest(t, osdserver.Config{Token: pxToken})
	prodID, prodSum := pxProduction(t, srv)
	d := dockerd.Start(t, dockerd.Options{Engine: &eng})
	p := d.InstallPlugin(dockerd.BundleWith(t, Binary(t), "config.portworx.json"), "snapvol",
		"BACKEND=portworx", "PX_ENDPOINT="+srv.Endpoint(), "PX_TOKEN="+pxToken, "LOG_LEVEL=debug")
	id, err := p.ID()
	if err != nil {
		t.Fatal(err)
	}
	propagated := filepath.Join(d.Dir, "data", "plugins", id, "propagated-mount")
	if log := d.Log(); !strings.Contains(log, "mount_root="+propagated) || !strings.Contains(log, "managed plugin") {
		t.Errorf("the plugin did not detect its propagated mount %s:\n%s", propagated, d.LogTail(30))
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

	// A container holding a tagged clone: the server mounted it at the
	// host path of the plugin's propagated mount, which is what Docker
	// bound into the container.
	d.MustDocker("run", "-d", "--name", "holder", "--network", "none",
		"--mount", "type=volume,src=snap:app-production@latest+held,dst=/data,volume-driver=snapvol",
		dockerd.Image, "sleep", "600")
	clones, _ := pxObjects(srv)
	var held string
	for _, c := range clones {
		if c.Locator.VolumeLabels[storage.LabelVolume] == "snap:app-production@latest+held" {
			if len(c.AttachPath) != 1 || filepath.Dir(c.AttachPath[0]) != propagated {
				t.Fatalf("the server mounted the clone at %v; want one path in %s", c.AttachPath, propagated)
			}
			held = c.AttachPath[0]
		}
	}
	if held == "" {
		t.Fatalf("no clone of the held volume on the server: %s", describeVols(clones))
	}
	if got := d.MustDocker("exec", "holder", "cat", "/data/guestbook/0001.txt"); got != Guestbook["guestbook/0001.txt"] {
		t.Fatalf("the tagged clone is not pristine: %q", got)
	}
	d.MustDocker("exec", "holder", "sh", "-c", "echo from-the-container > /data/marker")
	if got := ReadFile(t, filepath.Join(held, "marker")); got != "from-the-container\n" {
		t.Fatalf("the container's write is not in the server's mount at %s: %q", held, got)
	}
	d.MustDocker("rm", "-f", "holder")
	if mountpoint.IsMountPoint(held) {
		t.Errorf("%s still mounted after the container stopped", held)
	}

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
