package wxpay

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

const (
	v2MchID         = "1230000109"
	v2TransactionID = "4200000000000000000000000001"
	v2RefundID      = "50000000382019052709732678859"
)

// v2PayFields are the fields of a v2 pay-result notification as
// ParseV2Notification returns them.
func v2PayFields() map[string]string {
	return map[string]string{
		"return_code":    "SUCCESS",
		"result_code":    "SUCCESS",
		"appid":          "wxd678efh567hg6787",
		"mch_id":         v2MchID,
		"nonce_str":      "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
		"sign":           "C380BEC2BFD727A4B6845133519F3AD6",
		"openid":         "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
		"is_subscribe":   "Y",
		"trade_type":     "JSAPI",
		"bank_type":      "CMC",
		"total_fee":      "100",
		"cash_fee":       "90",
		"fee_type":       "CNY",
		"transaction_id": v2TransactionID,
		"out_trade_no":   "1217752501201407033233368018",
		"attach":         "a&b",
		"time_end":       "20180608103456",
	}
}

func v2PayNotification(edit func(f map[string]string)) *V2Notification {
	f := v2PayFields()
	if edit != nil {
		edit(f)
	}
	return &V2Notification{Kind: V2KindPay, Fields: f, SignType: V2SignMD5}
}

// v2RefundNotification returns a v2 refund notification: the outer fields
// and the decrypted req_info.
func v2RefundNotification(status string, edit func(reqInfo map[string]string)) *V2Notification {
	reqInfo := map[string]string{
		"transaction_id":        v2TransactionID,
		"out_trade_no":          "1217752501201407033233368018",
		"refund_id":             v2RefundID,
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
		reqInfo["success_time"] = "2018-06-08 10:34:56"
	}
	if edit != nil {
		edit(reqInfo)
	}
	return &V2Notification{
		Kind: V2KindRefund,
		Fields: map[string]string{
			"return_code": "SUCCESS",
			"appid":       "wxd678efh567hg6787",
			"mch_id":      v2MchID,
			"nonce_str":   "TeqClE3i0mvn3DrK",
			"req_info":    "T87GAHG17TGAHG1TGHAHAHA1Y1CIOA9UGJH1GAHV871HAGAGQYQQPOOJMXNBCXBVNMNMAJAA",
		},
		ReqInfo: reqInfo,
	}
}

func TestV2NotificationTransaction(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		v    *V2Notification
		want Transaction
	}{
		{
			name: "direct merchant",
			v:    v2PayNotification(nil),
			want: Transaction{
				AppID: "wxd678efh567hg6787", MchID: v2MchID,
				OutTradeNo: "1217752501201407033233368018", TransactionID: v2TransactionID,
				TradeType: "JSAPI", TradeState: "SUCCESS", TradeStateDesc: "支付成功", BankType: "CMC", Attach: "a&b",
				SuccessTime: "2018-06-08T10:34:56+08:00",
				Payer:       &Payer{OpenID: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
				Amount:      &TransactionAmount{Total: 100, PayerTotal: 90, Currency: "CNY", PayerCurrency: "CNY"},
			},
		},
		{
			name: "partner mode",
			v: v2PayNotification(func(f map[string]string) {
				f["sub_mch_id"] = "1900000109"
				f["sub_appid"] = "wx8888888888888888"
				f["sub_openid"] = "oUpF8uN95-Ptaags6E_roPHg7AG0"
				f["sub_is_subscribe"] = "N"
			}),
			want: Transaction{
				AppID: "wxd678efh567hg6787", MchID: v2MchID,
				SpAppID: "wxd678efh567hg6787", SpMchID: v2MchID, SubAppID: "wx8888888888888888", SubMchID: "1900000109",
				OutTradeNo: "1217752501201407033233368018", TransactionID: v2TransactionID,
				TradeType: "JSAPI", TradeState: "SUCCESS", TradeStateDesc: "支付成功", BankType: "CMC", Attach: "a&b",
				SuccessTime: "2018-06-08T10:34:56+08:00",
				Payer: &Payer{OpenID: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
					SpOpenID: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", SubOpenID: "oUpF8uN95-Ptaags6E_roPHg7AG0"},
				Amount: &TransactionAmount{Total: 100, PayerTotal: 90, Currency: "CNY", PayerCurrency: "CNY"},
			},
		},
		{
			name: "defaults: no cash_fee, fee_type or time_end",
			v: v2PayNotification(func(f map[string]string) {
				delete(f, "cash_fee")
				delete(f, "fee_type")
				delete(f, "time_end")
				delete(f, "attach")
			}),
			want: Transaction{
				AppID: "wxd678efh567hg6787", MchID: v2MchID,
				OutTradeNo: "1217752501201407033233368018", TransactionID: v2TransactionID,
				TradeType: "JSAPI", TradeState: "SUCCESS", TradeStateDesc: "支付成功", BankType: "CMC",
				Payer:  &Payer{OpenID: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
				Amount: &TransactionAmount{Total: 100, PayerTotal: 100, Currency: "CNY", PayerCurrency: "CNY"},
			},
		},
		{
			name: "no mch_id: the merchant it was parsed for",
			v:    v2PayNotification(func(f map[string]string) { delete(f, "mch_id") }),
			want: Transaction{
				AppID: "wxd678efh567hg6787", MchID: v2MchID,
				OutTradeNo: "1217752501201407033233368018", TransactionID: v2TransactionID,
				TradeType: "JSAPI", TradeState: "SUCCESS", TradeStateDesc: "支付成功", BankType: "CMC", Attach: "a&b",
				SuccessTime: "2018-06-08T10:34:56+08:00",
				Payer:       &Payer{OpenID: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
				Amount:      &TransactionAmount{Total: 100, PayerTotal: 90, Currency: "CNY", PayerCurrency: "CNY"},
			},
		},
		{
			name: "foreign currency",
			v: v2PayNotification(func(f map[string]string) {
				f["fee_type"] = "USD"
				f["cash_fee_type"] = "CNY"
				f["cash_fee"] = "650"
			}),
			want: Transaction{
				AppID: "wxd678efh567hg6787", MchID: v2MchID,
				OutTradeNo: "1217752501201407033233368018", TransactionID: v2TransactionID,
				TradeType: "JSAPI", TradeState: "SUCCESS", TradeStateDesc: "支付成功", BankType: "CMC", Attach: "a&b",
				SuccessTime: "2018-06-08T10:34:56+08:00",
				Payer:       &Payer{OpenID: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
				Amount:      &TransactionAmount{Total: 100, PayerTotal: 650, Currency: "USD", PayerCurrency: "CNY"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.v.Transaction(v2MchID)
			if err != nil {
				t.Fatalf("Transaction: %v", err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", *got, tt.want)
			}
		})
	}
}

func TestV2NotificationRefund(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		v    *V2Notification
		want RefundNotice
	}{
		{
			name: "success",
			v:    v2RefundNotification("SUCCESS", nil),
			want: RefundNotice{
				MchID: v2MchID, OutTradeNo: "1217752501201407033233368018", TransactionID: v2TransactionID,
				OutRefundNo: "R1217752501201407033233368018", RefundID: v2RefundID, RefundStatus: "SUCCESS",
				SuccessTime: "2018-06-08T10:34:56+08:00", UserReceivedAccount: "招商银行信用卡0403",
				Amount: RefundAmount{Total: 999, Refund: 999, PayerTotal: 999, PayerRefund: 999},
			},
		},
		{
			name: "change is abnormal",
			v:    v2RefundNotification("CHANGE", nil),
			want: RefundNotice{
				MchID: v2MchID, OutTradeNo: "1217752501201407033233368018", TransactionID: v2TransactionID,
				OutRefundNo: "R1217752501201407033233368018", RefundID: v2RefundID, RefundStatus: "ABNORMAL",
				UserReceivedAccount: "招商银行信用卡0403",
				Amount:              RefundAmount{Total: 999, Refund: 999, PayerTotal: 999, PayerRefund: 999},
			},
		},
		{
			name: "refundclose is closed",
			v:    v2RefundNotification("REFUNDCLOSE", nil),
			want: RefundNotice{
				MchID: v2MchID, OutTradeNo: "1217752501201407033233368018", TransactionID: v2TransactionID,
				OutRefundNo: "R1217752501201407033233368018", RefundID: v2RefundID, RefundStatus: "CLOSED",
				UserReceivedAccount: "招商银行信用卡0403",
				Amount:              RefundAmount{Total: 999, Refund: 999, PayerTotal: 999, PayerRefund: 999},
			},
		},
		{
			name: "partial refund with coupons",
			v: v2RefundNotification("SUCCESS", func(r map[string]string) {
				r["total_fee"] = "1000"
				r["settlement_total_fee"] = "900"
				r["refund_fee"] = "500"
				r["settlement_refund_fee"] = "450"
			}),
			want: RefundNotice{
				MchID: v2MchID, OutTradeNo: "1217752501201407033233368018", TransactionID: v2TransactionID,
				OutRefundNo: "R1217752501201407033233368018", RefundID: v2RefundID, RefundStatus: "SUCCESS",
				SuccessTime: "2018-06-08T10:34:56+08:00", UserReceivedAccount: "招商银行信用卡0403",
				Amount: RefundAmount{Total: 1000, Refund: 500, PayerTotal: 900, PayerRefund: 450},
			},
		},
		{
			name: "no settlement amounts: cash fees, then totals",
			v: v2RefundNotification("SUCCESS", func(r map[string]string) {
				r["total_fee"] = "1000"
				r["cash_fee"] = "800"
				r["refund_fee"] = "500"
				delete(r, "settlement_refund_fee")
			}),
			want: RefundNotice{
				MchID: v2MchID, OutTradeNo: "1217752501201407033233368018", TransactionID: v2TransactionID,
				OutRefundNo: "R1217752501201407033233368018", RefundID: v2RefundID, RefundStatus: "SUCCESS",
				SuccessTime: "2018-06-08T10:34:56+08:00", UserReceivedAccount: "招商银行信用卡0403",
				Amount: RefundAmount{Total: 1000, Refund: 500, PayerTotal: 800, PayerRefund: 500},
			},
		},
		{
			// The outer sub_mch_id is not authenticated: it does not make
			// the refund a sub-merchant's.
			name: "partner mode, sub-merchant only in the outer fields",
			v: func() *V2Notification {
				v := v2RefundNotification("SUCCESS", nil)
				v.Fields["sub_mch_id"] = "1900000109"
				v.Fields["sub_appid"] = "wx8888888888888888"
				return v
			}(),
			want: RefundNotice{
				MchID:      v2MchID,
				OutTradeNo: "1217752501201407033233368018", TransactionID: v2TransactionID,
				OutRefundNo: "R1217752501201407033233368018", RefundID: v2RefundID, RefundStatus: "SUCCESS",
				SuccessTime: "2018-06-08T10:34:56+08:00", UserReceivedAccount: "招商银行信用卡0403",
				Amount: RefundAmount{Total: 999, Refund: 999, PayerTotal: 999, PayerRefund: 999},
			},
		},
		{
			name: "partner mode, sub-merchant in req_info",
			v: v2RefundNotification("SUCCESS", func(r map[string]string) {
				r["mch_id"] = v2MchID
				r["sub_mch_id"] = "1900000109"
			}),
			want: RefundNotice{
				MchID: v2MchID, SpMchID: v2MchID, SubMchID: "1900000109",
				OutTradeNo: "1217752501201407033233368018", TransactionID: v2TransactionID,
				OutRefundNo: "R1217752501201407033233368018", RefundID: v2RefundID, RefundStatus: "SUCCESS",
				SuccessTime: "2018-06-08T10:34:56+08:00", UserReceivedAccount: "招商银行信用卡0403",
				Amount: RefundAmount{Total: 999, Refund: 999, PayerTotal: 999, PayerRefund: 999},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.v.Refund(v2MchID)
			if err != nil {
				t.Fatalf("Refund: %v", err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", *got, tt.want)
			}
		})
	}
}

func TestV2NotificationResourceErrors(t *testing.T) {
	t.Parallel()
	pay := func(edit func(f map[string]string)) func() error {
		return func() error { _, err := v2PayNotification(edit).Transaction(v2MchID); return err }
	}
	refund := func(status string, edit func(r map[string]string)) func() error {
		return func() error { _, err := v2RefundNotification(status, edit).Refund(v2MchID); return err }
	}
	tests := []struct {
		name string
		call func() error
	}{
		{"Transaction of a refund", func() error { _, err := v2RefundNotification("SUCCESS", nil).Transaction(v2MchID); return err }},
		{"Refund of a pay result", func() error { _, err := v2PayNotification(nil).Refund(v2MchID); return err }},
		{"pay without transaction_id", pay(func(f map[string]string) { delete(f, "transaction_id") })},
		{"pay without total_fee", pay(func(f map[string]string) { delete(f, "total_fee") })},
		{"total_fee in yuan", pay(func(f map[string]string) { f["total_fee"] = "1.00" })},
		{"negative total_fee", pay(func(f map[string]string) { f["total_fee"] = "-100" })},
		{"total_fee with a plus sign", pay(func(f map[string]string) { f["total_fee"] = "+100" })},
		{"total_fee with spaces", pay(func(f map[string]string) { f["total_fee"] = " 100" })},
		{"total_fee overflows", pay(func(f map[string]string) { f["total_fee"] = "99999999999999999999" })},
		{"cash_fee not a number", pay(func(f map[string]string) { f["cash_fee"] = "abc" })},
		{"bad time_end", pay(func(f map[string]string) { f["time_end"] = "2018-06-08 10:34:56" })},
		{"refund without refund_id", refund("SUCCESS", func(r map[string]string) { delete(r, "refund_id") })},
		{"refund without status", refund("", nil)},
		{"refund unknown status", refund("PROCESSING", nil)},
		{"refund without refund_fee", refund("SUCCESS", func(r map[string]string) { delete(r, "refund_fee") })},
		{"refund_fee in yuan", refund("SUCCESS", func(r map[string]string) { r["refund_fee"] = "9.99" })},
		{"settlement_refund_fee bad", refund("SUCCESS", func(r map[string]string) { r["settlement_refund_fee"] = "1e3" })},
		{"refund bad success_time", refund("SUCCESS", func(r map[string]string) { r["success_time"] = "20180608103456" })},
		{"refund req_info of another merchant", refund("SUCCESS", func(r map[string]string) { r["mch_id"] = "1900000109" })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.call(); !errors.Is(err, ErrMalformed) {
				t.Errorf("got error %v, want ErrMalformed", err)
			}
		})
	}
}

// TestV2ResourceOnlyAuthenticatedFields parses real v2 bodies: what anyone
// on the way can add to or change in a notification without breaking its
// authentication must not reach the v3 resource.
func TestV2ResourceOnlyAuthenticatedFields(t *testing.T) {
	t.Parallel()
	const key = "192006250b4c09247ec02edce69f6a2d"

	t.Run("refund: outer fields", func(t *testing.T) {
		t.Parallel()
		reqInfo := map[string]string{
			"transaction_id": v2TransactionID, "out_trade_no": "1217752501201407033233368018",
			"refund_id": v2RefundID, "out_refund_no": "R1217752501201407033233368018",
			"total_fee": "999", "refund_fee": "999", "refund_status": "SUCCESS",
			"success_time": "2018-06-08 10:34:56", "refund_recv_accout": "支付用户零钱",
		}
		outer := map[string]string{
			"return_code": "SUCCESS", "appid": "wxd678efh567hg6787", "mch_id": v2MchID, "nonce_str": "TeqClE3i0mvn3DrK",
			// Added by an attacker to a valid notice: req_info still decrypts.
			"cash_fee": "1", "settlement_total_fee": "1", "total_fee": "1", "refund_fee": "1",
			"sub_mch_id": "1900000666", "sub_appid": "wx6666666666666666", "refund_status": "CHANGE",
		}
		v, err := ParseV2Notification(refundBody(key, outer, reqInfo), key)
		if err != nil {
			t.Fatalf("ParseV2Notification: %v", err)
		}
		got, err := v.Refund(v2MchID)
		if err != nil {
			t.Fatalf("Refund: %v", err)
		}
		want := RefundNotice{
			MchID: v2MchID, OutTradeNo: "1217752501201407033233368018", TransactionID: v2TransactionID,
			OutRefundNo: "R1217752501201407033233368018", RefundID: v2RefundID, RefundStatus: "SUCCESS",
			SuccessTime: "2018-06-08T10:34:56+08:00", UserReceivedAccount: "支付用户零钱",
			Amount: RefundAmount{Total: 999, Refund: 999, PayerTotal: 999, PayerRefund: 999},
		}
		if !reflect.DeepEqual(*got, want) {
			t.Errorf("got  %+v\nwant %+v", *got, want)
		}
	})

	t.Run("pay: fields outside the sign", func(t *testing.T) {
		t.Parallel()
		fields := v2PayFields()
		delete(fields, "sign")
		body := signedPay(fields, key, V2SignMD5, false)
		// Empty fields are outside the signed string: adding them keeps the
		// sign valid.
		body = []byte(strings.Replace(string(body), "<xml>", "<xml><sub_mch_id></sub_mch_id><coupon_fee></coupon_fee>", 1))
		v, err := ParseV2Notification(body, key)
		if err != nil {
			t.Fatalf("ParseV2Notification: %v", err)
		}
		got, err := v.Transaction(v2MchID)
		if err != nil {
			t.Fatalf("Transaction: %v", err)
		}
		if got.SubMchID != "" || got.SpMchID != "" || got.Amount.Total != 100 || got.Amount.PayerTotal != 90 {
			t.Errorf("got %+v", *got)
		}
	})
}
