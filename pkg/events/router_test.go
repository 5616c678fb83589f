package events

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
)

const testMchA, testMchB = "1230000109", "1900000001"

func TestRouterRetryThenSuccess(t *testing.T) {
	tests := []struct {
		name string
		// fail returns the error of call n (1-based), nil for success.
		fail      func(n int) error
		wantCalls int
	}{
		{"error twice, then success", func(n int) error {
			if n <= 2 {
				return errors.New("downstream 503")
			}
			return nil
		}, 3},
		{"retry after, then success", func(n int) error {
			if n == 1 {
				return RetryAfter(50*time.Millisecond, errors.New("FREQUENCY_LIMITED"))
			}
			return nil
		}, 2},
		{"handler timeout, then success", func(n int) error {
			if n == 1 {
				return context.DeadlineExceeded
			}
			return nil
		}, 2},
		{"panic, then success", func(n int) error {
			if n == 1 {
				panic("nil map")
			}
			return nil
		}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newRTEnv(t)
			reg := prometheus.NewRegistry()
			cfg := testRouterConfig("billing")
			cfg.Registerer = reg
			r := e.newRouter(cfg, nil)
			c := newCounter()
			var deliveries []string
			var mu sync.Mutex
			r.HandleFunc(Pattern(AnyMerchant, "TRANSACTION.SUCCESS"), func(ctx context.Context, ev Envelope) error {
				n := c.begin(ev.DedupeKey)
				err := tt.fail(n)
				c.end(ev.DedupeKey, err == nil)
				return err
			})
			r.HandleFunc(Pattern(testMchA, AnyEventType), func(ctx context.Context, ev Envelope) error {
				mu.Lock()
				defer mu.Unlock()
				deliveries = append(deliveries, ev.DedupeKey)
				return nil
			})
			e.start(r)
			env := rtEnvelope(testMchA, "4200000001")
			e.publish(env, "m1")

			rtWait(t, 20*time.Second, "the event settled", func() bool {
				return c.effectsOf(env.DedupeKey) == 1 && e.settled("billing")
			})
			if got := c.callsOf(env.DedupeKey); got != tt.wantCalls {
				t.Errorf("got %d calls, want %d", got, tt.wantCalls)
			}
			if got := len(e.deadLetters()); got != 0 {
				t.Errorf("got %d dead letters, want 0", got)
			}
			mu.Lock()
			if len(deliveries) != 1 {
				t.Errorf("second handler ran %d times, want 1 (it only runs after the first succeeded)", len(deliveries))
			}
			mu.Unlock()
			labels := map[string]string{"consumer": "billing", "event_type": "transaction.success"}
			if got := metricValue(t, reg, "wxpay_worker_processed_total", labels); got != 1 {
				t.Errorf("processed = %v, want 1", got)
			}
			retryLabels := map[string]string{"consumer": "billing", "reason": retryHandlerError}
			if got := metricValue(t, reg, "wxpay_worker_retries_total", retryLabels); got != float64(tt.wantCalls-1) {
				t.Errorf("retries = %v, want %d", got, tt.wantCalls-1)
			}
			if got := metricValue(t, reg, "wxpay_worker_handler_seconds", labels); got != float64(tt.wantCalls) {
				t.Errorf("handler latency samples = %v, want %d", got, tt.wantCalls)
			}
		})
	}
}

func TestRouterSeveralHandlers(t *testing.T) {
	e := newRTEnv(t)
	r := e.newRouter(testRouterConfig("billing"), nil)
	var mu sync.Mutex
	var order []string
	failed := false
	record := func(name string) { mu.Lock(); order = append(order, name); mu.Unlock() }
	r.HandleFunc("wxpay.*.transaction.success", func(ctx context.Context, ev Envelope) error {
		record("any:" + ev.MchID)
		return nil
	})
	r.HandleFunc(Pattern(testMchA, AnyEventType), func(ctx context.Context, ev Envelope) error {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, "mchA:"+ev.MchID)
		if !failed {
			failed = true
			return errors.New("first try fails")
		}
		return nil
	})
	e.start(r)
	e.publish(rtEnvelope(testMchA, "4200000001"), "a")
	rtWait(t, 20*time.Second, "the event settled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order) == 4 && e.settled("billing")
	})
	e.publish(rtEnvelope(testMchB, "4200000002"), "b")
	rtWait(t, 20*time.Second, "the second event settled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order) == 5 && e.settled("billing")
	})
	mu.Lock()
	got := fmt.Sprint(order)
	mu.Unlock()
	want := fmt.Sprint([]string{"any:" + testMchA, "mchA:" + testMchA, "any:" + testMchA, "mchA:" + testMchA, "any:" + testMchB})
	if got != want {
		t.Errorf("handler calls %s, want %s (all matching handlers in registration order, all again on a retry)", got, want)
	}
	info := e.consumerInfo("billing")
	if got, want := fmt.Sprint(info.Config.FilterSubjects), "[wxpay.*.transaction.success wxpay.1230000109.>]"; got != want {
		t.Errorf("consumer filter subjects %s, want %s", got, want)
	}
	if info.Config.MaxDeliver != -1 || info.Config.AckPolicy != jetstream.AckExplicitPolicy || info.Config.DeliverPolicy != jetstream.DeliverAllPolicy {
		t.Errorf("consumer config max deliver %d, ack %v, deliver %v; want -1, explicit, all",
			info.Config.MaxDeliver, info.Config.AckPolicy, info.Config.DeliverPolicy)
	}
}

// One pattern registered with several handlers runs them all, in the
// order given, before the handlers of later patterns; a failure of any of
// them retries the whole chain, and the event is done only when all
// succeeded.
func TestRouterHandlersOfOnePattern(t *testing.T) {
	e := newRTEnv(t)
	reg := prometheus.NewRegistry()
	cfg := testRouterConfig("billing")
	cfg.Registerer = reg
	r := e.newRouter(cfg, nil)
	var mu sync.Mutex
	var order []string
	failed := false
	step := func(name string, failOnce bool) Handler {
		return HandlerFunc(func(ctx context.Context, ev Envelope) error {
			mu.Lock()
			defer mu.Unlock()
			order = append(order, name)
			if failOnce && !failed {
				failed = true
				return errors.New("first try fails")
			}
			return nil
		})
	}
	if err := r.Register("wxpay.*.transaction.success", step("a", false), step("b", true), step("c", false)); err != nil {
		t.Fatal(err)
	}
	r.Handle(Pattern(testMchA, AnyEventType), step("d", false))
	e.start(r)
	e.publish(rtEnvelope(testMchA, "4200000001"), "a")
	rtWait(t, 20*time.Second, "the event settled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order) == 6 && e.settled("billing")
	})
	mu.Lock()
	got := fmt.Sprint(order)
	mu.Unlock()
	if want := fmt.Sprint([]string{"a", "b", "a", "b", "c", "d"}); got != want {
		t.Errorf("handler calls %s, want %s (one pattern's handlers in order, all again on a retry)", got, want)
	}
	if got := metricValue(t, reg, "wxpay_worker_processed_total", map[string]string{"consumer": "billing"}); got != 1 {
		t.Errorf("processed = %v, want 1", got)
	}
}

func TestRouterPermanentError(t *testing.T) {
	e := newRTEnv(t)
	logs := &logBuffer{}
	reg := prometheus.NewRegistry()
	cfg := testRouterConfig("billing")
	cfg.Logger = zerolog.New(logs)
	cfg.Registerer = reg
	r := e.newRouter(cfg, nil)
	c := newCounter()
	r.HandleFunc("wxpay.*.transaction.success", func(ctx context.Context, ev Envelope) error {
		c.begin(ev.DedupeKey)
		defer c.end(ev.DedupeKey, false)
		zerolog.Ctx(ctx).Info().Msg("handler says hello")
		return Permanent(fmt.Errorf("order %s unknown", ev.DedupeKey))
	})
	e.start(r)
	env := rtEnvelope(testMchA, "4200000001")
	data := []byte(`{"id":"rc-4200000001","dedupe_key":"transaction:4200000001:SUCCESS","event_type":"TRANSACTION.SUCCESS","mchid":"1230000109","source":"reconciler","create_time":"","received_at":"2024-01-02T03:04:05Z","summary":"","resource_type":"","original_type":"transaction","resource":{"transaction_id":"4200000001"}}`)
	seq := e.publishRaw(Subject(env.MchID, env.EventType), data, "m1")

	rtWait(t, 20*time.Second, "a dead letter", func() bool { return len(e.deadLetters()) == 1 && e.settled("billing") })
	time.Sleep(300 * time.Millisecond) // time for a (wrong) redelivery
	if got := c.callsOf(env.DedupeKey); got != 1 {
		t.Errorf("got %d calls, want 1 (a permanent error is not retried)", got)
	}
	s, err := e.js.Stream(e.ctx, DLQStreamName)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(e.ctx, e.deadLetters()[0].Seq)
	if err != nil {
		t.Fatal(err)
	}
	reason := "order transaction:4200000001:SUCCESS unknown"
	checks := []struct{ name, got, want string }{
		{"subject", m.Subject, "wxpaydlq.billing.1230000109.transaction.success"},
		{"body", string(m.Data), string(data)},
		{HeaderDLQReason, m.Header.Get(HeaderDLQReason), reason},
		{HeaderDLQDeliveries, m.Header.Get(HeaderDLQDeliveries), "1"},
		{HeaderDLQConsumer, m.Header.Get(HeaderDLQConsumer), "billing"},
		{HeaderDLQSubject, m.Header.Get(HeaderDLQSubject), "wxpay.1230000109.transaction.success"},
		{HeaderDLQStreamSeq, m.Header.Get(HeaderDLQStreamSeq), strconv.FormatUint(seq, 10)},
		{"Nats-Msg-Id", m.Header.Get(jetstream.MsgIDHeader), dlqMsgID("billing", seq, e.storedAt(seq))},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("dead letter %s: got %q, want %q", c.name, c.got, c.want)
		}
	}
	dl := e.deadLetters()[0]
	if dl.Reason != reason || dl.Deliveries != 1 || dl.StreamSeq != seq || dl.Envelope.DedupeKey != env.DedupeKey || dl.Time.IsZero() {
		t.Errorf("ListDeadLetters entry %+v does not match the dead letter", dl)
	}
	if got := metricValue(t, reg, "wxpay_worker_dead_letters_total", map[string]string{"consumer": "billing", "cause": dlqPermanent}); got != 1 {
		t.Errorf("dead letters metric = %v, want 1", got)
	}

	// Logs: the handler's line inherits the event's fields; one dlq line.
	var hello, outcome map[string]any
	for _, l := range logs.lines(t) {
		switch {
		case l["message"] == "handler says hello":
			hello = l
		case l["outcome"] != nil:
			if outcome != nil {
				t.Errorf("second outcome line %v after %v", l, outcome)
			}
			outcome = l
		}
	}
	want := map[string]any{
		"subject": "wxpay.1230000109.transaction.success", "consumer": "billing",
		"dedupe_key": env.DedupeKey, "delivery": float64(1), "stream_seq": float64(seq), "event_type": "TRANSACTION.SUCCESS",
	}
	for k, v := range want {
		if hello[k] != v {
			t.Errorf("handler log field %s = %v, want %v", k, hello[k], v)
		}
		if outcome[k] != v {
			t.Errorf("outcome log field %s = %v, want %v", k, outcome[k], v)
		}
	}
	if outcome["outcome"] != "dlq" || outcome["level"] != "error" || outcome["error"] != reason {
		t.Errorf("outcome line %v, want outcome dlq at level error with the reason", outcome)
	}
}

func TestRouterMaxDeliver(t *testing.T) {
	e := newRTEnv(t)
	cfg := testRouterConfig("billing")
	cfg.MaxDeliver = 3
	r := e.newRouter(cfg, nil)
	c := newCounter()
	r.HandleFunc("wxpay.*.transaction.success", func(ctx context.Context, ev Envelope) error {
		n := c.begin(ev.DedupeKey)
		c.end(ev.DedupeKey, false)
		return fmt.Errorf("attempt %d failed", n)
	})
	e.start(r)
	env := rtEnvelope(testMchA, "4200000001")
	e.publish(env, "m1")
	rtWait(t, 20*time.Second, "a dead letter", func() bool { return len(e.deadLetters()) == 1 && e.settled("billing") })
	time.Sleep(300 * time.Millisecond)
	if got := c.callsOf(env.DedupeKey); got != 3 {
		t.Errorf("got %d calls, want 3", got)
	}
	dl := e.deadLetters()[0]
	if dl.Reason != "attempt 3 failed" || dl.Deliveries != 3 || dl.Consumer != "billing" {
		t.Errorf("dead letter reason %q, deliveries %d, consumer %q; want %q, 3, billing", dl.Reason, dl.Deliveries, dl.Consumer, "attempt 3 failed")
	}
}

func TestRouterNoHandler(t *testing.T) {
	e := newRTEnv(t)
	cfg := testRouterConfig("billing")
	cfg.Subjects = []string{"wxpay.>"}
	r := e.newRouter(cfg, nil)
	c := newCounter()
	r.HandleFunc("wxpay.*.refund.success", func(ctx context.Context, ev Envelope) error {
		c.begin(ev.DedupeKey)
		c.end(ev.DedupeKey, true)
		return nil
	})
	e.start(r)
	env := rtEnvelope(testMchA, "4200000001")
	e.publish(env, "m1")
	rtWait(t, 20*time.Second, "a dead letter", func() bool { return len(e.deadLetters()) == 1 && e.settled("billing") })
	dl := e.deadLetters()[0]
	if dl.Reason != "no handler" || dl.Subject != "wxpaydlq.billing.1230000109.transaction.success" {
		t.Errorf("dead letter reason %q on %s, want \"no handler\" on wxpaydlq.billing.1230000109.transaction.success", dl.Reason, dl.Subject)
	}
	if c.totalCalls() != 0 {
		t.Errorf("got %d handler calls, want 0", c.totalCalls())
	}
}

func TestRouterMalformedEnvelope(t *testing.T) {
	tests := []struct {
		name string
		data string
	}{
		{"not JSON", `not json at all`},
		{"JSON of the wrong shape", `{"id": 42}`},
		{"no dedupe key", `{"id":"rc-1","event_type":"TRANSACTION.SUCCESS","mchid":"1230000109","source":"reconciler","resource":{}}`},
		{"resource not an object", `{"id":"rc-1","dedupe_key":"event:rc-1","event_type":"TRANSACTION.SUCCESS","mchid":"1230000109","source":"reconciler","resource":"x"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newRTEnv(t)
			r := e.newRouter(testRouterConfig("billing"), nil)
			c := newCounter()
			r.HandleFunc("wxpay.>", func(ctx context.Context, ev Envelope) error {
				c.begin(ev.DedupeKey)
				c.end(ev.DedupeKey, true)
				return nil
			})
			e.start(r)
			e.publishRaw("wxpay.1230000109.transaction.success", []byte(tt.data), "bad")
			rtWait(t, 20*time.Second, "a dead letter", func() bool { return len(e.deadLetters()) == 1 && e.settled("billing") })
			dl := e.deadLetters()[0]
			if !strings.Contains(dl.Reason, ErrMalformedEnvelope.Error()) {
				t.Errorf("reason %q, want it to say %q", dl.Reason, ErrMalformedEnvelope)
			}
			if string(dl.Data) != tt.data || dl.Subject != "wxpaydlq.billing.1230000109.transaction.success" {
				t.Errorf("dead letter %s with body %q, want the original body on wxpaydlq.billing.1230000109.transaction.success", dl.Subject, dl.Data)
			}
			if c.totalCalls() != 0 {
				t.Errorf("got %d handler calls, want 0", c.totalCalls())
			}
		})
	}
}

func TestRouterReplay(t *testing.T) {
	e := newRTEnv(t)
	var failing atomic.Bool
	failing.Store(true)
	billing := newCounter()
	audit := newCounter()
	rb := e.newRouter(testRouterConfig("billing"), nil)
	rb.HandleFunc("wxpay.*.transaction.success", func(ctx context.Context, ev Envelope) error {
		billing.begin(ev.DedupeKey)
		if failing.Load() {
			billing.end(ev.DedupeKey, false)
			return Permanent(errors.New("merchant not configured"))
		}
		billing.end(ev.DedupeKey, true)
		return nil
	})
	ra := e.newRouter(testRouterConfig("audit"), nil)
	ra.HandleFunc("wxpay.>", func(ctx context.Context, ev Envelope) error {
		audit.begin(ev.DedupeKey)
		audit.end(ev.DedupeKey, true)
		return nil
	})
	e.start(rb)
	e.start(ra)
	env := rtEnvelope(testMchA, "4200000001")
	e.publish(env, env.DedupeKey)
	rtWait(t, 20*time.Second, "a dead letter", func() bool {
		return len(e.deadLetters()) == 1 && e.settled("billing") && e.settled("audit")
	})
	if audit.effectsOf(env.DedupeKey) != 1 {
		t.Fatalf("audit effects %d, want 1", audit.effectsOf(env.DedupeKey))
	}

	failing.Store(false) // the team fixed its configuration
	n, err := ReplayDeadLetters(e.ctx, e.js, DLQFilter{Consumer: "billing"})
	if err != nil || n != 1 {
		t.Fatalf("ReplayDeadLetters = %d, %v; want 1, nil", n, err)
	}
	rtWait(t, 20*time.Second, "the replayed event handled", func() bool {
		return billing.effectsOf(env.DedupeKey) == 1 && e.settled("billing") && e.settled("audit")
	})
	if got := len(e.deadLetters()); got != 0 {
		t.Errorf("got %d dead letters after the replay, want 0", got)
	}
	// The replay reached audit too, whose done marker made it a duplicate.
	if got := audit.callsOf(env.DedupeKey); got != 1 {
		t.Errorf("audit handler ran %d times, want 1", got)
	}
	if n, err := ReplayDeadLetters(e.ctx, e.js, DLQFilter{Consumer: "billing"}); err != nil || n != 0 {
		t.Errorf("second replay = %d, %v; want 0, nil", n, err)
	}
}

func TestRouterDuplicateStorm(t *testing.T) {
	const (
		events  = 200
		copies  = 5
		workers = 3
	)
	e := newRTEnv(t)
	reg := prometheus.NewRegistry()
	storm, audit := newCounter(), newCounter()
	for range workers {
		cfg := testRouterConfig("storm")
		cfg.Concurrency = 8
		cfg.Registerer = reg
		r := e.newRouter(cfg, nil)
		r.HandleFunc("wxpay.*.transaction.success", func(ctx context.Context, ev Envelope) error {
			n := storm.begin(ev.DedupeKey)
			time.Sleep(time.Millisecond)
			// Events whose id ends in 7 fail their first run: forced
			// redeliveries (20 of them).
			if n == 1 && strings.HasSuffix(ev.ID, "7") {
				storm.end(ev.DedupeKey, false)
				return errors.New("transient")
			}
			storm.end(ev.DedupeKey, true)
			return nil
		})
		e.start(r)
	}
	cfg := testRouterConfig("audit")
	cfg.Registerer = reg
	ra := e.newRouter(cfg, nil)
	ra.HandleFunc("wxpay.>", func(ctx context.Context, ev Envelope) error {
		audit.begin(ev.DedupeKey)
		audit.end(ev.DedupeKey, true)
		return nil
	})
	e.start(ra)

	keys := make([]string, events)
	for c := range copies {
		for i := range events {
			env := rtEnvelope(testMchA, fmt.Sprintf("42000%05d", i))
			keys[i] = env.DedupeKey
			// A distinct Nats-Msg-Id per copy: JetStream stores every copy,
			// as it would a WeChat retry after the duplicate window.
			e.publish(env, fmt.Sprintf("%s#%d", env.DedupeKey, c))
		}
	}
	rtWait(t, 90*time.Second, "every copy settled", func() bool {
		return storm.distinctEffects() == events && audit.distinctEffects() == events &&
			e.settled("storm") && e.settled("audit")
	})
	for _, k := range keys {
		if got := storm.effectsOf(k); got != 1 {
			t.Errorf("storm: %s took effect %d times, want 1", k, got)
		}
		if got := audit.effectsOf(k); got != 1 {
			t.Errorf("audit: %s took effect %d times, want 1", k, got)
		}
	}
	if len(storm.overlaps) > 0 || len(audit.overlaps) > 0 {
		t.Errorf("handlers ran twice at once for %v / %v", storm.overlaps, audit.overlaps)
	}
	for _, consumer := range []string{"storm", "audit"} {
		l := map[string]string{"consumer": consumer}
		if got := metricValue(t, reg, "wxpay_worker_processed_total", l); got != events {
			t.Errorf("%s processed = %v, want %d", consumer, got, events)
		}
		if got := metricValue(t, reg, "wxpay_worker_duplicates_total", l); got != events*(copies-1) {
			t.Errorf("%s duplicates = %v, want %d", consumer, got, events*(copies-1))
		}
	}
	if got := metricValue(t, reg, "wxpay_worker_retries_total", map[string]string{"consumer": "storm", "reason": retryHandlerError}); got != 20 {
		t.Errorf("storm handler retries = %v, want 20", got)
	}
	if got := len(e.deadLetters()); got != 0 {
		t.Errorf("got %d dead letters, want 0", got)
	}
}

func TestRouterCrash(t *testing.T) {
	tests := []struct {
		name string
		// kill closes the worker's connections inside the handler, as a
		// killed process loses them; otherwise the handler cancels Run's
		// context, as SIGTERM does.
		kill bool
	}{
		{"shutdown while the handler runs", false},
		{"killed while the handler runs", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newRTEnv(t)
			cfg := testRouterConfig("billing")
			effects := newCounter()
			env := rtEnvelope(testMchA, "4200000001")

			// The first worker.
			nc1, js1 := e.connect()
			rdb1 := e.redisClient("")
			r1, err := NewRouter(js1, rdb1, cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx1, cancel1 := context.WithCancel(e.ctx)
			defer cancel1()
			r1.HandleFunc("wxpay.>", func(ctx context.Context, ev Envelope) error {
				effects.begin(ev.DedupeKey)
				if tt.kill {
					nc1.Close()
					rdb1.Close()
					effects.end(ev.DedupeKey, false)
					return errors.New("killed before the effect")
				}
				cancel1()
				select {
				case <-ctx.Done():
					t.Errorf("handler context ended on shutdown: %v", context.Cause(ctx))
				case <-time.After(300 * time.Millisecond):
				}
				effects.end(ev.DedupeKey, true)
				return nil
			})
			runErr := make(chan error, 1)
			go func() { runErr <- r1.Run(ctx1) }()
			e.publish(env, "m1")
			select {
			case err := <-runErr:
				if tt.kill && err == nil {
					t.Error("Run on a closed connection returned nil, want an error")
				}
				if !tt.kill && err != nil {
					t.Errorf("Run after shutdown = %v, want nil", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the first worker's Run did not return")
			}
			lock := lockKey(DefaultKeyPrefix, "billing", env.DedupeKey)
			if tt.kill {
				// miniredis's clock stands still; a real Redis may have
				// expired the lock already.
				if n := e.rdb.Exists(e.ctx, lock).Val(); e.redis.Mini != nil && n != 1 {
					t.Errorf("the killed worker's lock exists %d, want 1 (it could not release it)", n)
				}
				passTime(e.redis, cfg.AckWait) // its lock expires
			} else {
				if got := effects.effectsOf(env.DedupeKey); got != 1 {
					t.Fatalf("after shutdown the running handler had %d effects, want 1 (it was let finish)", got)
				}
				if !e.settled("billing") {
					t.Error("the event finished during shutdown is not acknowledged")
				}
			}

			// A restarted worker; for the shutdown case a second copy too.
			r2 := e.newRouter(cfg, nil)
			r2.HandleFunc("wxpay.>", func(ctx context.Context, ev Envelope) error {
				effects.begin(ev.DedupeKey)
				effects.end(ev.DedupeKey, true)
				return nil
			})
			e.start(r2)
			if !tt.kill {
				e.publish(env, "m2")
			}
			rtWait(t, 20*time.Second, "the event settled", func() bool {
				return effects.effectsOf(env.DedupeKey) == 1 && e.settled("billing")
			})
			time.Sleep(200 * time.Millisecond)
			if got := effects.effectsOf(env.DedupeKey); got != 1 {
				t.Errorf("got %d effects, want 1", got)
			}
			wantCalls := map[bool]int{false: 1, true: 2}[tt.kill]
			if got := effects.callsOf(env.DedupeKey); got != wantCalls {
				t.Errorf("got %d handler calls, want %d", got, wantCalls)
			}
			if len(effects.overlaps) > 0 {
				t.Errorf("two runs at once for %v", effects.overlaps)
			}
		})
	}
}

func TestRouterRedisOutage(t *testing.T) {
	e := newRTEnv(t)
	proxy := testenv.NewProxy(t, e.redisAddr())
	reg := prometheus.NewRegistry()
	cfg := testRouterConfig("billing")
	cfg.AckWait = time.Second
	cfg.Registerer = reg
	r := e.newRouter(cfg, e.redisClient(proxy.Addr()))
	c := newCounter()
	var cutDuringHandler atomic.Bool
	r.HandleFunc("wxpay.>", func(ctx context.Context, ev Envelope) error {
		n := c.begin(ev.DedupeKey)
		if ev.DedupeKey == TransactionKey("4200000004") && n == 1 {
			// Redis goes away while the handler runs: done cannot be
			// written, so the event must not be acknowledged.
			proxy.Cut()
			cutDuringHandler.Store(true)
		}
		c.end(ev.DedupeKey, true)
		return nil
	})
	e.start(r)
	up := map[string]string{"consumer": "billing"}

	e.publish(rtEnvelope(testMchA, "4200000001"), "1")
	rtWait(t, 10*time.Second, "the first event", func() bool { return c.totalCalls() == 1 && e.settled("billing") })
	if got := metricValue(t, reg, "wxpay_worker_redis_up", up); got != 1 {
		t.Errorf("redis_up = %v, want 1", got)
	}

	proxy.Cut()
	rtWait(t, 10*time.Second, "Ready to report the outage", func() bool { return errors.Is(r.Ready(), ErrRedisUnavailable) })
	if got := metricValue(t, reg, "wxpay_worker_redis_up", up); got != 0 {
		t.Errorf("redis_up during the outage = %v, want 0", got)
	}
	// The pull open when Redis went away ends; no other opens.
	rtWait(t, 10*time.Second, "no pull open", func() bool { return e.consumerInfo("billing").NumWaiting == 0 })
	before := e.consumerInfo("billing")
	floor := before.AckFloor.Stream
	s2 := e.publish(rtEnvelope(testMchA, "4200000002"), "2")
	e.publish(rtEnvelope(testMchA, "4200000003"), "3")
	time.Sleep(3 * cfg.AckWait)
	if got := c.totalCalls(); got != 1 {
		t.Errorf("got %d handler calls during the outage, want 1 (none without Redis)", got)
	}
	info := e.consumerInfo("billing")
	if info.AckFloor.Stream >= s2 || info.AckFloor.Stream != floor {
		t.Errorf("ack floor moved from %d to %d during the outage: something was acknowledged unprocessed", floor, info.AckFloor.Stream)
	}
	// Waiting in the stream, undelivered: the outage used none of their
	// deliveries.
	if info.NumPending != 2 || info.NumAckPending != 0 || info.Delivered.Consumer != before.Delivered.Consumer {
		t.Errorf("pending %d, ack pending %d, deliveries %d -> %d during the outage; want 2 events waiting undelivered",
			info.NumPending, info.NumAckPending, before.Delivered.Consumer, info.Delivered.Consumer)
	}
	if !errors.Is(r.Ready(), ErrRedisUnavailable) {
		t.Errorf("Ready during the outage = %v, want ErrRedisUnavailable", r.Ready())
	}

	proxy.Restore()
	rtWait(t, 10*time.Second, "Ready after the outage", func() bool { return r.Ready() == nil })
	rtWait(t, 20*time.Second, "the waiting events", func() bool { return c.totalCalls() == 3 && e.settled("billing") })

	// Redis fails between the handler and the done marker.
	k4 := TransactionKey("4200000004")
	e.publish(rtEnvelope(testMchA, "4200000004"), "4")
	rtWait(t, 10*time.Second, "the cut inside the handler", cutDuringHandler.Load)
	time.Sleep(3 * r.healthInterval)
	if e.settled("billing") {
		t.Error("the event whose done marker was not written was acknowledged")
	}
	// The lock could not be released either; it expires.
	passTime(e.redis, cfg.AckWait)
	proxy.Restore()
	rtWait(t, 20*time.Second, "the event handled again", func() bool { return c.callsOf(k4) == 2 && e.settled("billing") })
	if got := metricValue(t, reg, "wxpay_worker_retries_total", map[string]string{"consumer": "billing", "reason": retryRedis}); got < 1 {
		t.Errorf("redis retries = %v, want at least 1", got)
	}
	if n := e.rdb.Exists(e.ctx, doneKey(DefaultKeyPrefix, "billing", k4)).Val(); n != 1 {
		t.Errorf("done marker of %s exists %d, want 1", k4, n)
	}
}

func TestRouterConcurrencyLimit(t *testing.T) {
	const limit, events = 3, 15
	e := newRTEnv(t)
	cfg := testRouterConfig("billing")
	cfg.Concurrency = limit
	r := e.newRouter(cfg, nil)
	var active, peak atomic.Int32
	c := newCounter()
	r.HandleFunc("wxpay.>", func(ctx context.Context, ev Envelope) error {
		n := active.Add(1)
		defer active.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		c.begin(ev.DedupeKey)
		time.Sleep(60 * time.Millisecond)
		c.end(ev.DedupeKey, true)
		return nil
	})
	for i := range events {
		e.publish(rtEnvelope(testMchA, fmt.Sprintf("4200%04d", i)), strconv.Itoa(i))
	}
	e.start(r)
	rtWait(t, 30*time.Second, "every event", func() bool { return c.distinctEffects() == events && e.settled("billing") })
	if got := peak.Load(); got != limit {
		t.Errorf("peak concurrent handlers = %d, want %d", got, limit)
	}
}

func TestRouterShutdownHandsBackUnstarted(t *testing.T) {
	e := newRTEnv(t)
	cfg := testRouterConfig("billing")
	// A long ack wait, so that the bounds below are far apart from what
	// they tell apart.
	cfg.AckWait = 20 * time.Second
	cfg.Concurrency = 1
	r := e.newRouter(cfg, nil)
	started := make(chan struct{}, 10)
	c := newCounter()
	r.HandleFunc("wxpay.>", func(ctx context.Context, ev Envelope) error {
		c.begin(ev.DedupeKey)
		started <- struct{}{}
		time.Sleep(200 * time.Millisecond)
		c.end(ev.DedupeKey, true)
		return nil
	})
	run := e.start(r)
	for i := range 5 {
		e.publish(rtEnvelope(testMchA, fmt.Sprintf("4200%04d", i)), strconv.Itoa(i))
	}
	<-started
	start := time.Now()
	if err := run.stop(t); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	// The running handler takes 200ms; shutdown waits for it, not for
	// what it grants a handler at most.
	if d := time.Since(start); d > r.cfg.HandlerTimeout {
		t.Errorf("shutdown took %v, want less than the handler timeout %v", d, r.cfg.HandlerTimeout)
	}
	if err := r.Ready(); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Ready after Run returned = %v, want ErrNotRunning", err)
	}
	done := c.distinctEffects()
	if done < 1 {
		t.Fatalf("got %d events done, want the running one finished", done)
	}
	info := e.consumerInfo("billing")
	if got := int(info.NumPending) + info.NumAckPending; got != 5-done {
		t.Errorf("after shutdown %d events wait, want %d", got, 5-done)
	}
	// What was not done goes to the next worker without an ack wait to
	// sit out.
	r2 := e.newRouter(cfg, nil)
	r2.HandleFunc("wxpay.>", func(ctx context.Context, ev Envelope) error {
		c.begin(ev.DedupeKey)
		c.end(ev.DedupeKey, true)
		return nil
	})
	e.start(r2)
	rtWait(t, cfg.AckWait/2, "the rest handled by the next worker well before an ack wait passed", func() bool {
		return c.distinctEffects() == 5 && e.settled("billing")
	})
	for k, n := range c.effects {
		if n != 1 {
			t.Errorf("%s took effect %d times, want 1", k, n)
		}
	}
}

// TestRouterNATSConnectionOwnership checks that Run leaves the caller's
// connection open: the command owns and drains it.
func TestRouterNATSConnectionOwnership(t *testing.T) {
	e := newRTEnv(t)
	nc, js := e.connect()
	r, err := NewRouter(js, e.redisClient(""), testRouterConfig("billing"))
	if err != nil {
		t.Fatal(err)
	}
	r.HandleFunc("wxpay.>", func(context.Context, Envelope) error { return nil })
	run := e.start(r)
	if err := run.stop(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if nc.Status() != nats.CONNECTED {
		t.Errorf("connection status after Run = %v, want CONNECTED", nc.Status())
	}
}
