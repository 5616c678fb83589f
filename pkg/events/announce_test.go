package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
)

// announceEnv is a JetStream server with the WXPAY streams and a Publisher.
type announceEnv struct {
	t   *testing.T
	ctx context.Context
	js  jetstream.JetStream
	pub *events.Publisher
}

func newAnnounceEnv(t *testing.T) *announceEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	_, js := testenv.Connect(t, testenv.StartNATS(t).URL)
	if _, err := events.EnsureStreams(ctx, js, events.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	return &announceEnv{t: t, ctx: ctx, js: js, pub: events.NewPublisher(js, events.PublisherConfig{})}
}

// last returns the last message on subject and its envelope, which must
// pass Validate as the workers check it.
func (e *announceEnv) last(subject string) (*jetstream.RawStreamMsg, events.Envelope) {
	e.t.Helper()
	st, err := e.js.Stream(e.ctx, events.StreamName)
	if err != nil {
		e.t.Fatal(err)
	}
	msg, err := st.GetLastMsgForSubject(e.ctx, subject)
	if err != nil {
		e.t.Fatalf("no message on %s: %v", subject, err)
	}
	var env events.Envelope
	if err := json.Unmarshal(msg.Data, &env); err != nil {
		e.t.Fatal(err)
	}
	if err := env.Validate(); err != nil {
		e.t.Fatalf("the stored envelope would be dead-lettered by the workers: %v", err)
	}
	return msg, env
}

func (e *announceEnv) messages() uint64 {
	e.t.Helper()
	st, err := e.js.Stream(e.ctx, events.StreamName)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := st.Info(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Msgs
}

func TestAnnounceOrder(t *testing.T) {
	e := newAnnounceEnv(t)
	a := events.Announcement{OutTradeNo: "T1001", SubMchID: "1900000109", CreateTime: "2024-03-01T10:00:00+08:00"}
	before := time.Now()
	p, err := events.AnnounceOrder(e.ctx, e.pub, "1230000109", a)
	if err != nil {
		t.Fatal(err)
	}
	if p.Duplicate || p.Stream != events.StreamName {
		t.Fatalf("first announcement: %+v, want stored in %s", p, events.StreamName)
	}
	msg, env := e.last("wxpay.1230000109.order.created")
	const id = "biz:order:1230000109:T1001"
	if got := msg.Header.Get(jetstream.MsgIDHeader); got != "event:"+id {
		t.Errorf("Nats-Msg-Id %q, want %q", got, "event:"+id)
	}
	if env.ID != id || env.DedupeKey != "event:"+id || env.EventType != "ORDER.CREATED" || env.MchID != "1230000109" ||
		env.Source != "business" || env.CreateTime != a.CreateTime || env.V2 != nil {
		t.Errorf("envelope %+v", env)
	}
	if env.ReceivedAt.Before(before.Add(-time.Second)) || env.ReceivedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("received_at %s, want about now", env.ReceivedAt)
	}
	if want := `{"out_trade_no":"T1001","sub_mchid":"1900000109","create_time":"2024-03-01T10:00:00+08:00"}`; string(env.Resource) != want {
		t.Errorf("resource %s, want %s", env.Resource, want)
	}

	// The same order again, even with another create_time: one event, the first.
	a.CreateTime = "2024-03-01T11:00:00+08:00"
	again, err := events.AnnounceOrder(e.ctx, e.pub, "1230000109", a)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Sequence != p.Sequence || e.messages() != 1 {
		t.Fatalf("second announcement: %+v, %d messages; want a duplicate of sequence %d", again, e.messages(), p.Sequence)
	}
	if _, env := e.last("wxpay.1230000109.order.created"); env.CreateTime != "2024-03-01T10:00:00+08:00" {
		t.Fatalf("the second announcement replaced the first: create_time %s", env.CreateTime)
	}

	// Another merchant's order with the same number, and a refund with the
	// same number, are other events.
	if p, err := events.AnnounceOrder(e.ctx, e.pub, "1230000110", events.Announcement{OutTradeNo: "T1001"}); err != nil || p.Duplicate {
		t.Fatalf("another merchant's T1001: %+v %v, want stored", p, err)
	}
	if p, err := events.AnnounceRefund(e.ctx, e.pub, "1230000109", events.Announcement{OutRefundNo: "T1001"}); err != nil || p.Duplicate {
		t.Fatalf("refund T1001: %+v %v, want stored", p, err)
	}
	if n := e.messages(); n != 3 {
		t.Fatalf("%d messages, want 3", n)
	}
}

func TestAnnounceRefund(t *testing.T) {
	e := newAnnounceEnv(t)
	before := time.Now().Truncate(time.Second)
	a := events.Announcement{OutTradeNo: "T1001", OutRefundNo: "R1001@1"}
	if _, err := events.AnnounceRefund(e.ctx, e.pub, "1230000109", a); err != nil {
		t.Fatal(err)
	}
	msg, env := e.last("wxpay.1230000109.refund.created")
	const id = "biz:refund:1230000109:R1001@1"
	if msg.Header.Get(jetstream.MsgIDHeader) != "event:"+id || env.ID != id || env.DedupeKey != "event:"+id ||
		env.EventType != "REFUND.CREATED" || env.Source != events.SourceBusiness {
		t.Fatalf("envelope %+v, Nats-Msg-Id %q", env, msg.Header.Get(jetstream.MsgIDHeader))
	}
	var got events.Announcement
	if err := json.Unmarshal(env.Resource, &got); err != nil {
		t.Fatal(err)
	}
	// create_time defaults to now, in China time, in the resource and the envelope.
	created, err := time.Parse(time.RFC3339, got.CreateTime)
	if err != nil || !strings.HasSuffix(got.CreateTime, "+08:00") || created.Before(before) || created.After(time.Now()) {
		t.Fatalf("create_time %q (%v), want now in China time", got.CreateTime, err)
	}
	if got != (events.Announcement{OutTradeNo: "T1001", OutRefundNo: "R1001@1", CreateTime: got.CreateTime}) || env.CreateTime != got.CreateTime {
		t.Fatalf("resource %+v, envelope create_time %s", got, env.CreateTime)
	}
	// A refund may be announced without its order number.
	if _, err := events.AnnounceRefund(e.ctx, e.pub, "1230000109", events.Announcement{OutRefundNo: "R1002"}); err != nil {
		t.Fatalf("refund without out_trade_no: %v", err)
	}
	if again, err := events.AnnounceRefund(e.ctx, e.pub, "1230000109", events.Announcement{OutRefundNo: "R1002"}); err != nil || !again.Duplicate {
		t.Fatalf("second announcement of R1002: %+v %v, want a duplicate", again, err)
	}
}

func TestAnnounceRefusesBadInput(t *testing.T) {
	e := newAnnounceEnv(t)
	orderOf := func(mchid string, a events.Announcement) error {
		_, err := events.AnnounceOrder(e.ctx, e.pub, mchid, a)
		return err
	}
	refundOf := func(mchid string, a events.Announcement) error {
		_, err := events.AnnounceRefund(e.ctx, e.pub, mchid, a)
		return err
	}
	order := func(a events.Announcement) error { return orderOf("1230000109", a) }
	refund := func(a events.Announcement) error { return refundOf("1230000109", a) }
	for _, c := range []struct {
		name string
		err  error
		want string // in the message
	}{
		{"no mchid", orderOf("", events.Announcement{OutTradeNo: "T1"}), "merchant id"},
		{"mchid not a token", refundOf("123.456", events.Announcement{OutRefundNo: "R1"}), "merchant id"},
		{"order without out_trade_no", order(events.Announcement{}), "no out_trade_no"},
		{"order with out_refund_no", order(events.Announcement{OutTradeNo: "T1", OutRefundNo: "R1"}), "AnnounceRefund"},
		{"refund without out_refund_no", refund(events.Announcement{OutTradeNo: "T1"}), "no out_refund_no"},
		{"out_trade_no with a colon", order(events.Announcement{OutTradeNo: "T:1"}), "out_trade_no"},
		{"out_trade_no with a space", order(events.Announcement{OutTradeNo: "T 1"}), "out_trade_no"},
		{"out_trade_no too long", order(events.Announcement{OutTradeNo: strings.Repeat("1", 33)}), "longer than 32"},
		{"out_trade_no of a refund checked", refund(events.Announcement{OutTradeNo: "T@1", OutRefundNo: "R1"}), "out_trade_no"},
		{"out_refund_no with a newline", refund(events.Announcement{OutRefundNo: "R\n1"}), "out_refund_no"},
		{"out_refund_no too long", refund(events.Announcement{OutRefundNo: strings.Repeat("1", 65)}), "longer than 64"},
		{"sub_mchid not a token", order(events.Announcement{OutTradeNo: "T1", SubMchID: "19 00"}), "sub_mchid"},
		{"create_time not RFC 3339", order(events.Announcement{OutTradeNo: "T1", CreateTime: "2024-03-01 10:00:00"}), "create_time"},
	} {
		if !errors.Is(c.err, events.ErrInvalidAnnouncement) || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: got %v, want ErrInvalidAnnouncement saying %q", c.name, c.err, c.want)
		}
	}
	if _, err := events.AnnounceOrder(e.ctx, nil, "1230000109", events.Announcement{OutTradeNo: "T1"}); err == nil || !strings.Contains(err.Error(), "Publisher") {
		t.Errorf("nil Publisher: got %v", err)
	}
	if n := e.messages(); n != 0 {
		t.Fatalf("%d messages published from bad input, want none", n)
	}
	// The longest numbers WeChat allows are accepted.
	if err := refund(events.Announcement{OutTradeNo: strings.Repeat("T", 32), OutRefundNo: strings.Repeat("R", 64)}); err != nil {
		t.Fatalf("longest numbers: %v", err)
	}
}
