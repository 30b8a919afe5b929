package driver

import (
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
)

// Options are never silently lost: docker volume inspect's Status says
// which -o options are in effect. A claimed SOURCE@REF name (Docker never
// calls Create for it, so -o options given to docker volume create never
// arrive) says it takes none and where options go; a plain name's clone
// shows its from, ref and ttl; the ttl says which setting it comes from.
// Before, Status had neither options nor ttl.
func TestStatusShowsTheOptionsInEffect(t *testing.T) {
	d, _, _ := newTestDriver(t)
	get := func(name string) map[string]interface{} {
		t.Helper()
		r, err := d.Get(&volume.GetRequest{Name: name})
		if err != nil {
			t.Fatalf("Get %s: %v", name, err)
		}
		return r.Volume.Status
	}
	claimed := get("app-production@latest+x")
	if claimed["options"] != noOptions || claimed["ttl"] != "1h0m0s (IDLE_TTL)" {
		t.Errorf("a claimed name's Status: options %v, ttl %v", claimed["options"], claimed["ttl"])
	}
	if _, err := d.Mount(&volume.MountRequest{Name: "app-production@latest+x", ID: "1"}); err != nil {
		t.Fatal(err)
	}
	if s := get("app-production@latest+x"); s["options"] != noOptions || s["ttl"] != "1h0m0s (IDLE_TTL)" {
		t.Errorf("the claimed name once mounted: options %v, ttl %v", s["options"], s["ttl"])
	}

	if err := d.Create(&volume.CreateRequest{Name: "ci-1", Options: map[string]string{"from": "app-production", "ref": "now", "ttl": "2h"}}); err != nil {
		t.Fatal(err)
	}
	s := get("ci-1")
	opts, _ := s["options"].(map[string]string)
	if opts["from"] != "app-production" || opts["ref"] != "now" || opts["ttl"] != "2h0m0s" || s["ttl"] != "2h0m0s (-o ttl)" {
		t.Errorf("a plain name's clone: options %v, ttl %v", s["options"], s["ttl"])
	}

	// CLAIM off: Docker calls Create, and a SOURCE@REF name's ttl applies.
	d.cfg.Claim = false
	if err := d.Create(&volume.CreateRequest{Name: "app-production@latest+keep", Options: map[string]string{"ttl": "0"}}); err != nil {
		t.Fatal(err)
	}
	s = get("app-production@latest+keep")
	if opts, _ := s["options"].(map[string]string); opts["ttl"] != "0s" || s["ttl"] != "0 (never destroyed: -o ttl=0)" {
		t.Errorf("a SOURCE@REF name created with -o ttl=0: options %v, ttl %v", s["options"], s["ttl"])
	}
	if err := d.Create(&volume.CreateRequest{Name: "app-production@latest+y", Options: map[string]string{"bogus": "1"}}); err == nil {
		t.Error("-o bogus=1 was accepted")
	}
	if s := get("app-production"); s["options"] == nil {
		t.Errorf("a plain volume's Status has no options: %v", s)
	}
}
