package wxpay_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

const subMchID = "1900000109"

// orderPlatform is a fake platform with the order endpoints, a merchant
// and its client; partner makes the client a service provider.
func orderPlatform(t *testing.T, partner bool) (*wxpaytest.Server, *wxpaytest.Merchant, *wxpay.Client, string) {
	t.Helper()
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	c := newClient(t, srv, m, func(cfg *wxpay.Config) { cfg.PartnerMode = partner })
	sub := ""
	if partner {
		sub = subMchID
	}
	return srv, m, c, sub
}

func prepayRequest(sub, outTradeNo string) *wxpay.PrepayRequest {
	r := &wxpay.PrepayRequest{AppID: "wxd678efh567hg6787", SubMchID: sub, Description: "Image形象店-深圳腾大-QQ公仔",
		OutTradeNo: outTradeNo, NotifyURL: "https://www.weixin.qq.com/wxpay/pay.php", Total: 100,
		Payer:     &wxpay.Payer{OpenID: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
		SceneInfo: &wxpay.SceneInfo{PayerClientIP: "14.23.150.211", H5Info: &wxpay.H5Info{Type: "Wap"}}}
	if sub != "" {
		r.Payer = &wxpay.Payer{SubOpenID: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}
	}
	return r
}

func modes(t *testing.T, f func(t *testing.T, partner bool)) {
	for _, partner := range []bool{false, true} {
		name := "direct"
		if partner {
			name = "partner"
		}
		t.Run(name, func(t *testing.T) { f(t, partner) })
	}
}

func TestPrepayEveryTradeType(t *testing.T) {
	modes(t, func(t *testing.T, partner bool) {
		srv, m, c, sub := orderPlatform(t, partner)
		tests := []struct {
			no, tradeType, prefix string
			call                  func(*wxpay.PrepayRequest) (string, error)
		}{
			{"JSAPI-0001", wxpay.TradeTypeJSAPI, "wx", func(r *wxpay.PrepayRequest) (string, error) { return c.PrepayJSAPI(ctx, r) }},
			{"APP-000001", wxpay.TradeTypeApp, "wx", func(r *wxpay.PrepayRequest) (string, error) { return c.PrepayApp(ctx, r) }},
			{"NATIVE-001", wxpay.TradeTypeNative, "weixin://wxpay/bizpayurl?pr=", func(r *wxpay.PrepayRequest) (string, error) { return c.PrepayNative(ctx, r) }},
			{"H5-0000001", wxpay.TradeTypeMWEB, "https://", func(r *wxpay.PrepayRequest) (string, error) { return c.PrepayH5(ctx, r) }},
		}
		for _, tt := range tests {
			got, err := tt.call(prepayRequest(sub, tt.no))
			if err != nil {
				t.Fatalf("%s: %v", tt.tradeType, err)
			}
			if !strings.HasPrefix(got, tt.prefix) || len(got) <= len(tt.prefix) {
				t.Errorf("%s answered %q, want a value starting with %q", tt.tradeType, got, tt.prefix)
			}
			o, ok := srv.Order(tt.no)
			if !ok || o.TradeType != tt.tradeType || o.TradeState != wxpay.TradeStateNotPay || o.Total != 100 ||
				o.MchID != m.MchID || o.SubMchID != sub {
				t.Errorf("%s: the platform holds %+v", tt.tradeType, o)
			}
			// The same request again is the same order (a retry is safe).
			again, err := tt.call(prepayRequest(sub, tt.no))
			if err != nil || again != got {
				t.Errorf("%s repeated: %q, %v; want %q", tt.tradeType, again, err, got)
			}
		}
		// The same out_trade_no with another amount is refused.
		r := prepayRequest(sub, "JSAPI-0001")
		r.Total = 200
		if _, err := c.PrepayJSAPI(ctx, r); !errors.Is(err, wxpay.ErrInvalidRequest) {
			t.Fatalf("reused out_trade_no: %v, want INVALID_REQUEST", err)
		}
	})
}

func TestPrepayChecksItsInputBeforeSending(t *testing.T) {
	srv, _, c, _ := orderPlatform(t, true)
	noSub := prepayRequest("", "ORDER-0001")
	if _, err := c.PrepayNative(ctx, noSub); !errors.Is(err, wxpay.ErrInvalidConfig) {
		t.Errorf("partner prepay without sub_mchid: %v", err)
	}
	noPayer := prepayRequest(subMchID, "ORDER-0001")
	noPayer.Payer = nil
	if _, err := c.PrepayJSAPI(ctx, noPayer); !errors.Is(err, wxpay.ErrInvalidConfig) {
		t.Errorf("JSAPI prepay without payer: %v", err)
	}
	noScene := prepayRequest(subMchID, "ORDER-0001")
	noScene.SceneInfo = nil
	if _, err := c.PrepayH5(ctx, noScene); !errors.Is(err, wxpay.ErrInvalidConfig) {
		t.Errorf("H5 prepay without scene_info: %v", err)
	}
	if _, err := c.QueryOrderByOutTradeNo(ctx, "", "ORDER-0001"); !errors.Is(err, wxpay.ErrInvalidConfig) {
		t.Errorf("partner query without sub_mchid: %v", err)
	}
	if n := srv.Requests("POST /v3/pay/partner/transactions/native") + srv.Requests("POST /v3/pay/partner/transactions/jsapi"); n != 0 {
		t.Errorf("%d requests sent for invalid orders", n)
	}
	_, _, direct, _ := orderPlatform(t, false)
	if err := direct.CloseOrder(ctx, subMchID, "ORDER-0001"); !errors.Is(err, wxpay.ErrInvalidConfig) {
		t.Errorf("direct close with a sub_mchid: %v", err)
	}
}

func TestQueryOrderFollowsPayment(t *testing.T) {
	modes(t, func(t *testing.T, partner bool) {
		srv, m, c, sub := orderPlatform(t, partner)
		if _, err := c.PrepayJSAPI(ctx, prepayRequest(sub, "ORDER-0001")); err != nil {
			t.Fatal(err)
		}
		tx, err := c.QueryOrderByOutTradeNo(ctx, sub, "ORDER-0001")
		if err != nil {
			t.Fatal(err)
		}
		if tx.TradeState != wxpay.TradeStateNotPay || tx.TransactionID != "" || tx.Payer != nil || tx.SuccessTime != "" {
			t.Fatalf("unpaid order: %+v", tx)
		}
		paid, err := srv.Pay("ORDER-0001")
		if err != nil {
			t.Fatal(err)
		}
		for _, query := range []func() (*wxpay.Transaction, error){
			func() (*wxpay.Transaction, error) { return c.QueryOrderByOutTradeNo(ctx, sub, "ORDER-0001") },
			func() (*wxpay.Transaction, error) { return c.QueryOrderByTransactionID(ctx, sub, paid.TransactionID) },
		} {
			tx, err := query()
			if err != nil {
				t.Fatal(err)
			}
			if tx.TradeState != wxpay.TradeStateSuccess || tx.TransactionID != paid.TransactionID || tx.Payer == nil ||
				tx.SuccessTime == "" || tx.Amount == nil || tx.Amount.Total != 100 || tx.Amount.PayerTotal != 100 {
				t.Fatalf("paid order: %+v", tx)
			}
			if partner && (tx.SpMchID != m.MchID || tx.SubMchID != sub || tx.MchID != "" || tx.Payer.SubOpenID == "") {
				t.Fatalf("partner order: %+v %+v", tx, tx.Payer)
			}
			if !partner && (tx.MchID != m.MchID || tx.SubMchID != "" || tx.Payer.OpenID == "") {
				t.Fatalf("direct order: %+v", tx)
			}
		}
		// Another sub-merchant does not see the order.
		if partner {
			if _, err := c.QueryOrderByOutTradeNo(ctx, "1900000110", "ORDER-0001"); !errors.Is(err, wxpay.ErrOrderNotExist) {
				t.Fatalf("order seen by another sub-merchant: %v", err)
			}
		}
	})
}

func TestQueryUnknownOrderIsOrderNotExist(t *testing.T) {
	_, _, c, _ := orderPlatform(t, false)
	for _, query := range []func() (*wxpay.Transaction, error){
		func() (*wxpay.Transaction, error) { return c.QueryOrderByOutTradeNo(ctx, "", "NO-SUCH-ORDER") },
		func() (*wxpay.Transaction, error) {
			return c.QueryOrderByTransactionID(ctx, "", "4200000000000000000000000000")
		},
	} {
		_, err := query()
		var apiErr *wxpay.APIError
		if !errors.Is(err, wxpay.ErrOrderNotExist) || !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound || !apiErr.Verified {
			t.Fatalf("unknown order: %v", err)
		}
		if wxpay.IsRetryable(err) {
			t.Fatal("ORDER_NOT_EXIST is retryable")
		}
	}
	// The older spelling, from a platform that answers it.
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	srv.HandleAPI("GET /v3/pay/transactions/out-trade-no/{no}", func(*wxpaytest.Call) (int, any) {
		return http.StatusNotFound, wxpaytest.ErrorAnswer("ORDERNOTEXIST", "订单不存在")
	})
	old := newClient(t, srv, srv.AddMerchant(wxpaytest.MerchantOptions{}), nil)
	if _, err := old.QueryOrderByOutTradeNo(ctx, "", "NO-SUCH-ORDER"); !errors.Is(err, wxpay.ErrOrderNotExist) {
		t.Fatalf("ORDERNOTEXIST: %v", err)
	}
}

func TestCloseOrder(t *testing.T) {
	modes(t, func(t *testing.T, partner bool) {
		srv, _, c, sub := orderPlatform(t, partner)
		for _, no := range []string{"OPEN-00001", "PAID-00001"} {
			if _, err := c.PrepayNative(ctx, prepayRequest(sub, no)); err != nil {
				t.Fatal(err)
			}
		}
		for range 2 { // closing is re-entrant
			if err := c.CloseOrder(ctx, sub, "OPEN-00001"); err != nil {
				t.Fatal(err)
			}
		}
		if tx, err := c.QueryOrderByOutTradeNo(ctx, sub, "OPEN-00001"); err != nil || tx.TradeState != wxpay.TradeStateClosed {
			t.Fatalf("after close: %+v, %v", tx, err)
		}
		if _, err := srv.Pay("OPEN-00001"); !errors.Is(err, wxpaytest.ErrBadTransition) {
			t.Fatalf("a closed order was paid: %v", err)
		}
		srv.Pay("PAID-00001")
		if err := c.CloseOrder(ctx, sub, "PAID-00001"); !errors.Is(err, wxpay.ErrOrderPaid) || wxpay.IsRetryable(err) {
			t.Fatalf("closing a paid order: %v", err)
		}
		if err := c.CloseOrder(ctx, sub, "NO-SUCH-ORDER"); !errors.Is(err, wxpay.ErrOrderNotExist) {
			t.Fatalf("closing an unknown order: %v", err)
		}
	})
}

func TestRateLimitedIsRetryable(t *testing.T) {
	srv, _, c, _ := orderPlatform(t, false)
	c.PrepayApp(ctx, prepayRequest("", "ORDER-0001"))
	srv.RateLimitNext(1)
	_, err := c.QueryOrderByOutTradeNo(ctx, "", "ORDER-0001")
	var apiErr *wxpay.APIError
	if !errors.Is(err, wxpay.ErrRateLimited) || !wxpay.IsRetryable(err) || !errors.As(err, &apiErr) ||
		apiErr.StatusCode != http.StatusTooManyRequests || apiErr.Code != "FREQUENCY_LIMITED" || !apiErr.Verified {
		t.Fatalf("rate limited: %v", err)
	}
	if _, err := c.QueryOrderByOutTradeNo(ctx, "", "ORDER-0001"); err != nil {
		t.Fatalf("after the limit: %v", err)
	}
}

func TestOrderAnswersAreVerified(t *testing.T) {
	srv, _, c, _ := orderPlatform(t, false)
	c.PrepayApp(ctx, prepayRequest("", "ORDER-0001"))
	srv.SetBadAnswerSignatures(true)
	if tx, err := c.QueryOrderByOutTradeNo(ctx, "", "ORDER-0001"); !errors.Is(err, wxpay.ErrBadSignature) || tx != nil {
		t.Fatalf("badly signed order answer: %+v, %v", tx, err)
	}
	if _, err := c.PrepayNative(ctx, prepayRequest("", "ORDER-0002")); !errors.Is(err, wxpay.ErrBadSignature) {
		t.Fatalf("badly signed prepay answer: %v", err)
	}
	if err := c.CloseOrder(ctx, "", "ORDER-0001"); !errors.Is(err, wxpay.ErrBadSignature) {
		t.Fatalf("badly signed close answer: %v", err)
	}
}
