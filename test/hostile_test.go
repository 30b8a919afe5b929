package test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestHostileInputOverSocket sends names and bodies meant to break the
// plugin: every one is refused, the plugin stays up, nothing is written.
func TestHostileInputOverSocket(t *testing.T) {
	p := StartPlugin(t, nil)
	sources := SeedProduction(t, p)
	before := strings.Join(dirNames(p.DataRoot), ",") + "|" + strings.Join(dirNames(filepath.Join(p.Pool(), "volumes")), ",")
	hostile := []string{
		"../../etc@latest", "../../../../etc", "/etc/passwd", "app-production/../../x@latest",
		"app-production@../../etc", "app-production@latest+../../x", "app-production@latest+a/b",
		"app\x00production@latest", "app-production@latest\x00", "\x00",
		"\u0430pp-production@latest", "app-production\u2215x@latest", "app\u2024production@latest", "ａpp@latest",
		"app-production@latest\n", " app-production@latest", "app-production@latest+each+each",
		strings.Repeat("a", 1<<20), strings.Repeat("a@", 5000), "snap:" + strings.Repeat("b", 64) + "@latest",
		"\xff\xfe@latest", "app-production@\xff", `{"Name":"x"}`, "%2e%2e%2fetc@latest", "..@latest", ".@latest",
	}
	for _, name := range hostile {
		short := name
		if len(short) > 40 {
			short = short[:40] + "…"
		}
		if err := p.Create(name, nil); err == nil {
			t.Errorf("create %q accepted", short)
		} else if strings.Contains(err.Error(), "transport") {
			t.Fatalf("create %q killed the plugin: %v", short, err)
		}
		if _, err := p.Mount(name, "h"); err == nil {
			t.Errorf("mount %q accepted", short)
		}
		if _, err := p.Get(name); err == nil {
			t.Errorf("get %q answered", short)
		}
		if err := p.Unmount(name, "h"); err == nil {
			t.Errorf("unmount %q accepted", short)
		}
		// Remove of a name that is not ours is a no-op, never an error
		// that makes Docker keep a ghost volume.
		if err := p.Remove(name); err != nil && strings.Contains(err.Error(), "transport") {
			t.Fatalf("remove %q killed the plugin", short)
		}
	}
	// Options too.
	for _, opts := range []map[string]string{
		{"from": "../../etc"}, {"from": "app-production", "ref": "../x"}, {"from": "app-production", "ttl": "forever"},
		{"from": "app-production", "nonsense": "1"}, {"from": "app-production\x00"}, {"ref": "now"},
	} {
		if err := p.Create("opt-test", opts); err == nil {
			t.Errorf("create with options %q accepted", opts)
		}
	}
	// Bodies that are not what the protocol says.
	for _, body := range []string{"", "null", "[]", `{"Name":1}`, `{"Name":"a","Opts":"x"}`, strings.Repeat("{", 100000), "\x00\x01"} {
		for _, m := range []string{"Create", "Mount", "Get", "Remove", "Unmount", "Path", "List"} {
			resp, err := p.client.Post("http://plugin/VolumeDriver."+m, "application/json", bytes.NewBufferString(body))
			if err != nil {
				t.Fatalf("%s with junk body killed the plugin: %v", m, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if m != "List" && resp.StatusCode == http.StatusOK && m != "Remove" && m != "Unmount" {
				t.Errorf("%s with body %.20q answered 200", m, body)
			}
		}
	}
	after := strings.Join(dirNames(p.DataRoot), ",") + "|" + strings.Join(dirNames(filepath.Join(p.Pool(), "volumes")), ",")
	if before != after {
		t.Fatalf("hostile input changed the filesystem: %s -> %s", before, after)
	}
	if vols, _ := p.List(); len(vols) != 1 {
		t.Fatalf("hostile input left records: %d volumes", len(vols))
	}
	if len(localClones(p)) != 0 {
		t.Fatalf("hostile input left clones")
	}
	CheckLocalInvariants(t, p, sources)
}

// TestPoolFull fills the pool through a clone: the container's writes fail
// with EDQUOT at the reserve (ENOSPC where there is none), the plugin keeps
// answering, a failed create says why and
// leaves nothing, and removing the clone recovers the space. Production is
// never touched.
func TestPoolFull(t *testing.T) {
	p := StartPlugin(t, map[string]string{"POOL_SIZE": "256M"})
	sources := SeedProduction(t, p)
	mp := p.MustMount("app-production@now+fat", "fill")
	_, werr := fill(t, mp)
	if werr == nil || !errors.Is(werr, unix.ENOSPC) && !errors.Is(werr, unix.EDQUOT) {
		t.Fatalf("filling a 256M pool with 1G: %v, want EDQUOT (the reserve) or ENOSPC", werr)
	}
	// The plugin still answers; new clones either work or fail clearly.
	if _, err := p.Get("app-production@now+fat"); err != nil {
		t.Fatalf("Get with a full pool: %v", err)
	}
	for i, name := range []string{"app-production@now+a", "app-production@now+b", "scratch-full"} {
		var err error
		if i < 2 {
			_, err = p.Mount(name, "x")
		} else {
			err = p.Create(name, nil)
		}
		if err != nil && (!strings.Contains(err.Error(), name) || strings.Contains(err.Error(), "transport")) {
			t.Errorf("%s on a full pool: %v; want a clear error naming the volume", name, err)
		}
		if err != nil {
			t.Logf("%s on a full pool: %v", name, err)
		}
	}
	CheckLocalInvariants(t, p, sources)
	if err := p.Unmount("app-production@now+fat", "fill"); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove("app-production@now+fat"); err != nil {
		t.Fatalf("removing the clone that filled the pool: %v", err)
	}
	CheckLocalInvariants(t, p, sources)
}
