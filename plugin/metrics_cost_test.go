package main

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/driver"
	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/metrics"
	"github.com/snapvol/snapvol/storage/memory"
)

// What metrics cost Docker: Get over the socket, the hottest request (Docker
// probes every plugin for every name), with and without metrics, on one
// store of volumes the same size.

// costRig serves one driver on two sockets, with metrics and without.
type costRig struct {
	names   []string
	on, off *http.Client
}

func newCostRig(t testing.TB, volumes int) *costRig {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "snapvol.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := logrus.New()
	log.SetOutput(io.Discard)
	m := metrics.New(metrics.Config{Records: st})
	b := m.Wrap(memory.New())
	m.SetBackend(b)
	d := driver.New(driver.Config{Backend: b, Store: st, DataRoot: t.TempDir(), LatestMaxAge: time.Minute, Claim: true, Log: log, Observer: m})
	r := &costRig{}
	for i := 0; i < volumes; i++ {
		n := fmt.Sprintf("vol-%05d", i)
		if err := d.Create(&volume.CreateRequest{Name: n}); err != nil {
			t.Fatal(err)
		}
		r.names = append(r.names, n)
	}
	r.on = serveOnT(t, volumeServer(volumeHandler(d, m), log).Serve)
	r.off = serveOnT(t, volumeServer(volumeHandler(d, nil), log).Serve)
	return r
}

func serveOnT(t testing.TB, serve func(l net.Listener) error) *http.Client {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := listen(path)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = serve(l) }()
	t.Cleanup(func() { l.Close() })
	return unixClient(path)
}

func (r *costRig) get(c *http.Client, name string) error {
	resp, err := c.Post("http://plugin/VolumeDriver.Get", "application/json", bytes.NewReader([]byte(`{"Name":"`+name+`"}`)))
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("Get %s: %s", name, resp.Status)
	}
	return nil
}

func BenchmarkGetMetrics(b *testing.B) {
	r := newCostRig(b, 1000)
	for _, c := range []struct {
		name string
		c    *http.Client
	}{{"off", r.off}, {"on", r.on}} {
		b.Run("metrics="+c.name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 1))
			for b.Loop() {
				if err := r.get(c.c, r.names[rng.IntN(len(r.names))]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestMetricsCostGetP50 measures Get's p50 with metrics on and off, in
// alternating batches so that both see the same machine; goal: on ≤ 1.1x
// off. Run by make bench (section metrics) with SNAPVOL_METRICS_COST=1; in
// make test it only reports.
func TestMetricsCostGetP50(t *testing.T) {
	r := newCostRig(t, 1000)
	rng := rand.New(rand.NewPCG(7, 7))
	var on, off []time.Duration
	rounds, batch := 40, 250
	if os.Getenv("SNAPVOL_METRICS_COST") == "" {
		rounds = 4
	}
	time1 := func(c *http.Client) time.Duration {
		n := r.names[rng.IntN(len(r.names))]
		start := time.Now()
		if err := r.get(c, n); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	for i := 0; i < 200; i++ { // warm both up
		time1(r.on)
		time1(r.off)
	}
	for round := 0; round < rounds; round++ {
		first, second := r.off, r.on
		if round%2 == 1 {
			first, second = r.on, r.off
		}
		for _, c := range []*http.Client{first, second} {
			for i := 0; i < batch; i++ {
				d := time1(c)
				if c == r.on {
					on = append(on, d)
				} else {
					off = append(off, d)
				}
			}
		}
	}
	pOn, pOff := p50(on), p50(off)
	ratio := float64(pOn) / float64(pOff)
	t.Logf("Get over the socket, 1,000 volumes, %d requests each: p50 metrics off %v, on %v: ratio %.3f (goal ≤ 1.1)", len(on), pOff, pOn, ratio)
	if os.Getenv("SNAPVOL_METRICS_COST") != "" && ratio > 1.1 {
		t.Errorf("Get p50 with metrics is %.3fx without, over the 1.1x goal", ratio)
	}
}

func p50(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
