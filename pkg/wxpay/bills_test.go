package wxpay_test

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// billClock is a clock the test moves, shared by the platform and the client.
type billClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *billClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *billClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// billDay is the day the bills are for; the clock starts at 11:00 the
// next day, China time.
var billDay = time.Date(2026, 11, 29, 0, 0, 0, 0, wxpay.ChinaTime())

func billPlatform(t *testing.T, mode wxpaytest.Mode) (*wxpaytest.Server, *billClock) {
	t.Helper()
	clk := &billClock{t: billDay.Add(35 * time.Hour)}
	return wxpaytest.NewServer(t, wxpaytest.Options{Mode: mode, Now: clk.Now}), clk
}

func payment(mchid, sub, no string, total int64, at time.Time) wxpaytest.BillRow {
	return wxpaytest.BillRow{TradeTime: at, AppID: "wxd678efh567hg6787", MchID: mchid, SubMchID: sub,
		TransactionID: "42000" + no, OutTradeNo: no, OpenID: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", Total: total,
		Description: "商品, 含逗号", Fee: total * 600}
}

func refund(p wxpaytest.BillRow, amount int64, at time.Time) wxpaytest.BillRow {
	p.TradeTime, p.TradeState, p.RefundID, p.OutRefundNo, p.Refund, p.Fee = at, "REFUND", "50300"+p.OutTradeNo, "R"+p.OutTradeNo, amount, -amount*600
	return p
}

// download applies, downloads and parses a trade bill.
func downloadTrade(t *testing.T, c *wxpay.Client, r wxpay.TradeBillRequest) ([]wxpay.TradeBillRow, wxpay.TradeBillSummary, error) {
	t.Helper()
	bill, err := c.ApplyTradeBill(ctx, r)
	if err != nil {
		return nil, wxpay.TradeBillSummary{}, err
	}
	var buf bytes.Buffer
	if err := c.DownloadBill(ctx, bill, &buf); err != nil {
		return nil, wxpay.TradeBillSummary{}, err
	}
	br := wxpay.NewTradeBillReader(&buf)
	var rows []wxpay.TradeBillRow
	for {
		row, err := br.Next()
		if err == io.EOF {
			return rows, br.Summary(), nil
		}
		if err != nil {
			return rows, wxpay.TradeBillSummary{}, err
		}
		rows = append(rows, row)
	}
}

func TestTradeBillRoundTrip(t *testing.T) {
	for _, mode := range []wxpaytest.Mode{wxpaytest.ModeCertificate, wxpaytest.ModePublicKey} {
		for _, gz := range []bool{false, true} {
			srv, _ := billPlatform(t, mode)
			m := srv.AddMerchant(wxpaytest.MerchantOptions{})
			other := srv.AddMerchant(wxpaytest.MerchantOptions{})
			p1 := payment(m.MchID, "", "T1", 10, billDay.Add(9*time.Hour))
			p2 := payment(m.MchID, "", "T2", 12345, billDay.Add(23*time.Hour+59*time.Minute))
			srv.Bills().AddTradeRows(p1, p2, refund(p2, 105, billDay.Add(23*time.Hour+59*time.Minute+59*time.Second)),
				payment(m.MchID, "", "NEXTDAY", 1, billDay.Add(24*time.Hour)),
				payment(other.MchID, "", "OTHER", 1, billDay.Add(time.Hour)))
			c := newClient(t, srv, m, nil)
			rows, sum, err := downloadTrade(t, c, wxpay.TradeBillRequest{Date: billDay, Gzip: gz})
			if err != nil {
				t.Fatalf("gzip %v: %v", gz, err)
			}
			var got []string
			for _, r := range rows {
				got = append(got, r.OutTradeNo+" "+r.TradeState+" "+wxpay.FormatYuan(r.SettlementTotal)+" "+wxpay.FormatYuan(r.Refund)+" "+r.TradeTime.Format(time.RFC3339))
			}
			want := []string{
				"T1 SUCCESS 0.10 0.00 2026-11-29T09:00:00+08:00",
				"T2 SUCCESS 123.45 0.00 2026-11-29T23:59:00+08:00",
				"T2 REFUND 123.45 1.05 2026-11-29T23:59:59+08:00",
			}
			if !slices.Equal(got, want) {
				t.Fatalf("gzip %v: rows\n%s\nwant\n%s", gz, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			r := rows[2]
			if r.MchID != m.MchID || r.SubMchID != "0" || r.TransactionID != "42000T2" || r.OutRefundNo != "RT2" || r.RefundID != "50300T2" ||
				r.RefundStatus != "SUCCESS" || r.Description != "商品, 含逗号" || r.Fee != -63000 || r.Line != 4 {
				t.Errorf("refund row = %+v", r)
			}
			wantSum := wxpay.TradeBillSummary{Count: 3, SettlementTotal: 12355, Refund: 105, Fee: 10*600 + 12345*600 - 105*600, OrderTotal: 12355, RequestedRefund: 105}
			if sum != wantSum {
				t.Errorf("summary = %+v, want %+v", sum, wantSum)
			}
		}
	}
}

func TestTradeBillPartnerSubMerchant(t *testing.T) {
	srv, _ := billPlatform(t, wxpaytest.ModePublicKey)
	sp := srv.AddMerchant(wxpaytest.MerchantOptions{})
	at := billDay.Add(12 * time.Hour)
	srv.Bills().AddTradeRows(payment(sp.MchID, "1900000109", "A1", 100, at), payment(sp.MchID, "1900000110", "B1", 200, at))
	c := newClient(t, srv, sp, func(cfg *wxpay.Config) { cfg.PartnerMode = true })
	rows, sum, err := downloadTrade(t, c, wxpay.TradeBillRequest{Date: billDay, SubMchID: "1900000110"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].OutTradeNo != "B1" || rows[0].SubMchID != "1900000110" || sum.SettlementTotal != 200 {
		t.Fatalf("sub-merchant bill: rows %+v, summary %+v; want only B1", rows, sum)
	}
	_, all, err := downloadTrade(t, c, wxpay.TradeBillRequest{Date: billDay})
	if err != nil || all.Count != 2 {
		t.Fatalf("combined bill: %+v, %v; want 2 rows", all, err)
	}
	direct := newClient(t, srv, sp, nil)
	if _, err := direct.ApplyTradeBill(ctx, wxpay.TradeBillRequest{Date: billDay, SubMchID: "1900000110"}); !errors.Is(err, wxpay.ErrInvalidConfig) {
		t.Errorf("direct mode with a sub_mchid: %v, want ErrInvalidConfig", err)
	}
}

func TestTradeBillTypes(t *testing.T) {
	srv, _ := billPlatform(t, wxpaytest.ModePublicKey)
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	p := payment(m.MchID, "", "T1", 500, billDay.Add(time.Hour))
	srv.Bills().AddTradeRows(p, refund(p, 200, billDay.Add(2*time.Hour)))
	c := newClient(t, srv, m, nil)
	for _, tc := range []struct {
		billType string
		want     wxpay.TradeBillSummary
	}{
		{wxpay.BillTypeSuccess, wxpay.TradeBillSummary{Count: 1, SettlementTotal: 500, Fee: 300000, OrderTotal: 500}},
		{wxpay.BillTypeRefund, wxpay.TradeBillSummary{Count: 1, Refund: 200, Fee: -120000, RequestedRefund: 200}},
	} {
		rows, sum, err := downloadTrade(t, c, wxpay.TradeBillRequest{Date: billDay, BillType: tc.billType})
		if err != nil {
			t.Fatalf("%s: %v", tc.billType, err)
		}
		if sum != tc.want || len(rows) != 1 {
			t.Errorf("%s: summary %+v (%d rows), want %+v", tc.billType, sum, len(rows), tc.want)
		}
	}
}

func TestFundFlowBill(t *testing.T) {
	srv, _ := billPlatform(t, wxpaytest.ModeCertificate)
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	at := billDay.Add(10 * time.Hour)
	srv.Bills().AddFundFlowRows(
		wxpaytest.FundFlowBillRow{Time: at, MchID: m.MchID, TransactionID: "4200T1", FlowID: "F1", BusinessName: "微信支付", BusinessType: "交易", Income: true, Amount: 12345, Balance: 12345, Applicant: "system", Note: "line one\nline two"},
		wxpaytest.FundFlowBillRow{Time: at.Add(time.Minute), MchID: m.MchID, TransactionID: "5030R1", FlowID: "F2", BusinessName: "微信支付", BusinessType: "退款", Amount: 105, Balance: 12240, Applicant: "system"},
		wxpaytest.FundFlowBillRow{Time: at, MchID: m.MchID, AccountType: wxpay.AccountTypeOperation, FlowID: "OP", BusinessType: "其他", Income: true, Amount: 1},
	)
	c := newClient(t, srv, m, nil)
	bill, err := c.ApplyFundFlowBill(ctx, wxpay.FundFlowBillRequest{Date: billDay, Gzip: true})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := c.DownloadBill(ctx, bill, &buf); err != nil {
		t.Fatal(err)
	}
	fr := wxpay.NewFundFlowReader(&buf)
	var rows []wxpay.FundFlowRow
	for {
		row, err := fr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, row)
	}
	if len(rows) != 2 || rows[0].Note != "line one\nline two" || rows[0].Direction != wxpay.FundFlowIncome || rows[1].Amount != 105 {
		t.Errorf("rows = %+v", rows)
	}
	want := wxpay.FundFlowSummary{Count: 2, IncomeCount: 1, Income: 12345, ExpenseCount: 1, Expense: 105}
	if got := fr.Summary(); got != want {
		t.Errorf("summary = %+v, want %+v", got, want)
	}
}

func TestBillApplicationErrors(t *testing.T) {
	srv, clk := billPlatform(t, wxpaytest.ModePublicKey)
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	srv.Bills().AddTradeRows(payment(m.MchID, "", "T1", 100, billDay.Add(time.Hour)))
	srv.Bills().SetOptions(wxpaytest.BillOptions{ReadyAfter: 12 * time.Hour}) // the clock says 11:00
	c := newClient(t, srv, m, nil)

	_, err := c.ApplyTradeBill(ctx, wxpay.TradeBillRequest{Date: billDay})
	if !errors.Is(err, wxpay.ErrStatementCreating) {
		t.Fatalf("before the bill is ready: %v, want ErrStatementCreating", err)
	}
	var apiErr *wxpay.APIError
	if !errors.As(err, &apiErr) || !apiErr.Verified || apiErr.StatusCode != 400 {
		t.Errorf("STATEMENT_CREATING answer: %+v, want a verified 400", apiErr)
	}
	clk.Add(time.Hour)
	if _, err := c.ApplyTradeBill(ctx, wxpay.TradeBillRequest{Date: billDay}); err != nil {
		t.Fatalf("at the ready time: %v", err)
	}
	_, err = c.ApplyTradeBill(ctx, wxpay.TradeBillRequest{Date: billDay.AddDate(0, 0, -1)})
	if !errors.Is(err, wxpay.ErrNoStatementExist) || errors.Is(err, wxpay.ErrStatementCreating) {
		t.Errorf("a day without trades: %v, want ErrNoStatementExist", err)
	}
	if _, err := c.ApplyFundFlowBill(ctx, wxpay.FundFlowBillRequest{Date: billDay}); !errors.Is(err, wxpay.ErrNoStatementExist) {
		t.Errorf("a day without fund flow: %v, want ErrNoStatementExist", err)
	}
	if _, err := c.ApplyTradeBill(ctx, wxpay.TradeBillRequest{}); !errors.Is(err, wxpay.ErrInvalidConfig) {
		t.Errorf("no date: %v, want ErrInvalidConfig", err)
	}
}

func TestBillDownloadErrors(t *testing.T) {
	srv, clk := billPlatform(t, wxpaytest.ModePublicKey)
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	other := srv.AddMerchant(wxpaytest.MerchantOptions{})
	srv.Bills().AddTradeRows(payment(m.MchID, "", "T1", 100, billDay.Add(time.Hour)))
	c := newClient(t, srv, m, nil)

	t.Run("hash mismatch", func(t *testing.T) {
		for _, gz := range []bool{false, true} {
			srv.Bills().SetOptions(wxpaytest.BillOptions{CorruptHash: true})
			bill, err := c.ApplyTradeBill(ctx, wxpay.TradeBillRequest{Date: billDay, Gzip: gz})
			srv.Bills().SetOptions(wxpaytest.BillOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			err = c.DownloadBill(ctx, bill, &buf)
			if !errors.Is(err, wxpay.ErrBillHashMismatch) {
				t.Fatalf("gzip %v: %v, want ErrBillHashMismatch", gz, err)
			}
			if wxpay.IsRetryable(err) {
				t.Errorf("a hash mismatch is retryable")
			}
		}
	})
	t.Run("hash compared case-insensitively", func(t *testing.T) {
		bill, err := c.ApplyTradeBill(ctx, wxpay.TradeBillRequest{Date: billDay})
		if err != nil {
			t.Fatal(err)
		}
		bill.HashValue = strings.ToUpper(bill.HashValue)
		if err := c.DownloadBill(ctx, bill, io.Discard); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("expired url", func(t *testing.T) {
		srv.Bills().SetOptions(wxpaytest.BillOptions{URLValidity: 30 * time.Second})
		defer srv.Bills().SetOptions(wxpaytest.BillOptions{})
		bill, err := c.ApplyTradeBill(ctx, wxpay.TradeBillRequest{Date: billDay})
		if err != nil {
			t.Fatal(err)
		}
		clk.Add(30 * time.Second)
		err = c.DownloadBill(ctx, bill, io.Discard)
		if !errors.Is(err, wxpay.ErrInvalidRequest) {
			t.Fatalf("expired download_url: %v, want ErrInvalidRequest", err)
		}
		var apiErr *wxpay.APIError
		if !errors.As(err, &apiErr) || !apiErr.Verified {
			t.Errorf("INVALID_REQUEST answer not verified: %v", err)
		}
	})
	t.Run("another merchant", func(t *testing.T) {
		bill, err := c.ApplyTradeBill(ctx, wxpay.TradeBillRequest{Date: billDay})
		if err != nil {
			t.Fatal(err)
		}
		oc := newClient(t, srv, other, nil)
		if err := oc.DownloadBill(ctx, bill, io.Discard); !errors.Is(err, wxpay.ErrNoAuth) {
			t.Errorf("download by another merchant: %v, want ErrNoAuth", err)
		}
	})
	t.Run("foreign host", func(t *testing.T) {
		bill, err := c.ApplyTradeBill(ctx, wxpay.TradeBillRequest{Date: billDay})
		if err != nil {
			t.Fatal(err)
		}
		before := srv.Requests("GET /v3/billdownload/file")
		for _, u := range []string{
			strings.Replace(bill.DownloadURL, "127.0.0.1", "example.com", 1),
			"http://api.mch.weixin.qq.com/v3/billdownload/file?token=x",
			"https://api.mch.weixin.qq.com.evil.example/v3/billdownload/file?token=x",
		} {
			b := *bill
			b.DownloadURL = u
			if err := c.DownloadBill(ctx, &b, io.Discard); !errors.Is(err, wxpay.ErrMalformed) {
				t.Errorf("download_url %s: %v, want ErrMalformed before any request", u, err)
			}
		}
		if n := srv.Requests("GET /v3/billdownload/file") - before; n != 0 {
			t.Errorf("%d signed requests went out for foreign download_urls, want none", n)
		}
	})
	t.Run("bad answer signature on the application", func(t *testing.T) {
		srv.SetBadAnswerSignatures(true)
		defer srv.SetBadAnswerSignatures(false)
		if _, err := c.ApplyTradeBill(ctx, wxpay.TradeBillRequest{Date: billDay}); !errors.Is(err, wxpay.ErrBadSignature) {
			t.Errorf("application answered with a bad signature: %v, want ErrBadSignature", err)
		}
	})
}

// failingWriter fails its second write.
type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n++; w.n > 1 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

func TestBillDownloadWriterError(t *testing.T) {
	srv, _ := billPlatform(t, wxpaytest.ModePublicKey)
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	var rows []wxpaytest.BillRow
	for i := range 2000 {
		rows = append(rows, payment(m.MchID, "", "T"+strings.Repeat("x", i%20), 100, billDay.Add(time.Hour)))
	}
	srv.Bills().AddTradeRows(rows...)
	c := newClient(t, srv, m, nil)
	bill, err := c.ApplyTradeBill(ctx, wxpay.TradeBillRequest{Date: billDay})
	if err != nil {
		t.Fatal(err)
	}
	err = c.DownloadBill(ctx, bill, &failingWriter{})
	if err == nil || !strings.Contains(err.Error(), "disk full") || errors.Is(err, wxpay.ErrTransport) || wxpay.IsRetryable(err) {
		t.Errorf("writer failure: %v, want the writer's error, not a transport error", err)
	}
}
