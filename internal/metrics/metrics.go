// Package metrics exposes Crier's Prometheus metrics. It implements the observer interfaces of
// the hub and the transports, so that neither depends on Prometheus.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds every metric of one server.
type Metrics struct {
	reg           *prometheus.Registry
	connections   *prometheus.GaugeVec
	subscriptions prometheus.Gauge
	publishes     prometheus.Counter
	deliveries    prometheus.Counter
	storeLatency  *prometheus.HistogramVec
}

// Readings are the figures read at scrape time.
type Readings struct {
	SlowDisconnects func() float64 // subscribers closed for their queue
	Channels        func() float64 // channels with subscribers
	PublisherConns  func() float64 // kept-alive publisher connections read by internal/keepalive
}

// New registers Crier's metrics.
func New(r Readings) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "crier_connections",
			Help: "Open push connections by transport."}, []string{"transport"}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "crier_subscriptions",
			Help: "Open channel subscriptions."}),
		publishes: prometheus.NewCounter(prometheus.CounterOpts{Name: "crier_publishes_total",
			Help: "Messages published (duplicates by idempotency key excluded)."}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{Name: "crier_deliveries_total",
			Help: "Messages handed to subscribers' queues."}),
		storeLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "crier_store_latency_seconds",
			Help: "Store operation latency.", Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16)}, []string{"op"}),
	}
	m.reg.MustRegister(m.connections, m.subscriptions, m.publishes, m.deliveries, m.storeLatency,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "crier_slow_disconnects_total",
			Help: "Subscribers disconnected for exceeding their queue limit."}, r.SlowDisconnects),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "crier_channels",
			Help: "Channels with subscribers on this node."}, r.Channels),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "crier_publisher_connections",
			Help: "Kept-alive publisher connections served without net/http after their first publish."}, r.PublisherConns),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler { return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}) }

// Published implements hub.Observer.
func (m *Metrics) Published(n int) { m.publishes.Add(float64(n)) }

// Delivered implements hub.Observer.
func (m *Metrics) Delivered(n int) { m.deliveries.Add(float64(n)) }

// StoreLatency implements hub.Observer.
func (m *Metrics) StoreLatency(op string, d time.Duration) {
	m.storeLatency.WithLabelValues(op).Observe(d.Seconds())
}

// Connected implements transport.Observer.
func (m *Metrics) Connected(transport string, delta int) {
	m.connections.WithLabelValues(transport).Add(float64(delta))
}

// Subscribed implements transport.Observer.
func (m *Metrics) Subscribed(delta int) { m.subscriptions.Add(float64(delta)) }
