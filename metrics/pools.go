package metrics

import "github.com/prometheus/client_golang/prometheus"

// PoolStats is one function's instances by state and waiting requests.
type PoolStats struct {
	Function                       string
	Starting, Idle, Busy, Stopping int
	Queued                         int
	MemoryMB                       int
}

var (
	instancesDesc = prometheus.NewDesc("kindling_instances",
		"Function instances by state (starting, idle, busy, stopping).", []string{"function", "state"}, nil)
	queueDesc = prometheus.NewDesc("kindling_queue_depth",
		"Requests waiting for an instance, by function.", []string{"function"}, nil)
	poolMemoryDesc = prometheus.NewDesc("kindling_instance_memory_bytes",
		"Memory reserved by a function's instances from the node's budget.", []string{"function"}, nil)
)

// poolCollector reads the pools at scrape time: nothing on the hot path.
type poolCollector struct{ stats func() []PoolStats }

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- instancesDesc
	ch <- queueDesc
	ch <- poolMemoryDesc
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.stats() {
		for state, n := range map[string]int{"starting": s.Starting, "idle": s.Idle, "busy": s.Busy, "stopping": s.Stopping} {
			ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(n), s.Function, state)
		}
		ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(s.Queued), s.Function)
		ch <- prometheus.MustNewConstMetric(poolMemoryDesc, prometheus.GaugeValue, float64(s.MemoryMB)*(1<<20), s.Function)
	}
}

// WatchPools exports the pools that stats reports at every scrape.
func (m *Metrics) WatchPools(stats func() []PoolStats) {
	m.Registry.MustRegister(poolCollector{stats: stats})
}
