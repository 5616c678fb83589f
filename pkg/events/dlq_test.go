package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	if got, want := dlqMsgID("billing", 17), "billing:17"; got != want {
		t.Errorf("dlqMsgID = %q, want %q", got, want)
	}
	if got, want := replayMsgID(5), "replay:5"; got != want {
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
				if err := publishDeadLetter(e.ctx, e.js, dl, c, uint64(1000+n)); err != nil {
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
		{"Nats-Msg-Id", m.Header.Get(jetstream.MsgIDHeader), replayMsgID(want[0].Seq)},
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
