package wxpaytest_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

func TestOrderStateMachine(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	moves := map[string]func(string) (wxpaytest.Order, error){
		wxpay.TradeStateSuccess:    srv.Pay,
		wxpay.TradeStatePayError:   srv.FailPayment,
		wxpay.TradeStateRevoked:    srv.Revoke,
		wxpay.TradeStateUserPaying: srv.StartPaying,
		wxpay.TradeStateClosed:     srv.CloseOrder,
	}
	n := 0
	for from, setUp := range map[string]func(string) (wxpaytest.Order, error){
		wxpay.TradeStateNotPay:     nil,
		wxpay.TradeStateUserPaying: srv.StartPaying,
		wxpay.TradeStateSuccess:    srv.Pay,
		wxpay.TradeStateClosed:     srv.CloseOrder,
		wxpay.TradeStatePayError:   srv.FailPayment,
	} {
		for to, move := range moves {
			n++
			no := "ORDER-" + from + "-" + to
			if _, err := srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: no, Total: 100}); err != nil {
				t.Fatal(err)
			}
			if setUp != nil {
				if _, err := setUp(no); err != nil {
					t.Fatal(err)
				}
			}
			got, err := move(no)
			allowed := from == wxpay.TradeStateNotPay || (from == wxpay.TradeStateUserPaying && to != wxpay.TradeStateUserPaying)
			if allowed && (err != nil || got.TradeState != to) {
				t.Errorf("%s -> %s: %+v, %v", from, to, got, err)
			}
			if !allowed && !errors.Is(err, wxpaytest.ErrBadTransition) {
				t.Errorf("%s -> %s allowed: %v", from, to, err)
			}
			if allowed && to == wxpay.TradeStateSuccess && (got.TransactionID == "" || got.SuccessTime.IsZero() || got.Payer.OpenID == "") {
				t.Errorf("paid order lacks transaction_id, success_time or payer: %+v", got)
			}
		}
	}
	if len(srv.Orders()) != n {
		t.Fatalf("%d orders, want %d", len(srv.Orders()), n)
	}
	if _, err := srv.Pay("NO-SUCH-ORDER"); !errors.Is(err, wxpaytest.ErrUnknown) {
		t.Fatalf("paying an unknown order: %v", err)
	}
}

func TestPaymentAndRefundNotificationsVerify(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	c, err := wxpay.NewClient(srv.ClientConfig(m))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: "ORDER-0001", Total: 250, Attach: "cart=7"})
	if _, err := srv.PaymentNotification("ORDER-0001", wxpaytest.NotificationOptions{}); !errors.Is(err, wxpaytest.ErrBadTransition) {
		t.Fatalf("notification of an unpaid order: %v", err)
	}
	paid, _ := srv.Pay("ORDER-0001")
	n, err := srv.PaymentNotification("ORDER-0001", wxpaytest.NotificationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.ParseNotification(ctx, n.Header, n.Body)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := got.Transaction()
	if err != nil || got.EventType != wxpay.EventTransactionSuccess || tx.TransactionID != paid.TransactionID ||
		tx.TradeState != wxpay.TradeStateSuccess || tx.Amount.Total != 250 || tx.Attach != "cart=7" || tx.MchID != m.MchID {
		t.Fatalf("payment notification: %+v, %v", tx, err)
	}

	// Refund through the API, then finish it on the platform.
	if _, err := c.CreateRefund(ctx, &wxpay.RefundRequest{TransactionID: paid.TransactionID, OutRefundNo: "REFUND-1", Refund: 250, Total: 250}); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.RefundNotification("REFUND-1", wxpaytest.NotificationOptions{}); !errors.Is(err, wxpaytest.ErrBadTransition) {
		t.Fatalf("notification of a PROCESSING refund: %v", err)
	}
	srv.FailRefund("REFUND-1")
	n, err = srv.RefundNotification("REFUND-1", wxpaytest.NotificationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err = c.ParseNotification(ctx, n.Header, n.Body)
	if err != nil {
		t.Fatal(err)
	}
	rn, err := got.Refund()
	if err != nil || got.EventType != wxpay.EventRefundAbnormal || rn.RefundStatus != wxpay.RefundStatusAbnormal ||
		rn.OutRefundNo != "REFUND-1" || rn.Amount.Refund != 250 || rn.MchID != m.MchID {
		t.Fatalf("refund notification: %+v, %v", rn, err)
	}
}

// A request naming another merchant than the one that signed it is refused.
func TestOrderEndpointsCheckTheMerchant(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	c, _ := wxpay.NewClient(srv.ClientConfig(m))
	srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: "ORDER-0001"})
	_, err := c.Do(context.Background(), wxpay.Request{Method: http.MethodGet, Path: "/v3/pay/transactions/out-trade-no/ORDER-0001?mchid=1900000000"})
	if !errors.Is(err, wxpay.ErrParamError) {
		t.Fatalf("query for another mchid: %v", err)
	}
	_, err = c.Do(context.Background(), wxpay.Request{Method: http.MethodGet, Path: "/v3/pay/transactions/out-trade-no/ORDER-0001?mchid=" + m.MchID})
	if err != nil {
		t.Fatalf("query: %v", err)
	}
}

func TestRateLimitTokenBucket(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, Now: clock})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	other := srv.AddMerchant(wxpaytest.MerchantOptions{})
	c, _ := wxpay.NewClient(srv.ClientConfig(m))
	c2, _ := wxpay.NewClient(srv.ClientConfig(other))
	srv.SetRateLimit(2, 3)
	query := func(c *wxpay.Client) error {
		_, err := c.QueryOrderByOutTradeNo(context.Background(), "", "NO-SUCH-ORDER")
		if errors.Is(err, wxpay.ErrOrderNotExist) {
			return nil
		}
		return err
	}
	for i := range 3 { // the burst
		if err := query(c); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if err := query(c); !errors.Is(err, wxpay.ErrRateLimited) {
		t.Fatalf("over the burst: %v", err)
	}
	if err := query(c2); err != nil {
		t.Fatalf("another merchant is limited too: %v", err)
	}
	mu.Lock()
	now = now.Add(500 * time.Millisecond) // one token at 2 per second
	mu.Unlock()
	if err := query(c); err != nil {
		t.Fatalf("after refill: %v", err)
	}
	if err := query(c); !errors.Is(err, wxpay.ErrRateLimited) {
		t.Fatalf("refilled more than one token: %v", err)
	}
	srv.SetRateLimit(0, 0)
	if err := query(c); err != nil {
		t.Fatalf("limit lifted: %v", err)
	}
}
