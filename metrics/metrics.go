// Package metrics is snapvol's Prometheus instrumentation: what the
// VolumeDriver socket answers and how fast, what the driver makes and
// destroys, what reconcile repairs, how the backend fares, and, read at
// scrape time, the volumes, clones, snapshots and pool bytes.
//
// Recording costs a few atomic adds on the request path; everything that
// needs the store or the backend is computed when /metrics is scraped
// (the backend part at most every CacheFor, bounded by ScrapeTimeout).
// A nil *Metrics records nothing, so the plugin runs with metrics off by
// passing nil.
package metrics

import (
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/snapvol/snapvol/driver/store"
	"github.com/snapvol/snapvol/storage"
	"github.com/snapvol/snapvol/version"
)

// Records is what the scrape reads volumes from: the store's index.
type Records interface {
	Each(fn func(*store.Record))
}

// Config says what the scrape-time metrics read.
type Config struct {
	Records Records
	// Backend is read at scrape time (snapshots, pool bytes, health). It
	// may be the one Wrap returned.
	Backend storage.Backend
	// CacheFor is how long backend figures are reused between scrapes
	// (default 10 s); ScrapeTimeout bounds reading them (default 5 s).
	CacheFor, ScrapeTimeout time.Duration
}

// Metrics holds every metric of one plugin process.
type Metrics struct {
	reg *prometheus.Registry

	requests *prometheus.HistogramVec
	inflight prometheus.Gauge

	cloneMake, cloneDestroy prometheus.Histogram
	reaped                  *prometheus.CounterVec
	repairs                 *prometheus.CounterVec
	backendErrors           *prometheus.CounterVec
	noSpace                 *prometheus.CounterVec

	state *stateCollector
}

// Request latencies: Get and List answer in tens of microseconds, a Mount
// that makes a clone in tens to thousands of milliseconds, and Docker gives
// up at 30 s.
var requestBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// Backend calls of a clone: btrfs ioctls in milliseconds, OpenStorage in
// seconds.
var cloneBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// New registers every metric, with the Go runtime's and the process's.
func New(cfg Config) *Metrics {
	if cfg.CacheFor == 0 {
		cfg.CacheFor = 10 * time.Second
	}
	if cfg.ScrapeTimeout == 0 {
		cfg.ScrapeTimeout = 5 * time.Second
	}
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "snapvol_request_duration_seconds",
		Help:    "VolumeDriver requests Docker sent, by operation and outcome, and how long each took to answer (_count is the number of requests).",
		Buckets: requestBuckets,
	}, []string{"op", "outcome"})
	m.inflight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "snapvol_requests_in_flight", Help: "VolumeDriver requests being answered now.",
	})
	m.cloneMake = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "snapvol_clone_make_duration_seconds",
		Help:    "Clones made (_count) and how long each took: source lookup, @REF resolution (a snapshot if one is taken), clone, mount and record.",
		Buckets: cloneBuckets,
	})
	m.cloneDestroy = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "snapvol_clone_destroy_duration_seconds",
		Help:    "Clones destroyed (_count) and how long each took: unmount and delete.",
		Buckets: cloneBuckets,
	})
	m.reaped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "snapvol_reaped_clones_total",
		Help: "Clones the reaper destroyed: reason idle (unmounted for IDLE_TTL or the volume's ttl) or each (a +each clone its Unmount could not destroy).",
	}, []string{"reason"})
	m.repairs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "snapvol_reconcile_repairs_total",
		Help: "What reconcile (at start and while serving) repaired, by kind: interrupted create, release or remove finished, mount restored, stale or stray mount dropped, orphan clone destroyed.",
	}, []string{"repair"})
	m.backendErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "snapvol_backend_errors_total",
		Help: "Backend calls that failed, by call and error class (a lookup of something absent is an answer, not counted).",
	}, []string{"call", "error"})
	m.noSpace = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "snapvol_no_space_errors_total",
		Help: "Backend calls refused for space (ENOSPC, EDQUOT, or the backend's no-space error): the pool or a quota is full. Writes a container makes inside a clone are not seen by snapvol; snapvol_clones_at_limit shows clones at their quota.",
	}, []string{"call"})
	for _, op := range Ops {
		m.requests.WithLabelValues(op, "ok") // present at 0 from the start
	}
	for _, r := range []string{"idle", "each"} {
		m.reaped.WithLabelValues(r)
	}
	for _, r := range Repairs {
		m.repairs.WithLabelValues(r)
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "snapvol_build_info", Help: "Always 1: the version and commit of the running snapvol (set by the build) and the Go that built it.",
	}, []string{"version", "commit", "goversion"})
	v, c := version.Get()
	build.WithLabelValues(v, c, runtime.Version()).Set(1)
	m.state = newStateCollector(cfg)

	m.reg.MustRegister(m.requests, m.inflight, m.cloneMake, m.cloneDestroy, m.reaped, m.repairs,
		m.backendErrors, m.noSpace, build, m.state,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Ops are the VolumeDriver operations, as the op label names them.
var Ops = []string{"activate", "create", "remove", "mount", "unmount", "path", "get", "list", "capabilities"}

// Repairs are the repair label's values; the driver names them with its
// Repair constants.
var Repairs = []string{"create", "release", "remove", "restored_mount", "stale_mount", "stray_mount", "orphan_clone"}

// SetBackend sets the backend the scrape reads (the one Wrap returned),
// before /metrics is served.
func (m *Metrics) SetBackend(b storage.Backend) {
	if m != nil {
		m.state.cfg.Backend = b
	}
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError, MaxRequestsInFlight: 4, Timeout: 30 * time.Second,
	})
}

// Registry is the registry every metric is in (for tests).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// RequestStarted counts a request in flight and returns its start, for
// RequestDone.
func (m *Metrics) RequestStarted() time.Time {
	if m == nil {
		return time.Time{}
	}
	m.inflight.Inc()
	return time.Now()
}

// RequestDone records a request RequestStarted returned start for.
func (m *Metrics) RequestDone(op, outcome string, start time.Time) {
	if m == nil {
		return
	}
	m.inflight.Dec()
	m.requests.WithLabelValues(op, outcome).Observe(time.Since(start).Seconds())
}

// The driver's observer (driver.Observer).

// CloneMade records a clone made in took.
func (m *Metrics) CloneMade(took time.Duration) {
	if m != nil {
		m.cloneMake.Observe(took.Seconds())
	}
}

// CloneDestroyed records a clone destroyed in took.
func (m *Metrics) CloneDestroyed(took time.Duration) {
	if m != nil {
		m.cloneDestroy.Observe(took.Seconds())
	}
}

// CloneReaped counts a clone the reaper destroyed (each: a +each clone).
func (m *Metrics) CloneReaped(each bool) {
	if m == nil {
		return
	}
	reason := "idle"
	if each {
		reason = "each"
	}
	m.reaped.WithLabelValues(reason).Inc()
}

// Repaired counts one repair of reconcile.
func (m *Metrics) Repaired(repair string) {
	if m != nil {
		m.repairs.WithLabelValues(repair).Inc()
	}
}
