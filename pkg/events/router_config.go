package events

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Defaults of RouterConfig.
const (
	// DefaultAckWait is the RouterConfig.AckWait default.
	DefaultAckWait = 30 * time.Second
	// DefaultMaxDeliver is the RouterConfig.MaxDeliver default.
	DefaultMaxDeliver = 10
	// DefaultMaxAckPending is the RouterConfig.MaxAckPending default
	// (JetStream's own).
	DefaultMaxAckPending = 1000
	// DefaultConcurrency is the RouterConfig.Concurrency default.
	DefaultConcurrency = 16
	// DefaultRetryBase is the RouterConfig.RetryBase default.
	DefaultRetryBase = time.Second
	// DefaultRetryMax is the RouterConfig.RetryMax default.
	DefaultRetryMax = 5 * time.Minute
	// DefaultDoneTTL is the RouterConfig.DoneTTL default.
	DefaultDoneTTL = 7 * 24 * time.Hour
	// MinDoneTTL is the shortest RouterConfig.DoneTTL allowed: WeChat
	// retries a notification for about 24 hours, and every retry must find
	// the done marker.
	MinDoneTTL = 25 * time.Hour
)

// Bounds of RouterConfig.
const (
	minAckWait  = 100 * time.Millisecond
	maxRetryMax = 24 * time.Hour
)

// RouterConfig holds a Router's settings. Consumer is required; every
// other zero value means the documented default.
type RouterConfig struct {
	// Consumer is the durable consumer's name: one per team. Every worker process of the team uses the same
	// name and shares the work. It must be a single subject token without
	// "/" or "\", since it also names the dead-letter subjects and the
	// Redis keys. Required.
	Consumer string

	// Subjects is the consumer's filter (WORKER_SUBJECTS): patterns under
	// wxpay.>, none of which contains another. Every handler pattern must
	// lie inside one of them. An event that passes the filter but matches
	// no handler is dead-lettered with reason "no handler". Default: the
	// registered patterns themselves (those covered by another dropped).
	Subjects []string

	// AckWait is how long JetStream waits for an acknowledgement before it
	// delivers the event again. The router extends it while handlers run
	// (InProgress every AckWait/3), and holds the Redis lock for AckWait,
	// extended at the same pace. At least 100ms. Default DefaultAckWait
	// (30s).
	AckWait time.Duration

	// MaxDeliver is how many attempts a failing event gets: the handler
	// error of attempt MaxDeliver dead-letters it. Only deliveries whose
	// handlers ran and failed are attempts; the router counts them in
	// Redis (<prefix>attempts:<consumer>:<dedupe_key>:<stream_seq>, kept
	// for DoneTTL), so deliveries that ran no handler (Redis down, another
	// worker holding the lock, shutdown) never use up the budget, although
	// JetStream counts them in NumDelivered. The JetStream consumer itself
	// is created with no delivery limit, so that JetStream never stops
	// delivering an event silently. Default DefaultMaxDeliver (10).
	MaxDeliver int

	// MaxAckPending caps the events delivered and not yet acknowledged
	// across all processes of the consumer, including failed events
	// waiting for their redelivery delay. -1 means no limit. Default
	// DefaultMaxAckPending (1000).
	MaxAckPending int

	// Concurrency is how many events this process handles at once; the
	// router fetches no more than it has room for. Default
	// DefaultConcurrency (16).
	Concurrency int

	// HandlerTimeout bounds the handlers of one delivery (their ctx ends
	// then) and is what shutdown grants running handlers to finish. It
	// must be less than AckWait. A handler's own timeouts (such as the
	// forward handler's) must be shorter, or every attempt is cut here.
	// Default DefaultHandlerTimeout(AckWait), AckWait*4/5.
	HandlerTimeout time.Duration

	// RetryBase is the redelivery delay after a first failed delivery; it
	// doubles with each further delivery, with ±25% jitter. Default
	// DefaultRetryBase (1s).
	RetryBase time.Duration

	// RetryMax caps the redelivery delay (at most 24h). Default
	// DefaultRetryMax (5m).
	RetryMax time.Duration

	// DoneTTL is how long the done marker of a handled event is kept;
	// duplicates arriving later run the handlers again. At least
	// MinDoneTTL (25h). Default DefaultDoneTTL (7 days, the WXPAY stream's
	// default max age).
	DoneTTL time.Duration

	// KeyPrefix starts every Redis key the router writes. Default
	// DefaultKeyPrefix ("wxpay:").
	KeyPrefix string

	// Logger receives the router's lifecycle lines and one line per
	// delivery outcome; the zero value logs nothing.
	Logger zerolog.Logger

	// Registerer receives the router's metrics (wxpay_worker_*). Default
	// a private registry. Routers of different consumers can share one.
	Registerer prometheus.Registerer
}

// DefaultHandlerTimeout returns the RouterConfig.HandlerTimeout default
// for an ack wait (the AckWait default when ackWait is 0): four fifths of
// it.
func DefaultHandlerTimeout(ackWait time.Duration) time.Duration {
	if ackWait == 0 {
		ackWait = DefaultAckWait
	}
	return ackWait * 4 / 5
}

// withDefaults returns cfg with its defaults filled in, or what is wrong
// with it.
func (cfg RouterConfig) withDefaults() (RouterConfig, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if cfg.Consumer == "" {
		bad("consumer name is required")
	} else if !validToken(cfg.Consumer) || strings.ContainsAny(cfg.Consumer, `/\`) {
		bad("consumer name %q must be one subject token (no \".\", \"*\", \">\", \"/\", \"\\\" or white space)", cfg.Consumer)
	}
	for i, s := range cfg.Subjects {
		if err := checkPattern(s); err != nil {
			bad("subjects: %v", err)
			continue
		}
		for _, t := range cfg.Subjects[:i] {
			if subsetOf(s, t) || subsetOf(t, s) {
				bad("subjects %q and %q overlap (JetStream refuses filters of which one contains another)", t, s)
			}
		}
	}
	setDefault(&cfg.AckWait, DefaultAckWait)
	setDefault(&cfg.MaxDeliver, DefaultMaxDeliver)
	setDefault(&cfg.MaxAckPending, DefaultMaxAckPending)
	setDefault(&cfg.Concurrency, DefaultConcurrency)
	setDefault(&cfg.HandlerTimeout, DefaultHandlerTimeout(cfg.AckWait))
	setDefault(&cfg.RetryBase, DefaultRetryBase)
	setDefault(&cfg.RetryMax, DefaultRetryMax)
	setDefault(&cfg.DoneTTL, DefaultDoneTTL)
	setDefault(&cfg.KeyPrefix, DefaultKeyPrefix)
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	switch {
	case cfg.AckWait < minAckWait:
		bad("ack wait %v is less than %v", cfg.AckWait, minAckWait)
	case cfg.HandlerTimeout <= 0:
		bad("handler timeout %v is not positive", cfg.HandlerTimeout)
	case cfg.HandlerTimeout >= cfg.AckWait:
		bad("handler timeout %v must be less than the ack wait %v", cfg.HandlerTimeout, cfg.AckWait)
	}
	if cfg.MaxDeliver < 1 {
		bad("max deliver %d is less than 1", cfg.MaxDeliver)
	}
	if cfg.MaxAckPending < -1 {
		bad("max ack pending %d is neither positive nor -1 (no limit)", cfg.MaxAckPending)
	}
	if cfg.Concurrency < 1 {
		bad("concurrency %d is less than 1", cfg.Concurrency)
	}
	switch {
	case cfg.RetryBase <= 0:
		bad("retry base %v is not positive", cfg.RetryBase)
	case cfg.RetryMax < cfg.RetryBase:
		bad("retry max %v is less than the retry base %v", cfg.RetryMax, cfg.RetryBase)
	case cfg.RetryMax > maxRetryMax:
		bad("retry max %v is more than %v", cfg.RetryMax, maxRetryMax)
	}
	if cfg.DoneTTL < MinDoneTTL {
		bad("done TTL %v is less than %v: WeChat retries a notification for about 24 hours", cfg.DoneTTL, MinDoneTTL)
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, fmt.Errorf("events: router config: %w", err)
	}
	return cfg, nil
}

// setDefault replaces a zero *p with def.
func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}
