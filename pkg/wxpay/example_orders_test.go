package wxpay_test

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// Place a JSAPI (or mini-program) order and sign what the page needs to
// start the payment; Native and H5 orders answer a code_url and an h5_url.
func ExampleClient_PrepayJSAPI() {
	platform := wxpaytest.NewServer(nil, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	defer platform.Close()
	client, err := wxpay.NewClient(platform.ClientConfig(platform.AddMerchant(wxpaytest.MerchantOptions{MchID: "1230000109"})))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()

	order := &wxpay.PrepayRequest{
		AppID:       "wxd678efh567hg6787",
		Description: "Image形象店-深圳腾大-QQ公仔",
		OutTradeNo:  "1217752501201407033233368018",
		NotifyURL:   "https://www.weixin.qq.com/wxpay/pay.php",
		Total:       100, // fen
		Payer:       &wxpay.Payer{OpenID: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
	}
	prepayID, err := client.PrepayJSAPI(ctx, order)
	if err != nil {
		panic(err)
	}
	params, err := client.JSAPIPayParams(order.AppID, prepayID)
	if err != nil {
		panic(err)
	}
	fmt.Println(params.Package == "prepay_id="+prepayID, params.SignType)

	order.OutTradeNo = "1217752501201407033233368019"
	codeURL, err := client.PrepayNative(ctx, order)
	if err != nil {
		panic(err)
	}
	fmt.Println(strings.HasPrefix(codeURL, "weixin://wxpay/bizpayurl?pr="))
	// Output:
	// true RSA
	// true
}

// Query an order when its notification does not come, and close it when it
// stays unpaid; a paid order cannot be closed.
func ExampleClient_QueryOrderByOutTradeNo() {
	platform := wxpaytest.NewServer(nil, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	defer platform.Close()
	m := platform.AddMerchant(wxpaytest.MerchantOptions{MchID: "1230000109"})
	platform.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: "ORDER-UNPAID", Total: 100})
	platform.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: "ORDER-PAID", Total: 100})
	platform.Pay("ORDER-PAID")
	client, err := wxpay.NewClient(platform.ClientConfig(m))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()

	for _, no := range []string{"ORDER-UNPAID", "ORDER-PAID", "ORDER-UNKNOWN"} {
		// In partner mode the first argument is the sub_mchid.
		tx, err := client.QueryOrderByOutTradeNo(ctx, "", no)
		switch {
		case errors.Is(err, wxpay.ErrOrderNotExist):
			fmt.Println(no, "does not exist")
			continue
		case err != nil:
			panic(err)
		}
		fmt.Println(no, tx.TradeState, tx.TransactionID != "")
		if tx.TradeState == wxpay.TradeStateNotPay {
			fmt.Println("close:", client.CloseOrder(ctx, "", no))
		}
	}
	err = client.CloseOrder(ctx, "", "ORDER-PAID")
	fmt.Println("close paid:", errors.Is(err, wxpay.ErrOrderPaid))
	// Output:
	// ORDER-UNPAID NOTPAY false
	// close: <nil>
	// ORDER-PAID SUCCESS true
	// ORDER-UNKNOWN does not exist
	// close paid: true
}

// Refund a payment and follow the refund: the answer is usually
// PROCESSING, and QueryRefund (or the REFUND.* notification) tells the end.
func ExampleClient_CreateRefund() {
	platform := wxpaytest.NewServer(nil, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	defer platform.Close()
	m := platform.AddMerchant(wxpaytest.MerchantOptions{MchID: "1230000109"})
	platform.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: "ORDER-1", Total: 100})
	platform.Pay("ORDER-1")
	client, err := wxpay.NewClient(platform.ClientConfig(m))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()

	// Retry a failed request with the same out_refund_no: a new number
	// would refund twice.
	r, err := client.CreateRefund(ctx, &wxpay.RefundRequest{
		OutTradeNo: "ORDER-1", OutRefundNo: "REFUND-1", Reason: "商品已售完", Refund: 30, Total: 100,
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(r.OutRefundNo, r.Status, r.Amount.Refund)

	platform.CompleteRefund("REFUND-1") // the money reached the payer
	r, err = client.QueryRefund(ctx, "", "REFUND-1")
	if err != nil {
		panic(err)
	}
	fmt.Println(r.OutRefundNo, r.Status)

	_, err = client.QueryRefund(ctx, "", "REFUND-UNKNOWN")
	fmt.Println(errors.Is(err, wxpay.ErrResourceNotExists))
	// Output:
	// REFUND-1 PROCESSING 30
	// REFUND-1 SUCCESS
	// true
}
