package events

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// testClock is a settable clock.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// newTestMonitor returns a monitor of consumers on e's streams with a
// settable clock, its registry and its log.
func newTestMonitor(t *testing.T, e *rtEnv, consumers ...string) (*RetentionMonitor, *testClock, *prometheus.Registry, *logBuffer) {
	t.Helper()
	clock := &testClock{now: time.Now()}
	reg := prometheus.NewRegistry()
	logs := &logBuffer{}
	m, err := NewRetentionMonitor(e.js, RetentionConfig{
		Consumers:  consumers,
		Logger:     zerolog.New(logs),
		Registerer: reg,
		Now:        clock.Now,
	})
	if err != nil {
		t.Fatalf("NewRetentionMonitor: %v", err)
	}
	return m, clock, reg, logs
}

// warnings returns the warning lines of logs about stream.
func warnings(t *testing.T, logs *logBuffer, stream string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range logs.lines(t) {
		if l["level"] == "warn" && l["stream"] == stream {
			out = append(out, l)
		}
	}
	return out
}

// The oldest event a consumer has not acknowledged is the first one after
// its ack floor that its filter subjects select; its age is exported and
// warned about past half of WXPAY's max age, before WXPAY removes it.
func TestRetentionOldestUnacked(t *testing.T) {
	e := newRTEnv(t)
	cons, err := e.js.CreateOrUpdateConsumer(e.ctx, StreamName, jetstream.ConsumerConfig{
		Durable:        "billing",
		AckPolicy:      jetstream.AckExplicitPolicy,
		FilterSubjects: []string{"wxpay.*.refund.>", "wxpay.*.bill.>"},
	})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(subject, id string) uint64 {
		t.Helper()
		seq := e.publishRaw(subject, []byte(`{}`), id)
		time.Sleep(2 * time.Millisecond) // distinct storage times
		return seq
	}
	publish("wxpay.1230000109.transaction.success", "t1") // not billing's
	refund := publish("wxpay.1230000109.refund.success", "r1")
	publish("wxpay.1230000109.transaction.success", "t2")
	bill := publish("wxpay.1230000109.bill.ready", "b1")
	publish("wxpay.1230000109.transaction.success", "t3")

	m, clock, reg, logs := newTestMonitor(t, e, "billing", "audit")
	gauge := func(consumer string) float64 {
		t.Helper()
		return metricValue(t, reg, "wxpay_worker_oldest_unacked_seconds", map[string]string{"consumer": consumer})
	}
	check := func() {
		t.Helper()
		if err := m.check(e.ctx); err != nil {
			t.Fatalf("check: %v", err)
		}
	}
	ack := func(wantSeq uint64) {
		t.Helper()
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for msg := range batch.Messages() {
			meta, _ := msg.Metadata()
			if meta.Sequence.Stream != wantSeq {
				t.Fatalf("fetched %d, want %d", meta.Sequence.Stream, wantSeq)
			}
			if err := msg.DoubleAck(e.ctx); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Nothing acknowledged: the refund, not the transaction before it.
	clock.set(e.storedAt(refund).Add(3 * 24 * time.Hour))
	check()
	if got, want := gauge("billing"), clock.Now().Sub(e.storedAt(refund)).Seconds(); got != want {
		t.Errorf("oldest unacked = %vs, want %vs (the refund's age)", got, want)
	}
	if got := metricValue(t, reg, "wxpay_stream_max_age_seconds", map[string]string{"stream": StreamName}); got != DefaultMaxAge.Seconds() {
		t.Errorf("max age of %s = %vs, want %vs", StreamName, got, DefaultMaxAge.Seconds())
	}
	if w := warnings(t, logs, StreamName); len(w) != 0 {
		t.Errorf("warnings at 3 of 7 days: %v, want none", w)
	}

	// The refund acknowledged: the bill, past half of the max age.
	ack(refund)
	clock.set(e.storedAt(bill).Add(4 * 24 * time.Hour))
	check()
	if got, want := gauge("billing"), clock.Now().Sub(e.storedAt(bill)).Seconds(); got != want {
		t.Errorf("oldest unacked after the ack = %vs, want %vs (the bill's age)", got, want)
	}
	w := warnings(t, logs, StreamName)
	if len(w) != 1 || w[0]["consumer"] != "billing" || w[0]["stream_seq"] != float64(bill) {
		t.Fatalf("warnings at 4 of 7 days: %v, want one about billing's event %d", w, bill)
	}
	check()
	if w := warnings(t, logs, StreamName); len(w) != 1 {
		t.Errorf("%d warnings after a second check within the hour, want 1", len(w))
	}
	clock.set(clock.Now().Add(retentionWarnEvery))
	check()
	if w := warnings(t, logs, StreamName); len(w) != 2 {
		t.Errorf("%d warnings an hour later, want 2", len(w))
	}

	// Everything acknowledged; a consumer that does not exist (yet).
	ack(bill)
	check()
	if got := gauge("billing"); got != 0 {
		t.Errorf("oldest unacked with nothing pending = %v, want 0", got)
	}
	if got := gauge("audit"); got != 0 {
		t.Errorf("oldest unacked of a missing consumer = %v, want 0", got)
	}
}

// The age of a consumer's oldest dead letter is exported and warned about
// past half of WXPAY_DLQ's max age; replaying it clears it.
func TestRetentionOldestDeadLetter(t *testing.T) {
	e := newRTEnv(t)
	seedDeadLetters(t, e, []string{"billing", "audit"}, []string{testMchA}, []string{"TRANSACTION.SUCCESS", "REFUND.SUCCESS"})
	billing, err := ListDeadLetters(e.ctx, e.js, DLQFilter{Consumer: "billing"})
	if err != nil || len(billing) != 2 {
		t.Fatalf("billing's dead letters: %v, %v", billing, err)
	}
	audit, err := ListDeadLetters(e.ctx, e.js, DLQFilter{Consumer: "audit"})
	if err != nil || len(audit) != 2 {
		t.Fatalf("audit's dead letters: %v, %v", audit, err)
	}
	m, clock, reg, logs := newTestMonitor(t, e, "billing", "audit")
	gauge := func(consumer string) float64 {
		t.Helper()
		return metricValue(t, reg, "wxpay_dlq_oldest_seconds", map[string]string{"consumer": consumer})
	}
	clock.set(billing[0].Time.Add(20 * 24 * time.Hour))
	if err := m.check(e.ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := gauge("billing"), clock.Now().Sub(billing[0].Time).Seconds(); got != want {
		t.Errorf("billing's oldest dead letter = %vs, want %vs", got, want)
	}
	if got, want := gauge("audit"), clock.Now().Sub(audit[0].Time).Seconds(); got != want {
		t.Errorf("audit's oldest dead letter = %vs, want %vs", got, want)
	}
	if got := metricValue(t, reg, "wxpay_stream_max_age_seconds", map[string]string{"stream": DLQStreamName}); got != DefaultDLQMaxAge.Seconds() {
		t.Errorf("max age of %s = %vs, want %vs", DLQStreamName, got, DefaultDLQMaxAge.Seconds())
	}
	w := warnings(t, logs, DLQStreamName)
	if len(w) != 2 || w[0]["consumer"] != "billing" || w[0]["dlq_seq"] != float64(billing[0].Seq) {
		t.Errorf("warnings at 20 of 30 days: %v, want one per consumer, billing's about dead letter %d", w, billing[0].Seq)
	}

	if n, err := ReplayDeadLetters(e.ctx, e.js, DLQFilter{Consumer: "billing"}); err != nil || n != 2 {
		t.Fatalf("ReplayDeadLetters = %d, %v; want 2, nil", n, err)
	}
	if err := m.check(e.ctx); err != nil {
		t.Fatal(err)
	}
	if got := gauge("billing"); got != 0 {
		t.Errorf("billing's oldest dead letter after the replay = %v, want 0", got)
	}
	if got := gauge("audit"); got == 0 {
		t.Error("audit's oldest dead letter after billing's replay = 0, want its age")
	}
}

// Run checks at once and returns nil when its context ends.
func TestRetentionRun(t *testing.T) {
	e := newRTEnv(t)
	seedDeadLetters(t, e, []string{"billing"}, []string{testMchA}, []string{"REFUND.SUCCESS"})
	m, _, reg, _ := newTestMonitor(t, e, "billing")
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	rtWait(t, 20*time.Second, "the first check", func() bool {
		return metricValue(t, reg, "wxpay_dlq_oldest_seconds", map[string]string{"consumer": "billing"}) > 0
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestRetentionConfigInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  RetentionConfig
		want string
	}{
		{"no consumer", RetentionConfig{}, "no consumer"},
		{"bad consumer", RetentionConfig{Consumers: []string{"a.b"}}, "a.b"},
		{"negative interval", RetentionConfig{Consumers: []string{"a"}, Interval: -time.Second}, "negative"},
	}
	for _, tt := range tests {
		_, err := NewRetentionMonitor(fakeJS{}, tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: NewRetentionMonitor error %v, want one naming %q", tt.name, err, tt.want)
		}
	}
}

// fakeJS is a JetStream context that is never called.
type fakeJS struct{ jetstream.JetStream }
