package events

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// rtEnv is the NATS JetStream and Redis of one router test: embedded
// (nats-server, miniredis) by default, the real services when
// WXPAY_TEST_NATS_URL / WXPAY_TEST_REDIS_URL are set.
type rtEnv struct {
	t     *testing.T
	ctx   context.Context
	nats  *testenv.NATS
	redis *testenv.Redis
	js    jetstream.JetStream // the test's own connection
	rdb   *redis.Client       // the test's own client
}

// newRTEnv starts (or cleans) the services and creates the streams. Tests
// on embedded services run in parallel; tests on real ones one at a time,
// since they share the stream names and the Redis database.
func newRTEnv(t *testing.T) *rtEnv {
	t.Helper()
	if testenv.RealNATS() || testenv.RealRedis() {
		if testenv.RealNATS() {
			lockRealNATS(t)
		}
	} else {
		t.Parallel()
	}
	e := &rtEnv{t: t, ctx: testContext(t, 2*time.Minute)}
	e.nats = testenv.StartNATS(t)
	nc, js := testenv.Connect(t, e.nats.URL, nats.Name(t.Name()))
	if err := checkServerVersion(nc.ConnectedServerVersion()); err != nil {
		t.Fatalf("the test NATS server at %s cannot run routers: %v", e.nats.URL, err)
	}
	e.js = js
	if _, err := EnsureStreams(e.ctx, js, StreamConfig{}); err != nil {
		t.Fatalf("EnsureStreams: %v", err)
	}
	e.redis = testenv.StartRedis(t)
	e.rdb = e.redisClient("")
	return e
}

// redisClient returns a new client of the test Redis, or of addr (a proxy)
// when set.
func (e *rtEnv) redisClient(addr string) *redis.Client {
	e.t.Helper()
	opt, err := redis.ParseURL(e.redis.URL)
	if err != nil {
		e.t.Fatalf("redis URL %s: %v", e.redis.URL, err)
	}
	if addr != "" {
		opt.Addr = addr
	}
	opt.MaxRetries = -1 // fail fast: the router does its own retrying
	c := redis.NewClient(opt)
	e.t.Cleanup(func() { c.Close() })
	return c
}

// redisAddr is the host:port of the test Redis.
func (e *rtEnv) redisAddr() string {
	e.t.Helper()
	opt, err := redis.ParseURL(e.redis.URL)
	if err != nil {
		e.t.Fatal(err)
	}
	return opt.Addr
}

// connect opens another NATS connection, as another worker process would.
func (e *rtEnv) connect() (*nats.Conn, jetstream.JetStream) {
	e.t.Helper()
	return testenv.Connect(e.t, e.nats.URL, nats.Name(e.t.Name()))
}

// testRouterConfig returns a config with short timings for tests.
func testRouterConfig(consumer string) RouterConfig {
	return RouterConfig{
		Consumer:   consumer,
		AckWait:    2 * time.Second,
		RetryBase:  20 * time.Millisecond,
		RetryMax:   100 * time.Millisecond,
		MaxDeliver: 5,
		Logger:     zerolog.Nop(),
	}
}

// newRouter returns a router on its own NATS connection (a worker process)
// with fast health checks; rdb nil means a new client of the test Redis.
func (e *rtEnv) newRouter(cfg RouterConfig, rdb redis.UniversalClient) *Router {
	e.t.Helper()
	_, js := e.connect()
	if rdb == nil {
		rdb = e.redisClient("")
	}
	r, err := NewRouter(js, rdb, cfg)
	if err != nil {
		e.t.Fatalf("NewRouter: %v", err)
	}
	r.healthInterval = 50 * time.Millisecond
	return r
}

// rtRun is a router running in the background.
type rtRun struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// start runs r until the test ends or stop is called, and waits until it
// is ready.
func (e *rtEnv) start(r *Router) *rtRun {
	e.t.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	run := &rtRun{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(run.done)
		run.err = r.Run(ctx)
	}()
	e.t.Cleanup(func() { run.stop(e.t) })
	rtWait(e.t, 15*time.Second, "router ready", func() bool {
		select {
		case <-run.done:
			e.t.Fatalf("Run returned early: %v", run.err)
		default:
		}
		return r.Ready() == nil
	})
	return run
}

// stop cancels the router and waits for Run to return.
func (run *rtRun) stop(t *testing.T) error {
	t.Helper()
	run.cancel()
	return run.wait(t)
}

// wait waits for Run to return.
func (run *rtRun) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-run.done:
		return run.err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s")
		return nil
	}
}

// rtWait polls cond until it holds or the timeout passes.
func rtWait(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rtEnvelope returns a valid payment envelope of merchant mchid for
// transaction id.
func rtEnvelope(mchid, id string) Envelope {
	return Envelope{
		ID:           "rc-" + id,
		DedupeKey:    TransactionKey(id),
		EventType:    wxpay.EventTransactionSuccess,
		MchID:        mchid,
		Source:       SourceReconciler,
		CreateTime:   "2024-01-02T03:04:05+08:00",
		ReceivedAt:   time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
		OriginalType: OriginalTypeTransaction,
		Resource:     json.RawMessage(fmt.Sprintf(`{"transaction_id":%q,"trade_state":"SUCCESS","mchid":%q}`, id, mchid)),
	}
}

// publish stores env on its subject with Nats-Msg-Id msgID (distinct ids
// let the test store copies of one event) and returns its sequence.
func (e *rtEnv) publish(env Envelope, msgID string) uint64 {
	e.t.Helper()
	data, err := json.Marshal(env)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.publishRaw(Subject(env.MchID, env.EventType), data, msgID)
}

// publishRaw stores data on subject.
func (e *rtEnv) publishRaw(subject string, data []byte, msgID string) uint64 {
	e.t.Helper()
	ack, err := e.js.PublishMsg(e.ctx, &nats.Msg{Subject: subject, Data: data}, jetstream.WithMsgID(msgID))
	if err != nil {
		e.t.Fatalf("publishing on %s: %v", subject, err)
	}
	if ack.Duplicate {
		e.t.Fatalf("publish %s on %s was a duplicate", msgID, subject)
	}
	return ack.Sequence
}

// consumerInfo returns the consumer's state.
func (e *rtEnv) consumerInfo(name string) *jetstream.ConsumerInfo {
	e.t.Helper()
	c, err := e.js.Consumer(e.ctx, StreamName, name)
	if err != nil {
		e.t.Fatalf("consumer %s: %v", name, err)
	}
	info, err := c.Info(e.ctx)
	if err != nil {
		e.t.Fatalf("consumer %s info: %v", name, err)
	}
	return info
}

// settled reports whether the consumer has nothing left to deliver or to
// acknowledge.
func (e *rtEnv) settled(name string) bool {
	info := e.consumerInfo(name)
	return info.NumPending == 0 && info.NumAckPending == 0
}

// deadLetters returns all of WXPAY_DLQ.
func (e *rtEnv) deadLetters() []DeadLetter {
	e.t.Helper()
	dls, err := ListDeadLetters(e.ctx, e.js, DLQFilter{})
	if err != nil {
		e.t.Fatalf("ListDeadLetters: %v", err)
	}
	return dls
}

// metricValue sums the samples of metric name whose labels include
// labels (counters, gauges, and histogram sample counts).
func metricValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// logBuffer collects JSON log lines safely from many goroutines.
type logBuffer struct{ testenv.Buffer }

// lines returns the decoded log lines.
func (b *logBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// counter counts handler calls and effects per dedupe key, and notices
// two calls for one key running at once.
type counter struct {
	mu       sync.Mutex
	calls    map[string]int
	effects  map[string]int
	running  map[string]bool
	overlaps []string
}

func newCounter() *counter {
	return &counter{calls: map[string]int{}, effects: map[string]int{}, running: map[string]bool{}}
}

// begin records a call; it returns the call's number for that key.
func (c *counter) begin(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running[key] {
		c.overlaps = append(c.overlaps, key)
	}
	c.running[key] = true
	c.calls[key]++
	return c.calls[key]
}

// end records the end of a call, and its effect when effect is set.
func (c *counter) end(key string, effect bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.running[key] = false
	if effect {
		c.effects[key]++
	}
}

func (c *counter) callsOf(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[key]
}

func (c *counter) effectsOf(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.effects[key]
}

func (c *counter) distinctEffects() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.effects)
}

func (c *counter) totalCalls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.calls {
		n += v
	}
	return n
}
