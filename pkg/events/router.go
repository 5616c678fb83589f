package events

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// Router is one team's worker: a durable JetStream pull consumer on the
// WXPAY stream whose events are deduplicated through Redis and handed to
// the handlers registered for their subjects. Register handlers, then call
// Run. Several processes may run a Router with the same Consumer; they
// share the work, and each event's handlers run in one of them at a time.
type Router struct {
	js      jetstream.JetStream
	rdb     redis.UniversalClient
	cfg     RouterConfig
	log     zerolog.Logger
	metrics *routerMetrics
	dedupe  *dedupe

	// Series resolved once (see typeMetrics).
	byType        sync.Map // event type -> *typeMetrics
	matches       sync.Map // subject -> []route, see match
	matchesN      atomic.Int64
	inFlightOnce  sync.Once
	inFlightGauge prometheus.Gauge

	// Timing knobs derived from cfg; tests shorten healthInterval.
	pollWait       time.Duration // how long one fetch waits for events (shutdown waits for the last)
	healthInterval time.Duration // Redis PING period
	opTimeout      time.Duration // bound of one Redis or JetStream call
	rand           func() float64

	mu      sync.Mutex
	routes  []route
	running bool // Run is active; registration closed

	state       sync.Mutex
	active      bool  // consumer created, not stopping
	consumerErr error // last consumer or fetch failure, nil when fine
	redisErr    error // last Redis failure, nil while Redis answers
}

// NewRouter returns a Router for cfg that consumes through js and
// deduplicates through rdb. It checks cfg (see RouterConfig) and registers
// the metrics, but does not talk to NATS or Redis: Run does.
func NewRouter(js jetstream.JetStream, rdb redis.UniversalClient, cfg RouterConfig) (*Router, error) {
	if js == nil || rdb == nil {
		return nil, errors.New("events: NewRouter needs a JetStream context and a Redis client")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := newRouterMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("events: registering router metrics: %w", err)
	}
	r := &Router{
		js:      js,
		rdb:     rdb,
		cfg:     cfg,
		log:     cfg.Logger.With().Str("consumer", cfg.Consumer).Logger(),
		metrics: m,
		dedupe: &dedupe{
			rdb:      rdb,
			prefix:   cfg.KeyPrefix,
			consumer: cfg.Consumer,
			lockTTL:  cfg.AckWait,
			doneTTL:  cfg.DoneTTL,
		},
		pollWait:       min(cfg.AckWait/2, time.Second),
		healthInterval: time.Second,
		opTimeout:      min(max(cfg.AckWait/3, 100*time.Millisecond), 5*time.Second),
		rand:           rand.Float64,
		redisErr:       errors.New("not checked yet"),
	}
	return r, nil
}

// Handle registers hs for the events whose subject matches pattern, a
// NATS subject pattern under wxpay.> such as wxpay.*.transaction.success
// or wxpay.1230000109.refund.> (build it with Pattern). It panics, like
// http.ServeMux.Handle, if there is no handler or a nil one, if the
// pattern is invalid, already registered, or outside
// RouterConfig.Subjects, or if Run has started: registration mistakes
// show at startup. Register is the form that returns the error.
//
// A pattern is registered once, with all its handlers. Every handler
// whose pattern matches an event runs, one after the other in
// registration order (patterns in the order registered, the handlers of
// one pattern in the order given); the first error stops the chain, and a
// retry runs all of them again. The event is done only when all returned
// nil. Effects that need independent retries belong in separate
// consumers.
func (r *Router) Handle(pattern string, hs ...Handler) {
	if err := r.Register(pattern, hs...); err != nil {
		panic(err)
	}
}

// HandleFunc registers f like Handle.
func (r *Router) HandleFunc(pattern string, f func(ctx context.Context, ev Envelope) error) {
	if f == nil {
		panic(fmt.Errorf("%w: nil handler func for %q", ErrRegistration, pattern))
	}
	r.Handle(pattern, HandlerFunc(f))
}

// Register registers hs like Handle, returning an error wrapping
// ErrRegistration instead of panicking.
func (r *Router) Register(pattern string, hs ...Handler) error {
	if len(hs) == 0 {
		return fmt.Errorf("%w: no handler for %q", ErrRegistration, pattern)
	}
	for _, h := range hs {
		if h == nil {
			return fmt.Errorf("%w: nil handler for %q", ErrRegistration, pattern)
		}
	}
	if err := checkPattern(pattern); err != nil {
		return fmt.Errorf("%w: %v", ErrRegistration, err)
	}
	if len(r.cfg.Subjects) > 0 && !coveredBy(pattern, r.cfg.Subjects) {
		return fmt.Errorf("%w: pattern %q is outside the consumer's subjects %v", ErrRegistration, pattern, r.cfg.Subjects)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		return fmt.Errorf("%w: %q registered after Run started", ErrRegistration, pattern)
	}
	for _, rt := range r.routes {
		if rt.pattern == pattern {
			return fmt.Errorf("%w: pattern %q registered twice", ErrRegistration, pattern)
		}
	}
	r.routes = append(r.routes, route{pattern: pattern, hs: append([]Handler(nil), hs...)})
	r.matches.Clear()
	r.matchesN.Store(0)
	return nil
}

// coveredBy reports whether pattern lies inside one of filters.
func coveredBy(pattern string, filters []string) bool {
	for _, f := range filters {
		if subsetOf(pattern, f) {
			return true
		}
	}
	return false
}

// FilterSubjects returns the consumer's filter subjects: RouterConfig.Subjects
// when set, otherwise derived from the registered patterns (a pattern
// covered by another one is dropped).
func (r *Router) FilterSubjects() []string {
	if len(r.cfg.Subjects) > 0 {
		return append([]string(nil), r.cfg.Subjects...)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	patterns := make([]string, len(r.routes))
	for i, rt := range r.routes {
		patterns[i] = rt.pattern
	}
	return filterSubjects(patterns)
}

// match returns the routes whose pattern matches subject, in registration
// order. Routes do not change while Run is active.
func (r *Router) match(subject string) []route {
	if rts, ok := r.matches.Load(subject); ok {
		return rts.([]route)
	}
	out := r.matchRoutes(subject)
	// Subjects repeat (a merchant and an event type): remember the
	// answers, for a bounded number of them.
	if r.matchesN.Add(1) <= maxMatches {
		r.matches.Store(subject, out)
	}
	return out
}

// maxMatches bounds the subjects whose routes a router remembers.
const maxMatches = 4096

// matchRoutes is match without the memory.
func (r *Router) matchRoutes(subject string) []route {
	var out []route
	for _, rt := range r.routes {
		if matchSubject(rt.pattern, subject) {
			out = append(out, rt)
		}
	}
	return out
}

// Run creates or updates the durable consumer (stream WXPAY, deliver all,
// explicit acks, the filter subjects, AckWait, MaxAckPending, no delivery
// limit of its own) and handles events until ctx is cancelled.
//
// It fetches only as many events as it has free handler slots
// (Concurrency), and only while Redis answers: while Redis is down it
// fetches nothing, so the stream keeps the events, undelivered, until
// Redis is back (Ready reports the outage meanwhile). An event already
// fetched when Redis fails is handed back with a delay, never acknowledged
// unprocessed.
//
// When ctx is cancelled Run stops fetching; events it fetched but had not
// started are handed back once its last pull has ended, with a delay as
// long as a pull lasts (NakWithDelay), so that they go to another worker
// rather than back to the one stopping; running handlers get
// HandlerTimeout to finish and be acknowledged. Run returns
// nil after that. It returns an error at once if there is no handler, the
// NATS server is older than 2.10 (ErrServerTooOld) or the consumer cannot
// be created, and later if the NATS connection or the Redis client is
// closed. Other fetch failures are retried (Ready reports them). Run does
// not close or drain the connection and the client: the caller owns them.
func (r *Router) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.running {
		r.mu.Unlock()
		return errors.New("events: Run called while the router is already running")
	}
	if len(r.routes) == 0 {
		r.mu.Unlock()
		return fmt.Errorf("events: router %s has no handlers", r.cfg.Consumer)
	}
	r.running = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.running = false
		r.mu.Unlock()
	}()

	if nc := r.js.Conn(); nc != nil {
		if err := checkServerVersion(nc.ConnectedServerVersion()); err != nil {
			return err
		}
	}
	filters := r.FilterSubjects()
	cons, err := r.ensureConsumer(ctx, filters)
	if err != nil {
		return err
	}

	healthCtx, stopHealth := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHealth()
	r.pingRedis(ctx)
	go r.healthLoop(healthCtx)

	r.setConsumerErr(nil)
	r.setActive(true)
	r.log.Info().Str("stream", StreamName).Strs("subjects", filters).Int("concurrency", r.cfg.Concurrency).
		Dur("ack_wait", r.cfg.AckWait).Dur("handler_timeout", r.cfg.HandlerTimeout).Int("max_deliver", r.cfg.MaxDeliver).Msg("worker started")

	sem := make(chan struct{}, r.cfg.Concurrency)
	batch := newBatcher(r.rdb)
	r.dedupe.batch = batch
	pool := newProcessPool(ctx, r, sem)
	err = r.fetchLoop(ctx, cons, filters, sem, pool)
	r.setActive(false)
	pool.close()
	r.dedupe.batch = nil
	batch.close()
	// Acks are not confirmed one by one; a flush (a PING the server answers
	// after everything sent before it) makes sure they all arrived before
	// Run returns.
	if nc := r.js.Conn(); nc != nil && !nc.IsClosed() {
		if ferr := nc.FlushTimeout(r.opTimeout); ferr != nil {
			r.log.Warn().Err(ferr).Msg("flushing acknowledgements at shutdown failed; unacknowledged events are delivered again and found done")
		}
	}
	if err != nil {
		r.log.Error().Err(err).Msg("worker stopped")
		return err
	}
	r.log.Info().Msg("worker stopped")
	return nil
}
