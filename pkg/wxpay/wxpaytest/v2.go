package wxpaytest

import (
	"crypto/rand"
	"encoding/hex"
	"maps"
	"slices"
	"strings"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// V2PayNotification builds an API v2 pay-result notification body signed
// with apiV2Key. It copies fields, sets return_code and result_code to
// SUCCESS and nonce_str to a random value unless fields has them, sets
// sign_type to HMAC-SHA256 when signType is wxpay.V2SignHMACSHA256 (MD5
// notifications carry no sign_type unless fields has one), signs with
// wxpay.V2Sign and renders <xml> with every value in CDATA, keys sorted.
func V2PayNotification(fields map[string]string, apiV2Key string, signType wxpay.V2SignType) []byte {
	f := maps.Clone(fields)
	if f == nil {
		f = make(map[string]string)
	}
	v2SetDefault(f, "return_code", "SUCCESS")
	v2SetDefault(f, "result_code", "SUCCESS")
	v2SetDefault(f, "nonce_str", v2Nonce())
	if signType == wxpay.V2SignHMACSHA256 {
		f["sign_type"] = string(wxpay.V2SignHMACSHA256)
	}
	f["sign"] = wxpay.V2Sign(f, apiV2Key, signType)
	return v2RenderXML("xml", f)
}

// V2RefundNotification builds an API v2 refund notification body: reqInfo
// rendered as a <root> document and encrypted (AES-256-ECB, as WeChat does)
// under apiV2Key becomes req_info, next to a copy of outer with return_code
// SUCCESS unless outer has one. Refund notifications carry no sign. It
// panics if apiV2Key is empty.
func V2RefundNotification(outer map[string]string, reqInfo map[string]string, apiV2Key string) []byte {
	enc, err := encryptReqInfo(v2RenderXML("root", reqInfo), apiV2Key)
	if err != nil {
		panic("wxpaytest: V2RefundNotification: " + err.Error())
	}
	f := maps.Clone(outer)
	if f == nil {
		f = make(map[string]string)
	}
	v2SetDefault(f, "return_code", "SUCCESS")
	f["req_info"] = enc
	return v2RenderXML("xml", f)
}

func v2SetDefault(m map[string]string, k, v string) {
	if _, ok := m[k]; !ok {
		m[k] = v
	}
}

// v2Nonce returns 32 random hex characters, like WeChat's nonce_str.
func v2Nonce() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// v2RenderXML renders <root><k><![CDATA[v]]></k>…</root> without
// whitespace, keys sorted. A "]]>" in a value is split across two CDATA
// sections.
func v2RenderXML(root string, fields map[string]string) []byte {
	var b strings.Builder
	b.WriteString("<" + root + ">")
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		v := strings.ReplaceAll(fields[k], "]]>", "]]]]><![CDATA[>")
		b.WriteString("<" + k + "><![CDATA[" + v + "]]></" + k + ">")
	}
	b.WriteString("</" + root + ">")
	return []byte(b.String())
}
