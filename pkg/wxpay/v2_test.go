package wxpay

import (
	"bytes"
	"crypto/aes"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"maps"
	"sort"
	"strings"
	"testing"
	"time"
)

// The official v2 signature example.
const (
	katV2SignKey = "192006250b4c09247ec02edce69f6a2d"
	katV2MD5     = "9A0A8659F005D6984697E2CA0A9CF3B7"
	katV2HMAC    = "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
)

func katV2SignParams() map[string]string {
	return map[string]string{
		"appid":       "wxd930ea5d5a258f4f",
		"mch_id":      "10000100",
		"device_info": "1000",
		"body":        "test",
		"nonce_str":   "ibuaiVcKdpRxkhJA",
	}
}

// A refund req_info from gopay's tests.
const (
	katReqInfoKey = "ziR0QKsTUfMOuochC9RfCdmfHECorQAP"
	katReqInfo    = "YYwp8C48th0wnQzTqeI+41pflB26v+smFj9z6h9RPBgxTyZyxc+4YNEz7QEgZNWj/6rIb2MfyWMZmCc41CfjKSssoSZPXxOhUayb6KvNSZ1p6frOX1PDWzhyruXK7ouNND+gDsG4yZ0XXzsL4/pYNwLLba/71QrnkJ/BHcByk4EXnglju5DLup9pJQSnTxjomI9Rxu57m9jg5lLQFxMWXyeASZJNvof0ulnHlWJswS4OxKOkmW7VEyKyLGV6npoOm03Qsx2wkRxLsSa9gPpg4hdaReeUqh1FMbm7aWjyrVYT/MEZWg98p4GomEIYvz34XfDncTezX4bf/ZiSLXt79aE1/YTZrYfymXeCrGjlbe0rg/T2ezJHAC870u2vsVbY1/KcE2A443N+DEnAziXlBQ1AeWq3Rqk/O6/TMM0lomzgctAOiAMg+bh5+Gu1ubA9O3E+vehULydD5qx2o6i3+qA9ORbH415NyRrQdeFq5vmCiRikp5xYptWiGZA0tkoaLKMPQ4ndE5gWHqiBbGPfULZWokI+QjjhhBmwgbd6J0VqpRorwOuzC/BHdkP72DCdNcm7IDUpggnzBIy0+seWIkcHEryKjge3YDHpJeQCqrAH0CgxXHDt1xtbQbST1VqFyuhPhUjDXMXrknrGPN/oE1t0rLRq+78cI+k8xe5E6seeUXQsEe8r3358mpcDYSmXWSXVZxK6er9EF98APqHwcndyEJD2YyCh/mMVhERuX+7kjlRXSiNUWa/Cv/XAKFQuvUYA5ea2eYWtPRHa4DpyuF1SNsaqVKfgqKXZrJHfAgslVpSVqUpX4zkKszHF4kwMZO3M7J1P94Mxa7Tm9mTOJePOoHPXeEB+m9rX6pSfoi3mJDQ5inJ+Vc4gOkg/Wd/lqiy6TTyP/dHDN6/v+AuJx5AXBo/2NDD3fWhHjkqEKIuARr2ClZt9ZRQO4HkXdZo7CN06sGCHk48Tg8PmxnxKcMZm7Aoquv5yMIM2gWSWIRJhwJ8cUpafIHc+GesDlbF6Zbt+/KXkafJAQq2RklEN+WvZ/zFz113EPgWPjp16TwBoziq96MMekvWKY/vdhjol8VFtGH9F61Oy1Xwf6DJtPw=="
)

func katReqInfoFields() map[string]string {
	return map[string]string{
		"out_refund_no":         "50fd012ed1b311e7af7800163e32c503",
		"out_trade_no":          "4893e76d8c8b434cb64e9cd536338e33",
		"refund_account":        "REFUND_SOURCE_RECHARGE_FUNDS",
		"refund_fee":            "6",
		"refund_id":             "50000404922017112502468056157",
		"refund_recv_accout":    "支付用户零钱",
		"refund_request_source": "API",
		"refund_status":         "SUCCESS",
		"settlement_refund_fee": "6",
		"settlement_total_fee":  "6",
		"success_time":          "2017-11-25 15:36:17",
		"total_fee":             "6",
		"transaction_id":        "4200000015201711256947025404",
	}
}

// v2Sentinels are the sentinels an API v2 parse may wrap.
var v2Sentinels = []error{ErrMalformed, ErrMissingHeader, ErrTimestampSkew, ErrBadSignature, ErrUnknownSerial, ErrDecrypt, ErrInvalidConfig}

// renderFlatXML renders fields as <root><k><![CDATA[v]]></k>…</root>, keys
// sorted.
func renderFlatXML(root string, fields map[string]string) []byte {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	b.WriteString("<" + root + ">")
	for _, k := range keys {
		b.WriteString("<" + k + ">" + v2CDATA(fields[k]) + "</" + k + ">")
	}
	b.WriteString("</" + root + ">")
	return b.Bytes()
}

// payFields returns a typical v2 pay-result notification without sign.
func payFields() map[string]string {
	return map[string]string{
		"return_code":    "SUCCESS",
		"result_code":    "SUCCESS",
		"appid":          "wx2421b1c4370ec43b",
		"mch_id":         "10000100",
		"nonce_str":      "5d2b6c2a8db53831f7eda20af46e531c",
		"openid":         "oUpF8uMEb4qRXf22hE3X68TekukE",
		"is_subscribe":   "N",
		"trade_type":     "JSAPI",
		"bank_type":      "CMC",
		"total_fee":      "1",
		"fee_type":       "CNY",
		"cash_fee":       "1",
		"transaction_id": "1004400740201409030005092168",
		"out_trade_no":   "1409811653",
		"attach":         "a]]>b <&> 支付",
		"time_end":       "20140903131540",
	}
}

// signedPay signs fields (adding sign_type when withSignType) and renders
// them as <xml>.
func signedPay(fields map[string]string, key string, st V2SignType, withSignType bool) []byte {
	f := maps.Clone(fields)
	if withSignType {
		f["sign_type"] = string(st)
	}
	f["sign"] = V2Sign(f, key, st)
	return renderFlatXML("xml", f)
}

func refundBody(key string, outer, reqInfo map[string]string) []byte {
	ri, err := encryptV2ReqInfo(renderFlatXML("root", reqInfo), key)
	if err != nil {
		panic(err)
	}
	f := maps.Clone(outer)
	f["req_info"] = ri
	return renderFlatXML("xml", f)
}

func refundOuter() map[string]string {
	return map[string]string{
		"return_code": "SUCCESS",
		"appid":       "wx2421b1c4370ec43b",
		"mch_id":      "10000100",
		"nonce_str":   "TeqClE3i0mvn3DrK",
	}
}

func TestV2SignKAT(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		params   map[string]string
		signType V2SignType
		want     string
	}{
		{"MD5", katV2SignParams(), V2SignMD5, katV2MD5},
		{"empty sign type is MD5", katV2SignParams(), "", katV2MD5},
		{"HMAC-SHA256", katV2SignParams(), V2SignHMACSHA256, katV2HMAC},
		{"sign and empty values ignored", func() map[string]string {
			p := katV2SignParams()
			p["sign"] = "WHATEVER"
			p["attach"] = ""
			return p
		}(), V2SignMD5, katV2MD5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := V2Sign(tt.params, katV2SignKey, tt.signType); got != tt.want {
				t.Errorf("V2Sign = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestParseV2XML(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want map[string]string // nil: want ErrMalformed
	}{
		{"cdata", `<xml><a><![CDATA[x y]]></a><b>2</b></xml>`, map[string]string{"a": "x y", "b": "2"}},
		{"declaration, whitespace, comments", "\ufeff<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- hi -->\n<xml>\n  <a>1</a>\n  <b/>\n</xml>\n<!-- bye -->\n",
			map[string]string{"a": "1", "b": ""}},
		{"entities and mixed cdata", `<xml><a>&lt;x&gt;<![CDATA[&amp;]]></a></xml>`, map[string]string{"a": "<x>&amp;"}},
		{"values not trimmed", `<xml><a> 1 </a></xml>`, map[string]string{"a": " 1 "}},
		{"empty root", `<xml></xml>`, map[string]string{}},
		{"empty body", ``, nil},
		{"whitespace body", " \n\t", nil},
		{"wrong root", `<root><a>1</a></root>`, nil},
		{"nested element", `<xml><a><b>1</b></a></xml>`, nil},
		{"duplicate key", `<xml><a>1</a><a>2</a></xml>`, nil},
		{"trailing element", `<xml><a>1</a></xml><xml></xml>`, nil},
		{"trailing text", `<xml><a>1</a></xml>junk`, nil},
		{"text in root", `<xml>junk<a>1</a></xml>`, nil},
		{"unclosed root", `<xml><a>1</a>`, nil},
		{"mismatched tags", `<xml><a>1</b></xml>`, nil},
		{"not xml", `{"a":1}`, nil},
		{"doctype", `<!DOCTYPE xml [<!ENTITY e "x">]><xml><a>&e;</a></xml>`, nil},
		{"undefined entity", `<xml><a>&e;</a></xml>`, nil},
		{"namespaced element", `<xml xmlns:p="urn:p"><p:a>1</p:a></xml>`, nil},
		{"two roots text first", `x<xml></xml>`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseV2XML([]byte(tt.body))
			if tt.want == nil {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("ParseV2XML error = %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseV2XML error = %v, want nil", err)
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("ParseV2XML = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseV2XMLRootVariant(t *testing.T) {
	t.Parallel()
	got, err := parseFlatXML([]byte("<root>\n<a><![CDATA[1]]></a>\n</root>"), "root")
	if err != nil {
		t.Fatalf("parseFlatXML error = %v, want nil", err)
	}
	if want := map[string]string{"a": "1"}; !maps.Equal(got, want) {
		t.Errorf("parseFlatXML = %v, want %v", got, want)
	}
	if _, err := parseFlatXML([]byte("<xml></xml>"), "root"); !errors.Is(err, ErrMalformed) {
		t.Errorf("parseFlatXML(<xml>, root) error = %v, want ErrMalformed", err)
	}
}

func TestDecryptV2ReqInfoKAT(t *testing.T) {
	t.Parallel()
	if got, want := string(v2AESKey(katReqInfoKey)), "a1fdc4d1da9fb443b1091d34bcee9493"; got != want {
		t.Errorf("v2AESKey = %s, want %s", got, want)
	}
	plain, err := DecryptV2ReqInfo(katReqInfo, katReqInfoKey)
	if err != nil {
		t.Fatalf("DecryptV2ReqInfo error = %v, want nil", err)
	}
	got, err := parseFlatXML(plain, "root")
	if err != nil {
		t.Fatalf("parseFlatXML(req_info) error = %v, want nil", err)
	}
	want := katReqInfoFields()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("req_info %s = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("req_info has %d fields, want %d", len(got), len(want))
	}
}

func TestAESECBEncryptKAT(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, key, plain, want string
	}{
		{"hello", "0123456789abcdef0123456789abcdef", "hello", "pZwJZBLuy3mDACEQT4YTBw=="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ct, err := aesECBEncrypt([]byte(tt.key), []byte(tt.plain))
			if err != nil {
				t.Fatalf("aesECBEncrypt error = %v, want nil", err)
			}
			if got := base64.StdEncoding.EncodeToString(ct); got != tt.want {
				t.Errorf("aesECBEncrypt = %s, want %s", got, tt.want)
			}
			back, err := aesECBDecrypt([]byte(tt.key), ct)
			if err != nil {
				t.Fatalf("aesECBDecrypt error = %v, want nil", err)
			}
			if string(back) != tt.plain {
				t.Errorf("aesECBDecrypt = %q, want %q", back, tt.plain)
			}
		})
	}
}

func TestV2ReqInfoRoundTrip(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 15, 16, 17, 32, 100} {
		plain := bytes.Repeat([]byte{'x'}, n)
		ri, err := encryptV2ReqInfo(plain, katReqInfoKey)
		if err != nil {
			t.Fatalf("encryptV2ReqInfo(%d bytes) error = %v, want nil", n, err)
		}
		got, err := DecryptV2ReqInfo(ri, katReqInfoKey)
		if err != nil {
			t.Fatalf("DecryptV2ReqInfo(%d bytes) error = %v, want nil", n, err)
		}
		if !bytes.Equal(got, plain) {
			t.Errorf("round trip of %d bytes = %q, want %q", n, got, plain)
		}
	}
}

// ecbRaw encrypts blocks (a multiple of 16 bytes) with the req_info key of
// apiV2Key and no padding, to build bad paddings.
func ecbRaw(t *testing.T, apiV2Key string, blocks []byte) string {
	t.Helper()
	c, err := aes.NewCipher(v2AESKey(apiV2Key))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(blocks))
	for i := 0; i < len(out); i += aes.BlockSize {
		c.Encrypt(out[i:i+aes.BlockSize], blocks[i:i+aes.BlockSize])
	}
	return base64.StdEncoding.EncodeToString(out)
}

func TestDecryptV2ReqInfoErrors(t *testing.T) {
	t.Parallel()
	block := func(last ...byte) []byte {
		b := bytes.Repeat([]byte{'a'}, aes.BlockSize)
		copy(b[aes.BlockSize-len(last):], last)
		return b
	}
	tests := []struct {
		name    string
		reqInfo string
		key     string
		want    error
	}{
		{"wrong key", katReqInfo, "00000000000000000000000000000000", ErrDecrypt},
		{"bad base64", "!!not base64!!", katReqInfoKey, ErrMalformed},
		{"empty", "", katReqInfoKey, ErrMalformed},
		{"not a block multiple", base64.StdEncoding.EncodeToString(make([]byte, 17)), katReqInfoKey, ErrMalformed},
		{"pad byte zero", ecbRaw(t, katReqInfoKey, block(0)), katReqInfoKey, ErrDecrypt},
		{"pad byte 17", ecbRaw(t, katReqInfoKey, block(17)), katReqInfoKey, ErrDecrypt},
		{"pad bytes differ", ecbRaw(t, katReqInfoKey, block(2, 3, 3)), katReqInfoKey, ErrDecrypt},
		{"empty key", katReqInfo, "", ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := DecryptV2ReqInfo(tt.reqInfo, tt.key)
			if !errors.Is(err, tt.want) {
				t.Fatalf("DecryptV2ReqInfo error = %v, want %v", err, tt.want)
			}
			if strings.Contains(err.Error(), tt.key) && tt.key != "" {
				t.Errorf("error %q contains the key", err)
			}
		})
	}
	if _, err := encryptV2ReqInfo([]byte("x"), ""); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("encryptV2ReqInfo with empty key error = %v, want ErrInvalidConfig", err)
	}
}

func TestParseV2NotificationPay(t *testing.T) {
	t.Parallel()
	const key = katV2SignKey
	tests := []struct {
		name         string
		signType     V2SignType
		withSignType bool
	}{
		{"MD5 without sign_type", V2SignMD5, false},
		{"MD5 with sign_type", V2SignMD5, true},
		{"HMAC-SHA256 without sign_type", V2SignHMACSHA256, false},
		{"HMAC-SHA256 with sign_type", V2SignHMACSHA256, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body := signedPay(payFields(), key, tt.signType, tt.withSignType)
			n, err := ParseV2Notification(body, key)
			if err != nil {
				t.Fatalf("ParseV2Notification error = %v, want nil", err)
			}
			if n.Kind != V2KindPay {
				t.Errorf("Kind = %q, want %q", n.Kind, V2KindPay)
			}
			if n.SignType != tt.signType {
				t.Errorf("SignType = %q, want %q", n.SignType, tt.signType)
			}
			if got, want := n.MchID(), "10000100"; got != want {
				t.Errorf("MchID = %q, want %q", got, want)
			}
			if got, want := n.AppID(), "wx2421b1c4370ec43b"; got != want {
				t.Errorf("AppID = %q, want %q", got, want)
			}
			if got, want := n.Fields["attach"], "a]]>b <&> 支付"; got != want {
				t.Errorf("attach = %q, want %q", got, want)
			}
			if n.ReqInfo != nil || n.RefundStatus() != "" {
				t.Errorf("ReqInfo = %v, want nil", n.ReqInfo)
			}
		})
	}

	t.Run("lower-case sign", func(t *testing.T) {
		t.Parallel()
		f := payFields()
		f["sign"] = strings.ToLower(V2Sign(f, key, V2SignMD5))
		if _, err := ParseV2Notification(renderFlatXML("xml", f), key); err != nil {
			t.Errorf("ParseV2Notification error = %v, want nil", err)
		}
	})
}

func TestParseV2NotificationRefund(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body []byte
		key  string
		want map[string]string
	}{
		{
			name: "KAT req_info",
			body: func() []byte {
				f := refundOuter()
				f["req_info"] = katReqInfo
				return renderFlatXML("xml", f)
			}(),
			key:  katReqInfoKey,
			want: katReqInfoFields(),
		},
		{
			name: "round trip",
			body: refundBody(katV2SignKey, refundOuter(), map[string]string{"refund_id": "1", "refund_status": "CHANGE"}),
			key:  katV2SignKey,
			want: map[string]string{"refund_id": "1", "refund_status": "CHANGE"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n, err := ParseV2Notification(tt.body, tt.key)
			if err != nil {
				t.Fatalf("ParseV2Notification error = %v, want nil", err)
			}
			if n.Kind != V2KindRefund {
				t.Errorf("Kind = %q, want %q", n.Kind, V2KindRefund)
			}
			if !maps.Equal(n.ReqInfo, tt.want) {
				t.Errorf("ReqInfo = %v, want %v", n.ReqInfo, tt.want)
			}
			if got, want := n.RefundStatus(), tt.want["refund_status"]; got != want {
				t.Errorf("RefundStatus = %q, want %q", got, want)
			}
			if got, want := n.MchID(), "10000100"; got != want {
				t.Errorf("MchID = %q, want %q", got, want)
			}
			if n.SignType != "" {
				t.Errorf("SignType = %q, want empty", n.SignType)
			}
		})
	}
}

func TestParseV2NotificationErrors(t *testing.T) {
	t.Parallel()
	const key = katV2SignKey
	// mod returns a pay notification signed with MD5 after change runs
	// before signing (sign=true) or after it.
	mod := func(beforeSign, afterSign func(map[string]string)) []byte {
		f := payFields()
		if beforeSign != nil {
			beforeSign(f)
		}
		f["sign"] = V2Sign(f, key, V2SignMD5)
		if afterSign != nil {
			afterSign(f)
		}
		return renderFlatXML("xml", f)
	}
	refundWith := func(reqInfo string) []byte {
		f := refundOuter()
		f["req_info"] = reqInfo
		return renderFlatXML("xml", f)
	}
	tests := []struct {
		name string
		body []byte
		key  string
		want error
	}{
		{"bad XML", []byte("<xml><return_code>SUCCESS</xml>"), key, ErrMalformed},
		{"empty body", nil, key, ErrMalformed},
		{"JSON body", []byte(`{"id":"1"}`), key, ErrMalformed},
		{"wrong root", bytes.Replace(bytes.Replace(mod(nil, nil), []byte("<xml>"), []byte("<doc>"), 1), []byte("</xml>"), []byte("</doc>"), 1), key, ErrMalformed},
		{"nested element", bytes.Replace(mod(nil, nil), []byte("<mch_id>"), []byte("<mch_id><x>1</x>"), 1), key, ErrMalformed},
		{"duplicate key", bytes.Replace(mod(nil, nil), []byte("<mch_id>"), []byte("<mch_id>1</mch_id><mch_id>"), 1), key, ErrMalformed},
		{"trailing garbage", append(mod(nil, nil), "<xml/>"...), key, ErrMalformed},
		{"missing sign", mod(nil, func(f map[string]string) { delete(f, "sign") }), key, ErrMalformed},
		{"wrong sign", mod(nil, func(f map[string]string) { f["sign"] = strings.Repeat("A", 32) }), key, ErrBadSignature},
		{"wrong HMAC-length sign", mod(nil, func(f map[string]string) { f["sign"] = strings.Repeat("A", 64) }), key, ErrBadSignature},
		{"wrong key", mod(nil, nil), "another key", ErrBadSignature},
		{"tampered value", mod(nil, func(f map[string]string) { f["total_fee"] = "100" }), key, ErrBadSignature},
		{"added field", mod(nil, func(f map[string]string) { f["coupon_fee"] = "1" }), key, ErrBadSignature},
		{"sign_type does not match sign", mod(nil, func(f map[string]string) { f["sign_type"] = "HMAC-SHA256" }), key, ErrBadSignature},
		{"sign_type unknown", mod(func(f map[string]string) { f["sign_type"] = "SHA1" }, nil), key, ErrMalformed},
		{"return_code FAIL", mod(func(f map[string]string) { f["return_code"] = "FAIL" }, nil), key, ErrMalformed},
		{"return_code missing", mod(func(f map[string]string) { delete(f, "return_code") }, nil), key, ErrMalformed},
		{"return_code other", mod(func(f map[string]string) { f["return_code"] = "success" }, nil), key, ErrMalformed},
		{"result_code FAIL", mod(func(f map[string]string) { f["result_code"] = "FAIL" }, nil), key, ErrMalformed},
		{"result_code missing", mod(func(f map[string]string) { delete(f, "result_code") }, nil), key, ErrMalformed},
		{"result_code FAIL with bad sign", mod(func(f map[string]string) { f["result_code"] = "FAIL" }, func(f map[string]string) { f["sign"] = strings.Repeat("0", 32) }), key, ErrBadSignature},
		{"empty key", mod(nil, nil), "", ErrInvalidConfig},
		{"refund bad base64", refundWith("%%%"), katReqInfoKey, ErrMalformed},
		{"refund empty req_info", refundWith(""), katReqInfoKey, ErrMalformed},
		{"refund wrong v2 key", refundWith(katReqInfo), "wrongwrongwrongwrongwrongwrong12", ErrDecrypt},
		{"refund bad padding", refundWith(ecbRaw(t, katReqInfoKey, bytes.Repeat([]byte{'a'}, 32))), katReqInfoKey, ErrDecrypt},
		{"refund req_info not root XML", refundWith(mustEncryptReqInfo(t, []byte("<xml><a>1</a></xml>"), katReqInfoKey)), katReqInfoKey, ErrDecrypt},
		{"refund return_code FAIL", func() []byte {
			f := refundOuter()
			f["return_code"] = "FAIL"
			f["return_msg"] = "bad"
			return renderFlatXML("xml", f)
		}(), katReqInfoKey, ErrMalformed},
		{"refund empty key", refundWith(katReqInfo), "", ErrInvalidConfig},
		{"refund outer mch_id contradicts req_info", refundBody(key, refundOuter(), map[string]string{"mch_id": "10000666", "refund_id": "1", "refund_status": "SUCCESS"}), key, ErrBadSignature},
		{"refund outer appid contradicts req_info", refundBody(key, refundOuter(), map[string]string{"appid": "wx6666666666666666", "refund_id": "1", "refund_status": "SUCCESS"}), key, ErrBadSignature},
		{"refund outer sub_mch_id contradicts req_info", func() []byte {
			outer := refundOuter()
			outer["sub_mch_id"] = "1900000666"
			return refundBody(key, outer, map[string]string{"sub_mch_id": "1900000109", "refund_id": "1", "refund_status": "SUCCESS"})
		}(), key, ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n, err := ParseV2Notification(tt.body, tt.key)
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParseV2Notification error = %v, want %v", err, tt.want)
			}
			if n != nil {
				t.Errorf("ParseV2Notification = %+v, want nil", n)
			}
			if got := wrappedSentinels(err); got != 1 {
				t.Errorf("error %q wraps %d sentinels, want 1", err, got)
			}
			if tt.key != "" && strings.Contains(err.Error(), tt.key) {
				t.Errorf("error %q contains the key", err)
			}
		})
	}
}

func mustEncryptReqInfo(t *testing.T, plain []byte, key string) string {
	t.Helper()
	ri, err := encryptV2ReqInfo(plain, key)
	if err != nil {
		t.Fatal(err)
	}
	return ri
}

func wrappedSentinels(err error) int {
	n := 0
	for _, s := range v2Sentinels {
		if errors.Is(err, s) {
			n++
		}
	}
	return n
}

func TestV2Answer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		success bool
		msg     string
		want    string
		wantMsg string // return_msg as an XML parser reads it
	}{
		{"success", true, "", `<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>`, "OK"},
		{"success with message", true, "成功", `<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[成功]]></return_msg></xml>`, "成功"},
		{"fail", false, "bad sign", `<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[bad sign]]></return_msg></xml>`, "bad sign"},
		{"fail default message", false, "", `<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[FAIL]]></return_msg></xml>`, "FAIL"},
		{"CDATA end split", false, "a]]>b", `<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[a]]]]><![CDATA[>b]]></return_msg></xml>`, "a]]>b"},
		{"markup kept literal", false, "<x>&amp;", `<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[<x>&amp;]]></return_msg></xml>`, "<x>&amp;"},
		{"newline and control characters", false, "a\nb\x00c", `<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[a b c]]></return_msg></xml>`, "a b c"},
		{"invalid UTF-8", false, "a\xffb", "<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[a\uFFFDb]]></return_msg></xml>", "a\uFFFDb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := V2Answer(tt.success, tt.msg)
			if string(got) != tt.want {
				t.Errorf("V2Answer = %s, want %s", got, tt.want)
			}
			var parsed struct {
				XMLName    xml.Name `xml:"xml"`
				ReturnCode string   `xml:"return_code"`
				ReturnMsg  string   `xml:"return_msg"`
			}
			if err := xml.Unmarshal(got, &parsed); err != nil {
				t.Fatalf("xml.Unmarshal(V2Answer) error = %v, want nil", err)
			}
			if parsed.ReturnMsg != tt.wantMsg {
				t.Errorf("parsed return_msg = %q, want %q", parsed.ReturnMsg, tt.wantMsg)
			}
			fields, err := ParseV2XML(got)
			if err != nil {
				t.Fatalf("ParseV2XML(V2Answer) error = %v, want nil", err)
			}
			if fields["return_msg"] != tt.wantMsg {
				t.Errorf("ParseV2XML return_msg = %q, want %q", fields["return_msg"], tt.wantMsg)
			}
		})
	}
}

func TestV2Times(t *testing.T) {
	t.Parallel()
	cst := time.FixedZone("CST", 8*3600)
	tests := []struct {
		name  string
		parse func(string) (time.Time, error)
		in    string
		want  time.Time // zero: want ErrMalformed
	}{
		{"time_end", V2TimeEnd, "20140903131540", time.Date(2014, 9, 3, 13, 15, 40, 0, cst)},
		{"time_end is UTC+8", V2TimeEnd, "20000101000000", time.Date(1999, 12, 31, 16, 0, 0, 0, time.UTC)},
		{"time_end empty", V2TimeEnd, "", time.Time{}},
		{"time_end short", V2TimeEnd, "2014090313154", time.Time{}},
		{"time_end long", V2TimeEnd, "201409031315401", time.Time{}},
		{"time_end month 13", V2TimeEnd, "20141303131540", time.Time{}},
		{"time_end Feb 30", V2TimeEnd, "20140230131540", time.Time{}},
		{"time_end letters", V2TimeEnd, "2014090313154x", time.Time{}},
		{"time_end with separators", V2TimeEnd, "2014-09-031315", time.Time{}},
		{"success_time", V2RefundSuccessTime, "2017-11-25 15:36:17", time.Date(2017, 11, 25, 15, 36, 17, 0, cst)},
		{"success_time is UTC+8", V2RefundSuccessTime, "2017-11-25 07:00:00", time.Date(2017, 11, 24, 23, 0, 0, 0, time.UTC)},
		{"success_time compact", V2RefundSuccessTime, "20171125153617", time.Time{}},
		{"success_time T separator", V2RefundSuccessTime, "2017-11-25T15:36:17", time.Time{}},
		{"success_time hour 24", V2RefundSuccessTime, "2017-11-25 24:36:17", time.Time{}},
		{"success_time RFC 3339", V2RefundSuccessTime, "2017-11-25T15:36:17+08:00", time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.parse(tt.in)
			if tt.want.IsZero() {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("parse(%q) error = %v, want ErrMalformed", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse(%q) error = %v, want nil", tt.in, err)
			}
			if !got.Equal(tt.want) {
				t.Errorf("parse(%q) = %v, want %v", tt.in, got, tt.want)
			}
			if _, off := got.Zone(); off != 8*3600 {
				t.Errorf("parse(%q) zone offset = %d, want %d", tt.in, off, 8*3600)
			}
		})
	}
}

// canonicalV2 is what a v2 signature covers: the non-empty fields, with
// sign compared case-insensitively.
func canonicalV2(fields map[string]string) map[string]string {
	out := make(map[string]string, len(fields))
	for k, v := range fields {
		if v == "" {
			continue
		}
		if k == "sign" {
			v = strings.ToUpper(v)
		}
		out[k] = v
	}
	return out
}

func FuzzParseV2Notification(f *testing.F) {
	const key = katV2SignKey
	signed := [][]byte{
		signedPay(payFields(), key, V2SignMD5, false),
		signedPay(payFields(), key, V2SignHMACSHA256, true),
		signedPay(payFields(), key, V2SignHMACSHA256, false),
	}
	var originals []map[string]string
	for _, body := range signed {
		fields, err := ParseV2XML(body)
		if err != nil {
			f.Fatal(err)
		}
		originals = append(originals, canonicalV2(fields))
		f.Add(body)
	}
	f.Add(refundBody(key, refundOuter(), katReqInfoFields()))
	f.Add([]byte(""))
	f.Add([]byte("<xml></xml>"))
	f.Add([]byte("<xml><return_code><![CDATA[FAIL]]></return_code></xml>"))
	f.Add([]byte("<xml><return_code>SUCCESS</return_code><req_info>AAAA</req_info></xml>"))
	f.Add([]byte("<xml><a><b>1</b></a></xml>"))
	f.Add([]byte("<xml><a>1</a><a>2</a></xml>junk"))
	f.Add([]byte("<?xml version=\"1.0\"?><!DOCTYPE x><xml/>"))

	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := ParseV2Notification(body, key)
		if err != nil {
			if n != nil {
				t.Fatalf("ParseV2Notification returned %+v with error %v", n, err)
			}
			if got := wrappedSentinels(err); got != 1 {
				t.Fatalf("error %q wraps %d sentinels, want 1", err, got)
			}
			return
		}
		if n == nil {
			t.Fatal("ParseV2Notification returned nil, nil")
		}
		if n.Kind != V2KindPay {
			return // refunds are authenticated by the encryption only
		}
		got := canonicalV2(n.Fields)
		for _, want := range originals {
			if maps.Equal(got, want) {
				return
			}
		}
		t.Fatalf("accepted a pay notification with fields %v that were never signed", n.Fields)
	})
}

// WeChat has signed with MD5 while sign_type said HMAC-SHA256: the length of
// sign decides, so such a notification is accepted, and a sign of the other
// length does not verify.
func TestParseV2NotificationSignLengthDecides(t *testing.T) {
	const key = "192006250b4c09247ec02edce69f6a2d"
	f := payFields()
	f["sign_type"] = string(V2SignHMACSHA256)
	f["sign"] = V2Sign(f, key, V2SignMD5)
	n, err := ParseV2Notification(renderFlatXML("xml", f), key)
	if err != nil {
		t.Fatalf("MD5 sign under sign_type HMAC-SHA256: %v", err)
	}
	if n.SignType != V2SignMD5 {
		t.Fatalf("sign type: got %s, want MD5", n.SignType)
	}
	f["sign"] = V2Sign(f, key, V2SignHMACSHA256)
	if _, err := ParseV2Notification(renderFlatXML("xml", f), key); err != nil {
		t.Fatalf("HMAC-SHA256 sign: %v", err)
	}
	f["sign"] = f["sign"][:40]
	if _, err := ParseV2Notification(renderFlatXML("xml", f), key); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("40-char sign: got %v, want ErrBadSignature", err)
	}
}

func TestV2NotificationAuthenticated(t *testing.T) {
	t.Parallel()
	const key = katV2SignKey
	t.Run("pay: the fields the sign covers", func(t *testing.T) {
		t.Parallel()
		f := payFields()
		f["sign"] = V2Sign(f, key, V2SignMD5)
		f["device_info"] = "" // empty: outside the signed string
		n, err := ParseV2Notification(renderFlatXML("xml", f), key)
		if err != nil {
			t.Fatalf("ParseV2Notification: %v", err)
		}
		if got, want := n.Authenticated(), payFields(); !maps.Equal(got, want) {
			t.Errorf("Authenticated = %v, want %v (no sign, no empty field)", got, want)
		}
	})
	t.Run("refund: req_info only", func(t *testing.T) {
		t.Parallel()
		outer := refundOuter()
		outer["sub_mch_id"] = "1900000666"
		outer["total_fee"] = "1"
		reqInfo := map[string]string{"mch_id": "10000100", "appid": "wx2421b1c4370ec43b", "refund_id": "1", "refund_status": "SUCCESS", "total_fee": "6"}
		n, err := ParseV2Notification(refundBody(key, outer, reqInfo), key)
		if err != nil {
			t.Fatalf("ParseV2Notification (outer ids agree with req_info): %v", err)
		}
		got := n.Authenticated()
		if !maps.Equal(got, reqInfo) {
			t.Errorf("Authenticated = %v, want the req_info fields %v", got, reqInfo)
		}
		got["refund_id"] = "changed"
		if n.ReqInfo["refund_id"] != "1" {
			t.Error("Authenticated returned the notification's own map")
		}
	})
}
