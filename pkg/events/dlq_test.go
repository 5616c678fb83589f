package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

func TestDLQSubjectFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		consumer, subject, want string
	}{
		{"billing", "wxpay.1230000109.transaction.success", "wxpaydlq.billing.1230000109.transaction.success"},
		{"ledger", "wxpay.1900000001.bill.mismatch", "wxpaydlq.ledger.1900000001.bill.mismatch"},
		{"audit", "wxpay.1230000109", "wxpaydlq.audit.1230000109.unknown"},
	}
	for _, tt := range tests {
		if got := dlqSubjectFor(tt.consumer, tt.subject); got != tt.want {
			t.Errorf("dlqSubjectFor(%q, %q) = %q, want %q", tt.consumer, tt.subject, got, tt.want)
		}
	}
}

func TestHeaderValue(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("错", 600) // 1800 bytes
	tests := []struct {
		name, in, want string
	}{
		{"plain", "no handler", "no handler"},
		{"new lines", "line one\r\nline two\n", "line one  line two"},
		{"invalid UTF-8", "bad \xff byte", "bad \uFFFD byte"},
		{"long", long, strings.Repeat("错", maxReasonLen/3)},
	}
	for _, tt := range tests {
		if got := headerValue(tt.in); got != tt.want {
			t.Errorf("%s: headerValue = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestDeadLetterMsg(t *testing.T) {
	t.Parallel()
	h := nats.Header{}
	h.Set(jetstream.MsgIDHeader, "transaction:42:SUCCESS")
	h.Set("Traceparent", "00-abc-def-01")
	h.Set(HeaderDLQReason, "an earlier reason")
	m := deadLetterMsg("billing", "wxpay.1230000109.transaction.success", h, []byte(`{"id":"x"}`), 17, 3, "boom\nagain")
	checks := []struct{ name, got, want string }{
		{"subject", m.Subject, "wxpaydlq.billing.1230000109.transaction.success"},
		{"body", string(m.Data), `{"id":"x"}`},
		{HeaderDLQReason, m.Header.Get(HeaderDLQReason), "boom again"},
		{HeaderDLQDeliveries, m.Header.Get(HeaderDLQDeliveries), "3"},
		{HeaderDLQConsumer, m.Header.Get(HeaderDLQConsumer), "billing"},
		{HeaderDLQSubject, m.Header.Get(HeaderDLQSubject), "wxpay.1230000109.transaction.success"},
		{HeaderDLQStreamSeq, m.Header.Get(HeaderDLQStreamSeq), "17"},
		{"application header kept", m.Header.Get("Traceparent"), "00-abc-def-01"},
		{"original Nats-Msg-Id dropped", m.Header.Get(jetstream.MsgIDHeader), ""},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
	if got := m.Header.Values(HeaderDLQReason); len(got) != 1 {
		t.Errorf("%s values: got %q, want one", HeaderDLQReason, got)
	}
	stored := time.Unix(1700000000, 123456789)
	if got, want := dlqMsgID("billing", 17, stored), "billing:17:1700000000123456789"; got != want {
		t.Errorf("dlqMsgID = %q, want %q", got, want)
	}
	if got, want := replayMsgID(DeadLetter{Seq: 5, Time: stored}), "replay:5:1700000000123456789"; got != want {
		t.Errorf("replayMsgID = %q, want %q", got, want)
	}
}

func TestDLQFilterSubject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		f       DLQFilter
		want    string
		wantErr bool
	}{
		{"all", DLQFilter{}, "wxpaydlq.*.*.>", false},
		{"consumer", DLQFilter{Consumer: "billing"}, "wxpaydlq.billing.*.>", false},
		{"merchant", DLQFilter{MchID: "1230000109"}, "wxpaydlq.*.1230000109.>", false},
		{"both and a subject", DLQFilter{Consumer: "billing", MchID: "1", Subject: "wxpay.*.refund.>"}, "wxpaydlq.billing.1.>", false},
		{"bad consumer", DLQFilter{Consumer: "a.b"}, "", true},
		{"bad merchant", DLQFilter{MchID: "*"}, "", true},
		{"bad subject", DLQFilter{Subject: "orders.>"}, "", true},
	}
	for _, tt := range tests {
		got, err := tt.f.dlqFilterSubject()
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("%s: dlqFilterSubject() = %q, %v; want %q, error %v", tt.name, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestLiteralWXPAYSubject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s    string
		want bool
	}{
		{"wxpay.1230000109.transaction.success", true},
		{"wxpay.1.bill.ready", true},
		{"wxpay.1", false},
		{"wxpay.*.transaction.success", false},
		{"wxpay.1.>", false},
		{"wxpaydlq.billing.1.transaction.success", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := literalWXPAYSubject(tt.s); got != tt.want {
			t.Errorf("literalWXPAYSubject(%q) = %v, want %v", tt.s, got, tt.want)
		}
	}
}

// seedDeadLetters stores a dead letter for every consumer × merchant ×
// event type, as routers would have.
func seedDeadLetters(t *testing.T, e *rtEnv, consumers, merchants, types []string) int {
	t.Helper()
	n := 0
	for _, c := range consumers {
		for _, m := range merchants {
			for _, typ := range types {
				n++
				env := rtEnvelope(m, fmt.Sprintf("42%04d", n))
				env.EventType = typ
				data, _ := json.Marshal(env)
				subject := Subject(m, typ)
				dl := deadLetterMsg(c, subject, nats.Header{"Traceparent": {"t" + fmt.Sprint(n)}}, data, uint64(1000+n), 3, "reason "+fmt.Sprint(n))
				if err := publishDeadLetter(e.ctx, e.js, dl, dlqMsgID(c, uint64(1000+n), time.Now())); err != nil {
					t.Fatalf("publishDeadLetter: %v", err)
				}
			}
		}
	}
	return n
}

func TestDeadLetterFilters(t *testing.T) {
	e := newRTEnv(t)
	consumers := []string{"billing", "audit"}
	merchants := []string{"1230000109", "1900000001"}
	types := []string{"TRANSACTION.SUCCESS", "REFUND.SUCCESS"}
	total := seedDeadLetters(t, e, consumers, merchants, types)

	tests := []struct {
		name   string
		filter DLQFilter
		want   int
	}{
		{"all", DLQFilter{}, total},
		{"one team", DLQFilter{Consumer: "billing"}, 4},
		{"one merchant", DLQFilter{MchID: "1900000001"}, 4},
		{"team and merchant", DLQFilter{Consumer: "audit", MchID: "1230000109"}, 2},
		{"refunds", DLQFilter{Subject: "wxpay.*.refund.>"}, 4},
		{"one team's refunds of one merchant", DLQFilter{Consumer: "billing", MchID: "1230000109", Subject: "wxpay.*.refund.success"}, 1},
		{"limit", DLQFilter{Limit: 3}, 3},
		{"limit past the matches", DLQFilter{Consumer: "billing", Limit: 10}, 4},
		{"unknown team", DLQFilter{Consumer: "nobody"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dls, err := ListDeadLetters(e.ctx, e.js, tt.filter)
			if err != nil {
				t.Fatalf("ListDeadLetters: %v", err)
			}
			if len(dls) != tt.want {
				t.Fatalf("got %d dead letters, want %d", len(dls), tt.want)
			}
			for i, dl := range dls {
				if i > 0 && dl.Seq <= dls[i-1].Seq {
					t.Errorf("dead letters not oldest first: %d after %d", dl.Seq, dls[i-1].Seq)
				}
				if tt.filter.Consumer != "" && dl.Consumer != tt.filter.Consumer {
					t.Errorf("dead letter of %q, want %q", dl.Consumer, tt.filter.Consumer)
				}
				if tt.filter.MchID != "" && dl.Envelope.MchID != tt.filter.MchID {
					t.Errorf("dead letter of merchant %q, want %q", dl.Envelope.MchID, tt.filter.MchID)
				}
				if tt.filter.Subject != "" && !matchSubject(tt.filter.Subject, dl.OriginalSubject) {
					t.Errorf("dead letter of %q, want it to match %q", dl.OriginalSubject, tt.filter.Subject)
				}
			}
		})
	}
	if _, err := ListDeadLetters(e.ctx, e.js, DLQFilter{Consumer: "bad.name"}); err == nil {
		t.Error("ListDeadLetters with an invalid consumer = nil error, want an error")
	}

	// Replay one team's refunds of one merchant: exactly that one moves.
	filter := DLQFilter{Consumer: "billing", MchID: "1230000109", Subject: "wxpay.*.refund.>"}
	want, _ := ListDeadLetters(e.ctx, e.js, filter)
	n, err := ReplayDeadLetters(e.ctx, e.js, filter)
	if err != nil || n != 1 {
		t.Fatalf("ReplayDeadLetters = %d, %v; want 1, nil", n, err)
	}
	if left := e.deadLetters(); len(left) != total-1 {
		t.Errorf("got %d dead letters left, want %d", len(left), total-1)
	}
	s, err := e.js.Stream(e.ctx, StreamName)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(e.ctx, "wxpay.1230000109.refund.success")
	if err != nil {
		t.Fatalf("replayed event not on WXPAY: %v", err)
	}
	checks := []struct{ name, got, want string }{
		{"body", string(m.Data), string(want[0].Data)},
		{"Nats-Msg-Id", m.Header.Get(jetstream.MsgIDHeader), replayMsgID(want[0])},
		{"application header", m.Header.Get("Traceparent"), want[0].Header.Get("Traceparent")},
		{"no DLQ header", m.Header.Get(HeaderDLQReason), ""},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("replayed %s: got %q, want %q", c.name, c.got, c.want)
		}
	}
	if n, err := ReplayDeadLetters(e.ctx, e.js, filter); err != nil || n != 0 {
		t.Errorf("second ReplayDeadLetters = %d, %v; want 0, nil", n, err)
	}
}

func TestReplaySkipsUnreplayable(t *testing.T) {
	e := newRTEnv(t)
	// A dead letter without its original subject (written by hand).
	m := &nats.Msg{Subject: "wxpaydlq.billing.1230000109.transaction.success", Header: nats.Header{}, Data: []byte("{}")}
	if _, err := e.js.PublishMsg(e.ctx, m); err != nil {
		t.Fatal(err)
	}
	seedDeadLetters(t, e, []string{"billing"}, []string{"1230000109"}, []string{"REFUND.SUCCESS"})
	n, err := ReplayDeadLetters(e.ctx, e.js, DLQFilter{Consumer: "billing"})
	if n != 1 {
		t.Errorf("replayed %d, want 1", n)
	}
	if err == nil || !strings.Contains(err.Error(), HeaderDLQSubject) {
		t.Errorf("got error %v, want one naming %s", err, HeaderDLQSubject)
	}
	if left := e.deadLetters(); len(left) != 1 || left[0].OriginalSubject != "" {
		t.Errorf("got dead letters %+v, want only the unreplayable one", left)
	}
	if _, err := ReplayDeadLetters(e.ctx, e.js, DLQFilter{MchID: "a b"}); err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("replay with an invalid merchant = %v, want a filter error", err)
	}
}

// storedAt returns when WXPAY stored its message seq.
func (e *rtEnv) storedAt(seq uint64) time.Time {
	e.t.Helper()
	s, err := e.js.Stream(e.ctx, StreamName)
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := s.GetMsg(e.ctx, seq)
	if err != nil {
		e.t.Fatalf("%s message %d: %v", StreamName, seq, err)
	}
	return m.Time
}

// failingRouter returns a started router of consumer billing whose
// handler fails every event permanently and counts its calls. wrap, when
// not nil, wraps the router's JetStream context.
func (e *rtEnv) failingRouter(reg prometheus.Registerer, wrap func(jetstream.JetStream) jetstream.JetStream) (*counter, *rtRun) {
	e.t.Helper()
	cfg := testRouterConfig("billing")
	if reg != nil {
		cfg.Registerer = reg
	}
	_, js := e.connect()
	if wrap != nil {
		js = wrap(js)
	}
	r, err := NewRouter(js, e.redisClient(""), cfg)
	if err != nil {
		e.t.Fatalf("NewRouter: %v", err)
	}
	r.healthInterval = 50 * time.Millisecond
	c := newCounter()
	r.HandleFunc("wxpay.>", func(ctx context.Context, ev Envelope) error {
		c.begin(ev.DedupeKey)
		c.end(ev.DedupeKey, false)
		return Permanent(fmt.Errorf("order of %s unknown", ev.DedupeKey))
	})
	return c, e.start(r)
}

// lostAckJS loses the acknowledgements of the first dead letters it
// publishes: WXPAY_DLQ stores them, the caller sees a timeout.
type lostAckJS struct {
	jetstream.JetStream
	lose atomic.Int32 // acknowledgements still to lose
}

func (j *lostAckJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := j.JetStream.PublishMsg(ctx, m, opts...)
	if err == nil && !ack.Duplicate && strings.HasPrefix(m.Subject, dlqSubjectPrefix) && j.lose.Add(-1) >= 0 {
		return nil, fmt.Errorf("acknowledgement lost: %w", context.DeadlineExceeded)
	}
	return ack, err
}

// deadLetterOf returns the dead letters of the event with dedupeKey.
func deadLettersOf(dls []DeadLetter, dedupeKey string) []DeadLetter {
	var out []DeadLetter
	for _, dl := range dls {
		if dl.Envelope.DedupeKey == dedupeKey {
			out = append(out, dl)
		}
	}
	return out
}

// recreateStream deletes stream and creates both streams again: the
// stream's sequence numbers start over at 1.
func (e *rtEnv) recreateStream(stream string) {
	e.t.Helper()
	if err := e.js.DeleteStream(e.ctx, stream); err != nil {
		e.t.Fatalf("deleting %s: %v", stream, err)
	}
	if _, err := EnsureStreams(e.ctx, e.js, StreamConfig{}); err != nil {
		e.t.Fatalf("EnsureStreams: %v", err)
	}
}

// An event is never terminated on a Duplicate answer of WXPAY_DLQ that
// stands for another message: not after WXPAY was created again (its
// sequence numbers start over), and not when a replayed event fails again
// inside the duplicate window.
func TestDeadLetterIDsSurviveStreamRecreation(t *testing.T) {
	e := newRTEnv(t)
	calls, run := e.failingRouter(nil, nil)
	a := rtEnvelope(testMchA, "4200000001")
	seqA := e.publish(a, a.DedupeKey)
	rtWait(t, 20*time.Second, "the first event dead-lettered", func() bool {
		return len(e.deadLetters()) == 1 && e.settled("billing")
	})
	run.stop(t)

	// The second event's dead letter is stored, but its acknowledgement is
	// lost: the event is delivered again and dead-lettered again, which
	// must not store a second copy.
	e.recreateStream(StreamName)
	lossy := &lostAckJS{}
	lossy.lose.Store(1)
	calls2, _ := e.failingRouter(nil, func(js jetstream.JetStream) jetstream.JetStream {
		lossy.JetStream = js
		return lossy
	})
	b := rtEnvelope(testMchB, "4200000002")
	if seqB := e.publish(b, b.DedupeKey); seqB != seqA {
		t.Fatalf("the new stream stored the second event at %d, want %d (the first event's sequence)", seqB, seqA)
	}
	rtWait(t, 20*time.Second, "the second event handled and settled", func() bool {
		return calls2.callsOf(b.DedupeKey) >= 1 && e.settled("billing")
	})
	if got := deadLettersOf(e.deadLetters(), b.DedupeKey); len(got) != 1 {
		t.Fatalf("the second event, at the first one's sequence of a new WXPAY, has %d dead letters, want 1 (0: terminated without one; 2: a lost acknowledgement stored a second copy)", len(got))
	}
	if got := calls2.callsOf(b.DedupeKey); got != 2 {
		t.Errorf("the second event ran %d times, want 2 (the lost acknowledgement hands it back once)", got)
	}

	// Replayed, failing again at once, dead-lettered again: inside the
	// duplicate window of its first dead letter.
	if n, err := ReplayDeadLetters(e.ctx, e.js, DLQFilter{MchID: testMchA}); err != nil || n != 1 {
		t.Fatalf("ReplayDeadLetters = %d, %v; want 1, nil", n, err)
	}
	rtWait(t, 20*time.Second, "the replayed event handled and settled", func() bool {
		return calls2.callsOf(a.DedupeKey) >= 1 && e.settled("billing")
	})
	if got := deadLettersOf(e.deadLetters(), a.DedupeKey); len(got) != 1 {
		t.Fatalf("the replayed event failed again and has %d dead letters, want 1", len(got))
	}
	if calls.callsOf(a.DedupeKey) != 1 {
		t.Errorf("the first router ran the first event %d times, want 1", calls.callsOf(a.DedupeKey))
	}
}

// A replay deletes a dead letter only when WXPAY stored the event, also
// when WXPAY_DLQ was created again and its sequence numbers repeat those
// of dead letters replayed before: here the same event, replayed, failed
// again and dead-lettered again, at the same sequence of a new WXPAY_DLQ.
func TestReplayIDsSurviveDLQRecreation(t *testing.T) {
	e := newRTEnv(t)
	seedDeadLetters(t, e, []string{"billing"}, []string{testMchA}, []string{"TRANSACTION.SUCCESS"})
	first := e.deadLetters()
	if n, err := ReplayDeadLetters(e.ctx, e.js, DLQFilter{}); err != nil || n != 1 {
		t.Fatalf("first ReplayDeadLetters = %d, %v; want 1, nil", n, err)
	}
	s, err := e.js.Stream(e.ctx, StreamName)
	if err != nil {
		t.Fatal(err)
	}
	replayed, err := s.GetLastMsgForSubject(e.ctx, first[0].OriginalSubject)
	if err != nil {
		t.Fatalf("first replay not on WXPAY: %v", err)
	}

	e.recreateStream(DLQStreamName)
	seedDeadLetters(t, e, []string{"billing"}, []string{testMchA}, []string{"TRANSACTION.SUCCESS"})
	again := e.deadLetters()
	if len(again) != 1 || again[0].Seq != first[0].Seq || string(again[0].Data) != string(first[0].Data) {
		t.Fatalf("dead letters after the re-creation: %+v, want the same event at sequence %d", again, first[0].Seq)
	}
	if n, err := ReplayDeadLetters(e.ctx, e.js, DLQFilter{}); err != nil || n != 1 {
		t.Fatalf("second ReplayDeadLetters = %d, %v; want 1, nil", n, err)
	}
	if got := len(e.deadLetters()); got != 0 {
		t.Errorf("%d dead letters left, want 0", got)
	}
	m, err := s.GetLastMsgForSubject(e.ctx, again[0].OriginalSubject)
	if err != nil {
		t.Fatal(err)
	}
	if m.Sequence == replayed.Sequence || string(m.Data) != string(again[0].Data) {
		t.Fatalf("the second dead letter was deleted, but the last event on %s is still the first replay (sequence %d)", again[0].OriginalSubject, m.Sequence)
	}
}

// A Duplicate answer counts as stored only when the message stored under
// the id is the same one: a retried publish stores no second copy, while
// an id that names another message, or a dead letter deleted since (the
// event was replayed and is dead-lettered again), stores the message anew.
func TestDeadLetterDuplicateAnswers(t *testing.T) {
	e := newRTEnv(t)
	env := rtEnvelope(testMchA, "4200000001")
	data, _ := json.Marshal(env)
	subject := Subject(env.MchID, env.EventType)
	id := dlqMsgID("billing", 7, time.Now())
	publish := func(reason string) {
		t.Helper()
		m := deadLetterMsg("billing", subject, nil, data, 7, 3, reason)
		if err := publishDeadLetter(e.ctx, e.js, m, id); err != nil {
			t.Fatalf("publishDeadLetter: %v", err)
		}
	}

	// A retry after a lost acknowledgement: one copy.
	publish("first try")
	publish("second try")
	if got := e.deadLetters(); len(got) != 1 {
		t.Fatalf("a repeated publish of one dead letter stored %d, want 1", len(got))
	}
	// The dead letter is replayed (deleted) and the event dead-lettered
	// again under the same id: stored again.
	if n, err := ReplayDeadLetters(e.ctx, e.js, DLQFilter{}); err != nil || n != 1 {
		t.Fatalf("ReplayDeadLetters = %d, %v; want 1, nil", n, err)
	}
	publish("failed again")
	if got := e.deadLetters(); len(got) != 1 || got[0].Reason != "failed again" {
		t.Fatalf("dead letters %+v, want the one that failed again", got)
	}

	// Another message holds the id: the dead letter is stored anyway.
	other := rtEnvelope(testMchA, "4200000002")
	otherData, _ := json.Marshal(other)
	otherID := dlqMsgID("billing", 8, time.Now())
	if err := publishDeadLetter(e.ctx, e.js, deadLetterMsg("billing", subject, nil, otherData, 8, 1, "other"), otherID); err != nil {
		t.Fatal(err)
	}
	if err := publishDeadLetter(e.ctx, e.js, deadLetterMsg("billing", subject, nil, data, 8, 1, "mine"), otherID); err != nil {
		t.Fatalf("publishDeadLetter under an id another dead letter holds: %v", err)
	}
	var mine []DeadLetter
	for _, dl := range e.deadLetters() {
		if dl.Reason == "mine" {
			mine = append(mine, dl)
		}
	}
	if len(mine) != 1 || string(mine[0].Data) != string(data) {
		t.Fatalf("dead letters stored under an id another one holds: %+v, want one", mine)
	}

	// The replay's id names another event on WXPAY: replayed anyway.
	e.recreateStream(DLQStreamName)
	publish("to replay")
	dl := e.deadLetters()[0]
	squatter := rtEnvelope(testMchA, "4200000003")
	e.publishRaw(subject, mustJSON(t, squatter), replayMsgID(dl))
	if n, err := ReplayDeadLetters(e.ctx, e.js, DLQFilter{}); err != nil || n != 1 {
		t.Fatalf("ReplayDeadLetters = %d, %v; want 1, nil", n, err)
	}
	s, err := e.js.Stream(e.ctx, StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := s.GetLastMsgForSubject(e.ctx, subject); err != nil || string(m.Data) != string(data) {
		t.Fatalf("last event on %s after the replay: %v; want the replayed one", subject, err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A failed dead-letter publish hands the event back: it is delivered
// again and dead-lettered once WXPAY_DLQ takes it, never terminated
// without its dead letter.
func TestDeadLetterFailureNaks(t *testing.T) {
	e := newRTEnv(t)
	if err := e.js.DeleteStream(e.ctx, DLQStreamName); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	calls, _ := e.failingRouter(reg, nil)
	env := rtEnvelope(testMchA, "4200000001")
	e.publish(env, env.DedupeKey)
	rtWait(t, 30*time.Second, "three deliveries, or the event settled", func() bool {
		return calls.callsOf(env.DedupeKey) >= 3 || e.settled("billing")
	})
	if calls.callsOf(env.DedupeKey) < 3 {
		t.Fatalf("the event settled after %d deliveries although WXPAY_DLQ is missing: terminated without a dead letter", calls.callsOf(env.DedupeKey))
	}
	if got := metricValue(t, reg, "wxpay_worker_retries_total", map[string]string{"consumer": "billing", "reason": retryDLQFailed}); got < 1 {
		t.Errorf("retries with reason %s = %v, want at least 1", retryDLQFailed, got)
	}
	if got := metricValue(t, reg, "wxpay_worker_dead_letters_total", nil); got != 0 {
		t.Errorf("dead letters counted %v while WXPAY_DLQ is missing, want 0", got)
	}

	if _, err := EnsureStreams(e.ctx, e.js, StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	rtWait(t, 30*time.Second, "the dead letter once WXPAY_DLQ is back", func() bool {
		return len(e.deadLetters()) == 1 && e.settled("billing")
	})
	if dl := e.deadLetters()[0]; dl.Envelope.DedupeKey != env.DedupeKey {
		t.Errorf("dead letter of %q, want %q", dl.Envelope.DedupeKey, env.DedupeKey)
	}
}

// A replay that WXPAY does not acknowledge keeps the dead letter.
func TestReplayKeepsDeadLetterUntilAcked(t *testing.T) {
	e := newRTEnv(t)
	seedDeadLetters(t, e, []string{"billing"}, []string{testMchA}, []string{"REFUND.SUCCESS"})
	want := e.deadLetters()[0]
	if err := e.js.DeleteStream(e.ctx, StreamName); err != nil {
		t.Fatal(err)
	}
	if n, err := ReplayDeadLetters(e.ctx, e.js, DLQFilter{}); err == nil || n != 0 {
		t.Fatalf("ReplayDeadLetters without WXPAY = %d, %v; want 0 and an error", n, err)
	}
	if got := e.deadLetters(); len(got) != 1 || got[0].Seq != want.Seq {
		t.Fatalf("dead letters after a failed replay: %+v, want the one", got)
	}
	if _, err := EnsureStreams(e.ctx, e.js, StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	if n, err := ReplayDeadLetters(e.ctx, e.js, DLQFilter{}); err != nil || n != 1 {
		t.Fatalf("ReplayDeadLetters = %d, %v; want 1, nil", n, err)
	}
	s, err := e.js.Stream(e.ctx, StreamName)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(e.ctx, want.OriginalSubject)
	if err != nil || string(m.Data) != string(want.Data) {
		t.Fatalf("event on %s after the replay: %v; want the dead letter's body", want.OriginalSubject, err)
	}
	if got := len(e.deadLetters()); got != 0 {
		t.Errorf("%d dead letters left after the replay, want 0", got)
	}
}

// failAgainJS plays a consumer that fails a replayed event again at once:
// every event published to WXPAY is dead-lettered again before the
// publish returns (at most limit times).
type failAgainJS struct {
	jetstream.JetStream
	t     *testing.T
	limit int
	n     int
}

func (j *failAgainJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := j.JetStream.PublishMsg(ctx, m, opts...)
	if err != nil || !strings.HasPrefix(m.Subject, subjectPrefix) || j.n >= j.limit {
		return ack, err
	}
	j.n++
	dl := deadLetterMsg("billing", m.Subject, m.Header, m.Data, ack.Sequence, 1, "failed again")
	if err := publishDeadLetter(ctx, j.JetStream, dl, dlqMsgID("billing", ack.Sequence, time.Now())); err != nil {
		j.t.Errorf("dead-lettering the replayed event again: %v", err)
	}
	return ack, err
}

// A replay moves the dead letters present when it started, not those its
// own republishing causes.
func TestReplayOnlyPresentDeadLetters(t *testing.T) {
	e := newRTEnv(t)
	seedDeadLetters(t, e, []string{"billing"}, []string{testMchA}, []string{"REFUND.SUCCESS"})
	js := &failAgainJS{JetStream: e.js, t: t, limit: 5}
	if n, err := ReplayDeadLetters(e.ctx, js, DLQFilter{}); err != nil || n != 1 {
		t.Fatalf("ReplayDeadLetters = %d, %v; want 1, nil (the dead letter it caused is left for the next replay)", n, err)
	}
	if got := e.deadLetters(); len(got) != 1 || got[0].Reason != "failed again" {
		t.Fatalf("dead letters after the replay: %+v, want the new one", got)
	}
}
