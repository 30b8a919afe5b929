package metrics

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/storage"
)

// stateCollector reads the figures that are state, not events, when
// /metrics is scraped: volumes and clones from the store's index (memory,
// every scrape), snapshots, pool bytes and health from the backend (at
// most every CacheFor).
type stateCollector struct {
	cfg Config
	up  *atomic.Bool // the wrapped backend's last answer, nil if not wrapped

	volumes, clones, mounts                *prometheus.Desc
	snapshots, pool, atLimit, backendUp    *prometheus.Desc
	backendHealthy, scrapeErr, scrapeTaken *prometheus.Desc

	mu     sync.Mutex
	at     time.Time
	cached []prometheus.Metric
}

func newStateCollector(cfg Config) *stateCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &stateCollector{
		cfg:     cfg,
		volumes: d("snapvol_volumes", "Volumes snapvol has a record of, by kind: volume (plain), clone (a clone volume Docker users made) or operator (snapvol volume create).", "kind"),
		clones:  d("snapvol_clones", "Clones that exist now (materialized clone volumes, one per container for +each), by source.", "source"),
		mounts:  d("snapvol_mounts", "Container mounts counted now, over every volume."),
		snapshots: d("snapvol_snapshots", "Snapshots the plugin took that exist now, by source and kind: plugin (for @latest and @now), named (snapvol snapshot create) or scheduled.",
			"source", "kind"),
		pool: d("snapvol_pool_bytes", "The backend's storage in bytes, by kind: size, used, free, and reserve (what clones together may not take); absent where the backend cannot tell.", "kind"),
		atLimit: d("snapvol_clones_at_limit",
			"Clones whose exclusive bytes are within 1% of their quota limit: their containers get ENOSPC or EDQUOT on the next writes; absent where the backend has no quotas."),
		backendUp: d("snapvol_backend_up", "1 if the backend answered its last call (and the scrape's), 0 if it was unreachable or timed out."),
		backendHealthy: d("snapvol_backend_healthy",
			"1 if the backend reports its storage healthy, 0 if not (e.g. a pool forced read-only); absent where the backend has no health check."),
		scrapeErr:   d("snapvol_backend_scrape_errors", "Backend reads that failed in the last scrape refresh (snapshots, usage, health)."),
		scrapeTaken: d("snapvol_backend_scrape_duration_seconds", "How long the last refresh of the backend figures took."),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.volumes, c.clones, c.mounts, c.snapshots, c.pool, c.atLimit, c.backendUp, c.backendHealthy, c.scrapeErr, c.scrapeTaken} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	if c.cfg.Records != nil {
		c.collectRecords(ch)
	}
	if c.cfg.Backend != nil {
		for _, m := range c.backendMetrics() {
			ch <- m
		}
	}
}

func (c *stateCollector) collectRecords(ch chan<- prometheus.Metric) {
	kinds := map[string]int{"volume": 0, "clone": 0, "operator": 0}
	bySource := map[string]int{}
	mounts := 0
	c.cfg.Records.Each(func(r *store.Record) {
		mounts += r.TotalMounts()
		switch {
		case !r.IsClone():
			kinds["volume"]++
			return
		case r.Operator:
			kinds["operator"]++
		default:
			kinds["clone"]++
		}
		if n := len(r.Attachments); n > 0 {
			bySource[r.Source] += n
		}
	})
	for k, n := range kinds {
		ch <- prometheus.MustNewConstMetric(c.volumes, prometheus.GaugeValue, float64(n), k)
	}
	for s, n := range bySource {
		ch <- prometheus.MustNewConstMetric(c.clones, prometheus.GaugeValue, float64(n), s)
	}
	ch <- prometheus.MustNewConstMetric(c.mounts, prometheus.GaugeValue, float64(mounts))
}

// backendMetrics returns the backend figures, read again once they are
// older than CacheFor; concurrent scrapes share one read.
func (c *stateCollector) backendMetrics() []prometheus.Metric {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cached != nil && time.Since(c.at) < c.cfg.CacheFor {
		return c.cached
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.ScrapeTimeout)
	defer cancel()
	s := &backendScrape{ctx: ctx, answered: true}
	c.scrapeSnapshots(s)
	if u, ok := c.cfg.Backend.(storage.Usager); ok && s.answered {
		c.scrapeUsage(s, u)
	}
	if h, ok := c.cfg.Backend.(storage.Checker); ok && s.answered {
		c.scrapeHealth(s, h)
	}
	up := s.answered
	if c.up != nil && s.answered {
		up = c.up.Load()
	}
	s.gauge(c.backendUp, b2f(up))
	s.gauge(c.scrapeErr, float64(s.errs))
	s.gauge(c.scrapeTaken, time.Since(start).Seconds())
	c.cached, c.at = s.out, time.Now()
	return s.out
}

// backendScrape is one scrape of the backend: the metrics made so far,
// how many calls failed, and whether the backend answered at all.
type backendScrape struct {
	ctx      context.Context
	out      []prometheus.Metric
	errs     int
	answered bool
}

func (s *backendScrape) gauge(d *prometheus.Desc, v float64, labels ...string) {
	s.out = append(s.out, prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...))
}

// failed counts err; one that says the backend did not answer (down or
// too slow) marks the scrape unanswered.
func (s *backendScrape) failed(err error) {
	s.errs++
	if k := ErrorClass(err); k == "unavailable" || k == "timeout" {
		s.answered = false
	}
}

// scrapeSnapshots counts the plugin's snapshots by source and how each
// was taken.
func (c *stateCollector) scrapeSnapshots(s *backendScrape) {
	owned, err := c.cfg.Backend.Owned(s.ctx)
	if err != nil {
		s.failed(err)
		return
	}
	type key struct{ source, kind string }
	snaps := map[key]int{}
	for _, o := range owned {
		if o.Kind == storage.KindSnapshot {
			snaps[key{o.Labels[storage.LabelSource], storage.Taken(o)}]++
		}
	}
	for k, n := range snaps {
		s.gauge(c.snapshots, float64(n), k.source, k.kind)
	}
}

// scrapeUsage reports the pool's sizes and, where clones are limited, how
// many are at their limit (within 1%).
func (c *stateCollector) scrapeUsage(s *backendScrape, u storage.Usager) {
	if pu, err := u.Usage(s.ctx); err != nil {
		s.errs++
	} else {
		for _, kv := range []struct {
			k string
			v int64
		}{{"size", pu.Size}, {"used", pu.Used}, {"free", pu.Free}, {"reserve", pu.Reserve}} {
			if kv.v >= 0 {
				s.gauge(c.pool, float64(kv.v), kv.k)
			}
		}
	}
	if ou, err := u.ObjectUsage(s.ctx); err != nil {
		s.errs++
	} else {
		n, limited := 0, false
		for _, o := range ou {
			if o.Limit > 0 {
				limited = true
				if o.Bytes >= o.Limit-o.Limit/100 {
					n++
				}
			}
		}
		if limited {
			s.gauge(c.atLimit, float64(n))
		}
	}
}

// scrapeHealth reports whether the backend's storage is healthy.
func (c *stateCollector) scrapeHealth(s *backendScrape, h storage.Checker) {
	healthy := 1.0
	if err := h.Health(s.ctx); err != nil {
		healthy = 0
		if k := ErrorClass(err); k == "unavailable" || k == "timeout" {
			s.answered = false
		}
	}
	s.gauge(c.backendHealthy, healthy)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
