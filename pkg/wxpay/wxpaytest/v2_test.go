package wxpaytest_test

import (
	"maps"
	"testing"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

const testV2Key = "192006250b4c09247ec02edce69f6a2d"

func TestV2PayNotificationRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		signType     wxpay.V2SignType
		wantSignType string // the sign_type field, "" when absent
	}{
		{"MD5", wxpay.V2SignMD5, ""},
		{"HMAC-SHA256", wxpay.V2SignHMACSHA256, "HMAC-SHA256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fields := map[string]string{
				"appid":          "wx2421b1c4370ec43b",
				"mch_id":         "10000100",
				"out_trade_no":   "1409811653",
				"transaction_id": "1004400740201409030005092168",
				"total_fee":      "1",
				"attach":         "x]]>y",
				"time_end":       "20140903131540",
			}
			body := wxpaytest.V2PayNotification(fields, testV2Key, tt.signType)
			n, err := wxpay.ParseV2Notification(body, testV2Key)
			if err != nil {
				t.Fatalf("ParseV2Notification error = %v, want nil", err)
			}
			if n.Kind != wxpay.V2KindPay {
				t.Errorf("Kind = %q, want %q", n.Kind, wxpay.V2KindPay)
			}
			if n.SignType != tt.signType {
				t.Errorf("SignType = %q, want %q", n.SignType, tt.signType)
			}
			for k, v := range fields {
				if n.Fields[k] != v {
					t.Errorf("field %s = %q, want %q", k, n.Fields[k], v)
				}
			}
			for _, k := range []string{"return_code", "result_code"} {
				if got := n.Fields[k]; got != "SUCCESS" {
					t.Errorf("field %s = %q, want SUCCESS", k, got)
				}
			}
			if n.Fields["nonce_str"] == "" {
				t.Error("nonce_str is empty, want a nonce")
			}
			if got := n.Fields["sign_type"]; got != tt.wantSignType {
				t.Errorf("sign_type = %q, want %q", got, tt.wantSignType)
			}
			if _, err := wxpay.ParseV2Notification(body, "another key"); err == nil {
				t.Error("ParseV2Notification with another key succeeded, want an error")
			}
			if _, ok := fields["sign"]; ok {
				t.Error("V2PayNotification modified its fields argument")
			}
		})
	}
}

func TestV2RefundNotificationRoundTrip(t *testing.T) {
	t.Parallel()
	outer := map[string]string{"appid": "wx2421b1c4370ec43b", "mch_id": "10000100", "nonce_str": "TeqClE3i0mvn3DrK"}
	reqInfo := map[string]string{
		"transaction_id":        "4200000015201711256947025404",
		"out_trade_no":          "4893e76d8c8b434cb64e9cd536338e33",
		"refund_id":             "50000404922017112502468056157",
		"out_refund_no":         "50fd012ed1b311e7af7800163e32c503",
		"total_fee":             "6",
		"refund_fee":            "6",
		"refund_status":         "SUCCESS",
		"success_time":          "2017-11-25 15:36:17",
		"refund_recv_accout":    "支付用户零钱",
		"refund_request_source": "VENDOR_PLATFORM",
	}
	body := wxpaytest.V2RefundNotification(outer, reqInfo, testV2Key)
	n, err := wxpay.ParseV2Notification(body, testV2Key)
	if err != nil {
		t.Fatalf("ParseV2Notification error = %v, want nil", err)
	}
	if n.Kind != wxpay.V2KindRefund {
		t.Errorf("Kind = %q, want %q", n.Kind, wxpay.V2KindRefund)
	}
	if !maps.Equal(n.ReqInfo, reqInfo) {
		t.Errorf("ReqInfo = %v, want %v", n.ReqInfo, reqInfo)
	}
	if got, want := n.MchID(), "10000100"; got != want {
		t.Errorf("MchID = %q, want %q", got, want)
	}
	if got, want := n.RefundStatus(), "SUCCESS"; got != want {
		t.Errorf("RefundStatus = %q, want %q", got, want)
	}
	if _, ok := outer["req_info"]; ok {
		t.Error("V2RefundNotification modified its outer argument")
	}
}
