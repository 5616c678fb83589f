package reconcile_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/internal/reconcile"
	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
	"github.com/wxpay-notify/wxpay-notify/internal/tracking"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

const queryRoute = "GET /v3/pay/transactions/out-trade-no/{no}"

type env struct {
	t      *testing.T
	ctx    context.Context
	srv    *wxpaytest.Server
	m      *wxpaytest.Merchant
	client *wxpay.Client
	js     jetstream.JetStream
	rdb    *redis.Client
	store  *tracking.Store
	pub    *events.Publisher
	log    *testenv.Buffer
	// workers and progress go to the Reconciler's Config.
	workers  int
	progress reconcile.Progress
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	client, err := wxpay.NewClient(srv.ClientConfig(m))
	if err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t)
	_, js := testenv.Connect(t, n.URL)
	if _, err := events.EnsureStreams(ctx, js, events.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	opt, err := redis.ParseURL(testenv.StartRedis(t).URL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	return &env{t: t, ctx: ctx, srv: srv, m: m, client: client, js: js, rdb: rdb,
		store: tracking.NewStore(rdb, tracking.Config{}), pub: events.NewPublisher(js, events.PublisherConfig{}), log: &testenv.Buffer{}}
}

// run is one reconciler run with fast backoff.
func (e *env) run() reconcile.Summary {
	e.t.Helper()
	r := reconcile.New([]reconcile.Merchant{{MchID: e.m.MchID, Client: e.client}}, e.store, e.pub, reconcile.Config{
		Rate: 1000, BackoffBase: time.Millisecond, BackoffMax: 4 * time.Millisecond, Logger: zerolog.New(e.log),
		Workers: e.workers, Progress: e.progress,
	})
	s, err := r.Orders(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// pending adds id to the pending set of kind, created age ago.
func (e *env) pending(kind tracking.Kind, id string, age time.Duration) {
	e.t.Helper()
	if err := e.store.AddPending(e.ctx, kind, e.m.MchID, id, time.Now().Add(-age)); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) isPending(kind tracking.Kind, id string) bool {
	e.t.Helper()
	items, err := e.store.Pending(e.ctx, kind, e.m.MchID, time.Now().Add(time.Hour))
	if err != nil {
		e.t.Fatal(err)
	}
	for _, it := range items {
		if it.ID == id {
			return true
		}
	}
	return false
}

func (e *env) order(no string) wxpaytest.Order {
	e.t.Helper()
	o, err := e.srv.CreateOrder(wxpaytest.NewOrder{MchID: e.m.MchID, OutTradeNo: no, Total: 100})
	if err != nil {
		e.t.Fatal(err)
	}
	return o
}

func (e *env) paid(no string) wxpaytest.Order {
	e.t.Helper()
	e.order(no)
	o, err := e.srv.Pay(no)
	if err != nil {
		e.t.Fatal(err)
	}
	return o
}

// refund creates a PROCESSING refund of a paid order.
func (e *env) refund(no, refundNo string) *wxpay.Refund {
	e.t.Helper()
	e.paid(no)
	r, err := e.client.CreateRefund(e.ctx, &wxpay.RefundRequest{OutTradeNo: no, OutRefundNo: refundNo, Refund: 40, Total: 100})
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// event returns the last message on wxpay.<mchid>.<eventType>, or nil.
func (e *env) event(eventType string) *jetstream.RawStreamMsg {
	e.t.Helper()
	st, err := e.js.Stream(e.ctx, events.StreamName)
	if err != nil {
		e.t.Fatal(err)
	}
	msg, err := st.GetLastMsgForSubject(e.ctx, events.Subject(e.m.MchID, eventType))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return msg
}

func (e *env) messages() uint64 {
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

func envelopeOf(t *testing.T, msg *jetstream.RawStreamMsg) (events.Envelope, map[string]any) {
	t.Helper()
	var env events.Envelope
	if err := json.Unmarshal(msg.Data, &env); err != nil {
		t.Fatal(err)
	}
	var res map[string]any
	if err := json.Unmarshal(env.Resource, &res); err != nil {
		t.Fatal(err)
	}
	if env.Source != events.SourceReconciler || !strings.HasPrefix(env.ID, "rc-") {
		t.Fatalf("source %q id %q, want reconciler and rc-…", env.Source, env.ID)
	}
	if got := msg.Header.Get(jetstream.MsgIDHeader); got != env.DedupeKey {
		t.Fatalf("Nats-Msg-Id %q, dedupe_key %q", got, env.DedupeKey)
	}
	return env, res
}

func TestDroppedPaymentNotificationIsFoundAndTheLateOneIsADuplicate(t *testing.T) {
	e := newEnv(t)
	o := e.paid("T1")
	e.pending(tracking.Order, "T1", 10*time.Minute)
	s := e.run()
	if s.Published[wxpay.EventTransactionSuccess] != 1 || s.Errors != 0 || s.Queried != 1 {
		t.Fatalf("summary %s", s)
	}
	msg := e.event(wxpay.EventTransactionSuccess)
	if msg == nil {
		t.Fatal("no transaction.success event")
	}
	env, res := envelopeOf(t, msg)
	if env.DedupeKey != "transaction:"+o.TransactionID+":SUCCESS" || res["trade_state"] != "SUCCESS" ||
		res["transaction_id"] != o.TransactionID || res["out_trade_no"] != "T1" || env.EventType != wxpay.EventTransactionSuccess {
		t.Fatalf("envelope %+v resource %v", env, res)
	}
	if e.isPending(tracking.Order, "T1") {
		t.Fatal("published order still pending")
	}
	// The notification arrives late: the same dedupe key, a duplicate.
	n, err := e.srv.PaymentNotification("T1", wxpaytest.NotificationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := e.client.ParseNotification(e.ctx, n.Header, n.Body)
	if err != nil {
		t.Fatal(err)
	}
	late, err := events.FromNotification(e.m.MchID, parsed, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.pub.Publish(e.ctx, late)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Duplicate || late.DedupeKey != env.DedupeKey || e.messages() != 1 {
		t.Fatalf("late notification: duplicate %v, key %s vs %s, %d messages", p.Duplicate, late.DedupeKey, env.DedupeKey, e.messages())
	}
	// A second run has nothing to do.
	if s := e.run(); s.Queried != 0 || e.messages() != 1 {
		t.Fatalf("second run: %s", s)
	}
}

func TestExpiredUnpaidOrderIsClosedAndAnnounced(t *testing.T) {
	e := newEnv(t)
	e.order("OLD")
	e.order("YOUNG")
	e.pending(tracking.Order, "OLD", 3*time.Hour)
	e.pending(tracking.Order, "YOUNG", 10*time.Minute)
	e.pending(tracking.Order, "FRESH", time.Minute) // under stale-after: not even queried
	s := e.run()
	if s.Closed != 1 || s.StillPending != 1 || s.Queried != 2 || s.Errors != 0 || s.Published[events.EventTransactionClosed] != 1 {
		t.Fatalf("summary %s", s)
	}
	if o, _ := e.srv.Order("OLD"); o.TradeState != wxpay.TradeStateClosed {
		t.Fatalf("OLD is %s on the platform", o.TradeState)
	}
	if o, _ := e.srv.Order("YOUNG"); o.TradeState != wxpay.TradeStateNotPay {
		t.Fatalf("YOUNG is %s on the platform", o.TradeState)
	}
	env, res := envelopeOf(t, e.event(events.EventTransactionClosed))
	if env.DedupeKey != "order:"+e.m.MchID+":OLD:CLOSED" || res["trade_state"] != "CLOSED" || res["out_trade_no"] != "OLD" {
		t.Fatalf("envelope %+v resource %v", env, res)
	}
	if e.isPending(tracking.Order, "OLD") || !e.isPending(tracking.Order, "YOUNG") || !e.isPending(tracking.Order, "FRESH") {
		t.Fatal("pending set wrong")
	}
}

func TestEndedOrdersArePublished(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		no        string
		end       func(string) (wxpaytest.Order, error)
		eventType string
		state     string
	}{
		{"C1", e.srv.CloseOrder, events.EventTransactionClosed, "CLOSED"},
		{"R1", e.srv.Revoke, events.EventTransactionRevoked, "REVOKED"},
		{"P1", e.srv.FailPayment, events.EventTransactionPayError, "PAYERROR"},
	} {
		e.order(c.no)
		if _, err := c.end(c.no); err != nil {
			t.Fatal(err)
		}
		e.pending(tracking.Order, c.no, 10*time.Minute)
		s := e.run()
		if s.Published[c.eventType] != 1 || e.isPending(tracking.Order, c.no) {
			t.Fatalf("%s: summary %s", c.no, s)
		}
		env, _ := envelopeOf(t, e.event(c.eventType))
		if env.DedupeKey != events.OrderKey(e.m.MchID, c.no, c.state) {
			t.Fatalf("%s: dedupe key %s", c.no, env.DedupeKey)
		}
	}
}

func TestRefundProcessingStaysThenSuccessIsPublished(t *testing.T) {
	e := newEnv(t)
	rf := e.refund("T1", "RF1")
	e.pending(tracking.Refund, "RF1", 10*time.Minute)
	if s := e.run(); s.StillPending != 1 || s.Errors != 0 || len(s.Published) != 0 || !e.isPending(tracking.Refund, "RF1") {
		t.Fatalf("PROCESSING: summary %s", s)
	}
	if _, err := e.srv.CompleteRefund("RF1"); err != nil {
		t.Fatal(err)
	}
	s := e.run()
	if s.Published[wxpay.EventRefundSuccess] != 1 || e.isPending(tracking.Refund, "RF1") {
		t.Fatalf("SUCCESS: summary %s", s)
	}
	env, res := envelopeOf(t, e.event(wxpay.EventRefundSuccess))
	if env.DedupeKey != "refund:"+rf.RefundID+":SUCCESS" || res["refund_status"] != "SUCCESS" || res["status"] != nil ||
		res["out_refund_no"] != "RF1" || res["mchid"] != e.m.MchID || env.OriginalType != "refund" {
		t.Fatalf("envelope %+v resource %v", env, res)
	}
	if amt, _ := res["amount"].(map[string]any); amt["refund"] != float64(40) {
		t.Fatalf("amount %v", res["amount"])
	}
}

func TestRefundAbnormalIsPublished(t *testing.T) {
	e := newEnv(t)
	rf := e.refund("T1", "RF1")
	if _, err := e.srv.FailRefund("RF1"); err != nil {
		t.Fatal(err)
	}
	e.pending(tracking.Refund, "RF1", 10*time.Minute)
	if s := e.run(); s.Published[wxpay.EventRefundAbnormal] != 1 || s.Errors != 0 {
		t.Fatalf("summary %s", s)
	}
	env, res := envelopeOf(t, e.event(wxpay.EventRefundAbnormal))
	if env.DedupeKey != "refund:"+rf.RefundID+":ABNORMAL" || res["refund_status"] != "ABNORMAL" {
		t.Fatalf("envelope %+v resource %v", env, res)
	}
}

func TestOrderNotExist(t *testing.T) {
	e := newEnv(t)
	e.pending(tracking.Order, "GONE", 3*time.Hour)
	e.pending(tracking.Order, "NOTYET", 10*time.Minute)
	s := e.run()
	if s.Dropped != 1 || s.StillPending != 1 || s.Errors != 0 || e.messages() != 0 {
		t.Fatalf("summary %s", s)
	}
	if e.isPending(tracking.Order, "GONE") || !e.isPending(tracking.Order, "NOTYET") {
		t.Fatal("pending set wrong")
	}
	if !strings.Contains(e.log.String(), `"level":"warn"`) || !strings.Contains(e.log.String(), "GONE") {
		t.Fatalf("no warning for the removal:\n%s", e.log)
	}
}

func TestMaxAgeDrop(t *testing.T) {
	e := newEnv(t)
	e.refund("T1", "RF1")
	e.pending(tracking.Refund, "RF1", 200*time.Hour)
	s := e.run()
	if s.Dropped != 1 || s.Queried != 1 || s.Errors != 0 || e.messages() != 0 || e.isPending(tracking.Refund, "RF1") {
		t.Fatalf("summary %s", s)
	}
	if e.srv.Requests("GET /v3/refund/domestic/refunds/{no}") != 1 {
		t.Fatal("not queried one last time")
	}
	if !strings.Contains(e.log.String(), "max age") {
		t.Fatalf("no warning:\n%s", e.log)
	}
}

func TestRateLimitingBacksOffAndTheRunCompletes(t *testing.T) {
	e := newEnv(t)
	e.paid("T1")
	e.paid("T2")
	e.pending(tracking.Order, "T1", 10*time.Minute)
	e.pending(tracking.Order, "T2", 10*time.Minute)
	e.srv.RateLimitNext(4) // T1: four 429s, the fifth attempt answers
	s := e.run()
	if s.Published[wxpay.EventTransactionSuccess] != 2 || s.Errors != 0 {
		t.Fatalf("summary %s\n%s", s, e.log)
	}
	if got := e.srv.Requests(queryRoute); got != 6 {
		t.Fatalf("%d queries, want 6", got)
	}
	// Past the attempts: the item stays pending and the run counts an error.
	e.paid("T3")
	e.pending(tracking.Order, "T3", 10*time.Minute)
	e.srv.RateLimitNext(5)
	s = e.run()
	if s.Errors != 1 || !e.isPending(tracking.Order, "T3") || s.Published[wxpay.EventTransactionSuccess] != 0 {
		t.Fatalf("summary %s", s)
	}
	if got := e.srv.Requests(queryRoute); got != 11 {
		t.Fatalf("%d queries, want 11 (5 more)", got)
	}
}

func TestServerErrorIsRetried(t *testing.T) {
	e := newEnv(t)
	e.paid("T1")
	e.pending(tracking.Order, "T1", 10*time.Minute)
	var calls atomic.Int32
	e.srv.HandleAPI(queryRoute, func(c *wxpaytest.Call) (int, any) {
		if calls.Add(1) == 1 {
			return http.StatusInternalServerError, wxpaytest.ErrorAnswer("SYSTEM_ERROR", "系统错误")
		}
		o, _ := e.srv.Order(c.Request.PathValue("no"))
		return http.StatusOK, o.Transaction()
	})
	if s := e.run(); s.Published[wxpay.EventTransactionSuccess] != 1 || s.Errors != 0 || calls.Load() != 2 {
		t.Fatalf("summary %s, %d calls", s, calls.Load())
	}
}

func TestBadSignaturePublishesNothingAndTheRestIsDone(t *testing.T) {
	e := newEnv(t)
	e.paid("BAD")
	e.paid("GOOD")
	e.pending(tracking.Order, "BAD", 20*time.Minute) // oldest: queried first
	e.pending(tracking.Order, "GOOD", 10*time.Minute)
	e.workers = 1 // the answer's signature is switched per request, one at a time
	e.srv.HandleAPI(queryRoute, func(c *wxpaytest.Call) (int, any) {
		no := c.Request.PathValue("no")
		e.srv.SetBadAnswerSignatures(no == "BAD")
		o, _ := e.srv.Order(no)
		return http.StatusOK, o.Transaction()
	})
	s := e.run()
	if s.Errors != 1 || s.Published[wxpay.EventTransactionSuccess] != 1 || e.messages() != 1 {
		t.Fatalf("summary %s", s)
	}
	if !e.isPending(tracking.Order, "BAD") || e.isPending(tracking.Order, "GOOD") {
		t.Fatal("pending set wrong")
	}
	if !strings.Contains(e.log.String(), "rejected") {
		t.Fatalf("log does not say the answer was rejected:\n%s", e.log)
	}
}

// subMchID is the sub-merchant of the partner-mode tests.
const subMchID = "1900000109"

// newPartnerEnv is newEnv with the merchant as a service provider: its
// client is in partner mode.
func newPartnerEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	cfg := e.srv.ClientConfig(e.m)
	cfg.PartnerMode = true
	pc, err := wxpay.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.client = pc
	return e
}

// partnerPending adds id of sub to the pending set of kind, created age
// ago, as the tracker does for a partner announcement.
func (e *env) partnerPending(kind tracking.Kind, id, sub string, age time.Duration) {
	e.t.Helper()
	if err := e.store.AddPendingItem(e.ctx, kind, e.m.MchID, tracking.Item{ID: id, Created: time.Now().Add(-age), SubMchID: sub}); err != nil {
		e.t.Fatal(err)
	}
}

// partnerOrder places an unpaid order of subMchID through the service provider.
func (e *env) partnerOrder(no string) wxpaytest.Order {
	e.t.Helper()
	o, err := e.srv.CreateOrder(wxpaytest.NewOrder{MchID: e.m.MchID, SubMchID: subMchID, SubAppID: "wx8888888888888888", OutTradeNo: no, Total: 100})
	if err != nil {
		e.t.Fatal(err)
	}
	return o
}

// subMchIDs returns the sub_mchid hash beside the pending set of kind.
func (e *env) subMchIDs(kind tracking.Kind) map[string]string {
	e.t.Helper()
	return e.rdb.HGetAll(e.ctx, e.store.SubMchIDKey(kind, e.m.MchID)).Val()
}

// sameResource fails unless the published resource is, as JSON, the resource
// of WeChat's own notification n.
func sameResource(t *testing.T, published map[string]any, e *env, n *wxpaytest.Notification) {
	t.Helper()
	parsed, err := e.client.ParseNotification(e.ctx, n.Header, n.Body)
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := json.Unmarshal(parsed.Plaintext, &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(published, want) {
		t.Fatalf("published resource\n%v\nis not the notification's\n%v", published, want)
	}
}

func TestPartnerPaymentIsFoundWithItsSubMchID(t *testing.T) {
	e := newPartnerEnv(t)
	e.partnerOrder("P1")
	o, err := e.srv.Pay("P1")
	if err != nil {
		t.Fatal(err)
	}
	e.partnerPending(tracking.Order, "P1", subMchID, 10*time.Minute)
	s := e.run()
	if s.Published[wxpay.EventTransactionSuccess] != 1 || s.Errors != 0 || s.Queried != 1 || s.Skipped != 0 {
		t.Fatalf("summary %s\n%s", s, e.log)
	}
	// On the service provider's subject, with its mchid, as the ingress
	// publishes a partner notification.
	env, res := envelopeOf(t, e.event(wxpay.EventTransactionSuccess))
	if env.MchID != e.m.MchID || env.DedupeKey != events.TransactionKey(o.TransactionID) {
		t.Fatalf("envelope %+v", env)
	}
	// The resource is the partner notification's, sub-merchant included.
	if res["sp_mchid"] != e.m.MchID || res["sub_mchid"] != subMchID || res["sub_appid"] != "wx8888888888888888" ||
		res["mchid"] != nil || res["appid"] != nil || res["trade_state"] != "SUCCESS" {
		t.Fatalf("resource %v", res)
	}
	n, err := e.srv.PaymentNotification("P1", wxpaytest.NotificationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sameResource(t, res, e, n)
	if e.isPending(tracking.Order, "P1") || len(e.subMchIDs(tracking.Order)) != 0 {
		t.Fatalf("published order still pending, or its sub_mchid left behind: %v", e.subMchIDs(tracking.Order))
	}
}

func TestPartnerExpiredUnpaidOrderIsClosed(t *testing.T) {
	e := newPartnerEnv(t)
	e.partnerOrder("OLD")
	e.partnerOrder("YOUNG")
	e.partnerPending(tracking.Order, "OLD", subMchID, 3*time.Hour)
	e.partnerPending(tracking.Order, "YOUNG", subMchID, 10*time.Minute)
	s := e.run()
	if s.Closed != 1 || s.StillPending != 1 || s.Errors != 0 || s.Published[events.EventTransactionClosed] != 1 {
		t.Fatalf("summary %s\n%s", s, e.log)
	}
	if o, _ := e.srv.Order("OLD"); o.TradeState != wxpay.TradeStateClosed {
		t.Fatalf("OLD is %s on the platform", o.TradeState)
	}
	env, res := envelopeOf(t, e.event(events.EventTransactionClosed))
	if env.MchID != e.m.MchID || env.DedupeKey != events.OrderKey(e.m.MchID, "OLD", "CLOSED") ||
		res["trade_state"] != "CLOSED" || res["sp_mchid"] != e.m.MchID || res["sub_mchid"] != subMchID || res["mchid"] != nil {
		t.Fatalf("envelope %+v resource %v", env, res)
	}
	if e.isPending(tracking.Order, "OLD") || !e.isPending(tracking.Order, "YOUNG") {
		t.Fatal("pending set wrong")
	}
	if got := e.subMchIDs(tracking.Order); !reflect.DeepEqual(got, map[string]string{"YOUNG": subMchID}) {
		t.Fatalf("sub_mchids %v, want YOUNG's only", got)
	}
}

func TestPartnerRefundProcessingStaysThenSuccessIsPublished(t *testing.T) {
	e := newPartnerEnv(t)
	e.partnerOrder("P1")
	if _, err := e.srv.Pay("P1"); err != nil {
		t.Fatal(err)
	}
	rf, err := e.client.CreateRefund(e.ctx, &wxpay.RefundRequest{SubMchID: subMchID, OutTradeNo: "P1", OutRefundNo: "PR1", Refund: 40, Total: 100})
	if err != nil {
		t.Fatal(err)
	}
	e.partnerPending(tracking.Refund, "PR1", subMchID, 10*time.Minute)
	if s := e.run(); s.StillPending != 1 || s.Errors != 0 || len(s.Published) != 0 || !e.isPending(tracking.Refund, "PR1") {
		t.Fatalf("PROCESSING: summary %s\n%s", s, e.log)
	}
	if _, err := e.srv.CompleteRefund("PR1"); err != nil {
		t.Fatal(err)
	}
	s := e.run()
	if s.Published[wxpay.EventRefundSuccess] != 1 || s.Errors != 0 || e.isPending(tracking.Refund, "PR1") || len(e.subMchIDs(tracking.Refund)) != 0 {
		t.Fatalf("SUCCESS: summary %s\n%s", s, e.log)
	}
	env, res := envelopeOf(t, e.event(wxpay.EventRefundSuccess))
	if env.MchID != e.m.MchID || env.DedupeKey != events.RefundKey(rf.RefundID, "SUCCESS") ||
		res["sp_mchid"] != e.m.MchID || res["sub_mchid"] != subMchID || res["mchid"] != nil || res["refund_status"] != "SUCCESS" {
		t.Fatalf("envelope %+v resource %v", env, res)
	}
	n, err := e.srv.RefundNotification("PR1", wxpaytest.NotificationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sameResource(t, res, e, n)
}

func TestPartnerItemWithoutSubMchIDIsSkipped(t *testing.T) {
	e := newPartnerEnv(t)
	e.partnerOrder("P1")
	if _, err := e.srv.Pay("P1"); err != nil {
		t.Fatal(err)
	}
	e.partnerPending(tracking.Order, "P1", subMchID, 10*time.Minute)
	e.pending(tracking.Order, "T1", 10*time.Minute) // announced without its sub_mchid
	s := e.run()
	if s.Skipped != 1 || s.Queried != 1 || s.Errors != 0 || s.Published[wxpay.EventTransactionSuccess] != 1 || !e.isPending(tracking.Order, "T1") {
		t.Fatalf("summary %s\n%s", s, e.log)
	}
	if got := e.srv.Requests("GET /v3/pay/partner/transactions/out-trade-no/{no}"); got != 1 {
		t.Fatalf("%d partner queries, want 1 (P1 only)", got)
	}
	if l := e.log.String(); !strings.Contains(l, `"level":"warn"`) || !strings.Contains(l, "sub_mchid") || !strings.Contains(l, `"T1"`) {
		t.Fatalf("no warning naming T1 and the missing sub_mchid:\n%s", l)
	}
}

func TestDirectItemWithSubMchIDIsSkipped(t *testing.T) {
	e := newEnv(t)
	e.paid("T1")
	e.partnerPending(tracking.Order, "P1", subMchID, 10*time.Minute)
	e.pending(tracking.Order, "T1", 10*time.Minute)
	s := e.run()
	if s.Skipped != 1 || s.Queried != 1 || s.Errors != 0 || s.Published[wxpay.EventTransactionSuccess] != 1 || !e.isPending(tracking.Order, "P1") {
		t.Fatalf("summary %s\n%s", s, e.log)
	}
	if l := e.log.String(); !strings.Contains(l, "WXPAY_PARTNER_MODE") || !strings.Contains(l, `"P1"`) {
		t.Fatalf("no warning naming P1 and the partner mode setting:\n%s", l)
	}
}

func TestTwoConcurrentRuns(t *testing.T) {
	e := newEnv(t)
	key := reconcile.LockKey(events.DefaultKeyPrefix)
	inside, leave := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- reconcile.WithLock(e.ctx, e.rdb, key, time.Minute, func(context.Context) error {
			close(inside)
			<-leave
			return nil
		})
	}()
	<-inside
	ran := false
	err := reconcile.WithLock(e.ctx, e.rdb, key, time.Minute, func(context.Context) error { ran = true; return nil })
	if !errors.Is(err, reconcile.ErrLocked) || ran {
		t.Fatalf("second run: %v, ran %v", err, ran)
	}
	close(leave)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if n, _ := e.rdb.Exists(e.ctx, key).Result(); n != 0 {
		t.Fatal("lock not released")
	}
	// Released on an error path too, and a later run works.
	boom := errors.New("boom")
	if err := reconcile.WithLock(e.ctx, e.rdb, key, time.Minute, func(context.Context) error { return boom }); err != boom {
		t.Fatal(err)
	}
	if err := reconcile.WithLock(e.ctx, e.rdb, key, time.Minute, func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestLockIsRefreshedAndOnlyTheOwnerReleases(t *testing.T) {
	e := newEnv(t)
	key := reconcile.LockKey("t:")
	err := reconcile.WithLock(e.ctx, e.rdb, key, 300*time.Millisecond, func(ctx context.Context) error {
		time.Sleep(450 * time.Millisecond) // past the TTL: alive only if refreshed
		if n, _ := e.rdb.Exists(e.ctx, key).Result(); n != 1 {
			t.Error("lock expired while the run held it")
		}
		e.rdb.Set(e.ctx, key, "someone-else", time.Minute) // taken over
		select {
		case <-ctx.Done(): // the run is told it lost the lock
		case <-time.After(2 * time.Second):
			t.Error("run not stopped after losing the lock")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := e.rdb.Get(e.ctx, key).Result(); v != "someone-else" {
		t.Fatalf("released another owner's lock: %q", v)
	}
}

// countingProgress records what the reconciler shows.
type countingProgress struct {
	mu     sync.Mutex
	totals []int64
	added  atomic.Int64
	done   atomic.Int32
}

func (p *countingProgress) Start(label string, total int64, bytes bool) reconcile.ProgressTask {
	p.mu.Lock()
	p.totals = append(p.totals, total)
	p.mu.Unlock()
	return p
}
func (p *countingProgress) Add(n int64) { p.added.Add(n) }
func (p *countingProgress) Done()       { p.done.Add(1) }

func TestItemsAreQueriedConcurrentlyWithinTheRate(t *testing.T) {
	e := newEnv(t)
	for i := range 12 {
		no := fmt.Sprintf("T%02d", i)
		e.paid(no)
		e.pending(tracking.Order, no, 10*time.Minute)
	}
	var inFlight, most atomic.Int32
	e.srv.HandleAPI(queryRoute, func(c *wxpaytest.Call) (int, any) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(30 * time.Millisecond) // a slow answer: the others go on meanwhile
		o, _ := e.srv.Order(c.Request.PathValue("no"))
		return http.StatusOK, o.Transaction()
	})
	p := &countingProgress{}
	e.workers, e.progress = 3, p
	s := e.run()
	if s.Published[wxpay.EventTransactionSuccess] != 12 || s.Queried != 12 || s.Errors != 0 {
		t.Fatalf("summary %s\n%s", s, e.log)
	}
	if m := most.Load(); m < 2 || m > 3 {
		t.Fatalf("at most %d queries were in flight at once, want 2 or 3 (Workers 3)", m)
	}
	if len(p.totals) != 1 || p.totals[0] != 12 || p.added.Load() != 12 || p.done.Load() != 1 {
		t.Fatalf("progress: totals %v, added %d, done %d", p.totals, p.added.Load(), p.done.Load())
	}
}

// A run stopped while an item is under way lets that item finish (event
// published and entry removed, never one without the other) and starts no
// other.
func TestStopLetsTheItemUnderWayFinish(t *testing.T) {
	e := newEnv(t)
	for _, no := range []string{"T1", "T2", "T3"} {
		e.paid(no)
	}
	e.pending(tracking.Order, "T1", 30*time.Minute)
	e.pending(tracking.Order, "T2", 20*time.Minute)
	e.pending(tracking.Order, "T3", 10*time.Minute)
	ctx, stop := context.WithCancel(e.ctx)
	defer stop()
	var calls atomic.Int32
	e.srv.HandleAPI(queryRoute, func(c *wxpaytest.Call) (int, any) {
		calls.Add(1)
		stop() // SIGTERM while WeChat is answering
		o, _ := e.srv.Order(c.Request.PathValue("no"))
		return http.StatusOK, o.Transaction()
	})
	r := reconcile.New([]reconcile.Merchant{{MchID: e.m.MchID, Client: e.client}}, e.store, e.pub, reconcile.Config{
		Rate: 1000, Workers: 1, Logger: zerolog.New(e.log),
	})
	s, err := r.Orders(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Orders returned %v, want the stop", err)
	}
	if calls.Load() != 1 || s.Published[wxpay.EventTransactionSuccess] != 1 || s.Errors != 0 || e.messages() != 1 {
		t.Fatalf("%d queries, summary %s, %d messages", calls.Load(), s, e.messages())
	}
	if e.isPending(tracking.Order, "T1") || !e.isPending(tracking.Order, "T2") || !e.isPending(tracking.Order, "T3") {
		t.Fatal("want T1 published and removed, T2 and T3 pending")
	}
}
