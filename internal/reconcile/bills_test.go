package reconcile_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"sort"
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

// billEnv is a fake platform with one merchant whose bills the tests
// write row by row (the platform's own order history stays empty: no
// order is placed on it), embedded NATS, miniredis and a bill directory.
type billEnv struct {
	t      *testing.T
	ctx    context.Context
	srv    *wxpaytest.Server
	m      *wxpaytest.Merchant
	client *wxpay.Client
	js     jetstream.JetStream
	store  *tracking.Store
	pub    *events.Publisher
	dir    string
	log    *testenv.Buffer
	clock  *fakeClock
	day    time.Time // the bill's day, midnight China time
	// onRequest, when set, runs after every API call of the client.
	onRequest func(wxpay.RequestInfo)
	// unsigned makes every answer reach the client without its
	// signature headers.
	unsigned atomic.Bool
}

// stripTransport removes WeChat Pay's signature headers from answers when
// the env says so.
type stripTransport struct {
	e    *billEnv
	next http.RoundTripper
}

func (s stripTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := s.next.RoundTrip(r)
	if err == nil && s.e.unsigned.Load() {
		for k := range resp.Header {
			if strings.HasPrefix(strings.ToLower(k), "wechatpay-") {
				resp.Header.Del(k)
			}
		}
	}
	return resp, err
}

type fakeClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

func newBillEnv(t *testing.T) *billEnv { return newBillEnvMode(t, false) }

// newBillEnvMode is newBillEnv with the merchant as a service provider
// (partner mode) when partner is set.
func newBillEnvMode(t *testing.T, partner bool) *billEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	clock := &fakeClock{}
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, Now: clock.Now})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	e := &billEnv{t: t, ctx: ctx, srv: srv, m: m, dir: t.TempDir(), log: &testenv.Buffer{}, clock: clock}
	cfg := srv.ClientConfig(m)
	cfg.PartnerMode = partner
	cfg.OnRequest = func(info wxpay.RequestInfo) {
		if e.onRequest != nil {
			e.onRequest(info)
		}
	}
	base := http.DefaultTransport
	if cfg.HTTPClient != nil && cfg.HTTPClient.Transport != nil {
		base = cfg.HTTPClient.Transport
	}
	cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second, Transport: stripTransport{e, base}}
	client, err := wxpay.NewClient(cfg)
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
	e.client, e.js = client, js
	e.store = tracking.NewStore(rdb, tracking.Config{})
	e.pub = events.NewPublisher(js, events.PublisherConfig{})
	y, mo, d := time.Now().In(wxpay.ChinaTime()).AddDate(0, 0, -2).Date()
	e.day = time.Date(y, mo, d, 0, 0, 0, 0, wxpay.ChinaTime())
	return e
}

func (e *billEnv) reconciler() *reconcile.Reconciler {
	return reconcile.New([]reconcile.Merchant{{MchID: e.m.MchID, Client: e.client}}, e.store, e.pub, reconcile.Config{
		Rate: 1000, BackoffBase: time.Millisecond, BackoffMax: 4 * time.Millisecond, Logger: zerolog.New(e.log),
	})
}

func (e *billEnv) run(opts reconcile.BillOptions) reconcile.BillSummary {
	e.t.Helper()
	if opts.Dir == "" {
		opts.Dir = e.dir
	}
	s, err := e.reconciler().Bills(e.ctx, e.day, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// payment is a bill row of a payment at hour h of the bill's day.
func (e *billEnv) payment(tx, no string, total int64, h int) wxpaytest.BillRow {
	return wxpaytest.BillRow{TradeTime: e.day.Add(time.Duration(h) * time.Hour), MchID: e.m.MchID, TransactionID: tx,
		OutTradeNo: no, Total: total, Fee: total * 6}
}

// refundRow is a bill row of a refund applied for at applied.
func (e *billEnv) refundRow(tx, no, refundID, refundNo string, total, refund int64, applied time.Time, status string) wxpaytest.BillRow {
	return wxpaytest.BillRow{TradeTime: applied, MchID: e.m.MchID, TransactionID: tx, OutTradeNo: no, TradeState: "REFUND",
		Total: total, RefundID: refundID, OutRefundNo: refundNo, Refund: refund, RefundStatus: status}
}

// ledger records a final payment or refund as the tracker does.
func (e *billEnv) ledger(id string, when time.Time, entry tracking.Entry) {
	e.t.Helper()
	if entry.EventID == "" {
		entry.EventID = "evt-" + id
	}
	if err := e.store.RecordFinal(e.ctx, e.m.MchID, id, when, entry); err != nil {
		e.t.Fatal(err)
	}
}

// subjectMsgs returns every message on wxpay.<mchid>.<eventType>, in
// stream order.
func (e *billEnv) subjectMsgs(eventType string) []events.Envelope {
	e.t.Helper()
	var out []events.Envelope
	for _, msg := range testenv.StreamMsgs(e.t, e.js, events.StreamName) {
		if msg.Subject != events.Subject(e.m.MchID, eventType) {
			continue
		}
		var env events.Envelope
		if err := json.Unmarshal(msg.Data, &env); err != nil {
			e.t.Fatal(err)
		}
		if msg.Header.Get(jetstream.MsgIDHeader) != env.DedupeKey || env.DedupeKey != events.EventKey(env.ID) ||
			env.Source != events.SourceReconciler || !strings.HasPrefix(env.ID, "rc-bill-") {
			e.t.Fatalf("bill event id %q dedupe_key %q Nats-Msg-Id %q source %q", env.ID, env.DedupeKey,
				msg.Header.Get(jetstream.MsgIDHeader), env.Source)
		}
		out = append(out, env)
	}
	return out
}

func (e *billEnv) mismatches() []reconcile.Mismatch {
	e.t.Helper()
	var out []reconcile.Mismatch
	for _, env := range e.subjectMsgs(events.EventBillMismatch) {
		var mm reconcile.Mismatch
		if err := json.Unmarshal(env.Resource, &mm); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, mm)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Kind+out[i].TransactionID+out[i].RefundID < out[j].Kind+out[j].TransactionID+out[j].RefundID
	})
	return out
}

func (e *billEnv) ready() map[string]reconcile.BillReady {
	e.t.Helper()
	out := map[string]reconcile.BillReady{}
	for _, env := range e.subjectMsgs(events.EventBillReady) {
		var r reconcile.BillReady
		if err := json.Unmarshal(env.Resource, &r); err != nil {
			e.t.Fatal(err)
		}
		out[r.Bill] = r
	}
	return out
}

// files lists what the bill directory holds, temporary files included.
func (e *billEnv) files() []string {
	e.t.Helper()
	var out []string
	err := filepath.WalkDir(e.dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(e.dir, p)
			out = append(out, rel)
		}
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func TestBillCleanDayMatchesAndIsStored(t *testing.T) {
	e := newBillEnv(t)
	p1, p2 := e.payment("4200000001", "T1", 100, 9), e.payment("4200000002", "T2", 250, 15)
	// A refund applied for at 23:59 that finished after midnight: the
	// bill lists it on its application day, the ledger on its success day.
	late := e.refundRow("4200000002", "T2", "5030000001", "R1", 250, 50, e.day.Add(23*time.Hour+59*time.Minute), "SUCCESS")
	early := e.refundRow("4200000001", "T1", "5030000002", "R2", 100, 30, e.day.Add(10*time.Hour), "SUCCESS")
	e.srv.Bills().AddTradeRows(p1, p2, late, early)
	e.ledger("4200000001", p1.TradeTime, tracking.Entry{OutTradeNo: "T1", Amount: 100, State: "SUCCESS"})
	e.ledger("4200000002", p2.TradeTime, tracking.Entry{OutTradeNo: "T2", Amount: 250, State: "SUCCESS"})
	e.ledger("5030000001", e.day.Add(24*time.Hour+time.Minute), tracking.Entry{OutRefundNo: "R1", Amount: 50, State: "SUCCESS"})
	e.ledger("5030000002", e.day.Add(10*time.Hour+time.Minute), tracking.Entry{OutRefundNo: "R2", Amount: 30, State: "SUCCESS"})
	e.srv.Bills().AddFundFlowRows(wxpaytest.FundFlowBillRow{Time: p1.TradeTime, MchID: e.m.MchID, TransactionID: "4200000001",
		FlowID: "F1", BusinessName: "交易", BusinessType: "交易", Income: true, Amount: 100, Balance: 100})

	s := e.run(reconcile.BillOptions{})
	if !s.Clean() || s.Mismatches != 0 || s.Errors != 0 || len(s.Bills) != 2 || s.Rows != 5 {
		t.Fatalf("summary %s %+v\n%s", s, s.Bills, e.log)
	}
	trade := s.Bills[0]
	if trade.Bill != reconcile.BillTrade || trade.Rows != 4 || trade.Matched != 4 || trade.Empty {
		t.Fatalf("trade bill %+v", trade)
	}
	want := filepath.Join(e.m.MchID, "tradebill_ALL_"+e.day.Format("2006-01-02")+".csv")
	if got := e.files(); len(got) != 2 || got[1] != want {
		t.Fatalf("bill dir holds %v, want %s and the fund-flow bill", got, want)
	}
	body, err := os.ReadFile(filepath.Join(e.dir, want))
	if err != nil || !strings.Contains(string(body), "`4200000002") {
		t.Fatalf("stored bill %q %v", body, err)
	}
	ready := e.ready()
	tr, ff := ready[reconcile.BillTrade], ready[reconcile.BillFundFlow]
	if tr.Rows != 4 || tr.BillType != "ALL" || tr.BillDate != e.day.Format("2006-01-02") || tr.Trade == nil ||
		tr.Trade.OrderTotal != 350 || tr.Trade.Refund != 80 || tr.Matched != 4 || tr.HashValue != trade.HashValue || tr.Empty {
		t.Fatalf("trade bill.ready %+v %+v", tr, tr.Trade)
	}
	if ff.Rows != 1 || ff.AccountType != "BASIC" || ff.FundFlow == nil || ff.FundFlow.Income != 100 {
		t.Fatalf("fund-flow bill.ready %+v", ff)
	}
	if mm := e.mismatches(); len(mm) != 0 {
		t.Fatalf("mismatches on a clean day: %+v", mm)
	}

	// A repeated run publishes the very same events: duplicates.
	before := len(e.subjectMsgs(events.EventBillReady))
	if s := e.run(reconcile.BillOptions{}); !s.Clean() {
		t.Fatalf("repeat: %s", s)
	}
	if after := len(e.subjectMsgs(events.EventBillReady)); after != before {
		t.Fatalf("a repeated run added bill.ready events: %d, then %d", before, after)
	}
}

func TestBillDiscrepanciesArePublishedOneEach(t *testing.T) {
	e := newBillEnv(t)
	missing := e.payment("4200000001", "T1", 100, 9) // its notification never came
	short := e.payment("4200000002", "T2", 250, 10)  // the ledger says 200
	ok := e.payment("4200000003", "T3", 300, 11)
	abnormal := e.refundRow("4200000003", "T3", "5030000001", "R1", 300, 100, e.day.Add(12*time.Hour), "SUCCESS")
	processing := e.refundRow("4200000003", "T3", "5030000002", "R2", 300, 100, e.day.Add(13*time.Hour), "PROCESSING")
	e.srv.Bills().AddTradeRows(missing, short, ok, abnormal, processing)
	e.ledger("4200000002", short.TradeTime, tracking.Entry{OutTradeNo: "T2", Amount: 200, State: "SUCCESS"})
	e.ledger("4200000003", ok.TradeTime, tracking.Entry{OutTradeNo: "T3", Amount: 300, State: "SUCCESS"})
	e.ledger("5030000001", abnormal.TradeTime, tracking.Entry{OutRefundNo: "R1", Amount: 100, State: "ABNORMAL"})
	// A payment WeChat does not know.
	e.ledger("4200000009", e.day.Add(14*time.Hour), tracking.Entry{OutTradeNo: "T9", Amount: 999, State: "SUCCESS"})

	s := e.run(reconcile.BillOptions{})
	trade := s.Bills[0]
	if s.Clean() || s.Errors != 0 || s.Mismatches != 4 || trade.Matched != 1 || trade.RefundsProcessing != 1 ||
		trade.Mismatches[reconcile.MismatchMissingInLedger] != 1 || trade.Mismatches[reconcile.MismatchAmount] != 1 ||
		trade.Mismatches[reconcile.MismatchState] != 1 || trade.Mismatches[reconcile.MismatchMissingInBill] != 1 {
		t.Fatalf("summary %s %+v\n%s", s, trade, e.log)
	}
	mm := e.mismatches()
	if len(mm) != 4 {
		t.Fatalf("%d bill.mismatch events, want 4: %+v", len(mm), mm)
	}
	byKind := map[string]reconcile.Mismatch{}
	for _, m := range mm {
		byKind[m.Kind] = m
	}
	if m := byKind[reconcile.MismatchAmount]; m.TransactionID != "4200000002" || m.Bill == nil || m.Bill.Amount != 250 ||
		m.Ledger == nil || m.Ledger.Amount != 200 || m.Ledger.EventID != "evt-4200000002" {
		t.Fatalf("amount mismatch %+v %+v %+v", m, m.Bill, m.Ledger)
	}
	if m := byKind[reconcile.MismatchMissingInLedger]; m.TransactionID != "4200000001" || m.OutTradeNo != "T1" || m.Ledger != nil || m.Bill.Amount != 100 {
		t.Fatalf("missing-in-ledger mismatch %+v", m)
	}
	if m := byKind[reconcile.MismatchMissingInBill]; m.TransactionID != "4200000009" || m.OutTradeNo != "T9" || m.Bill != nil || m.Ledger.Amount != 999 {
		t.Fatalf("missing-in-bill mismatch %+v", m)
	}
	if m := byKind[reconcile.MismatchState]; m.RefundID != "5030000001" || m.Bill.State != "SUCCESS" || m.Ledger.State != "ABNORMAL" {
		t.Fatalf("state mismatch %+v", m)
	}
	if r := e.ready()[reconcile.BillTrade]; r.Mismatches[reconcile.MismatchAmount] != 1 || r.Matched != 1 {
		t.Fatalf("bill.ready %+v", r)
	}
	// Repeating the run publishes the same events again: duplicates.
	e.run(reconcile.BillOptions{})
	if again := e.mismatches(); len(again) != 4 {
		t.Fatalf("after a repeat, %d bill.mismatch events", len(again))
	}
}

func TestBillMismatchEventsAreBounded(t *testing.T) {
	e := newBillEnv(t)
	for i := range 5 {
		e.srv.Bills().AddTradeRows(e.payment("420000000"+string(rune('1'+i)), "T", 100, 9))
	}
	s := e.run(reconcile.BillOptions{MaxMismatchEvents: 2})
	if tr := s.Bills[0]; tr.Mismatches[reconcile.MismatchMissingInLedger] != 5 || tr.Published != 2 || s.Mismatches != 5 {
		t.Fatalf("summary %s %+v", s, tr)
	}
	if n := len(e.mismatches()); n != 2 {
		t.Fatalf("%d bill.mismatch events, want the bound 2", n)
	}
	if !strings.Contains(e.log.String(), "only counted") {
		t.Fatalf("no warning about the bound:\n%s", e.log)
	}
}

func TestBillRefundOfTheDayBeforeIsLookedForInThatDaysRefundBill(t *testing.T) {
	e := newBillEnv(t)
	prev := e.day.Add(-time.Hour) // 23:00 the day before
	// Applied for the day before, finished on the bill's day: in the
	// previous day's bill, in this day's ledger.
	e.srv.Bills().AddTradeRows(
		e.refundRow("4200000001", "T1", "5030000001", "R1", 100, 40, prev, "SUCCESS"),
		e.refundRow("4200000002", "T2", "5030000002", "R2", 100, 70, prev, "SUCCESS"),
		e.payment("4200000003", "T3", 10, 9))
	e.ledger("4200000003", e.day.Add(9*time.Hour), tracking.Entry{OutTradeNo: "T3", Amount: 10, State: "SUCCESS"})
	e.ledger("5030000001", e.day.Add(time.Minute), tracking.Entry{OutRefundNo: "R1", Amount: 40, State: "SUCCESS"})
	e.ledger("5030000002", e.day.Add(time.Minute), tracking.Entry{OutRefundNo: "R2", Amount: 60, State: "SUCCESS"})
	// And one that no bill has.
	e.ledger("5030000003", e.day.Add(time.Minute), tracking.Entry{OutRefundNo: "R3", Amount: 5, State: "SUCCESS"})

	s := e.run(reconcile.BillOptions{})
	tr := s.Bills[0]
	if s.Errors != 0 || tr.Matched != 2 || tr.Mismatches[reconcile.MismatchAmount] != 1 || tr.Mismatches[reconcile.MismatchMissingInBill] != 1 || s.Mismatches != 2 {
		t.Fatalf("summary %s %+v\n%s", s, tr, e.log)
	}
	for _, m := range e.mismatches() {
		if (m.Kind == reconcile.MismatchAmount && m.RefundID != "5030000002") || (m.Kind == reconcile.MismatchMissingInBill && m.RefundID != "5030000003") {
			t.Fatalf("mismatch %+v", m)
		}
	}
	// The previous day's bill was read, not kept.
	if got := e.files(); len(got) != 1 || !strings.HasPrefix(filepath.Base(got[0]), "tradebill_ALL_") {
		t.Fatalf("bill dir holds %v", got)
	}
}

func TestBillHashMismatchKeepsNoFile(t *testing.T) {
	e := newBillEnv(t)
	e.srv.Bills().AddTradeRows(e.payment("4200000001", "T1", 100, 9))
	e.ledger("4200000001", e.day.Add(9*time.Hour), tracking.Entry{OutTradeNo: "T1", Amount: 100, State: "SUCCESS"})
	e.srv.Bills().SetOptions(wxpaytest.BillOptions{CorruptHash: true})
	s := e.run(reconcile.BillOptions{})
	if s.Errors != 1 || s.Clean() || !strings.Contains(s.Bills[0].Error, "hash") {
		t.Fatalf("summary %s %+v", s, s.Bills)
	}
	if got := e.files(); len(got) != 0 {
		t.Fatalf("a rejected bill left files: %v", got)
	}
	if r := e.ready(); len(r) != 1 || !r[reconcile.BillFundFlow].Empty {
		t.Fatalf("bill.ready for a rejected bill: %+v", r)
	}
}

func TestBillNotReadyYet(t *testing.T) {
	e := newBillEnv(t)
	e.srv.Bills().AddTradeRows(e.payment("4200000001", "T1", 100, 9))
	e.srv.Bills().SetOptions(wxpaytest.BillOptions{ReadyAfter: 1000 * time.Hour})
	s := e.run(reconcile.BillOptions{})
	if s.Errors != 2 || s.NotReady != 2 || !s.Bills[0].NotReady || !strings.Contains(s.Bills[0].Error, "not ready yet") {
		t.Fatalf("summary %s %+v", s, s.Bills)
	}
	if len(e.files()) != 0 || len(e.ready()) != 0 {
		t.Fatalf("files %v, bill.ready %v", e.files(), e.ready())
	}
}

func TestBillNoStatementIsAnEmptyDay(t *testing.T) {
	e := newBillEnv(t)
	s := e.run(reconcile.BillOptions{})
	if !s.Clean() || s.Rows != 0 || !s.Bills[0].Empty || !s.Bills[1].Empty {
		t.Fatalf("summary %s %+v", s, s.Bills)
	}
	if r := e.ready(); !r[reconcile.BillTrade].Empty || r[reconcile.BillTrade].Rows != 0 || !r[reconcile.BillFundFlow].Empty {
		t.Fatalf("bill.ready %+v", r)
	}
	// An empty day is reconciled like any other: a paid order in the
	// ledger is missing from it.
	e.ledger("4200000001", e.day.Add(9*time.Hour), tracking.Entry{OutTradeNo: "T1", Amount: 100, State: "SUCCESS"})
	s = e.run(reconcile.BillOptions{})
	if s.Mismatches != 1 || s.Bills[0].Mismatches[reconcile.MismatchMissingInBill] != 1 {
		t.Fatalf("summary %s %+v", s, s.Bills)
	}
}

func TestBillExpiredDownloadURLIsAppliedForAgain(t *testing.T) {
	e := newBillEnv(t)
	e.srv.Bills().AddTradeRows(e.payment("4200000001", "T1", 100, 9))
	e.ledger("4200000001", e.day.Add(9*time.Hour), tracking.Entry{OutTradeNo: "T1", Amount: 100, State: "SUCCESS"})
	e.srv.Bills().SetOptions(wxpaytest.BillOptions{URLValidity: time.Minute})
	var applies atomic.Int32
	e.onRequest = func(info wxpay.RequestInfo) {
		// The first download_url expires before it is used.
		if info.Path == "/v3/bill/tradebill" && applies.Add(1) == 1 {
			e.clock.Advance(2 * time.Minute)
		}
	}
	s := e.run(reconcile.BillOptions{})
	if !s.Clean() || applies.Load() != 2 {
		t.Fatalf("summary %s %+v, %d applications\n%s", s, s.Bills, applies.Load(), e.log)
	}
}

func TestBillUnverifiedAnswerPublishesNothing(t *testing.T) {
	e := newBillEnv(t)
	e.srv.Bills().AddTradeRows(e.payment("4200000001", "T1", 100, 9))
	// Answers whose signatures do not verify: an unverified
	// NO_STATEMENT_EXIST must not pass for an empty day either.
	e.srv.SetBadAnswerSignatures(true)
	s := e.run(reconcile.BillOptions{})
	if s.Errors != 2 || s.Bills[0].Empty || s.Bills[1].Empty || !strings.Contains(s.Bills[1].Error, "signature") {
		t.Fatalf("summary %s %+v", s, s.Bills)
	}
	if len(e.ready()) != 0 || len(e.files()) != 0 {
		t.Fatalf("bill.ready %+v, files %v", e.ready(), e.files())
	}
}

func TestBillUnsignedNoStatementIsNotAnEmptyDay(t *testing.T) {
	e := newBillEnv(t)
	e.unsigned.Store(true)
	s := e.run(reconcile.BillOptions{})
	if s.Errors != 2 || s.Bills[0].Empty || s.Bills[1].Empty || !strings.Contains(s.Bills[0].Error, "NO_STATEMENT_EXIST") {
		t.Fatalf("summary %s %+v\n%s", s, s.Bills, e.log)
	}
	if len(e.ready()) != 0 {
		t.Fatalf("bill.ready %+v", e.ready())
	}
}

// In partner mode the service provider's bill lists every sub-merchant
// (特约商户号), and the ledger holds them all under the provider's mchid,
// as the events do.
func TestBillPartnerModeMatchesEverySubMerchant(t *testing.T) {
	e := newBillEnvMode(t, true)
	a, b := e.payment("4200000001", "T1", 100, 9), e.payment("4200000002", "T1", 200, 10) // same out_trade_no, two sub-merchants
	a.SubMchID, b.SubMchID = "1900000109", "1900000110"
	missing := e.payment("4200000003", "T3", 300, 11)
	missing.SubMchID = "1900000110"
	e.srv.Bills().AddTradeRows(a, b, missing)
	e.ledger("4200000001", a.TradeTime, tracking.Entry{OutTradeNo: "T1", Amount: 100, State: "SUCCESS"})
	e.ledger("4200000002", b.TradeTime, tracking.Entry{OutTradeNo: "T1", Amount: 200, State: "SUCCESS"})
	s := e.run(reconcile.BillOptions{})
	if s.Errors != 0 || s.Rows != 3 || s.Bills[0].Matched != 2 || s.Mismatches != 1 {
		t.Fatalf("summary %s %+v\n%s", s, s.Bills, e.log)
	}
	if mm := e.mismatches(); len(mm) != 1 || mm[0].TransactionID != "4200000003" || mm[0].Kind != reconcile.MismatchMissingInLedger {
		t.Fatalf("mismatches %+v", mm)
	}
}
