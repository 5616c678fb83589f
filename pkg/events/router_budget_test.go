package events

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// TestRouterBusyDeliveriesKeepBudget: deliveries that find another worker
// holding the event's lock run no handler, and must not use up the
// event's attempts: after many of them, one transient error is retried,
// not dead-lettered.
func TestRouterBusyDeliveriesKeepBudget(t *testing.T) {
	e := newRTEnv(t)
	reg := prometheus.NewRegistry()
	cfg := testRouterConfig("billing")
	cfg.MaxDeliver = 2
	cfg.Registerer = reg
	r := e.newRouter(cfg, nil)
	env := rtEnvelope(testMchA, "4200000001")
	lock := lockKey(DefaultKeyPrefix, "billing", env.DedupeKey)
	c := newCounter()
	var seq uint64
	var seqMu sync.Mutex
	r.HandleFunc("wxpay.>", func(ctx context.Context, ev Envelope) error {
		if c.begin(ev.DedupeKey) == 1 {
			c.end(ev.DedupeKey, false)
			return errors.New("downstream 503")
		}
		// The failed attempt is counted under the stored copy's key.
		seqMu.Lock()
		key := attemptsKey(DefaultKeyPrefix, "billing", ev.DedupeKey, seq)
		seqMu.Unlock()
		if v := e.rdb.Get(e.ctx, key).Val(); v != "1" {
			t.Errorf("attempt counter %s = %q on the second attempt, want \"1\"", key, v)
		}
		if ttl := e.rdb.TTL(e.ctx, key).Val(); ttl < DefaultDoneTTL-time.Minute || ttl > DefaultDoneTTL {
			t.Errorf("attempt counter TTL = %v, want about the done TTL %v", ttl, DefaultDoneTTL)
		}
		c.end(ev.DedupeKey, true)
		return nil
	})

	// Another worker holds the lock, over and over, while the event is
	// delivered again and again.
	if err := e.rdb.Set(e.ctx, lock, "other-host:1:holder", 50*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	holding := make(chan struct{})
	held := make(chan struct{})
	go func() {
		defer close(held)
		for {
			select {
			case <-holding:
				e.rdb.Del(context.Background(), lock)
				return
			case <-time.After(20 * time.Millisecond):
				e.rdb.Set(context.Background(), lock, "other-host:1:holder", 50*time.Millisecond)
			}
		}
	}()
	e.start(r)
	seqMu.Lock()
	seq = e.publish(env, "m1")
	seqMu.Unlock()
	busy := map[string]string{"consumer": "billing", "reason": retryLockBusy}
	rtWait(t, 30*time.Second, "deliveries that found the lock busy", func() bool {
		return metricValue(t, reg, "wxpay_worker_retries_total", busy) >= float64(3*cfg.MaxDeliver)
	})
	close(holding)
	<-held
	if c.totalCalls() != 0 {
		t.Fatalf("the handler ran %d times while another worker held the lock", c.totalCalls())
	}

	rtWait(t, 30*time.Second, "the event handled or dead-lettered", func() bool {
		return (c.effectsOf(env.DedupeKey) == 1 || len(e.deadLetters()) > 0) && e.settled("billing")
	})
	if got := len(e.deadLetters()); got != 0 {
		t.Errorf("got %d dead letters, want 0: deliveries that ran no handler used up the attempts", got)
	}
	if got := c.callsOf(env.DedupeKey); got != 2 {
		t.Errorf("the handler ran %d times, want 2 (one failure, one success)", got)
	}
	if n := e.rdb.Exists(e.ctx, attemptsKey(DefaultKeyPrefix, "billing", env.DedupeKey, seq)).Val(); n != 0 {
		t.Errorf("the attempt counter exists %d after the event was done, want 0", n)
	}
}

// TestRouterShutdownKeepsDeliveryBudget: a worker stopping while a pull is
// open must not hand events back into that pull (JetStream would deliver
// them again at once, over and over); after the restart, one transient
// error is retried, not dead-lettered.
func TestRouterShutdownKeepsDeliveryBudget(t *testing.T) {
	e := newRTEnv(t)
	cfg := testRouterConfig("billing")
	cfg.Concurrency = 8
	cfg.MaxDeliver = 2
	r := e.newRouter(cfg, nil)
	first := rtEnvelope(testMchA, "4200000001")
	late := rtEnvelope(testMchA, "4200000002")
	started := make(chan struct{})
	release := make(chan struct{})
	r.HandleFunc("wxpay.>", func(ctx context.Context, ev Envelope) error {
		if ev.DedupeKey != first.DedupeKey {
			t.Errorf("the stopping worker ran %s, which it fetched after it was told to stop", ev.DedupeKey)
			return nil
		}
		close(started)
		<-release
		return nil
	})
	run := e.start(r)
	e.publish(first, "1")
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("the first handler did not start")
	}
	// The other slots wait in a pull; the worker is told to stop, and an
	// event arrives in that pull.
	rtWait(t, 20*time.Second, "a pull waiting for events", func() bool { return e.consumerInfo("billing").NumWaiting > 0 })
	run.cancel()
	e.publish(late, "2")
	close(release)
	if err := run.wait(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got := e.consumerInfo("billing").Delivered.Consumer; got > 2 {
		t.Errorf("%d deliveries before the restart, want at most 2 (each event once)", got)
	}

	r2 := e.newRouter(cfg, nil)
	c := newCounter()
	r2.HandleFunc("wxpay.>", func(ctx context.Context, ev Envelope) error {
		if c.begin(ev.DedupeKey) == 1 {
			c.end(ev.DedupeKey, false)
			return errors.New("downstream 503")
		}
		c.end(ev.DedupeKey, true)
		return nil
	})
	e.start(r2)
	rtWait(t, 30*time.Second, "the late event handled or dead-lettered", func() bool {
		return (c.effectsOf(late.DedupeKey) == 1 || len(e.deadLetters()) > 0) && e.settled("billing")
	})
	if got := len(e.deadLetters()); got != 0 {
		t.Errorf("got %d dead letters, want 0: the shutdown used up the event's attempts", got)
	}
	if got := c.callsOf(first.DedupeKey); got != 0 {
		t.Errorf("the finished event ran %d times after the restart, want 0", got)
	}
}

// fakeMsg is a JetStream message that records how it was handed back.
type fakeMsg struct {
	jetstream.Msg // not implemented: the tests call none of the rest
	subject       string
	data          []byte
	meta          jetstream.MsgMetadata

	mu     sync.Mutex
	naks   int             // Nak calls
	delays []time.Duration // NakWithDelay calls
}

func (m *fakeMsg) Subject() string      { return m.subject }
func (m *fakeMsg) Data() []byte         { return m.data }
func (m *fakeMsg) Headers() nats.Header { return nats.Header{} }
func (m *fakeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	meta := m.meta
	return &meta, nil
}

func (m *fakeMsg) Nak() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.naks++
	return nil
}

func (m *fakeMsg) NakWithDelay(d time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.delays = append(m.delays, d)
	return nil
}

// TestRouterShutdownHandsBackWithDelay: what a stopping worker hands back
// waits at least as long as a pull lasts, so that JetStream does not put
// it straight back into a pull the worker opened before it stopped.
func TestRouterShutdownHandsBackWithDelay(t *testing.T) {
	t.Parallel()
	r, err := unitRouter(t, RouterConfig{Consumer: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	r.HandleFunc("wxpay.>", func(context.Context, Envelope) error {
		t.Error("a handler ran while the worker was stopping")
		return nil
	})
	data, err := json.Marshal(rtEnvelope(testMchA, "4200000001"))
	if err != nil {
		t.Fatal(err)
	}
	newMsg := func() *fakeMsg {
		return &fakeMsg{subject: "wxpay.1230000109.transaction.success", data: data,
			meta: jetstream.MsgMetadata{NumDelivered: 1, Sequence: jetstream.SequencePair{Stream: 7, Consumer: 7}}}
	}
	stopped, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name string
		give func(m *fakeMsg)
	}{
		{"fetched while stopping", func(m *fakeMsg) { r.handBack(m) }},
		{"dispatched, then stopped before the claim", func(m *fakeMsg) { r.process(stopped, m) }},
	}
	for _, tt := range tests {
		m := newMsg()
		tt.give(m)
		if m.naks != 0 || len(m.delays) != 1 || m.delays[0] < r.pollWait {
			t.Errorf("%s: %d Naks and NakWithDelay%v; want one NakWithDelay of at least %v (a pull's length)",
				tt.name, m.naks, m.delays, r.pollWait)
		}
	}
}
