package events

import (
	"errors"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Label values of wxpay_worker_retries_total's reason.
const (
	retryHandlerError = "handler_error" // a handler failed; backoff
	retryLockBusy     = "lock_busy"     // another worker runs the event
	retryRedis        = "redis"         // Redis failed; nothing ran or done was not recorded
	retryShutdown     = "shutdown"      // fetched or claimed while stopping
	retryDLQFailed    = "dlq_failed"    // dead-letter publish not acknowledged
)

// Label values of wxpay_worker_dead_letters_total's cause.
const (
	dlqPermanent  = "permanent"
	dlqMaxDeliver = "max_deliver"
	dlqNoHandler  = "no_handler"
	dlqMalformed  = "malformed"
)

// routerMetrics are the Prometheus collectors of the routers registered on
// one Registerer; every series is labelled with the consumer.
type routerMetrics struct {
	processed   *prometheus.CounterVec
	duplicates  *prometheus.CounterVec
	retries     *prometheus.CounterVec
	deadLetters *prometheus.CounterVec
	handlerTime *prometheus.HistogramVec
	inFlight    *prometheus.GaugeVec
	redisUp     *prometheus.GaugeVec
}

// newRouterMetrics creates the collectors and registers them on reg. A
// second router on the same Registerer shares the first one's collectors.
func newRouterMetrics(reg prometheus.Registerer) (*routerMetrics, error) {
	m := &routerMetrics{
		processed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxpay_worker_processed_total",
			Help: "Events whose handlers all succeeded, marked done and acknowledged.",
		}, []string{"consumer", "event_type"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxpay_worker_duplicates_total",
			Help: "Events acknowledged without running handlers because their dedupe_key was already done.",
		}, []string{"consumer", "event_type"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxpay_worker_retries_total",
			Help: "Deliveries handed back to JetStream for a later redelivery (NAK), by reason.",
		}, []string{"consumer", "event_type", "reason"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxpay_worker_dead_letters_total",
			Help: "Events moved to the WXPAY_DLQ stream, by cause.",
		}, []string{"consumer", "event_type", "cause"}),
		handlerTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wxpay_worker_handler_seconds",
			Help:    "Time the handlers of one delivery took, successful or not.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"consumer", "event_type"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wxpay_worker_in_flight",
			Help: "Deliveries being processed now.",
		}, []string{"consumer"}),
		redisUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wxpay_worker_redis_up",
			Help: "1 while the router reaches Redis (and fetches events), 0 while it waits for Redis.",
		}, []string{"consumer"}),
	}
	var err error
	m.processed = register(reg, m.processed, &err)
	m.duplicates = register(reg, m.duplicates, &err)
	m.retries = register(reg, m.retries, &err)
	m.deadLetters = register(reg, m.deadLetters, &err)
	m.handlerTime = register(reg, m.handlerTime, &err)
	m.inFlight = register(reg, m.inFlight, &err)
	m.redisUp = register(reg, m.redisUp, &err)
	return m, err
}

// register registers c on reg, or returns the collector already registered
// under the same description. The first failure is kept in *errp.
func register[C prometheus.Collector](reg prometheus.Registerer, c C, errp *error) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	if *errp == nil {
		*errp = err
	}
	return c
}

// typeMetrics are the series of one consumer and event type that every
// delivery touches, resolved once: looking a series up by its label
// values hashes them on every call.
type typeMetrics struct {
	label       string // the event type in lower case, the metrics' label value
	processed   prometheus.Counter
	duplicates  prometheus.Counter
	handlerTime prometheus.Observer
}

// typeMetrics returns the series of r's consumer for eventType, as the
// envelope spells it. There are as many as series of the metrics.
func (r *Router) typeMetrics(eventType string) *typeMetrics {
	if tm, ok := r.byType.Load(eventType); ok {
		return tm.(*typeMetrics)
	}
	label := strings.ToLower(eventType)
	tm := &typeMetrics{
		label:       label,
		processed:   r.metrics.processed.WithLabelValues(r.cfg.Consumer, label),
		duplicates:  r.metrics.duplicates.WithLabelValues(r.cfg.Consumer, label),
		handlerTime: r.metrics.handlerTime.WithLabelValues(r.cfg.Consumer, label),
	}
	actual, _ := r.byType.LoadOrStore(eventType, tm)
	return actual.(*typeMetrics)
}

// inFlight returns r's series of wxpay_worker_in_flight.
func (r *Router) inFlight() prometheus.Gauge {
	r.inFlightOnce.Do(func() { r.inFlightGauge = r.metrics.inFlight.WithLabelValues(r.cfg.Consumer) })
	return r.inFlightGauge
}
