package ingress

import (
	"encoding/json"
	"testing"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// merchantResources are resources the merchant check must read exactly as
// json.Unmarshal does; scanned marks those the scanner must decode itself
// rather than leave to json.Unmarshal.
var merchantResources = []struct {
	json    string
	scanned bool
}{
	{`{"mchid":"1230000109","out_trade_no":"x","amount":{"total":1,"currency":"CNY"},"payer":{"openid":"o"}}`, true},
	{`{"sp_mchid":"1900000100","sub_mchid":"1900000109","combine_mchid":"1230000109"}`, true},
	{` { "promotion_detail" : [ {"mchid":"999","goods_detail":[{"a":"b\"}"}]} ] , "mchid" : "1230000109" } `, true},
	{`{"attach":"{\"mchid\":\"999\"}","mchid":"1230000109","n":-1.5e+3,"t":true,"f":false,"z":null}`, true},
	{`{"mchid":"1","mchid":"2"}`, true}, // the last one wins, as in json.Unmarshal
	{`{"summary":"支付成功","mchid":"1230000109"}`, true},
	{`{}`, true},
	{`{"MCHID":"999"}`, false}, // json.Unmarshal matches keys ignoring case
	{`{"mchid":"123","Sp_MchId":"9"}`, false},
	{`{"mch\u0069d":"999"}`, false},          // an escaped key
	{`{"mchid":"12\u00330000109"}`, false},   // an escaped value
	{`{"mchid":123}`, false},                 // a number: json.Unmarshal's type error
	{`{"mchid":null,"sp_mchid":"1"}`, false}, // null leaves the field alone
	{`{"mchid":["1"]}`, false},
	{`{"ſp_mchid":"9"}`, false}, // a non-ASCII key (json.Unmarshal folds ſ to s)
	{`["mchid"]`, false},
	{`"mchid"`, false},
}

func TestScanMerchantsAgreesWithUnmarshal(t *testing.T) {
	for _, c := range merchantResources {
		var fast resourceMerchants
		ok := scanMerchants([]byte(c.json), &fast)
		if ok != c.scanned {
			t.Errorf("%s: scanned %v, want %v", c.json, ok, c.scanned)
		}
		if !ok {
			continue
		}
		var slow resourceMerchants
		if err := json.Unmarshal([]byte(c.json), &slow); err != nil {
			t.Fatalf("%s: %v", c.json, err)
		}
		if fast != slow {
			t.Errorf("%s: scanned %+v, json.Unmarshal %+v", c.json, fast, slow)
		}
	}
}

// FuzzScanMerchants: whenever the scanner decodes a valid JSON text itself,
// it finds what json.Unmarshal finds.
func FuzzScanMerchants(f *testing.F) {
	for _, c := range merchantResources {
		f.Add([]byte(c.json))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return
		}
		var fast resourceMerchants
		if !scanMerchants(b, &fast) {
			return
		}
		var slow resourceMerchants
		if err := json.Unmarshal(b, &slow); err != nil {
			t.Fatalf("%q: scanned %+v but json.Unmarshal fails: %v", b, fast, err)
		}
		if fast != slow {
			t.Fatalf("%q: scanned %+v, json.Unmarshal %+v", b, fast, slow)
		}
	})
}

// BenchmarkCheckResourceMerchant compares the merchant check on a payment
// resource as scanned (the envelope already proved it valid JSON) and
// decoded by json.Unmarshal (the fallback, and what every notification
// paid before):
//
//	go test -run '^$' -bench CheckResourceMerchant -benchmem ./internal/ingress/
func BenchmarkCheckResourceMerchant(b *testing.B) {
	resource := []byte(`{"mchid":"1230000109","appid":"wxd678efh567hg6787","out_trade_no":"1217752501201407033233368018",` +
		`"transaction_id":"1217752501201407033233368018","trade_type":"JSAPI","trade_state":"SUCCESS","trade_state_desc":"支付成功",` +
		`"bank_type":"CMC","attach":"","success_time":"2018-06-08T10:34:56+08:00","payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},` +
		`"amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"}}`)
	srv := wxpaytest.NewServer(b, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	c, err := wxpay.NewClient(srv.ClientConfig(srv.AddMerchant(wxpaytest.MerchantOptions{MchID: "1230000109"})))
	if err != nil {
		b.Fatal(err)
	}
	m := &Merchant{MchID: "1230000109", Client: c}
	for _, valid := range []bool{true, false} {
		name := map[bool]string{true: "scan", false: "unmarshal"}[valid]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := checkResourceMerchant(m, resource, valid); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
