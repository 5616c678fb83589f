package flow_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/internal/handlers"
	"github.com/wxpay-notify/wxpay-notify/internal/ingress"
	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

const mchid = "1230000109"

// The answers WeChat expects for a notification it may stop sending.
const (
	okV3 = `{"code":"SUCCESS","message":"成功"}`
	okV2 = `<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>`
)

// payment is one order of the day. The payer pays less than the total
// (a coupon) where it can tell the two amounts apart.
type payment struct {
	outTradeNo, transactionID string
	total, payerTotal         int64
	successTime               string
}

// refund is one refund of the day.
type refund struct {
	outTradeNo, transactionID, outRefundNo, refundID string
	total, refund, payerTotal, payerRefund           int64
	successTime                                      string // RFC 3339, China time
}

var (
	// T1 is paid at 00:30 China time on 1 March, still 29 February in UTC:
	// its ledger day is the China date.
	t1 = payment{"T1", "4200000001202403010000000001", 100, 90, "2024-03-01T00:30:00+08:00"}
	t2 = payment{"T2", "4200000001202403010000000002", 2999, 2999, "2024-03-01T12:00:00+08:00"}
	t3 = payment{"T3", "4200000001202403010000000003", 50000, 49000, "2024-03-01T23:59:59+08:00"}
	// T4 is announced and never paid.
	t4 = "T4"
	// R1 refunds part of T1 through API v3.
	r1 = refund{"T1", t1.transactionID, "R1", "50300000012024030200000000001", 100, 30, 90, 27, "2024-03-02T09:00:00+08:00"}
	// R2 refunds part of T2 from the merchant console: WeChat sends it as
	// v2 XML, and its v3 form too. At 07:00 China time on 3 March it is
	// still 2 March in UTC.
	r2 = refund{"T2", t2.transactionID, "R2", "50300000012024030300000000002", 2999, 999, 2999, 989, "2024-03-03T07:00:00+08:00"}
)

func TestFlow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The services: JetStream with its streams, and Redis.
	nt := testenv.StartNATS(t)
	_, admin := testenv.Connect(t, nt.URL, nats.Name("flow admin"))
	if _, err := events.EnsureStreams(ctx, admin, events.StreamConfig{}); err != nil {
		t.Fatalf("EnsureStreams: %v", err)
	}
	rs := testenv.StartRedis(t)
	opt, err := redis.ParseURL(rs.URL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })

	// The fake platform and the merchant's account on it.
	platform := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, TimeScale: 0.001})
	m := platform.AddMerchant(wxpaytest.MerchantOptions{MchID: mchid})
	client, err := wxpay.NewClient(platform.ClientConfig(m))
	if err != nil {
		t.Fatal(err)
	}

	// The ingress, on its own NATS connection, served on a loopback
	// listener as cmd/ingress serves it.
	_, ingressJS := testenv.Connect(t, nt.URL, nats.Name("flow ingress"))
	ingressMetrics := prometheus.NewRegistry()
	h, err := ingress.NewHandler([]ingress.Merchant{{MchID: mchid, Client: client, APIv2Key: m.APIv2Key}},
		events.NewPublisher(ingressJS, events.PublisherConfig{}), ingress.Config{Registerer: ingressMetrics})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveCtx, stopServing := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- ingress.NewServer(h, ingress.ServerConfig{}).Run(serveCtx, ln) }()
	t.Cleanup(func() {
		stopServing()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("ingress server: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the ingress server did not stop within 30s")
		}
	})
	notifyURL := "http://" + ln.Addr().String() + "/notify/" + mchid

	// The worker, as cmd/worker builds it with WORKER_HANDLERS=tracker,
	// and the team's business handler after it: one consumer, one pattern,
	// the handlers in order.
	b := newBusiness()
	b.failFirst["pay:"+t2.outTradeNo] = true // downstream down once: the router retries the whole chain
	chain, err := handlers.Chain([]string{"tracker"}, handlers.Deps{Redis: rdb, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	_, workerJS := testenv.Connect(t, nt.URL, nats.Name("flow worker"))
	router, err := events.NewRouter(workerJS, rdb, events.RouterConfig{
		Consumer:   "flow",
		AckWait:    2 * time.Second,
		RetryBase:  20 * time.Millisecond,
		RetryMax:   100 * time.Millisecond,
		MaxDeliver: 5,
		Logger:     zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := router.Register(events.Pattern(mchid, events.AnyEventType), append(chain, b)...); err != nil {
		t.Fatal(err)
	}
	runCtx, stopRouter := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- router.Run(runCtx) }()
	t.Cleanup(func() {
		stopRouter()
		select {
		case err := <-runDone:
			if err != nil {
				t.Errorf("router: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the router did not stop within 30s")
		}
	})
	waitFor(t, "the router to be ready", func() bool { return router.Ready() == nil })

	// 1. The business announces what to track; the tracker makes it pending.
	business := events.NewPublisher(admin, events.PublisherConfig{})
	for _, no := range []string{t1.outTradeNo, t2.outTradeNo, t3.outTradeNo, t4} {
		if _, err := events.AnnounceOrder(ctx, business, mchid, events.Announcement{OutTradeNo: no, CreateTime: "2024-03-01T00:00:00+08:00"}); err != nil {
			t.Fatalf("announcing order %s: %v", no, err)
		}
	}
	for _, r := range []refund{r1, r2} {
		a := events.Announcement{OutTradeNo: r.outTradeNo, OutRefundNo: r.outRefundNo, CreateTime: "2024-03-02T00:00:00+08:00"}
		if _, err := events.AnnounceRefund(ctx, business, mchid, a); err != nil {
			t.Fatalf("announcing refund %s: %v", r.outRefundNo, err)
		}
	}
	waitFor(t, "the announcements to be pending", func() bool {
		return rdb.ZCard(ctx, "wxpay:pending:order:"+mchid).Val() == 4 && rdb.ZCard(ctx, "wxpay:pending:refund:"+mchid).Val() == 2
	})

	// 2. WeChat delivers, every notification more than once and all at
	// once: v3 payments, a v3 refund and the v2 form of the console refund.
	type delivery struct {
		what string
		send func() (status int, body string, attempts int)
		want string
	}
	var deliveries []delivery
	v3 := func(what string, copies int, eventType string, resource any) {
		first, err := platform.NewNotification(m, eventType, resource, wxpaytest.NotificationOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range copies {
			n := first
			if i > 0 { // WeChat sends the same notification again, signed and encrypted anew
				if n, err = platform.NewNotification(m, eventType, resource, wxpaytest.NotificationOptions{ID: first.ID}); err != nil {
					t.Fatal(err)
				}
			}
			deliveries = append(deliveries, delivery{fmt.Sprintf("%s #%d", what, i+1), func() (int, string, int) {
				attempts, err := platform.Deliver(ctx, notifyURL, n)
				if err != nil {
					return 0, err.Error(), len(attempts)
				}
				a := attempts[len(attempts)-1]
				return a.StatusCode, string(a.Body), len(attempts)
			}, okV3})
		}
	}
	v3("payment T1", 3, wxpay.EventTransactionSuccess, t1.resource())
	v3("payment T2", 2, wxpay.EventTransactionSuccess, t2.resource())
	v3("payment T3", 2, wxpay.EventTransactionSuccess, t3.resource())
	v3("v3 refund R1", 2, wxpay.EventRefundSuccess, r1.resource())
	r2XML := r2.v2Notification(m.APIv2Key)
	for i := range 2 {
		deliveries = append(deliveries, delivery{fmt.Sprintf("v2 refund R2 #%d", i+1), func() (int, string, int) {
			return postXML(ctx, notifyURL, r2XML)
		}, okV2})
	}
	check := func(d delivery, status int, body string, attempts int) {
		t.Helper()
		if status != http.StatusOK || body != d.want || attempts != 1 {
			t.Errorf("%s: answered %d %s after %d attempts, want 200 %s at the first", d.what, status, body, attempts, d.want)
		}
	}
	var wg sync.WaitGroup
	answers := make([]struct {
		status, attempts int
		body             string
	}, len(deliveries))
	for i, d := range deliveries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := &answers[i]
			a.status, a.body, a.attempts = d.send()
		}()
	}
	wg.Wait()
	for i, d := range deliveries {
		check(d, answers[i].status, answers[i].body, answers[i].attempts)
	}

	// 3. Then the v3 form of the console refund: the same refund, so the
	// same dedupe_key, answered as a duplicate.
	deliveries = deliveries[:0]
	v3("v3 form of refund R2", 1, wxpay.EventRefundSuccess, r2.resource())
	status, body, attempts := deliveries[0].send()
	check(deliveries[0], status, body, attempts)

	// Five events stored of the twelve deliveries: the seven others were
	// duplicates, answered 200 all the same.
	if got := counter(t, ingressMetrics, "wxpay_ingress_requests_total", "outcome", "ok"); got != 5 {
		t.Errorf("ingress stored %v notifications, want 5 (three payments, two refunds)", got)
	}
	if got := counter(t, ingressMetrics, "wxpay_ingress_requests_total", "outcome", "duplicate"); got != 7 {
		t.Errorf("ingress answered %v duplicates, want 7", got)
	}

	// Everything handled, nothing dead-lettered.
	cons, err := admin.Consumer(ctx, events.StreamName, "flow")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the worker to handle every event", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && b.total() == 5
	})
	if dls, err := events.ListDeadLetters(ctx, admin, events.DLQFilter{}); err != nil || len(dls) != 0 {
		t.Errorf("dead letters %v %v, want none", dls, err)
	}

	// Each payment and each refund had its business effect exactly once,
	// with the amount in fen that WeChat notified.
	wantEffects := map[string]int64{
		"pay:T1": t1.total, "pay:T2": t2.total, "pay:T3": t3.total,
		"refund:R1": r1.refund, "refund:R2": r2.refund,
	}
	b.mu.Lock()
	if !reflect.DeepEqual(b.effects, wantEffects) {
		t.Errorf("business effects (amount per effect) %v, want %v", b.effects, wantEffects)
	}
	for k, n := range b.counts {
		if n != 1 {
			t.Errorf("business effect %s happened %d times, want once", k, n)
		}
	}
	if b.calls["pay:T2"] != 2 {
		t.Errorf("T2's effect was attempted %d times, want 2 (one failure, one retry)", b.calls["pay:T2"])
	}
	b.mu.Unlock()

	// The pending sets keep only the unpaid order, with its creation time.
	created := time.Date(2024, 3, 1, 0, 0, 0, 0, time.FixedZone("CST", 8*3600))
	want := []redis.Z{{Score: float64(created.Unix()), Member: t4}}
	if got := rdb.ZRangeWithScores(ctx, "wxpay:pending:order:"+mchid, 0, -1).Val(); !reflect.DeepEqual(got, want) {
		t.Errorf("pending orders %v, want %v", got, want)
	}
	if got := rdb.ZCard(ctx, "wxpay:pending:refund:"+mchid).Val(); got != 0 {
		t.Errorf("%d refunds still pending, want none", got)
	}

	// The ledger: one hash per China date, a field per transaction_id or
	// refund_id, a JSON value with the amount in fen and the final state.
	// R2 was stored from its v2 form, which has no notification id.
	ids := b.eventIDs()
	wantLedger := map[string]map[string]map[string]any{
		"wxpay:ledger:" + mchid + ":20240301": {
			t1.transactionID: {"out_trade_no": "T1", "amount": 100.0, "state": "SUCCESS", "event_id": ids["pay:T1"]},
			t2.transactionID: {"out_trade_no": "T2", "amount": 2999.0, "state": "SUCCESS", "event_id": ids["pay:T2"]},
			t3.transactionID: {"out_trade_no": "T3", "amount": 50000.0, "state": "SUCCESS", "event_id": ids["pay:T3"]},
		},
		"wxpay:ledger:" + mchid + ":20240302": {
			r1.refundID: {"out_refund_no": "R1", "amount": 30.0, "state": "SUCCESS", "event_id": ids["refund:R1"]},
		},
		"wxpay:ledger:" + mchid + ":20240303": {
			r2.refundID: {"out_refund_no": "R2", "amount": 999.0, "state": "SUCCESS", "event_id": ""},
		},
	}
	keys := rdb.Keys(ctx, "wxpay:ledger:*").Val()
	sort.Strings(keys)
	if want := sortedKeys(wantLedger); !reflect.DeepEqual(keys, want) {
		t.Errorf("ledger keys %v, want %v", keys, want)
	}
	for key, want := range wantLedger {
		fields := rdb.HGetAll(ctx, key).Val()
		got := map[string]map[string]any{}
		for field, value := range fields {
			var v map[string]any
			if err := json.Unmarshal([]byte(value), &v); err != nil {
				t.Errorf("%s %s: value %s is not a JSON object: %v", key, field, value, err)
			}
			got[field] = v
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got  %v\n want %v", key, got, want)
		}
		if ttl := rdb.TTL(ctx, key).Val(); ttl <= 90*24*time.Hour {
			t.Errorf("%s expires in %v, want more than 90 days", key, ttl)
		}
	}
}

// business is a team's handler: it counts the effects it made (an order
// shipped, a refund booked) by business id, and fails the first attempt
// of the ids in failFirst.
type business struct {
	mu        sync.Mutex
	failFirst map[string]bool
	calls     map[string]int
	counts    map[string]int
	effects   map[string]int64  // the amount of each effect, in fen
	ids       map[string]string // the event id each effect came from
}

func newBusiness() *business {
	return &business{failFirst: map[string]bool{}, calls: map[string]int{}, counts: map[string]int{},
		effects: map[string]int64{}, ids: map[string]string{}}
}

func (b *business) HandleEvent(ctx context.Context, ev events.Envelope) error {
	var res struct {
		OutTradeNo  string `json:"out_trade_no"`
		OutRefundNo string `json:"out_refund_no"`
		Amount      struct {
			Total  int64 `json:"total"`
			Refund int64 `json:"refund"`
		} `json:"amount"`
	}
	if err := json.Unmarshal(ev.Resource, &res); err != nil {
		return events.Permanent(err)
	}
	var key string
	var amount int64
	switch ev.EventType {
	case wxpay.EventTransactionSuccess: // ship the order
		key, amount = "pay:"+res.OutTradeNo, res.Amount.Total
	case wxpay.EventRefundSuccess: // book the refund
		key, amount = "refund:"+res.OutRefundNo, res.Amount.Refund
	default:
		return nil // announcements are the business's own
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls[key]++
	if b.failFirst[key] && b.calls[key] == 1 {
		return fmt.Errorf("business: %s: downstream answered 503", key)
	}
	b.counts[key]++
	b.effects[key] = amount
	b.ids[key] = ev.ID
	return nil
}

func (b *business) total() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.counts {
		n += c
	}
	return n
}

func (b *business) eventIDs() map[string]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]string{}
	for k, v := range b.ids {
		out[k] = v
	}
	return out
}

func (p payment) resource() map[string]any {
	return map[string]any{
		"mchid": mchid, "appid": "wxd678efh567hg6787", "out_trade_no": p.outTradeNo, "transaction_id": p.transactionID,
		"trade_type": "JSAPI", "trade_state": wxpay.TradeStateSuccess, "trade_state_desc": "支付成功", "bank_type": "CMC",
		"success_time": p.successTime, "payer": map[string]any{"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
		"amount": map[string]any{"total": p.total, "payer_total": p.payerTotal, "currency": "CNY", "payer_currency": "CNY"},
	}
}

// resource is the decrypted resource of r's REFUND.SUCCESS.
func (r refund) resource() map[string]any {
	return map[string]any{
		"mchid": mchid, "out_trade_no": r.outTradeNo, "transaction_id": r.transactionID, "out_refund_no": r.outRefundNo,
		"refund_id": r.refundID, "refund_status": wxpay.RefundStatusSuccess, "success_time": r.successTime,
		"user_received_account": "支付用户零钱",
		"amount":                map[string]any{"total": r.total, "refund": r.refund, "payer_total": r.payerTotal, "payer_refund": r.payerRefund},
	}
}

// v2Notification is r as WeChat sends a console refund in API v2: its
// success_time is China time without a zone.
func (r refund) v2Notification(apiV2Key string) []byte {
	at, err := time.Parse(time.RFC3339, r.successTime)
	if err != nil {
		panic(err)
	}
	return wxpaytest.V2RefundNotification(map[string]string{"appid": "wxd678efh567hg6787", "mch_id": mchid},
		map[string]string{
			"transaction_id": r.transactionID, "out_trade_no": r.outTradeNo, "refund_id": r.refundID, "out_refund_no": r.outRefundNo,
			"total_fee": fmt.Sprint(r.total), "refund_fee": fmt.Sprint(r.refund),
			"settlement_total_fee": fmt.Sprint(r.payerTotal), "settlement_refund_fee": fmt.Sprint(r.payerRefund),
			"refund_status": "SUCCESS", "success_time": at.Format(time.DateTime),
			"refund_recv_accout": "支付用户零钱", "refund_account": "REFUND_SOURCE_RECHARGE_FUNDS", "refund_request_source": "VENDOR_PLATFORM",
		}, apiV2Key)
}

// postXML posts a v2 notification as WeChat does (no retries: its answer
// is checked at the first attempt).
func postXML(ctx context.Context, url string, body []byte) (status int, answer string, attempts int) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err.Error(), 1
	}
	req.Header.Set("Content-Type", "text/xml")
	resp, err := (&http.Client{Timeout: wxpaytest.DeliveryTimeout}).Do(req)
	if err != nil {
		return 0, err.Error(), 1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), 1
}

// counter sums the counter name over the series whose label has value.
func counter(t *testing.T, g prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	return testenv.CounterSum(t, g, name, label, value)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// waitFor polls cond until it holds, for 30 seconds at most.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
