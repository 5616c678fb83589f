package wxpaytest_test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

var day = time.Date(2026, 11, 29, 0, 0, 0, 0, wxpay.ChinaTime())

func TestWriteTradeBillFormat(t *testing.T) {
	t.Parallel()
	p := wxpaytest.BillRow{TradeTime: day.Add(13*time.Hour + 51*time.Minute + 31*time.Second), AppID: "wxfdc955f7104ad557",
		MchID: "180023671", TransactionID: "4200006120", OutTradeNo: "T1", OpenID: "oZWa", Total: 1, Description: "测试", Fee: 1}
	r := p
	r.TradeState, r.RefundID, r.OutRefundNo, r.Refund, r.Fee = "REFUND", "503", "R1", 1, -1
	var buf bytes.Buffer
	if err := wxpaytest.WriteTradeBill(&buf, "ALL", slices.Values([]wxpaytest.BillRow{p, r})); err != nil {
		t.Fatal(err)
	}
	want := "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\n" +
		"`2022-03-21 13:51:31,`wxfdc955f7104ad557,`180023671,`0,`,`4200006120,`T1,`oZWa,`JSAPI,`SUCCESS,`OTHERS,`CNY,`0.01,`0.00,`0,`0,`0.00,`0.00,`,`,`测试,`,`0.00001,`0.60%,`0.01,`0.00,`\n" +
		"`2022-03-21 13:51:31,`wxfdc955f7104ad557,`180023671,`0,`,`4200006120,`T1,`oZWa,`JSAPI,`REFUND,`OTHERS,`CNY,`0.01,`0.00,`503,`R1,`0.01,`0.00,`ORIGINAL,`SUCCESS,`测试,`,`-0.00001,`0.60%,`0.01,`0.01,`\n" +
		"总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\n" +
		"`2,`0.01,`0.01,`0.00,`0.00000,`0.01,`0.01\n"
	want = string(bytes.ReplaceAll([]byte(want), []byte("2022-03-21"), []byte("2026-11-29")))
	if got := buf.String(); got != want {
		t.Errorf("bill:\n%s\nwant:\n%s", got, want)
	}
}

func TestBillDownloadEndpoint(t *testing.T) {
	t.Parallel()
	now := day.Add(30 * time.Hour)
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, Now: func() time.Time { return now }})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	var asked []string
	rows := []wxpaytest.BillRow{{TradeTime: day.Add(time.Hour), MchID: m.MchID, OutTradeNo: "FROM-HISTORY", Total: 100}}
	srv.Bills().SetOptions(wxpaytest.BillOptions{TradeRows: func(mchid string, d time.Time) []wxpaytest.BillRow {
		asked = append(asked, mchid+" "+d.Format("2006-01-02"))
		return rows
	}})
	c, err := wxpay.NewClient(srv.ClientConfig(m))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	bill, err := c.ApplyTradeBill(ctx, wxpay.TradeBillRequest{Date: day, Gzip: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(asked, []string{m.MchID + " 2026-11-29"}) {
		t.Errorf("the row source was asked %q", asked)
	}
	var plain bytes.Buffer
	wxpaytest.WriteTradeBill(&plain, "ALL", slices.Values(rows))
	sum := sha1.Sum(plain.Bytes())
	if bill.HashValue != hex.EncodeToString(sum[:]) {
		t.Errorf("hash_value %s is not the SHA-1 of the uncompressed bill", bill.HashValue)
	}

	// The download is authenticated: an unsigned request is refused.
	req, _ := http.NewRequest(http.MethodGet, bill.DownloadURL, nil)
	req.Header.Set("Accept", "*/*")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned download: HTTP %d, want 401", resp.StatusCode)
	}
	// A signed one is answered gzip-compressed and unsigned, as WeChat does.
	var seen http.Header
	cfg := srv.ClientConfig(m)
	cfg.HTTPClient = &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err == nil && r.URL.Path == "/v3/billdownload/file" {
			seen = resp.Header
		}
		return resp, err
	})}
	c2, _ := wxpay.NewClient(cfg)
	var got bytes.Buffer
	if err := c2.DownloadBill(ctx, bill, &got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), plain.Bytes()) {
		t.Errorf("downloaded bill differs from the generated one")
	}
	if seen.Get("Content-Type") != "application/x-gzip" || seen.Get(wxpay.HeaderSignature) != "" {
		t.Errorf("download answer headers %v, want gzip and no signature", seen)
	}

	// The bill of a day that is not over yet cannot be applied for.
	if _, err := c.ApplyTradeBill(ctx, wxpay.TradeBillRequest{Date: day.AddDate(0, 0, 1)}); !errors.Is(err, wxpay.ErrInvalidRequest) {
		t.Errorf("today's bill: %v, want INVALID_REQUEST", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
