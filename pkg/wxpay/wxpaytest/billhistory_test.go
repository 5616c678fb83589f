package wxpaytest_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// clock is a platform clock a test moves.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

// downloadTradeBill applies for and downloads the trade bill of day with
// a real client and parses it.
func downloadTradeBill(t *testing.T, c *wxpay.Client, req wxpay.TradeBillRequest) ([]wxpay.TradeBillRow, wxpay.TradeBillSummary, error) {
	t.Helper()
	ctx := context.Background()
	bill, err := c.ApplyTradeBill(ctx, req)
	if err != nil {
		return nil, wxpay.TradeBillSummary{}, err
	}
	var buf bytes.Buffer
	if err := c.DownloadBill(ctx, bill, &buf); err != nil {
		t.Fatalf("download: %v", err)
	}
	r := wxpay.NewTradeBillReader(&buf)
	var rows []wxpay.TradeBillRow
	for {
		row, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the bill does not parse: %v\n%s", err, buf.String())
		}
		rows = append(rows, row)
	}
	return rows, r.Summary(), nil
}

func TestTradeBillFromHistory(t *testing.T) {
	t.Parallel()
	clk := &clock{now: day.Add(10 * time.Hour)}
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, Now: clk.Now})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	other := srv.AddMerchant(wxpaytest.MerchantOptions{})
	c, err := wxpay.NewClient(srv.ClientConfig(m))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	order := func(mchid, no string, total int64, attach string) {
		t.Helper()
		if _, err := srv.CreateOrder(wxpaytest.NewOrder{MchID: mchid, OutTradeNo: no, Total: total, Attach: attach,
			Description: "desc " + no, TradeType: wxpay.TradeTypeNative, Payer: wxpay.Payer{OpenID: "openid-" + no}}); err != nil {
			t.Fatal(err)
		}
	}
	order(m.MchID, "ORDER-A", 250, "a=1")
	order(m.MchID, "ORDER-B", 1000, "")
	order(m.MchID, "ORDER-UNPAID", 700, "")
	order(other.MchID, "ORDER-OTHER", 800, "")
	a, _ := srv.Pay("ORDER-A") // 10:00
	srv.Pay("ORDER-OTHER")
	clk.Set(day.Add(11 * time.Hour))
	b, _ := srv.Pay("ORDER-B")
	clk.Set(day.Add(12 * time.Hour))
	if _, err := c.CreateRefund(ctx, &wxpay.RefundRequest{OutTradeNo: "ORDER-B", OutRefundNo: "REFUND-B", Refund: 300, Total: 1000}); err != nil {
		t.Fatal(err)
	}
	clk.Set(day.Add(13 * time.Hour))
	refund, _ := srv.CompleteRefund("REFUND-B")
	// The next day: a refund of A applied for, and a new payment; neither
	// belongs on the first day's bill.
	clk.Set(day.Add(30 * time.Hour))
	if _, err := c.CreateRefund(ctx, &wxpay.RefundRequest{OutTradeNo: "ORDER-A", OutRefundNo: "REFUND-A", Refund: 50, Total: 250}); err != nil {
		t.Fatal(err)
	}
	order(m.MchID, "ORDER-C", 400, "")
	srv.Pay("ORDER-C")
	clk.Set(day.Add(60 * time.Hour)) // both days' bills are ready

	rows, sum, err := downloadTradeBill(t, c, wxpay.TradeBillRequest{Date: day})
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		state, tx, out, openid, tradeType, attach, desc, refundID, outRefund, refundStatus, mch, sub string
		total, refund, fee                                                                           int64
		at                                                                                           time.Time
	}
	var got []row
	for _, r := range rows {
		got = append(got, row{r.TradeState, r.TransactionID, r.OutTradeNo, r.OpenID, r.TradeType, r.Attach, r.Description,
			r.RefundID, r.OutRefundNo, r.RefundStatus, r.MchID, r.SubMchID, r.OrderTotal, r.Refund, r.Fee, r.TradeTime})
		if r.SettlementTotal != r.OrderTotal || r.Rate != "0.60%" {
			t.Errorf("line %d: 应结订单金额 %d, 订单金额 %d, rate %s", r.Line, r.SettlementTotal, r.OrderTotal, r.Rate)
		}
	}
	want := []row{
		// 250 fen at 0.60% is 1.5 fen, charged 2; 1000 fen is 6 fen; the
		// refund of 300 gives back 1.8 fen, rounded to 2.
		{"SUCCESS", a.TransactionID, "ORDER-A", "openid-ORDER-A", "NATIVE", "a=1", "desc ORDER-A", "0", "0", "", m.MchID, "0", 250, 0, 2000, day.Add(10 * time.Hour)},
		// A payment row stays SUCCESS though the order was refunded since.
		{"SUCCESS", b.TransactionID, "ORDER-B", "openid-ORDER-B", "NATIVE", "", "desc ORDER-B", "0", "0", "", m.MchID, "0", 1000, 0, 6000, day.Add(11 * time.Hour)},
		{"REFUND", b.TransactionID, "ORDER-B", "openid-ORDER-B", "NATIVE", "", "desc ORDER-B", refund.RefundID, "REFUND-B", "SUCCESS", m.MchID, "0", 1000, 300, -2000, day.Add(12 * time.Hour)},
	}
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if !got[i].at.Equal(want[i].at) {
			t.Errorf("row %d at %v, want %v", i, got[i].at, want[i].at)
		}
		got[i].at = want[i].at
		if got[i] != want[i] {
			t.Errorf("row %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	wantSum := wxpay.TradeBillSummary{Count: 3, SettlementTotal: 1250, Refund: 300, Fee: 6000, OrderTotal: 1250, RequestedRefund: 300}
	if sum != wantSum {
		t.Errorf("summary %+v, want %+v", sum, wantSum)
	}

	// The next day: the refund of A, still PROCESSING, and the payment of C.
	rows, _, err = downloadTradeBill(t, c, wxpay.TradeBillRequest{Date: day.AddDate(0, 0, 1), BillType: wxpay.BillTypeRefund})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].OutRefundNo != "REFUND-A" || rows[0].RefundStatus != wxpay.RefundStatusProcessing || rows[0].Refund != 50 {
		t.Errorf("next day's refund bill: %+v", rows)
	}
	srv.CompleteRefund("REFUND-A")
	rows, _, err = downloadTradeBill(t, c, wxpay.TradeBillRequest{Date: day.AddDate(0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].OutTradeNo != "ORDER-C" || rows[1].RefundStatus != wxpay.RefundStatusSuccess {
		t.Errorf("next day's bill after the refund succeeded: %+v", rows)
	}

	// A day without activity has no bill.
	if _, _, err := downloadTradeBill(t, c, wxpay.TradeBillRequest{Date: day.AddDate(0, 0, -1)}); !errors.Is(err, wxpay.ErrNoStatementExist) {
		t.Errorf("a quiet day: %v, want NO_STATEMENT_EXIST", err)
	}
}

func TestTradeBillHistoryOptions(t *testing.T) {
	t.Parallel()
	clk := &clock{now: day.Add(10 * time.Hour)}
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, Now: clk.Now})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	c, _ := wxpay.NewClient(srv.ClientConfig(m))
	srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: "ORDER-A", Total: 100})
	srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: "ORDER-B", Total: 200})
	srv.Pay("ORDER-A")
	srv.Pay("ORDER-B")
	clk.Set(day.Add(30 * time.Hour))
	// An unknown payment planted by the test comes on top.
	srv.Bills().AddTradeRows(wxpaytest.BillRow{TradeTime: day.Add(23 * time.Hour), MchID: m.MchID, OutTradeNo: "PLANTED",
		TransactionID: "4200000000000000000000000001", Total: 999})

	outs := func(opts wxpaytest.BillOptions) ([]string, []int64) {
		t.Helper()
		srv.Bills().SetOptions(opts)
		rows, _, err := downloadTradeBill(t, c, wxpay.TradeBillRequest{Date: day})
		if err != nil {
			t.Fatal(err)
		}
		var nos []string
		var totals []int64
		for _, r := range rows {
			nos = append(nos, r.OutTradeNo)
			totals = append(totals, r.OrderTotal)
		}
		return nos, totals
	}
	if nos, totals := outs(wxpaytest.BillOptions{}); len(nos) != 3 || nos[0] != "PLANTED" || nos[1] != "ORDER-A" || nos[2] != "ORDER-B" || totals[1] != 100 {
		t.Errorf("default bill: %v %v, want the planted row, then the history", nos, totals)
	}
	if nos, _ := outs(wxpaytest.BillOptions{NoHistory: true}); len(nos) != 1 || nos[0] != "PLANTED" {
		t.Errorf("bill without history: %v, want only the planted row", nos)
	}
	// Plant an amount difference on A and leave B out.
	edit := func(r *wxpaytest.BillRow) bool {
		if r.OutTradeNo == "ORDER-A" {
			r.Total = 101
		}
		return r.OutTradeNo != "ORDER-B"
	}
	if nos, totals := outs(wxpaytest.BillOptions{EditHistoryRow: edit}); len(nos) != 2 || nos[1] != "ORDER-A" || totals[1] != 101 {
		t.Errorf("edited bill: %v %v, want A at 101 and no B", nos, totals)
	}
	if o, _ := srv.Order("ORDER-A"); o.Total != 100 {
		t.Errorf("editing the bill changed the order: %d", o.Total)
	}
}

func TestTradeBillHistoryPartner(t *testing.T) {
	t.Parallel()
	clk := &clock{now: day.Add(10 * time.Hour)}
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, Now: clk.Now})
	sp := srv.AddMerchant(wxpaytest.MerchantOptions{})
	for _, o := range []wxpaytest.NewOrder{
		{MchID: sp.MchID, SubMchID: "1900000109", SubAppID: "wxsub0000000000001", OutTradeNo: "SUB1-ORDER", Total: 100,
			Payer: wxpay.Payer{SpOpenID: "sp-openid-1"}},
		{MchID: sp.MchID, SubMchID: "1900000110", OutTradeNo: "SUB2-ORDER", Total: 200},
	} {
		srv.CreateOrder(o)
		srv.Pay(o.OutTradeNo)
	}
	clk.Set(day.Add(30 * time.Hour))
	cfg := srv.ClientConfig(sp)
	cfg.PartnerMode = true
	c, _ := wxpay.NewClient(cfg)
	rows, _, err := downloadTradeBill(t, c, wxpay.TradeBillRequest{Date: day})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("the service provider's bill has %d rows, want both sub-merchants' payments", len(rows))
	}
	rows, _, err = downloadTradeBill(t, c, wxpay.TradeBillRequest{Date: day, SubMchID: "1900000109"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].MchID != sp.MchID || rows[0].SubMchID != "1900000109" || rows[0].OutTradeNo != "SUB1-ORDER" ||
		rows[0].OpenID != "sp-openid-1" {
		t.Errorf("one sub-merchant's bill: %+v", rows)
	}
}

// TestTradeClock: with Options.TradeNow two days back, the trades are dated
// on the trade clock (create and success times, the dates in their ids,
// the bill day), while notifications are signed at Now and verify against
// a client on the real clock, and the trade day's bill is ready at once.
func TestTradeClock(t *testing.T) {
	t.Parallel()
	tradeNow := func() time.Time { return time.Now().Add(-48 * time.Hour) }
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, TradeNow: tradeNow})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	c, err := wxpay.NewClient(srv.ClientConfig(m))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: "ORDER-OLD", Total: 500}); err != nil {
		t.Fatal(err)
	}
	paid, err := srv.Pay("ORDER-OLD")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateRefund(ctx, &wxpay.RefundRequest{OutTradeNo: "ORDER-OLD", OutRefundNo: "REFUND-OLD", Refund: 200, Total: 500}); err != nil {
		t.Fatal(err)
	}
	refund, err := srv.CompleteRefund("REFUND-OLD")
	if err != nil {
		t.Fatal(err)
	}
	tradeDay := tradeNow().In(wxpay.ChinaTime()).Format("20060102")
	for what, at := range map[string]time.Time{"order created": paid.CreateTime, "paid": paid.SuccessTime,
		"refund created": refund.CreateTime, "refunded": refund.SuccessTime} {
		if d := time.Since(at); d < 47*time.Hour || d > 49*time.Hour {
			t.Errorf("%s %s ago, want on the trade clock, 48h ago", what, d.Round(time.Second))
		}
	}
	if !strings.Contains(paid.TransactionID, tradeDay) || !strings.Contains(refund.RefundID, tradeDay) {
		t.Errorf("transaction_id %s and refund_id %s, want both dated %s", paid.TransactionID, refund.RefundID, tradeDay)
	}

	// The notification is of the past trade, signed in the present: a
	// client on the real clock accepts it.
	n, err := srv.PaymentNotification("ORDER-OLD", wxpaytest.NotificationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.ParseNotification(ctx, n.Header, n.Body)
	if err != nil {
		t.Fatalf("a notification of a trade two days back: %v", err)
	}
	tx, err := got.Transaction()
	if err != nil || tx.SuccessTime != paid.SuccessTime.In(wxpay.ChinaTime()).Format(time.RFC3339) {
		t.Errorf("success_time %q, %v, want the trade clock's %s", tx.SuccessTime, err, paid.SuccessTime)
	}

	// The trade day is over on the platform's clock: its bill is ready.
	day, _ := time.ParseInLocation("20060102", tradeDay, wxpay.ChinaTime())
	rows, _, err := downloadTradeBill(t, c, wxpay.TradeBillRequest{Date: day})
	if err != nil {
		t.Fatalf("the trade day's bill: %v", err)
	}
	if len(rows) != 2 || rows[0].OutTradeNo != "ORDER-OLD" || rows[1].OutRefundNo != "REFUND-OLD" {
		t.Errorf("the trade day's bill: %+v, want the payment and its refund", rows)
	}
}
