package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// Handler handles the events of one subject pattern (see
// (*Router).Handle). A team's business code implements it.
//
// Three things every implementation must respect:
//
//   - Respect ctx cancellation. ctx ends HandlerTimeout after the handler
//     started (also when the worker shuts down: shutdown lets running
//     handlers finish within that time), or earlier if the router lost the
//     event's Redis lock or could not extend it in time (Redis not
//     answering), before another worker can take the event over. Return
//     soon after ctx is done; a handler that ignores it delays shutdown
//     and keeps its event's slot.
//   - It may be called more than once for the same dedupe_key: after a
//     crash or a failed acknowledgement, when Redis lost its keys, when
//     the done marker (RouterConfig.DoneTTL) expired, after a replay, and
//     whenever a later handler of the same event failed (all matching
//     handlers run again on a retry). The Redis dedupe is the fast path,
//     not a proof, so a handler must be idempotent on its own records
//     (for example a unique key on transaction_id or refund_id).
//   - The error it returns decides what happens to the event. nil: done
//     (once every matching handler returned nil). Permanent(err), or an
//     ErrMalformedEnvelope error such as DecodeResource returns: the event
//     goes to the dead letters at once. RetryAfter(d, err): delivered again
//     after d. Any other error: delivered again after an exponential
//     backoff, and dead-lettered on the last allowed attempt
//     (RouterConfig.MaxDeliver). A panic counts as an ordinary error.
//
// The context carries a zerolog logger with the event's subject,
// consumer, stream_seq, delivery, event_id, dedupe_key and event_type:
// log with zerolog.Ctx(ctx).
type Handler interface {
	HandleEvent(ctx context.Context, ev Envelope) error
}

// HandlerFunc adapts a function to Handler, like http.HandlerFunc.
type HandlerFunc func(ctx context.Context, ev Envelope) error

// HandleEvent calls f(ctx, ev).
func (f HandlerFunc) HandleEvent(ctx context.Context, ev Envelope) error { return f(ctx, ev) }

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
	// must be less than AckWait. Default AckWait*4/5.
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
	setDefault(&cfg.HandlerTimeout, cfg.AckWait*4/5)
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

// route is one registration.
type route struct {
	pattern string
	h       Handler
}

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

// Handle registers h for the events whose subject matches pattern, a NATS
// subject pattern under wxpay.> such as wxpay.*.transaction.success or
// wxpay.1230000109.refund.> (build it with Pattern). It panics, like
// http.ServeMux.Handle, if the pattern is invalid, already registered, or
// outside RouterConfig.Subjects, or if Run has started: registration
// mistakes show at startup. Register is the form that returns the error.
//
// All handlers whose pattern matches an event run, one after the other in
// registration order; the first error stops the chain, and a retry runs
// all of them again. The event is done only when all returned nil.
// Effects that need independent retries belong in separate consumers.
func (r *Router) Handle(pattern string, h Handler) {
	if err := r.Register(pattern, h); err != nil {
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

// Register registers h like Handle, returning an error wrapping
// ErrRegistration instead of panicking.
func (r *Router) Register(pattern string, h Handler) error {
	if h == nil {
		return fmt.Errorf("%w: nil handler for %q", ErrRegistration, pattern)
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
	r.routes = append(r.routes, route{pattern: pattern, h: h})
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
	var out []route
	for _, rt := range r.routes {
		if matchSubject(rt.pattern, subject) {
			out = append(out, rt)
		}
	}
	return out
}

// Ready reports whether the router is taking work: nil while Run is
// active, its consumer exists and Redis answers; otherwise an error
// wrapping ErrNotRunning, ErrRedisUnavailable, or the consumer's last
// failure. Serve it on /readyz.
func (r *Router) Ready() error {
	r.state.Lock()
	defer r.state.Unlock()
	switch {
	case !r.active:
		return ErrNotRunning
	case r.consumerErr != nil:
		return fmt.Errorf("events: consumer %s: %w", r.cfg.Consumer, r.consumerErr)
	case r.redisErr != nil:
		return fmt.Errorf("%w: %v", ErrRedisUnavailable, r.redisErr)
	}
	return nil
}

// setActive records whether Run is taking work.
func (r *Router) setActive(active bool) {
	r.state.Lock()
	r.active = active
	r.state.Unlock()
}

// setConsumerErr records the consumer's state; nil means fine.
func (r *Router) setConsumerErr(err error) {
	r.state.Lock()
	r.consumerErr = err
	r.state.Unlock()
}

// setRedis records whether Redis answers (err nil) and logs the changes.
func (r *Router) setRedis(err error) {
	r.state.Lock()
	was := r.redisErr
	r.redisErr = err
	r.state.Unlock()
	switch {
	case err != nil && was == nil:
		r.metrics.redisUp.WithLabelValues(r.cfg.Consumer).Set(0)
		r.log.Error().Err(err).Msg("redis unavailable: not taking events until it answers")
	case err == nil && was != nil:
		r.metrics.redisUp.WithLabelValues(r.cfg.Consumer).Set(1)
		r.log.Info().Msg("redis answers: taking events")
	}
}

// pingRedis checks Redis once and records the result.
func (r *Router) pingRedis(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	r.setRedis(r.rdb.Ping(ctx).Err())
}

// healthLoop pings Redis every healthInterval until ctx ends.
func (r *Router) healthLoop(ctx context.Context) {
	t := time.NewTicker(r.healthInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.pingRedis(ctx)
		}
	}
}

// minServerMajor and minServerMinor are the oldest NATS server version the
// router supports: consumers with several filter subjects came in 2.10.
const (
	minServerMajor = 2
	minServerMinor = 10
)

// checkServerVersion returns an ErrServerTooOld error if version (as the
// server reports it, "2.9.10") is older than 2.10. An empty or
// unparseable version passes; the consumer's creation catches the rest.
func checkServerVersion(version string) error {
	v := strings.TrimPrefix(version, "v")
	majorS, rest, _ := strings.Cut(v, ".")
	minorS, _, _ := strings.Cut(rest, ".")
	major, err1 := strconv.Atoi(majorS)
	minor, err2 := strconv.Atoi(minorS)
	if err1 != nil || err2 != nil {
		return nil
	}
	if major < minServerMajor || (major == minServerMajor && minor < minServerMinor) {
		return fmt.Errorf("%w: the server runs NATS %s; the router needs %d.%d or later (consumers with several filter subjects)",
			ErrServerTooOld, version, minServerMajor, minServerMinor)
	}
	return nil
}

// consumerConfig is the durable consumer Run creates or updates.
func (r *Router) consumerConfig(filters []string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        r.cfg.Consumer,
		Description:    "wxpay-notify worker " + r.cfg.Consumer,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        r.cfg.AckWait,
		MaxDeliver:     -1, // the router enforces MaxDeliver: see RouterConfig
		MaxAckPending:  r.cfg.MaxAckPending,
		FilterSubjects: filters,
	}
}

// ensureConsumer creates or updates the durable consumer.
func (r *Router) ensureConsumer(ctx context.Context, filters []string) (jetstream.Consumer, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cons, err := r.js.CreateOrUpdateConsumer(ctx, StreamName, r.consumerConfig(filters))
	if errors.Is(err, jetstream.ErrConsumerMultipleFilterSubjectsNotSupported) {
		version := "(unknown version)"
		if nc := r.js.Conn(); nc != nil {
			version = nc.ConnectedServerVersion()
		}
		return nil, fmt.Errorf("%w: the server runs NATS %s and ignored the consumer's filter subjects; the router needs %d.%d or later",
			ErrServerTooOld, version, minServerMajor, minServerMinor)
	}
	if err != nil {
		return nil, fmt.Errorf("events: creating or updating consumer %s on stream %s: %w", r.cfg.Consumer, StreamName, err)
	}
	return cons, nil
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
		Dur("ack_wait", r.cfg.AckWait).Int("max_deliver", r.cfg.MaxDeliver).Msg("worker started")

	var wg sync.WaitGroup
	sem := make(chan struct{}, r.cfg.Concurrency)
	batch := newBatcher(r.rdb)
	r.dedupe.batch = batch
	err = r.fetchLoop(ctx, cons, filters, sem, &wg)
	r.setActive(false)
	wg.Wait()
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

// fetchLoop fetches events into free slots of sem and dispatches them,
// until ctx ends or the connection is closed.
func (r *Router) fetchLoop(ctx context.Context, cons jetstream.Consumer, filters []string, sem chan struct{}, wg *sync.WaitGroup) error {
	failures := 0
	pause := func(err error) bool {
		failures++
		r.setConsumerErr(err)
		r.log.Warn().Err(err).Int("failures", failures).Msg("fetching events failed; retrying")
		d := min(100*time.Millisecond<<min(failures, 6), 5*time.Second)
		return sleepCtx(ctx, d)
	}
	for ctx.Err() == nil {
		if ok, err := r.waitForRedis(ctx); err != nil {
			return err
		} else if !ok {
			break
		}
		n := acquire(ctx, sem)
		if n == 0 {
			break
		}
		batch, err := cons.Fetch(n, jetstream.FetchMaxWait(r.pollWait))
		if err != nil {
			release(sem, n)
			if r.connClosed(err) {
				return fmt.Errorf("events: consumer %s: %w", r.cfg.Consumer, err)
			}
			if !pause(err) {
				break
			}
			cons = r.recreate(ctx, cons, filters, err)
			continue
		}
		got := 0
		var held []jetstream.Msg
		for msg := range batch.Messages() {
			got++
			if ctx.Err() != nil {
				// Fetched while stopping. Handing it back now would put it
				// straight back into this pull, which stays open until it
				// expires: hold it until then.
				held = append(held, msg)
				release(sem, 1)
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer release(sem, 1)
				r.process(ctx, msg)
			}()
		}
		release(sem, n-got)
		// The pull has ended: nothing handed back now can come back to it.
		for _, msg := range held {
			r.handBack(msg)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.Canceled) {
			if r.connClosed(err) {
				return fmt.Errorf("events: consumer %s: %w", r.cfg.Consumer, err)
			}
			if !pause(err) {
				break
			}
			cons = r.recreate(ctx, cons, filters, err)
			continue
		}
		if failures > 0 {
			failures = 0
			r.setConsumerErr(nil)
			r.log.Info().Msg("fetching events again")
		}
	}
	return nil
}

// recreate creates the consumer again after a fetch failure that says it
// is gone; otherwise it returns cons.
func (r *Router) recreate(ctx context.Context, cons jetstream.Consumer, filters []string, err error) jetstream.Consumer {
	if !errors.Is(err, jetstream.ErrConsumerDeleted) && !errors.Is(err, jetstream.ErrConsumerNotFound) &&
		!errors.Is(err, jetstream.ErrNoHeartbeat) {
		return cons
	}
	c, cerr := r.ensureConsumer(ctx, filters)
	if cerr != nil {
		r.setConsumerErr(cerr)
		return cons
	}
	r.log.Warn().Err(err).Msg("consumer created again")
	return c
}

// connClosed reports whether err means the NATS connection is closed for
// good (not reconnecting).
func (r *Router) connClosed(err error) bool {
	if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, jetstream.ErrConnectionClosed) {
		return true
	}
	nc := r.js.Conn()
	return nc != nil && nc.IsClosed()
}

// waitForRedis blocks while Redis is down. It returns false when ctx
// ended, and an error when waiting is pointless: the NATS connection or
// the Redis client was closed.
func (r *Router) waitForRedis(ctx context.Context) (bool, error) {
	for {
		if nc := r.js.Conn(); nc != nil && nc.IsClosed() {
			return false, fmt.Errorf("events: consumer %s: %w", r.cfg.Consumer, nats.ErrConnectionClosed)
		}
		r.state.Lock()
		err := r.redisErr
		r.state.Unlock()
		switch {
		case err == nil:
			return ctx.Err() == nil, nil
		case errors.Is(err, redis.ErrClosed):
			return false, fmt.Errorf("events: consumer %s: %w", r.cfg.Consumer, err)
		}
		if !sleepCtx(ctx, min(r.healthInterval, 250*time.Millisecond)) {
			return false, nil
		}
	}
}

// acquire takes at least one slot of sem (waiting for it) and then every
// other free one; it returns how many it took, 0 if ctx ended first.
func acquire(ctx context.Context, sem chan struct{}) int {
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return 0
	}
	n := 1
	for {
		select {
		case sem <- struct{}{}:
			n++
		default:
			return n
		}
	}
}

// release frees n slots of sem.
func release(sem chan struct{}, n int) {
	for range n {
		<-sem
	}
}

// sleepCtx waits for d; false means ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// errShutdown is the log cause of events handed back while stopping.
var errShutdown = errors.New("worker stopping")

// errLockBusy is the log cause of events another worker is running.
var errLockBusy = errors.New("another worker holds the event's lock")

// errLockLost cancels a handler whose Redis lock expired or was taken.
var errLockLost = errors.New("events: the event's Redis lock expired while its handlers ran")

// errLockUnconfirmed cancels a handler whose Redis lock could not be
// extended in time: it may expire while the handler runs.
var errLockUnconfirmed = errors.New("events: the event's Redis lock could not be extended; it may expire while its handlers run")

// handBackDelay is how long an event handed back while stopping waits
// before its next delivery: as long as a pull lasts, so that it is not
// delivered again into a pull this worker opened before it stopped, and
// goes to another worker (or to this one after its restart) instead.
func (r *Router) handBackDelay() time.Duration { return r.pollWait }

// handBack returns a message fetched while stopping, with handBackDelay.
func (r *Router) handBack(msg jetstream.Msg) {
	delay := r.handBackDelay()
	ev := r.log.Info().Str("subject", msg.Subject()).Str("outcome", "nak").Dur("retry_in", delay).Err(errShutdown)
	if meta, err := msg.Metadata(); err == nil {
		ev = ev.Uint64("stream_seq", meta.Sequence.Stream).Uint64("delivery", meta.NumDelivered)
	}
	if err := msg.NakWithDelay(delay); err != nil {
		ev = ev.AnErr("nak_error", err)
	}
	r.metrics.retries.WithLabelValues(r.cfg.Consumer, "", retryShutdown).Inc()
	ev.Msg("handed back")
}

// delivery is one message being processed.
type delivery struct {
	msg       jetstream.Msg
	n         uint64 // NumDelivered
	seq       uint64 // stream sequence
	eventType string // lower case, for metrics; "" when malformed
	log       zerolog.Logger
	start     time.Time
}

// actionKind is what the router does with a delivery whose handlers
// failed.
type actionKind int

const (
	actionRetry      actionKind = iota // NakWithDelay(delay)
	actionDeadLetter                   // publish to WXPAY_DLQ, then Term
)

// action is the decision for a failed delivery.
type action struct {
	kind  actionKind
	delay time.Duration // actionRetry
	cause string        // actionDeadLetter: dlqPermanent or dlqMaxDeliver
}

// decide maps the handler error of failed attempt n (1 for the first
// delivery whose handlers failed, see countAttempt) to what happens next,
// in one place: a Permanent or malformed-envelope error is dead-lettered
// at once; on attempt MaxDeliver or later any error is dead-lettered; a
// RetryAfter error is retried after its delay; any other error after
// redeliveryDelay(n).
func decide(err error, n uint64, cfg RouterConfig, rand func() float64) action {
	switch {
	case IsPermanent(err):
		return action{kind: actionDeadLetter, cause: dlqPermanent}
	case n >= uint64(cfg.MaxDeliver):
		return action{kind: actionDeadLetter, cause: dlqMaxDeliver}
	}
	if d, ok := retryAfterDelay(err); ok {
		return action{kind: actionRetry, delay: d}
	}
	return action{kind: actionRetry, delay: redeliveryDelay(n, cfg, rand)}
}

// decodeEnvelope decodes and validates a message body; every error wraps
// ErrMalformedEnvelope.
func decodeEnvelope(data []byte, env *Envelope) error {
	if err := json.Unmarshal(data, env); err != nil {
		return fmt.Errorf("%w: body is not a JSON envelope: %v", ErrMalformedEnvelope, err)
	}
	return env.Validate()
}

// process handles one delivery from start to its outcome: ack,
// duplicate, nak or dlq. ctx is Run's; the work itself runs on contexts
// that shutdown does not cancel.
func (r *Router) process(ctx context.Context, msg jetstream.Msg) {
	r.metrics.inFlight.WithLabelValues(r.cfg.Consumer).Inc()
	defer r.metrics.inFlight.WithLabelValues(r.cfg.Consumer).Dec()
	bg := context.WithoutCancel(ctx)
	d := &delivery{msg: msg, start: time.Now()}
	meta, err := msg.Metadata()
	if err != nil { // not a JetStream delivery: cannot happen on a pull consumer
		r.log.Error().Err(err).Str("subject", msg.Subject()).Msg("message without JetStream metadata")
		_ = msg.Nak()
		return
	}
	d.n, d.seq = meta.NumDelivered, meta.Sequence.Stream
	d.log = r.log.With().Str("subject", msg.Subject()).Str("stream", StreamName).
		Uint64("stream_seq", d.seq).Uint64("delivery", d.n).Logger()

	var env Envelope
	if err := decodeEnvelope(msg.Data(), &env); err != nil {
		r.deadLetter(bg, d, err, dlqMalformed)
		return
	}
	d.eventType = strings.ToLower(env.EventType)
	d.log = d.log.With().Str("event_id", env.ID).Str("dedupe_key", env.DedupeKey).
		Str("event_type", env.EventType).Str("source", env.Source).Logger()

	routes := r.match(msg.Subject())
	if len(routes) == 0 {
		r.deadLetter(bg, d, ErrNoHandler, dlqNoHandler)
		return
	}
	if ctx.Err() != nil {
		r.nak(d, r.handBackDelay(), retryShutdown, errShutdown)
		return
	}

	token := newLockToken()
	claimed := time.Now() // the lock's TTL runs from about now
	cctx, cancel := context.WithTimeout(bg, r.opTimeout)
	res, ttl, err := r.dedupe.claim(cctx, env.DedupeKey, token)
	cancel()
	switch {
	case err != nil:
		r.setRedis(err)
		r.nak(d, redeliveryDelay(d.n, r.cfg, r.rand), retryRedis, err)
		return
	case res == claimDuplicate:
		r.metrics.duplicates.WithLabelValues(r.cfg.Consumer, d.eventType).Inc()
		if err := r.ack(bg, d); err != nil {
			d.log.Warn().Err(err).Msg("acknowledging a duplicate failed; it will be delivered again")
		}
		d.log.Info().Str("outcome", "duplicate").Dur("duration", time.Since(d.start)).Msg("already done")
		return
	case res == claimBusy:
		r.nak(d, min(max(ttl, 10*time.Millisecond), r.cfg.AckWait), retryLockBusy, errLockBusy)
		return
	}

	// The lock is ours until released or expired.
	hctx, cancelLock := context.WithCancelCause(bg)
	defer cancelLock(nil)
	stopKeepAlive := r.keepAlive(bg, d, env.DedupeKey, token, claimed, cancelLock)
	defer stopKeepAlive()
	unlock := func() {
		ctx, cancel := context.WithTimeout(bg, r.opTimeout)
		defer cancel()
		if _, err := r.dedupe.release(ctx, env.DedupeKey, token); err != nil {
			d.log.Debug().Err(err).Msg("releasing the lock failed; it expires by itself")
		}
	}
	if ctx.Err() != nil {
		stopKeepAlive()
		unlock()
		r.nak(d, r.handBackDelay(), retryShutdown, errShutdown)
		return
	}

	hctx, cancelTimeout := context.WithTimeout(hctx, r.cfg.HandlerTimeout)
	hctx = d.log.WithContext(hctx)
	start := time.Now()
	herr := r.runHandlers(hctx, routes, env)
	cancelTimeout()
	r.metrics.handlerTime.WithLabelValues(r.cfg.Consumer, d.eventType).Observe(time.Since(start).Seconds())

	if herr == nil {
		stopKeepAlive()
		if err := r.markDone(bg, env.DedupeKey, token, d); err != nil {
			unlock()
			r.setRedis(err)
			r.nak(d, redeliveryDelay(d.n, r.cfg, r.rand), retryRedis,
				fmt.Errorf("handlers succeeded but the done marker was not written (they run again on the redelivery): %w", err))
			return
		}
		r.metrics.processed.WithLabelValues(r.cfg.Consumer, d.eventType).Inc()
		if err := r.ack(bg, d); err != nil {
			d.log.Warn().Err(err).Msg("acknowledging failed; the redelivery will find the done marker")
		}
		d.log.Info().Str("outcome", "ack").Dur("duration", time.Since(d.start)).Msg("handled")
		return
	}

	// Count the failed attempt while the lock is still held. A permanent
	// error needs no count: it is dead-lettered whatever the count.
	var attempt uint64
	if !IsPermanent(herr) {
		cctx, cancel := context.WithTimeout(bg, r.opTimeout)
		n, err := r.dedupe.countAttempt(cctx, env.DedupeKey, d.seq)
		cancel()
		if err != nil {
			stopKeepAlive()
			unlock()
			r.setRedis(err)
			r.nak(d, redeliveryDelay(1, r.cfg, r.rand), retryRedis,
				fmt.Errorf("handlers failed (%v) and the attempt could not be counted (it runs again, uncounted): %w", herr, err))
			return
		}
		attempt = n
		d.log = d.log.With().Uint64("attempt", attempt).Logger()
	}
	act := decide(herr, attempt, r.cfg, r.rand)
	switch act.kind {
	case actionDeadLetter:
		r.deadLetter(bg, d, herr, act.cause)
		stopKeepAlive()
		unlock()
	default:
		stopKeepAlive()
		unlock()
		r.nak(d, act.delay, retryHandlerError, herr)
	}
}

// keepAlive extends the message's ack wait (InProgress) and the Redis lock
// every AckWait/3 until the returned stop is called (stop may be called
// more than once), trying again sooner after a failed extension. It
// cancels the handlers with errLockLost when the lock turns out expired or
// taken, and with errLockUnconfirmed when the last confirmation of the
// lock (its claim at claimed, then each successful extension) is older
// than lockHold: past that, the lock may expire while the handlers run and
// another worker may claim the event.
func (r *Router) keepAlive(ctx context.Context, d *delivery, dedupeKey, token string, claimed time.Time, cancel context.CancelCauseFunc) func() {
	// Timers rather than a goroutine per delivery: most handlers finish
	// long before the first extension is due, and then nothing ran.
	var mu sync.Mutex // serialises ticks and stop
	var stopped atomic.Bool
	var t, watchdog *time.Timer
	hold := r.lockHold()
	every := r.cfg.AckWait / 3
	// tick extends both and returns when to do it again.
	tick := func() time.Duration {
		if watchdog == nil {
			// Armed at the first tick, which comes before hold is over;
			// it does not take mu, so that it fires on time even while a
			// tick waits for a Redis that does not answer.
			watchdog = time.AfterFunc(time.Until(claimed.Add(hold)), func() {
				if stopped.Load() {
					return
				}
				d.log.Warn().Err(errLockUnconfirmed).Dur("unconfirmed_for", hold).Msg("lock not extended in time; cancelling the handlers")
				cancel(errLockUnconfirmed)
			})
		}
		if err := d.msg.InProgress(); err != nil {
			d.log.Warn().Err(err).Msg("extending the ack wait failed")
		}
		sent := time.Now() // the extension runs from no earlier than this
		rctx, rcancel := context.WithTimeout(ctx, r.opTimeout)
		ok, err := r.dedupe.refresh(rctx, dedupeKey, token)
		rcancel()
		switch {
		case err != nil:
			d.log.Warn().Err(err).Msg("extending the lock failed")
			return every / 4
		case !ok:
			d.log.Warn().Err(errLockLost).Msg("lock lost; cancelling the handlers")
			cancel(errLockLost)
			return every
		}
		watchdog.Reset(time.Until(sent.Add(hold)))
		return every
	}
	var run func()
	run = func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped.Load() {
			return
		}
		t.Reset(tick())
	}
	mu.Lock()
	t = time.AfterFunc(every, run)
	mu.Unlock()
	return func() {
		// Holding mu waits for a running tick; after it no tick starts.
		mu.Lock()
		stopped.Store(true)
		t.Stop()
		if watchdog != nil {
			watchdog.Stop()
		}
		mu.Unlock()
	}
}

// lockHold is how long after the last confirmation of an event's lock its
// handlers may keep running: the lock's TTL (AckWait) less a fifth, the
// share HandlerTimeout leaves by default, so that a handler has time to
// stop before the lock can expire.
func (r *Router) lockHold() time.Duration { return r.cfg.AckWait - r.cfg.AckWait/5 }

// runHandlers runs the routes in order and returns the first error.
func (r *Router) runHandlers(ctx context.Context, routes []route, env Envelope) error {
	for _, rt := range routes {
		if err := callHandler(ctx, rt, env); err != nil {
			return err
		}
	}
	return nil
}

// callHandler runs one handler and turns a panic into an error.
func callHandler(ctx context.Context, rt route, env Envelope) (err error) {
	defer func() {
		if p := recover(); p != nil {
			zerolog.Ctx(ctx).Error().Str("pattern", rt.pattern).Bytes("stack", debug.Stack()).
				Msgf("handler panicked: %v", p)
			err = fmt.Errorf("events: handler for %s panicked: %v", rt.pattern, p)
		}
	}()
	return rt.h.HandleEvent(ctx, env)
}

// markDone writes the done marker, releases the lock and forgets the
// failed attempts (one round trip), trying a few times within opTimeout.
// A lock that could not be released expires by itself.
func (r *Router) markDone(ctx context.Context, dedupeKey, token string, d *delivery) error {
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	value := time.Now().UTC().Format(time.RFC3339) + " seq=" + strconv.FormatUint(d.seq, 10)
	// Only a redelivery can have failed attempts to forget; a first
	// delivery saves the command.
	var attemptsSeq uint64
	if d.n > 1 {
		attemptsSeq = d.seq
	}
	var err error
	for attempt := range 3 {
		if attempt > 0 && !sleepCtx(ctx, time.Duration(attempt)*20*time.Millisecond) {
			break
		}
		var released bool
		released, err = r.dedupe.finish(ctx, dedupeKey, token, value, attemptsSeq)
		if err == nil {
			if !released {
				d.log.Debug().Msg("the lock was gone when released; it had expired")
			}
			return nil
		}
		if !errors.Is(err, errMarker) {
			d.log.Debug().Err(err).Msg("releasing the lock failed; it expires by itself")
			return nil
		}
	}
	return err
}

// ack acknowledges the message without waiting for the server's
// confirmation: an ack that is lost leads to a redelivery, which finds the
// done marker and is acknowledged as a duplicate, so the round trip a
// confirmed ack costs buys nothing here.
func (r *Router) ack(_ context.Context, d *delivery) error {
	return d.msg.Ack()
}

// nak hands the delivery back for a redelivery after delay (0: at once)
// and logs the outcome.
func (r *Router) nak(d *delivery, delay time.Duration, reason string, cause error) {
	r.metrics.retries.WithLabelValues(r.cfg.Consumer, d.eventType, reason).Inc()
	var err error
	if delay > 0 {
		err = d.msg.NakWithDelay(delay)
	} else {
		err = d.msg.Nak()
	}
	level := zerolog.WarnLevel
	if reason == retryLockBusy || reason == retryShutdown {
		level = zerolog.InfoLevel
	}
	ev := d.log.WithLevel(level).Str("outcome", "nak").Dur("retry_in", delay).Err(cause)
	if err != nil {
		ev = ev.AnErr("nak_error", err)
	}
	ev.Dur("duration", time.Since(d.start)).Msg("delivered again later")
}

// deadLetter publishes the delivery to WXPAY_DLQ and terminates it once
// the DLQ acknowledged; if the publish fails it hands the delivery back
// with a delay instead, so nothing is dropped.
func (r *Router) deadLetter(ctx context.Context, d *delivery, reason error, cause string) {
	m := deadLetterMsg(r.cfg.Consumer, d.msg.Subject(), d.msg.Headers(), d.msg.Data(), d.seq, d.n, reason.Error())
	pctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	err := publishDeadLetter(pctx, r.js, m, deadLetterMsgID(r.cfg.Consumer, d.msg))
	cancel()
	if err != nil {
		r.nak(d, redeliveryDelay(d.n, r.cfg, r.rand), retryDLQFailed,
			fmt.Errorf("dead-lettering (%v) failed: %w", reason, err))
		return
	}
	r.metrics.deadLetters.WithLabelValues(r.cfg.Consumer, d.eventType, cause).Inc()
	ev := d.log.Error().Str("outcome", "dlq").Err(reason)
	if err := d.msg.TermWithReason(headerValue(reason.Error())); err != nil {
		ev = ev.AnErr("term_error", err)
	}
	ev.Dur("duration", time.Since(d.start)).Msg("dead-lettered")
}

// DecodeResource decodes the event's resource (a JSON object) into a T,
// for example wxpay.Transaction or wxpay.RefundNotice. A resource that
// does not decode returns a Permanent error wrapping ErrMalformedEnvelope,
// so a handler that returns it dead-letters the event at once instead of
// retrying what cannot succeed.
func DecodeResource[T any](ev Envelope) (T, error) {
	var v T
	if len(ev.Resource) == 0 {
		return v, Permanent(fmt.Errorf("%w: event %s has no resource", ErrMalformedEnvelope, ev.DedupeKey))
	}
	if err := json.Unmarshal(ev.Resource, &v); err != nil {
		return v, Permanent(fmt.Errorf("%w: event %s: decoding the resource as %T: %v", ErrMalformedEnvelope, ev.DedupeKey, v, err))
	}
	return v, nil
}
