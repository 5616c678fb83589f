package events

import (
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

const (
	testMchID         = "1230000109"
	testTransactionID = "4200000000000000000000000001"
	testRefundID      = "50000000382019052709732678859"
	testNotifyID      = "EV-2018022511223320873"
)

var testReceivedAt = time.Date(2018, 6, 8, 2, 35, 1, 0, time.UTC)

// paymentPlaintext is the decrypted resource of a v3 payment notification.
func paymentPlaintext(tradeState, transactionID string) json.RawMessage {
	return json.RawMessage(`{"mchid":"1230000109","appid":"wxd678efh567hg6787",` +
		`"out_trade_no":"1217752501201407033233368018","transaction_id":"` + transactionID + `",` +
		`"trade_type":"JSAPI","trade_state":"` + tradeState + `","trade_state_desc":"支付成功","bank_type":"CMC",` +
		`"attach":"a&b","success_time":"2018-06-08T10:34:56+08:00",` +
		`"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},` +
		`"amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"}}`)
}

// refundPlaintext is the decrypted resource of a v3 refund notification.
func refundPlaintext(status, refundID string) json.RawMessage {
	return json.RawMessage(`{"mchid":"1230000109","transaction_id":"4200000000000000000000000001",` +
		`"out_trade_no":"1217752501201407033233368018","refund_id":"` + refundID + `",` +
		`"out_refund_no":"R1217752501201407033233368018","refund_status":"` + status + `",` +
		`"success_time":"2018-06-08T10:34:56+08:00","user_received_account":"招商银行信用卡0403",` +
		`"amount":{"total":999,"refund":999,"payer_total":999,"payer_refund":999}}`)
}

func notification(eventType, originalType string, plaintext json.RawMessage) *wxpay.Notification {
	return &wxpay.Notification{
		ID:           testNotifyID,
		CreateTime:   "2018-06-08T10:34:56+08:00",
		EventType:    eventType,
		ResourceType: wxpay.ResourceTypeEncrypted,
		Summary:      "支付成功",
		Resource:     wxpay.EncryptedResource{OriginalType: originalType, Algorithm: "AEAD_AES_256_GCM"},
		Plaintext:    plaintext,
		KeyID:        "PUB_KEY_ID_0112",
	}
}

func TestDedupeKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"transaction", TransactionKey("4200000001"), "transaction:4200000001:SUCCESS"},
		{"refund success", RefundKey("5000001", "SUCCESS"), "refund:5000001:SUCCESS"},
		{"refund closed", RefundKey("5000001", "CLOSED"), "refund:5000001:CLOSED"},
		{"refund close is closed", RefundKey("5000001", "CLOSE"), "refund:5000001:CLOSED"},
		{"refund lower case", RefundKey("5000001", "abnormal"), "refund:5000001:ABNORMAL"},
		{"refund lower-case close", RefundKey("5000001", "close"), "refund:5000001:CLOSED"},
		{"order closed", OrderKey("1230000109", "T20240101", "CLOSED"), "order:1230000109:T20240101:CLOSED"},
		{"order revoked lower case", OrderKey("1230000109", "T20240101", "revoked"), "order:1230000109:T20240101:REVOKED"},
		{"order pay error", OrderKey("1230000109", "T20240101", "PAYERROR"), "order:1230000109:T20240101:PAYERROR"},
		{"event", EventKey("EV-2018022511223320873"), "event:EV-2018022511223320873"},
		{"reconciler event", EventKey("rc-bill-20240101"), "event:rc-bill-20240101"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

func TestFromNotificationDedupeKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		n    *wxpay.Notification
		want string
	}{
		{
			name: "payment",
			n:    notification(wxpay.EventTransactionSuccess, "transaction", paymentPlaintext("SUCCESS", testTransactionID)),
			want: "transaction:" + testTransactionID + ":SUCCESS",
		},
		{
			name: "payment refunded since",
			n:    notification(wxpay.EventTransactionSuccess, "transaction", paymentPlaintext("REFUND", testTransactionID)),
			want: "transaction:" + testTransactionID + ":SUCCESS",
		},
		{
			name: "payment known by original type only",
			n:    notification("SOMETHING.NEW", "transaction", paymentPlaintext("SUCCESS", testTransactionID)),
			want: "transaction:" + testTransactionID + ":SUCCESS",
		},
		{
			name: "payment known by event type only",
			n:    notification(wxpay.EventTransactionSuccess, "", paymentPlaintext("SUCCESS", testTransactionID)),
			want: "transaction:" + testTransactionID + ":SUCCESS",
		},
		{
			name: "transaction not paid",
			n:    notification(wxpay.EventTransactionSuccess, "transaction", paymentPlaintext("NOTPAY", testTransactionID)),
			want: "event:" + testNotifyID,
		},
		{
			name: "payment without transaction_id",
			n:    notification(wxpay.EventTransactionSuccess, "transaction", paymentPlaintext("SUCCESS", "")),
			want: "event:" + testNotifyID,
		},
		{
			name: "payment with a numeric transaction_id",
			n:    notification(wxpay.EventTransactionSuccess, "transaction", json.RawMessage(`{"transaction_id":42,"trade_state":"SUCCESS"}`)),
			want: "event:" + testNotifyID,
		},
		{
			name: "refund success",
			n:    notification(wxpay.EventRefundSuccess, "refund", refundPlaintext("SUCCESS", testRefundID)),
			want: "refund:" + testRefundID + ":SUCCESS",
		},
		{
			name: "refund abnormal",
			n:    notification(wxpay.EventRefundAbnormal, "refund", refundPlaintext("ABNORMAL", testRefundID)),
			want: "refund:" + testRefundID + ":ABNORMAL",
		},
		{
			name: "refund closed",
			n:    notification(wxpay.EventRefundClosed, "refund", refundPlaintext("CLOSED", testRefundID)),
			want: "refund:" + testRefundID + ":CLOSED",
		},
		{
			name: "refund CLOSE spelling",
			n:    notification(wxpay.EventRefundClosed, "refund", refundPlaintext("CLOSE", testRefundID)),
			want: "refund:" + testRefundID + ":CLOSED",
		},
		{
			name: "refund known by event type only",
			n:    notification(wxpay.EventRefundSuccess, "", refundPlaintext("SUCCESS", testRefundID)),
			want: "refund:" + testRefundID + ":SUCCESS",
		},
		{
			name: "refund without refund_id",
			n:    notification(wxpay.EventRefundSuccess, "refund", refundPlaintext("SUCCESS", "")),
			want: "event:" + testNotifyID,
		},
		{
			name: "refund without refund_status",
			n:    notification(wxpay.EventRefundSuccess, "refund", refundPlaintext("", testRefundID)),
			want: "event:" + testNotifyID,
		},
		{
			name: "refund event is not taken for a payment",
			n:    notification(wxpay.EventRefundSuccess, "refund", json.RawMessage(`{"transaction_id":"4200","trade_state":"SUCCESS"}`)),
			want: "event:" + testNotifyID,
		},
		{
			name: "other event",
			n:    notification("PROFITSHARING.SUCCESS", "profitsharing", json.RawMessage(`{"transaction_id":"4200","order_id":"3008"}`)),
			want: "event:" + testNotifyID,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env, err := FromNotification(testMchID, tt.n, testReceivedAt)
			if err != nil {
				t.Fatalf("FromNotification: %v", err)
			}
			if env.DedupeKey != tt.want {
				t.Errorf("dedupe_key = %q, want %q", env.DedupeKey, tt.want)
			}
			if err := env.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestFromNotificationFields(t *testing.T) {
	t.Parallel()
	n := notification(wxpay.EventTransactionSuccess, "transaction", paymentPlaintext("SUCCESS", testTransactionID))
	env, err := FromNotification(testMchID, n, testReceivedAt)
	if err != nil {
		t.Fatalf("FromNotification: %v", err)
	}
	want := Envelope{
		ID:           testNotifyID,
		DedupeKey:    "transaction:" + testTransactionID + ":SUCCESS",
		EventType:    "TRANSACTION.SUCCESS",
		MchID:        testMchID,
		Source:       SourceCallback,
		CreateTime:   "2018-06-08T10:34:56+08:00",
		ReceivedAt:   testReceivedAt,
		Summary:      "支付成功",
		ResourceType: "encrypt-resource",
		OriginalType: "transaction",
		Resource:     n.Plaintext,
	}
	if !reflect.DeepEqual(env, want) {
		t.Errorf("got %+v, want %+v", env, want)
	}

	// The JSON form has exactly the documented fields, v2 omitted.
	b, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		t.Fatal(err)
	}
	wantFields := []string{"create_time", "dedupe_key", "event_type", "id", "mchid", "original_type",
		"received_at", "resource", "resource_type", "source", "summary"}
	if got := sortedKeys(fields); !reflect.DeepEqual(got, wantFields) {
		t.Errorf("JSON fields %v, want %v", got, wantFields)
	}
	if got, want := string(fields["received_at"]), `"2018-06-08T02:35:01Z"`; got != want {
		t.Errorf("received_at %s, want %s", got, want)
	}
}

func TestFromNotificationErrors(t *testing.T) {
	t.Parallel()
	good := func() *wxpay.Notification {
		return notification(wxpay.EventTransactionSuccess, "transaction", paymentPlaintext("SUCCESS", testTransactionID))
	}
	tests := []struct {
		name  string
		mchid string
		n     *wxpay.Notification
		want  error
	}{
		{"empty mchid", "", good(), ErrMalformedEnvelope},
		{"mchid with a dot", "123.4", good(), ErrMalformedEnvelope},
		{"mchid wildcard", "*", good(), ErrMalformedEnvelope},
		{"nil notification", testMchID, nil, wxpay.ErrMalformed},
		{"no id", testMchID, func() *wxpay.Notification { n := good(); n.ID = ""; return n }(), wxpay.ErrMalformed},
		{"no event type", testMchID, func() *wxpay.Notification { n := good(); n.EventType = ""; return n }(), wxpay.ErrMalformed},
		{"event type not a subject", testMchID, func() *wxpay.Notification { n := good(); n.EventType = "TRANSACTION.>"; return n }(), wxpay.ErrMalformed},
		{"no plaintext", testMchID, func() *wxpay.Notification { n := good(); n.Plaintext = nil; return n }(), wxpay.ErrMalformed},
		{"plaintext an array", testMchID, func() *wxpay.Notification { n := good(); n.Plaintext = json.RawMessage(`[1]`); return n }(), wxpay.ErrMalformed},
		{"plaintext truncated", testMchID, func() *wxpay.Notification { n := good(); n.Plaintext = n.Plaintext[:20]; return n }(), wxpay.ErrMalformed},
		{"plaintext with trailing bytes", testMchID, func() *wxpay.Notification {
			n := good()
			n.Plaintext = append(append([]byte(nil), n.Plaintext...), " x"...)
			return n
		}(), wxpay.ErrMalformed},
		{"plaintext a string", testMchID, func() *wxpay.Notification { n := good(); n.Plaintext = json.RawMessage(`"{"`); return n }(), wxpay.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := FromNotification(tt.mchid, tt.n, testReceivedAt)
			if !errors.Is(err, tt.want) {
				t.Errorf("got error %v, want %v", err, tt.want)
			}
		})
	}
}

// v2PayFields are the fields of a v2 pay-result notification as
// wxpay.ParseV2Notification returns them.
func v2PayFields() map[string]string {
	return map[string]string{
		"return_code":    "SUCCESS",
		"result_code":    "SUCCESS",
		"appid":          "wxd678efh567hg6787",
		"mch_id":         testMchID,
		"nonce_str":      "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
		"sign":           "C380BEC2BFD727A4B6845133519F3AD6",
		"openid":         "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
		"is_subscribe":   "Y",
		"trade_type":     "JSAPI",
		"bank_type":      "CMC",
		"total_fee":      "100",
		"cash_fee":       "90",
		"fee_type":       "CNY",
		"transaction_id": testTransactionID,
		"out_trade_no":   "1217752501201407033233368018",
		"attach":         "a&b",
		"time_end":       "20180608103456",
	}
}

// signedV2Fields returns the fields of a v2 pay notification that its sign
// covers: all but sign, without empty values.
func signedV2Fields(fields map[string]string) map[string]string {
	out := maps.Clone(fields)
	delete(out, "sign")
	maps.DeleteFunc(out, func(_, v string) bool { return v == "" })
	return out
}

func v2PayNotification(edit func(f map[string]string)) *wxpay.V2Notification {
	f := v2PayFields()
	if edit != nil {
		edit(f)
	}
	return &wxpay.V2Notification{Kind: wxpay.V2KindPay, Fields: f, SignType: wxpay.V2SignMD5}
}

// v2RefundNotification returns a v2 refund notification: the outer fields and the
// decrypted req_info.
func v2RefundNotification(status string, edit func(refund map[string]string)) *wxpay.V2Notification {
	refund := map[string]string{
		"transaction_id":        testTransactionID,
		"out_trade_no":          "1217752501201407033233368018",
		"refund_id":             testRefundID,
		"out_refund_no":         "R1217752501201407033233368018",
		"total_fee":             "999",
		"refund_fee":            "999",
		"settlement_refund_fee": "999",
		"refund_status":         status,
		"refund_recv_accout":    "招商银行信用卡0403",
		"refund_account":        "REFUND_SOURCE_RECHARGE_FUNDS",
		"refund_request_source": "VENDOR_PLATFORM",
	}
	if status == "SUCCESS" {
		refund["success_time"] = "2018-06-08 10:34:56"
	}
	if edit != nil {
		edit(refund)
	}
	return &wxpay.V2Notification{
		Kind: wxpay.V2KindRefund,
		Fields: map[string]string{
			"return_code": "SUCCESS",
			"appid":       "wxd678efh567hg6787",
			"mch_id":      testMchID,
			"nonce_str":   "TeqClE3i0mvn3DrK",
			"req_info":    "T87GAHG17TGAHG1TGHAHAHA1Y1CIOA9UGJH1GAHV871HAGAGQYQQPOOJMXNBCXBVNMNMAJAA",
		},
		ReqInfo: refund,
	}
}

func TestFromV2Pay(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		v    *wxpay.V2Notification
	}{
		{
			name: "direct merchant",
			v:    v2PayNotification(nil),
		},
		{
			name: "partner mode",
			v: v2PayNotification(func(f map[string]string) {
				f["sub_mch_id"] = "1900000109"
				f["sub_appid"] = "wx8888888888888888"
				f["sub_openid"] = "oUpF8uN95-Ptaags6E_roPHg7AG0"
				f["sub_is_subscribe"] = "N"
			}),
		},
		{
			name: "defaults: no cash_fee, fee_type or time_end",
			v: v2PayNotification(func(f map[string]string) {
				delete(f, "cash_fee")
				delete(f, "fee_type")
				delete(f, "time_end")
				delete(f, "attach")
			}),
		},
		{
			name: "foreign currency",
			v: v2PayNotification(func(f map[string]string) {
				f["fee_type"] = "USD"
				f["cash_fee_type"] = "CNY"
				f["cash_fee"] = "650"
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env, err := FromV2(testMchID, tt.v, testReceivedAt)
			if err != nil {
				t.Fatalf("FromV2: %v", err)
			}
			if err := env.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			wantEnv := Envelope{
				DedupeKey:    "transaction:" + testTransactionID + ":SUCCESS",
				EventType:    "TRANSACTION.SUCCESS",
				MchID:        testMchID,
				Source:       "callback-v2",
				CreateTime:   "2018-06-08T10:35:01+08:00",
				ReceivedAt:   testReceivedAt,
				Summary:      "支付成功",
				ResourceType: "v2-xml",
				OriginalType: "transaction",
				V2:           signedV2Fields(tt.v.Fields),
			}
			gotEnv := env
			gotEnv.Resource = nil
			if !reflect.DeepEqual(gotEnv, wantEnv) {
				t.Errorf("got %+v, want %+v", gotEnv, wantEnv)
			}
			want, err := tt.v.Transaction(testMchID)
			if err != nil {
				t.Fatalf("Transaction: %v", err)
			}
			var got wxpay.Transaction
			if err := json.Unmarshal(env.Resource, &got); err != nil {
				t.Fatalf("resource %s: %v", env.Resource, err)
			}
			if !reflect.DeepEqual(got, *want) {
				t.Errorf("resource %s\ngot  %+v\nwant %+v", env.Resource, got, *want)
			}
			if !strings.Contains(string(env.Resource), `"attach":"a&b"`) && want.Attach != "" {
				t.Errorf("resource %s: attach is HTML-escaped", env.Resource)
			}
		})
	}
}

func TestFromV2Refund(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		v             *wxpay.V2Notification
		wantEventType string
		wantSummary   string
		wantKey       string
	}{
		{
			name:          "success",
			v:             v2RefundNotification("SUCCESS", nil),
			wantEventType: "REFUND.SUCCESS",
			wantSummary:   "退款成功",
			wantKey:       "refund:" + testRefundID + ":SUCCESS",
		},
		{
			name:          "change is abnormal",
			v:             v2RefundNotification("CHANGE", nil),
			wantEventType: "REFUND.ABNORMAL",
			wantSummary:   "退款异常",
			wantKey:       "refund:" + testRefundID + ":ABNORMAL",
		},
		{
			name:          "refundclose is closed",
			v:             v2RefundNotification("REFUNDCLOSE", nil),
			wantEventType: "REFUND.CLOSED",
			wantSummary:   "退款关闭",
			wantKey:       "refund:" + testRefundID + ":CLOSED",
		},
		{
			name: "partial refund with coupons",
			v: v2RefundNotification("SUCCESS", func(r map[string]string) {
				r["total_fee"] = "1000"
				r["settlement_total_fee"] = "900"
				r["refund_fee"] = "500"
				r["settlement_refund_fee"] = "450"
			}),
			wantEventType: "REFUND.SUCCESS",
			wantSummary:   "退款成功",
			wantKey:       "refund:" + testRefundID + ":SUCCESS",
		},
		{
			name: "no settlement amounts: cash fees, then totals",
			v: v2RefundNotification("SUCCESS", func(r map[string]string) {
				r["total_fee"] = "1000"
				r["cash_fee"] = "800"
				r["refund_fee"] = "500"
				delete(r, "settlement_refund_fee")
			}),
			wantEventType: "REFUND.SUCCESS",
			wantSummary:   "退款成功",
			wantKey:       "refund:" + testRefundID + ":SUCCESS",
		},
		{
			// The outer sub_mch_id is not authenticated: it does not make
			// the refund a sub-merchant's.
			name: "partner mode, sub-merchant only in the outer fields",
			v: func() *wxpay.V2Notification {
				v := v2RefundNotification("SUCCESS", nil)
				v.Fields["sub_mch_id"] = "1900000109"
				v.Fields["sub_appid"] = "wx8888888888888888"
				return v
			}(),
			wantEventType: "REFUND.SUCCESS",
			wantSummary:   "退款成功",
			wantKey:       "refund:" + testRefundID + ":SUCCESS",
		},
		{
			name: "partner mode, sub-merchant in req_info",
			v: v2RefundNotification("SUCCESS", func(r map[string]string) {
				r["mch_id"] = testMchID
				r["sub_mch_id"] = "1900000109"
			}),
			wantEventType: "REFUND.SUCCESS",
			wantSummary:   "退款成功",
			wantKey:       "refund:" + testRefundID + ":SUCCESS",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env, err := FromV2(testMchID, tt.v, testReceivedAt)
			if err != nil {
				t.Fatalf("FromV2: %v", err)
			}
			if err := env.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			if env.EventType != tt.wantEventType || env.Summary != tt.wantSummary || env.DedupeKey != tt.wantKey {
				t.Errorf("got event type %q, summary %q, dedupe_key %q; want %q, %q, %q",
					env.EventType, env.Summary, env.DedupeKey, tt.wantEventType, tt.wantSummary, tt.wantKey)
			}
			if env.ID != "" || env.Source != SourceCallbackV2 || env.ResourceType != ResourceTypeV2XML || env.OriginalType != "refund" {
				t.Errorf("got id %q, source %q, resource_type %q, original_type %q; want \"\", callback-v2, v2-xml, refund",
					env.ID, env.Source, env.ResourceType, env.OriginalType)
			}
			want, err := tt.v.Refund(testMchID)
			if err != nil {
				t.Fatalf("Refund: %v", err)
			}
			var got wxpay.RefundNotice
			if err := json.Unmarshal(env.Resource, &got); err != nil {
				t.Fatalf("resource %s: %v", env.Resource, err)
			}
			if !reflect.DeepEqual(got, *want) {
				t.Errorf("resource %s\ngot  %+v\nwant %+v", env.Resource, got, *want)
			}
			// v2 = the decrypted req_info fields only.
			if !reflect.DeepEqual(env.V2, tt.v.ReqInfo) {
				t.Errorf("v2 = %v, want the req_info fields %v", env.V2, tt.v.ReqInfo)
			}
		})
	}
}

func TestFromV2KeepsInputs(t *testing.T) {
	t.Parallel()
	v := v2RefundNotification("SUCCESS", nil)
	env, err := FromV2(testMchID, v, testReceivedAt)
	if err != nil {
		t.Fatalf("FromV2: %v", err)
	}
	env.V2["refund_id"] = "changed"
	if _, ok := v.Fields["req_info"]; !ok {
		t.Error("FromV2 removed req_info from the notification's own fields")
	}
	if got := v.ReqInfo["refund_id"]; got != testRefundID {
		t.Errorf("the notification's refund_id changed to %q", got)
	}
}

// TestFromV2Errors: FromV2's own refusals, and the mapping's
// (wxpay.V2Notification.Transaction and Refund) passed on.
func TestFromV2Errors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		mchid string
		v     *wxpay.V2Notification
		want  error
	}{
		{"bad mchid", "12.34", v2PayNotification(nil), ErrMalformedEnvelope},
		{"nil", testMchID, nil, wxpay.ErrMalformed},
		{"unknown kind", testMchID, &wxpay.V2Notification{Kind: "transfer", Fields: v2PayFields()}, wxpay.ErrMalformed},
		{"pay without transaction_id", testMchID, v2PayNotification(func(f map[string]string) { delete(f, "transaction_id") }), wxpay.ErrMalformed},
		{"bad time_end", testMchID, v2PayNotification(func(f map[string]string) { f["time_end"] = "2018-06-08 10:34:56" }), wxpay.ErrMalformed},
		{"refund unknown status", testMchID, v2RefundNotification("PROCESSING", nil), wxpay.ErrMalformed},
		{"refund req_info of another merchant", testMchID, v2RefundNotification("SUCCESS", func(r map[string]string) { r["mch_id"] = "1900000109" }), wxpay.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env, err := FromV2(tt.mchid, tt.v, testReceivedAt)
			if !errors.Is(err, tt.want) {
				t.Errorf("got error %v, want %v", err, tt.want)
			}
			if err != nil && !reflect.DeepEqual(env, Envelope{}) {
				t.Errorf("got envelope %+v with the error, want the zero Envelope", env)
			}
		})
	}
}

// TestSameDedupeKeyAcrossForms checks the promise a callback, its v2
// form and the reconciler's finding of the same state share the dedupe key.
func TestSameDedupeKeyAcrossForms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		v3         *wxpay.Notification
		v2         *wxpay.V2Notification
		reconciler string
	}{
		{
			name:       "payment",
			v3:         notification(wxpay.EventTransactionSuccess, "transaction", paymentPlaintext("SUCCESS", testTransactionID)),
			v2:         v2PayNotification(nil),
			reconciler: TransactionKey(testTransactionID),
		},
		{
			name:       "refund success",
			v3:         notification(wxpay.EventRefundSuccess, "refund", refundPlaintext("SUCCESS", testRefundID)),
			v2:         v2RefundNotification("SUCCESS", nil),
			reconciler: RefundKey(testRefundID, wxpay.RefundStatusSuccess),
		},
		{
			name:       "refund abnormal",
			v3:         notification(wxpay.EventRefundAbnormal, "refund", refundPlaintext("ABNORMAL", testRefundID)),
			v2:         v2RefundNotification("CHANGE", nil),
			reconciler: RefundKey(testRefundID, wxpay.RefundStatusAbnormal),
		},
		{
			name:       "refund closed",
			v3:         notification(wxpay.EventRefundClosed, "refund", refundPlaintext("CLOSED", testRefundID)),
			v2:         v2RefundNotification("REFUNDCLOSE", nil),
			reconciler: RefundKey(testRefundID, "CLOSE"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v3, err := FromNotification(testMchID, tt.v3, testReceivedAt)
			if err != nil {
				t.Fatalf("FromNotification: %v", err)
			}
			v2, err := FromV2(testMchID, tt.v2, testReceivedAt.Add(time.Minute))
			if err != nil {
				t.Fatalf("FromV2: %v", err)
			}
			if v3.DedupeKey != v2.DedupeKey || v3.DedupeKey != tt.reconciler {
				t.Errorf("v3 %q, v2 %q, reconciler %q: want one key", v3.DedupeKey, v2.DedupeKey, tt.reconciler)
			}
			if v3.EventType != v2.EventType {
				t.Errorf("v3 event type %q, v2 %q: want one", v3.EventType, v2.EventType)
			}
			if Subject(v3.MchID, v3.EventType) != Subject(v2.MchID, v2.EventType) {
				t.Errorf("v3 subject %q, v2 %q: want one", Subject(v3.MchID, v3.EventType), Subject(v2.MchID, v2.EventType))
			}
		})
	}
}

func validEnvelope() Envelope {
	return Envelope{
		ID:           testNotifyID,
		DedupeKey:    TransactionKey(testTransactionID),
		EventType:    wxpay.EventTransactionSuccess,
		MchID:        testMchID,
		Source:       SourceCallback,
		CreateTime:   "2018-06-08T10:34:56+08:00",
		ReceivedAt:   testReceivedAt,
		Summary:      "支付成功",
		ResourceType: wxpay.ResourceTypeEncrypted,
		OriginalType: OriginalTypeTransaction,
		Resource:     paymentPlaintext("SUCCESS", testTransactionID),
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		edit    func(e *Envelope)
		wantErr bool
	}{
		{"callback", func(e *Envelope) {}, false},
		{"reconciler", func(e *Envelope) { e.Source = SourceReconciler; e.ID = "rc-1" }, false},
		{"v2", func(e *Envelope) {
			e.Source = SourceCallbackV2
			e.ID = ""
			e.V2 = map[string]string{"mch_id": testMchID}
		}, false},
		{"project event type", func(e *Envelope) { e.EventType = EventBillReady; e.DedupeKey = EventKey("rc-bill") }, false},
		{"resource with leading space", func(e *Envelope) { e.Resource = json.RawMessage(` {"a":1}`) }, false},
		{"no source", func(e *Envelope) { e.Source = "" }, true},
		{"unknown source", func(e *Envelope) { e.Source = "manual" }, true},
		{"no id", func(e *Envelope) { e.ID = "" }, true},
		{"v2 fields on a callback", func(e *Envelope) { e.V2 = map[string]string{"a": "b"} }, true},
		{"v2 without fields", func(e *Envelope) { e.Source = SourceCallbackV2; e.ID = "" }, true},
		{"no dedupe key", func(e *Envelope) { e.DedupeKey = "" }, true},
		{"dedupe key with a newline", func(e *Envelope) { e.DedupeKey = "event:1\r\nX-Evil: 1" }, true},
		{"no event type", func(e *Envelope) { e.EventType = "" }, true},
		{"event type wildcard", func(e *Envelope) { e.EventType = "TRANSACTION.*" }, true},
		{"no mchid", func(e *Envelope) { e.MchID = "" }, true},
		{"mchid with a dot", func(e *Envelope) { e.MchID = "1230000109.x" }, true},
		{"mchid with a space", func(e *Envelope) { e.MchID = "1230000109 " }, true},
		{"no resource", func(e *Envelope) { e.Resource = nil }, true},
		{"resource null", func(e *Envelope) { e.Resource = json.RawMessage(`null`) }, true},
		{"resource a string", func(e *Envelope) { e.Resource = json.RawMessage(`"{}"`) }, true},
		{"resource invalid", func(e *Envelope) { e.Resource = json.RawMessage(`{"a":}`) }, true},
		{"resource two objects", func(e *Envelope) { e.Resource = json.RawMessage(`{}{}`) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := validEnvelope()
			tt.edit(&e)
			err := e.Validate()
			if tt.wantErr {
				if !errors.Is(err, ErrMalformedEnvelope) {
					t.Errorf("got error %v, want %v", err, ErrMalformedEnvelope)
				}
			} else if err != nil {
				t.Errorf("got error %v, want nil", err)
			}
		})
	}
}

// FuzzFromNotification feeds arbitrary decrypted resources: no panic, and
// either a valid envelope or an error wrapping wxpay.ErrMalformed.
func FuzzFromNotification(f *testing.F) {
	f.Add(wxpay.EventTransactionSuccess, "transaction", []byte(paymentPlaintext("SUCCESS", testTransactionID)))
	f.Add(wxpay.EventRefundClosed, "refund", []byte(refundPlaintext("CLOSE", testRefundID)))
	f.Add("TRANSACTION.SUCCESS", "transaction", []byte(`{"transaction_id":null,"trade_state":7}`))
	f.Add("X", "", []byte(`[]`))
	f.Fuzz(func(t *testing.T, eventType, originalType string, plaintext []byte) {
		n := notification(eventType, originalType, plaintext)
		env, err := FromNotification(testMchID, n, testReceivedAt)
		if err != nil {
			if !errors.Is(err, wxpay.ErrMalformed) {
				t.Fatalf("error %v does not wrap wxpay.ErrMalformed", err)
			}
			return
		}
		if err := env.Validate(); err != nil {
			t.Fatalf("FromNotification built an invalid envelope: %v", err)
		}
	})
}

// FuzzFromV2 feeds arbitrary values to the fields FromV2 interprets.
func FuzzFromV2(f *testing.F) {
	f.Add("100", "90", "20180608103456", "SUCCESS", "999", "2018-06-08 10:34:56")
	f.Add("1.00", "", "", "CHANGE", "-1", "")
	f.Add("", "x", "2018060810345", "REFUNDCLOSE", "99999999999999999999", "2018-13-08 10:34:56")
	f.Fuzz(func(t *testing.T, totalFee, cashFee, timeEnd, refundStatus, refundFee, successTime string) {
		pay := v2PayNotification(func(m map[string]string) {
			m["total_fee"], m["cash_fee"], m["time_end"] = totalFee, cashFee, timeEnd
		})
		refund := v2RefundNotification(refundStatus, func(m map[string]string) {
			m["total_fee"], m["refund_fee"], m["success_time"] = totalFee, refundFee, successTime
		})
		for _, v := range []*wxpay.V2Notification{pay, refund} {
			env, err := FromV2(testMchID, v, testReceivedAt)
			if err != nil {
				if !errors.Is(err, wxpay.ErrMalformed) {
					t.Fatalf("error %v does not wrap wxpay.ErrMalformed", err)
				}
				continue
			}
			if err := env.Validate(); err != nil {
				t.Fatalf("FromV2 built an invalid envelope: %v", err)
			}
		}
	})
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// TestFromV2PublishesOnlyAuthenticatedFields parses real v2 bodies: what
// anyone on the way can add to or change in a notification without
// breaking its authentication must reach neither the resource nor v2.
func TestFromV2PublishesOnlyAuthenticatedFields(t *testing.T) {
	t.Parallel()
	const key = "192006250b4c09247ec02edce69f6a2d"

	t.Run("refund: outer fields", func(t *testing.T) {
		t.Parallel()
		reqInfo := map[string]string{
			"transaction_id": testTransactionID, "out_trade_no": "1217752501201407033233368018",
			"refund_id": testRefundID, "out_refund_no": "R1217752501201407033233368018",
			"total_fee": "999", "refund_fee": "999", "refund_status": "SUCCESS",
			"success_time": "2018-06-08 10:34:56", "refund_recv_accout": "支付用户零钱",
		}
		outer := map[string]string{
			"appid": "wxd678efh567hg6787", "mch_id": testMchID, "nonce_str": "TeqClE3i0mvn3DrK",
			// Added by an attacker to a valid notice: req_info still decrypts.
			"cash_fee": "1", "settlement_total_fee": "1", "total_fee": "1", "refund_fee": "1",
			"sub_mch_id": "1900000666", "sub_appid": "wx6666666666666666", "refund_status": "CHANGE",
		}
		v, err := wxpay.ParseV2Notification(wxpaytest.V2RefundNotification(outer, reqInfo, key), key)
		if err != nil {
			t.Fatalf("ParseV2Notification: %v", err)
		}
		env, err := FromV2(testMchID, v, testReceivedAt)
		if err != nil {
			t.Fatalf("FromV2: %v", err)
		}
		var got wxpay.RefundNotice
		if err := json.Unmarshal(env.Resource, &got); err != nil {
			t.Fatalf("resource %s: %v", env.Resource, err)
		}
		want := wxpay.RefundNotice{
			MchID: testMchID, OutTradeNo: "1217752501201407033233368018", TransactionID: testTransactionID,
			OutRefundNo: "R1217752501201407033233368018", RefundID: testRefundID, RefundStatus: "SUCCESS",
			SuccessTime: "2018-06-08T10:34:56+08:00", UserReceivedAccount: "支付用户零钱",
			Amount: wxpay.RefundAmount{Total: 999, Refund: 999, PayerTotal: 999, PayerRefund: 999},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("resource %s\ngot  %+v\nwant %+v", env.Resource, got, want)
		}
		if strings.Contains(string(env.Resource), "1900000666") || strings.Contains(string(env.Resource), "wx6666666666666666") {
			t.Errorf("resource %s carries the outer sub-merchant", env.Resource)
		}
		if !reflect.DeepEqual(env.V2, reqInfo) {
			t.Errorf("v2 = %v, want exactly the req_info fields %v", env.V2, reqInfo)
		}
		if env.EventType != wxpay.EventRefundSuccess || env.DedupeKey != RefundKey(testRefundID, "SUCCESS") {
			t.Errorf("event type %s, dedupe key %s: want REFUND.SUCCESS from req_info", env.EventType, env.DedupeKey)
		}
	})

	t.Run("pay: fields outside the sign", func(t *testing.T) {
		t.Parallel()
		fields := v2PayFields()
		delete(fields, "sign")
		body := wxpaytest.V2PayNotification(fields, key, wxpay.V2SignMD5)
		// Empty fields are outside the signed string: adding them keeps the
		// sign valid.
		body = []byte(strings.Replace(string(body), "<xml>", "<xml><sub_mch_id></sub_mch_id><coupon_fee></coupon_fee>", 1))
		v, err := wxpay.ParseV2Notification(body, key)
		if err != nil {
			t.Fatalf("ParseV2Notification: %v", err)
		}
		env, err := FromV2(testMchID, v, testReceivedAt)
		if err != nil {
			t.Fatalf("FromV2: %v", err)
		}
		for _, name := range []string{"sign", "sub_mch_id", "coupon_fee"} {
			if val, ok := env.V2[name]; ok {
				t.Errorf("v2 has %s = %q, which the sign does not cover", name, val)
			}
		}
		for name, val := range fields {
			if env.V2[name] != val {
				t.Errorf("v2 %s = %q, want the signed %q", name, env.V2[name], val)
			}
		}
		var got wxpay.Transaction
		if err := json.Unmarshal(env.Resource, &got); err != nil {
			t.Fatalf("resource %s: %v", env.Resource, err)
		}
		if got.SubMchID != "" || got.SpMchID != "" || got.Amount.Total != 100 || got.Amount.PayerTotal != 90 {
			t.Errorf("resource %s", env.Resource)
		}
	})
}
