package ingress

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the ingress's Prometheus metrics.
type Metrics struct {
	requests   *prometheus.CounterVec
	verify     prometheus.Histogram
	publish    prometheus.Histogram
	inFlight   prometheus.Gauge
	probes     *prometheus.CounterVec
	verifiedBy *prometheus.CounterVec
	// refusedConns counts connections beyond the server's limit.
	refusedConns prometheus.Counter
}

// NewMetrics registers the ingress metrics with reg (a fresh registry in
// tests, prometheus.DefaultRegisterer or the command's own in production).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	latency := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxpay_ingress_requests_total",
			Help: "Notifications answered, by outcome (ok, duplicate, malformed, missing_header, bad_signature, signature_probe, stale_timestamp, unknown_serial, cert_refresh_failed, decrypt_failed, unknown_merchant, merchant_mismatch, too_large, slow_upload, busy, publish_failed, config_error, v2_not_configured), event type and format (v3, v2).",
		}, []string{"outcome", "event_type", "format"}),
		verify: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "wxpay_ingress_verify_seconds", Help: "Time to verify and decrypt a notification.", Buckets: latency,
		}),
		publish: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "wxpay_ingress_publish_seconds", Help: "Time from publish to JetStream acknowledgement.", Buckets: latency,
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wxpay_ingress_in_flight", Help: "Notifications being handled now.",
		}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxpay_ingress_signature_probes_total",
			Help: "WeChat Pay signature probes (WECHATPAY/SIGNTEST/) rejected, counted apart from real signature failures.",
		}, []string{"mchid"}),
		verifiedBy: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxpay_ingress_verified_total",
			Help: "Notifications verified, by the key that verified them (platform certificate serial or public key id), for the migration to the WeChat Pay public key.",
		}, []string{"mchid", "key_kind", "key_id"}),
		refusedConns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wxpay_ingress_connections_refused_total",
			Help: "Connections answered 503 and closed because the public listener had its maximum open.",
		}),
	}
	reg.MustRegister(m.requests, m.verify, m.publish, m.inFlight, m.probes, m.verifiedBy, m.refusedConns)
	return m
}

func (m *Metrics) observe(h prometheus.Histogram, since time.Time, now time.Time) {
	h.Observe(now.Sub(since).Seconds())
}
