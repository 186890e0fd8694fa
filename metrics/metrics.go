// Package metrics defines kindling's Prometheus metrics. One Metrics value
// is created per daemon and registered on its own registry, served at
// /metrics.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kindling-dev/kindling/phase"
)

// Metrics holds the daemon's collectors.
type Metrics struct {
	Registry     *prometheus.Registry
	Invocations  *prometheus.CounterVec   // function, outcome, cold
	ColdStarts   *prometheus.CounterVec   // function
	Phase        *prometheus.HistogramVec // phase, runtime
	CompileCache *prometheus.CounterVec   // result: memory|disk|miss
	Functions    prometheus.Gauge
	InFlight     *prometheus.GaugeVec // function
}

// New creates and registers the metrics.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Invocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kindling_invocations_total",
			Help: "Invocations by function, outcome (success or the failure kind) and whether they started cold.",
		}, []string{"function", "outcome", "cold"}),
		ColdStarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kindling_cold_starts_total",
			Help: "Invocations that had to start a new instance.",
		}, []string{"function"}),
		Phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kindling_phase_duration_seconds",
			Help: "Duration of each invocation phase.",
			// 5 µs to ~10 s.
			Buckets: prometheus.ExponentialBuckets(5e-6, 4, 12),
		}, []string{"phase", "runtime"}),
		CompileCache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kindling_compile_cache_total",
			Help: "Artifact preparations by compile cache result (memory, disk, miss).",
		}, []string{"result"}),
		Functions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kindling_functions",
			Help: "Deployed functions.",
		}),
		InFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kindling_invocations_in_flight",
			Help: "Invocations currently running, by function.",
		}, []string{"function"}),
	}
	m.Registry.MustRegister(m.Invocations, m.ColdStarts, m.Phase, m.CompileCache, m.Functions, m.InFlight,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObservePhases records one invocation's phase timings.
func (m *Metrics) ObservePhases(runtime string, ts []phase.Timing) {
	for _, t := range ts {
		m.Phase.WithLabelValues(string(t.Name), runtime).Observe(t.Duration.Seconds())
	}
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
