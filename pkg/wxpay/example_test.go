package wxpay_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// Verify and decrypt a notification in a net/http handler: NotifyHandler
// reads the raw body, verifies it, decrypts it, calls the function and
// answers WeChat.
func ExampleNotifyHandler() {
	platform := wxpaytest.NewServer(nil, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	defer platform.Close()
	m := platform.AddMerchant(wxpaytest.MerchantOptions{MchID: "1230000109"})
	client, err := wxpay.NewClient(platform.ClientConfig(m))
	if err != nil {
		panic(err)
	}

	mux := http.NewServeMux()
	mux.Handle("POST /notify", wxpay.NotifyHandler(client, func(ctx context.Context, n *wxpay.Notification) error {
		tx, err := n.Transaction()
		if err != nil {
			return err
		}
		fmt.Println(n.EventType, tx.OutTradeNo, tx.Amount.Total)
		return nil // only once the payment is recorded durably
	}))

	n, _ := platform.NewNotification(m, wxpay.EventTransactionSuccess,
		`{"mchid":"1230000109","out_trade_no":"ORDER-1","transaction_id":"4200000215201811190261405420","trade_state":"SUCCESS","amount":{"total":100}}`,
		wxpaytest.NotificationOptions{})
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, n.Request("/notify"))
	fmt.Println(rec.Code, rec.Body)

	// A framework that re-encodes the body breaks the signature.
	tampered := n.Request("/notify")
	tampered.Body = httptestBody(strings.Replace(string(n.Body), "支付成功", `\u652f\u4ed8\u6210\u529f`, 1))
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, tampered)
	fmt.Println(rec.Code)
	// Output:
	// TRANSACTION.SUCCESS ORDER-1 100
	// 200 {"code":"SUCCESS","message":"成功"}
	// 401
}

// Configure public-key mode: merchants onboarded since 2024 have the WeChat
// Pay public key and its id instead of platform certificates.
func ExampleNewClient_publicKeyMode() {
	platform := wxpaytest.NewServer(nil, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	defer platform.Close()
	m := platform.AddMerchant(wxpaytest.MerchantOptions{})

	// What a deployment reads from files: apiclient_key.pem and the public
	// key downloaded from the merchant console.
	key, err := wxpay.LoadPrivateKey(wxpaytest.PrivateKeyPEM(m.PrivateKey))
	if err != nil {
		panic(err)
	}
	pub, err := wxpay.LoadPublicKey(wxpaytest.PublicKeyPEM(&platform.PublicKey().PrivateKey.PublicKey))
	if err != nil {
		panic(err)
	}
	client, err := wxpay.NewClient(wxpay.Config{
		MchID:        m.MchID,
		Signer:       key,
		CertSerialNo: m.CertSerialNo,
		APIv3Key:     m.APIv3Key,
		PublicKey:    pub,
		PublicKeyID:  "PUB_KEY_ID_0000000000000024101100397200000006",
		BaseURL:      platform.URL(), // omit in production
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(client.KeyIDs())

	_, err = wxpay.NewClient(wxpay.Config{MchID: m.MchID, APIv3Key: "too short", PublicKey: pub, PublicKeyID: "PUB_KEY_ID_1"})
	fmt.Println(err)
	// Output:
	// [PUB_KEY_ID_0000000000000024101100397200000006]
	// wxpay: invalid configuration: APIv3 key must be exactly 32 bytes, got 9 (copy it again from the merchant console: API安全 → APIv3密钥)
}

// Sign a JSAPI (or mini-program) payment: the parameters go to
// WeixinJSBridge.invoke("getBrandWCPayRequest", …) or wx.requestPayment.
func ExampleClient_JSAPIPayParams() {
	platform := wxpaytest.NewServer(nil, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	defer platform.Close()
	m := platform.AddMerchant(wxpaytest.MerchantOptions{})
	client, err := wxpay.NewClient(platform.ClientConfig(m))
	if err != nil {
		panic(err)
	}
	p, err := client.JSAPIPayParams("wx2421b1c4370ec43b", "wx201410272009395522657a690389285100")
	if err != nil {
		panic(err)
	}
	fmt.Println(p.AppID, p.Package, p.SignType, len(p.NonceStr), p.PaySign != "")
	// Output:
	// wx2421b1c4370ec43b prepay_id=wx201410272009395522657a690389285100 RSA 32 true
}

// A refund made in the merchant console may arrive as a v2 notification:
// parse it with the merchant's API v2 key, then map it onto the v3 refund
// resource that REFUND.* handlers already understand.
func ExampleV2Notification_Refund() {
	const apiV2Key = "192006250b4c09247ec02edce69f6a2d"
	body := wxpaytest.V2RefundNotification(
		map[string]string{"mch_id": "1230000109", "appid": "wxd678efh567hg6787"},
		map[string]string{
			"refund_id": "50000000382019052709732678859", "out_refund_no": "R1001",
			"transaction_id": "4200000000000000000000000001", "out_trade_no": "T1001",
			"refund_status": "SUCCESS", "success_time": "2024-01-02 11:04:05",
			"total_fee": "100", "refund_fee": "100",
		},
		apiV2Key)
	n, err := wxpay.ParseV2Notification(body, apiV2Key)
	if err != nil {
		fmt.Println(err)
		return
	}
	r, err := n.Refund("1230000109")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r.RefundID, r.RefundStatus, r.SuccessTime, r.Amount.Refund)
	// Output:
	// 50000000382019052709732678859 SUCCESS 2024-01-02T11:04:05+08:00 100
}
