package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// DefaultRetentionInterval is the RetentionConfig.Interval default.
const DefaultRetentionInterval = time.Minute

// retentionWarnEvery is how often a RetentionMonitor repeats the warning
// about one consumer or its dead letters while the age stays past the
// threshold.
const retentionWarnEvery = time.Hour

// RetentionConfig holds a RetentionMonitor's settings. Consumers is
// required; every other zero value means the documented default.
type RetentionConfig struct {
	// Consumers are the durable consumers on WXPAY to watch, each with its
	// dead letters (wxpaydlq.<consumer>.>). Required.
	Consumers []string

	// Interval is the time between two checks. Default
	// DefaultRetentionInterval (1m).
	Interval time.Duration

	// Logger receives a warning when an age passes half of its stream's
	// max age (repeated hourly while it stays there), and the failures of
	// the checks; the zero value logs nothing.
	Logger zerolog.Logger

	// Registerer receives the gauges wxpay_worker_oldest_unacked_seconds,
	// wxpay_dlq_oldest_seconds and wxpay_stream_max_age_seconds. Default a
	// private registry. Monitors and routers can share one.
	Registerer prometheus.Registerer

	// Now is the clock; default time.Now.
	Now func() time.Time
}

// RetentionMonitor watches what JetStream's age limit would remove
// silently. WXPAY keeps an event for its max age (7 days by default)
// whether a consumer acknowledged it or not, and WXPAY_DLQ keeps a dead
// letter for its own (30 days by default). The monitor exports, per
// consumer, the age of the oldest event the consumer has not
// acknowledged and the age of its oldest dead letter, and logs a warning
// once an age passes half of the stream's max age: time enough to fix the
// handler, or to replay or copy the dead letters, before they are gone.
type RetentionMonitor struct {
	js  jetstream.JetStream
	cfg RetentionConfig
	log zerolog.Logger

	oldestUnacked *prometheus.GaugeVec
	oldestDLQ     *prometheus.GaugeVec
	maxAge        *prometheus.GaugeVec

	warned map[string]time.Time // warning key -> when last logged; only Run's goroutine
}

// NewRetentionMonitor returns a monitor of cfg.Consumers through js. It
// checks cfg and registers the gauges, but does not talk to NATS: Run
// does.
func NewRetentionMonitor(js jetstream.JetStream, cfg RetentionConfig) (*RetentionMonitor, error) {
	if js == nil {
		return nil, errors.New("events: NewRetentionMonitor needs a JetStream context")
	}
	if len(cfg.Consumers) == 0 {
		return nil, errors.New("events: retention monitor: no consumer to watch")
	}
	for _, c := range cfg.Consumers {
		if !validToken(c) {
			return nil, fmt.Errorf("events: retention monitor: consumer name %q is not a subject token", c)
		}
	}
	if cfg.Interval < 0 {
		return nil, fmt.Errorf("events: retention monitor: negative interval %v", cfg.Interval)
	}
	setDefault(&cfg.Interval, DefaultRetentionInterval)
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &RetentionMonitor{
		js:  js,
		cfg: cfg,
		log: cfg.Logger,
		oldestUnacked: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wxpay_worker_oldest_unacked_seconds",
			Help: "Age of the oldest event on WXPAY the consumer has not acknowledged, 0 when there is none. WXPAY removes events at its max age, acknowledged or not.",
		}, []string{"consumer"}),
		oldestDLQ: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wxpay_dlq_oldest_seconds",
			Help: "Age of the consumer's oldest dead letter on WXPAY_DLQ, 0 when there is none. WXPAY_DLQ removes dead letters at its max age.",
		}, []string{"consumer"}),
		maxAge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wxpay_stream_max_age_seconds",
			Help: "The stream's max age (MaxAge), 0 for no limit.",
		}, []string{"stream"}),
		warned: map[string]time.Time{},
	}
	var err error
	m.oldestUnacked = register(cfg.Registerer, m.oldestUnacked, &err)
	m.oldestDLQ = register(cfg.Registerer, m.oldestDLQ, &err)
	m.maxAge = register(cfg.Registerer, m.maxAge, &err)
	if err != nil {
		return nil, fmt.Errorf("events: registering retention metrics: %w", err)
	}
	return m, nil
}

// Run checks at once and then every Interval until ctx ends; it returns
// nil then. A failed check is logged and tried again at the next one.
func (m *RetentionMonitor) Run(ctx context.Context) error {
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, max(m.cfg.Interval, 10*time.Second))
		err := m.check(cctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			m.log.Warn().Err(err).Msg("retention check failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// check updates the gauges once and logs the warnings due.
func (m *RetentionMonitor) check(ctx context.Context) error {
	now := m.cfg.Now()
	var errs []error
	if s, err := m.js.Stream(ctx, StreamName); err != nil {
		errs = append(errs, fmt.Errorf("events: looking up stream %s: %w", StreamName, err))
	} else {
		maxAge := s.CachedInfo().Config.MaxAge
		m.maxAge.WithLabelValues(StreamName).Set(maxAge.Seconds())
		for _, c := range m.cfg.Consumers {
			msg, err := oldestUnacked(ctx, m.js, s, c)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			age := m.observe(m.oldestUnacked.WithLabelValues(c), msg, now)
			if m.due("unacked:"+c, age, maxAge, now) {
				m.log.Warn().Str("consumer", c).Str("stream", StreamName).Uint64("stream_seq", msg.Sequence).
					Str("subject", msg.Subject).Dur("age", age).Dur("max_age", maxAge).
					Msg("an event the consumer has not acknowledged is past half of the stream's max age: the stream removes it at the max age, handled or not")
			}
		}
	}
	if s, err := m.js.Stream(ctx, DLQStreamName); err != nil {
		errs = append(errs, fmt.Errorf("events: looking up stream %s: %w", DLQStreamName, err))
	} else {
		maxAge := s.CachedInfo().Config.MaxAge
		m.maxAge.WithLabelValues(DLQStreamName).Set(maxAge.Seconds())
		for _, c := range m.cfg.Consumers {
			msg, err := firstMsg(ctx, s, 1, []string{dlqSubjectPrefix + c + ".>"})
			if err != nil {
				errs = append(errs, fmt.Errorf("events: reading the oldest dead letter of %s: %w", c, err))
				continue
			}
			age := m.observe(m.oldestDLQ.WithLabelValues(c), msg, now)
			if m.due("dlq:"+c, age, maxAge, now) {
				m.log.Warn().Str("consumer", c).Str("stream", DLQStreamName).Uint64("dlq_seq", msg.Sequence).
					Str("subject", msg.Subject).Dur("age", age).Dur("max_age", maxAge).
					Msg("a dead letter is past half of the stream's max age: the stream removes it at the max age; replay it or save it")
			}
		}
	}
	return errors.Join(errs...)
}

// observe sets g to the age of msg at now (0 without a message) and
// returns it.
func (m *RetentionMonitor) observe(g prometheus.Gauge, msg *jetstream.RawStreamMsg, now time.Time) time.Duration {
	var age time.Duration
	if msg != nil {
		age = max(now.Sub(msg.Time), 0)
	}
	g.Set(age.Seconds())
	return age
}

// due reports whether the warning key must be logged now: age is past
// half of maxAge (0: no limit, never), and key was not logged within
// retentionWarnEvery.
func (m *RetentionMonitor) due(key string, age, maxAge time.Duration, now time.Time) bool {
	if maxAge <= 0 || age <= maxAge/2 {
		delete(m.warned, key)
		return false
	}
	if last, ok := m.warned[key]; ok && now.Sub(last) < retentionWarnEvery {
		return false
	}
	m.warned[key] = now
	return true
}

// oldestUnacked returns the oldest message of s that consumer has not
// acknowledged, nil when there is none or the consumer does not exist
// (yet): the first message after the consumer's ack floor that matches
// one of its filter subjects.
func oldestUnacked(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, consumer string) (*jetstream.RawStreamMsg, error) {
	c, err := js.Consumer(ctx, StreamName, consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("events: consumer %s: %w", consumer, err)
	}
	info := c.CachedInfo()
	if info.NumPending == 0 && info.NumAckPending == 0 {
		return nil, nil
	}
	filters := info.Config.FilterSubjects
	if info.Config.FilterSubject != "" {
		filters = append(filters, info.Config.FilterSubject)
	}
	if len(filters) == 0 {
		filters = []string{">"}
	}
	msg, err := firstMsg(ctx, s, info.AckFloor.Stream+1, filters)
	if err != nil {
		return nil, fmt.Errorf("events: reading the oldest unacknowledged event of %s: %w", consumer, err)
	}
	return msg, nil
}

// firstMsg returns the first message of s at or after seq whose subject
// matches one of filters, nil when there is none.
func firstMsg(ctx context.Context, s jetstream.Stream, seq uint64, filters []string) (*jetstream.RawStreamMsg, error) {
	var first *jetstream.RawStreamMsg
	for _, f := range filters {
		msg, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(f))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if first == nil || msg.Sequence < first.Sequence {
			first = msg
		}
	}
	return first, nil
}
