package wxpay_test

import (
	"errors"
	"net/http"
	"testing"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// paidOrder places and pays an order of 100 fen and returns its transaction_id.
func paidOrder(t *testing.T, srv *wxpaytest.Server, c *wxpay.Client, sub, outTradeNo string) string {
	t.Helper()
	if _, err := c.PrepayJSAPI(ctx, prepayRequest(sub, outTradeNo)); err != nil {
		t.Fatal(err)
	}
	o, err := srv.Pay(outTradeNo)
	if err != nil {
		t.Fatal(err)
	}
	return o.TransactionID
}

func TestRefundLifecycle(t *testing.T) {
	modes(t, func(t *testing.T, partner bool) {
		srv, _, c, sub := orderPlatform(t, partner)
		txID := paidOrder(t, srv, c, sub, "ORDER-0001")
		req := &wxpay.RefundRequest{SubMchID: sub, TransactionID: txID, OutRefundNo: "REFUND-1", Reason: "商品已售完",
			NotifyURL: "https://www.weixin.qq.com/wxpay/refund.php", Refund: 40, Total: 100}
		r, err := c.CreateRefund(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != wxpay.RefundStatusProcessing || r.RefundID == "" || r.OutTradeNo != "ORDER-0001" ||
			r.TransactionID != txID || r.Amount.Refund != 40 || r.Amount.Total != 100 || r.SuccessTime != "" {
			t.Fatalf("created refund: %+v", r)
		}
		// A retry with the same out_refund_no is the same refund, not a second one.
		again, err := c.CreateRefund(ctx, req)
		if err != nil || again.RefundID != r.RefundID || len(srv.Refunds()) != 1 {
			t.Fatalf("retried refund: %+v, %v (%d refunds)", again, err, len(srv.Refunds()))
		}
		if tx, _ := c.QueryOrderByOutTradeNo(ctx, sub, "ORDER-0001"); tx.TradeState != wxpay.TradeStateRefund {
			t.Fatalf("order after a refund: %s", tx.TradeState)
		}
		got, err := c.QueryRefund(ctx, sub, "REFUND-1")
		if err != nil || got.Status != wxpay.RefundStatusProcessing {
			t.Fatalf("query: %+v, %v", got, err)
		}
		if _, err := srv.CompleteRefund("REFUND-1"); err != nil {
			t.Fatal(err)
		}
		got, err = c.QueryRefund(ctx, sub, "REFUND-1")
		if err != nil || got.Status != wxpay.RefundStatusSuccess || got.SuccessTime == "" || got.RefundID != r.RefundID {
			t.Fatalf("query after success: %+v, %v", got, err)
		}
		// More than what is left to refund is refused.
		over := &wxpay.RefundRequest{SubMchID: sub, OutTradeNo: "ORDER-0001", OutRefundNo: "REFUND-2", Refund: 61, Total: 100}
		if _, err := c.CreateRefund(ctx, over); !errors.Is(err, wxpay.ErrInvalidRequest) {
			t.Fatalf("refund over the order: %v", err)
		}
	})
}

func TestRefundFinalStates(t *testing.T) {
	srv, _, c, _ := orderPlatform(t, false)
	paidOrder(t, srv, c, "", "ORDER-0001")
	finish := map[string]func(string) (wxpaytest.RefundRecord, error){
		wxpay.RefundStatusSuccess:  srv.CompleteRefund,
		wxpay.RefundStatusAbnormal: srv.FailRefund,
		wxpay.RefundStatusClosed:   srv.CloseRefund,
	}
	for status, f := range finish {
		no := "REFUND-" + status
		if _, err := c.CreateRefund(ctx, &wxpay.RefundRequest{OutTradeNo: "ORDER-0001", OutRefundNo: no, Refund: 10, Total: 100}); err != nil {
			t.Fatal(err)
		}
		if _, err := f(no); err != nil {
			t.Fatal(err)
		}
		if r, err := c.QueryRefund(ctx, "", no); err != nil || r.Status != status {
			t.Fatalf("%s: %+v, %v", status, r, err)
		}
		if _, err := srv.CompleteRefund(no); !errors.Is(err, wxpaytest.ErrBadTransition) {
			t.Fatalf("a %s refund moved on: %v", status, err)
		}
	}
}

func TestRefundErrors(t *testing.T) {
	srv, _, c, _ := orderPlatform(t, false)
	_, err := c.QueryRefund(ctx, "", "NO-SUCH-REFUND")
	var apiErr *wxpay.APIError
	if !errors.Is(err, wxpay.ErrResourceNotExists) || !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound || wxpay.IsRetryable(err) {
		t.Fatalf("unknown refund: %v", err)
	}
	if _, err := c.PrepayApp(ctx, prepayRequest("", "UNPAID-001")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateRefund(ctx, &wxpay.RefundRequest{OutTradeNo: "UNPAID-001", OutRefundNo: "R1", Refund: 1, Total: 100}); !errors.Is(err, wxpay.ErrInvalidRequest) {
		t.Fatalf("refund of an unpaid order: %v", err)
	}
	both := &wxpay.RefundRequest{OutTradeNo: "UNPAID-001", TransactionID: "4200", OutRefundNo: "R1", Refund: 1, Total: 100}
	if _, err := c.CreateRefund(ctx, both); !errors.Is(err, wxpay.ErrInvalidConfig) {
		t.Fatalf("refund naming its order twice: %v", err)
	}
	srv.RateLimitNext(1)
	if _, err := c.QueryRefund(ctx, "", "NO-SUCH-REFUND"); !errors.Is(err, wxpay.ErrRateLimited) || !wxpay.IsRetryable(err) {
		t.Fatalf("rate limited refund query: %v", err)
	}
}

// Some documents spell the closed state CLOSE; the SDK reads it as CLOSED.
func TestQueryRefundNormalisesClose(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	srv.HandleAPI("GET /v3/refund/domestic/refunds/{no}", func(c *wxpaytest.Call) (int, any) {
		return http.StatusOK, map[string]any{"refund_id": "50000000382019052709732678859", "out_refund_no": c.Request.PathValue("no"),
			"transaction_id": "1217752501201407033233368018", "out_trade_no": "1217752501201407033233368018",
			"status": "CLOSE", "amount": map[string]any{"total": 100, "refund": 100}}
	})
	c := newClient(t, srv, srv.AddMerchant(wxpaytest.MerchantOptions{}), nil)
	r, err := c.QueryRefund(ctx, "", "1217752501201407033233368018")
	if err != nil || r.Status != wxpay.RefundStatusClosed {
		t.Fatalf("CLOSE: %+v, %v", r, err)
	}
}
