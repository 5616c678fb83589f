package ingress_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/internal/ingress"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// memPublisher keeps envelopes in memory (the fuzz target needs no NATS).
type memPublisher struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (p *memPublisher) Publish(_ context.Context, env events.Envelope) (events.Published, error) {
	if err := env.Validate(); err != nil {
		return events.Published{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	dup := p.seen[env.DedupeKey]
	p.seen[env.DedupeKey] = true
	return events.Published{Stream: events.StreamName, Sequence: uint64(len(p.seen)), Duplicate: dup}, nil
}

// FuzzHandler: no body or header crashes the handler, and nothing that is
// not the validly signed notification is answered 2xx.
func FuzzHandler(f *testing.F) {
	srv := wxpaytest.NewServer(f, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{MchID: "1230000109", APIv2Key: "192006250b4c09247ec02edce69f6a2d"})
	c, err := wxpay.NewClient(srv.ClientConfig(m))
	if err != nil {
		f.Fatal(err)
	}
	h, err := ingress.NewHandler([]ingress.Merchant{{MchID: m.MchID, Client: c, APIv2Key: m.APIv2Key}}, &memPublisher{seen: map[string]bool{}},
		ingress.Config{Logger: zerolog.Nop()})
	if err != nil {
		f.Fatal(err)
	}
	n, err := srv.NewNotification(m, wxpay.EventTransactionSuccess, `{"mchid":"1230000109","out_trade_no":"T1","transaction_id":"42000001","trade_state":"SUCCESS","amount":{"total":1}}`, wxpaytest.NotificationOptions{})
	if err != nil {
		f.Fatal(err)
	}
	v2 := wxpaytest.V2PayNotification(map[string]string{"appid": "wx1", "mch_id": "1230000109", "out_trade_no": "V", "transaction_id": "42", "total_fee": "1", "time_end": "20240101120000", "openid": "o"}, m.APIv2Key, wxpay.V2SignMD5)
	ts, nonce, sig, serial := n.Header.Get("Wechatpay-Timestamp"), n.Header.Get("Wechatpay-Nonce"), n.Header.Get("Wechatpay-Signature"), n.Header.Get("Wechatpay-Serial")
	f.Add(n.Body, ts, nonce, sig, serial, "/notify/1230000109")
	f.Add(n.Body, ts, nonce, sig, serial, "/notify")
	f.Add(v2, "", "", "", "", "/notify/1230000109")
	f.Add(bytes.Replace(v2, []byte("<out_trade_no><![CDATA[V]]>"), []byte("<out_trade_no><![CDATA[W]]>"), 1), "", "", "", "", "/notify")
	f.Add([]byte(`{"id":"x"}`), ts, nonce, "WECHATPAY/SIGNTEST/"+sig, serial, "/notify/1230000109")
	f.Add([]byte{}, "", "", "", "", "/notify/x")
	f.Add(append([]byte("\xef\xbb\xbf<?xml version=\"1.0\"?><!-- c -->\n"), v2...), "", "", "", "", "/notify/1230000109")
	refund := wxpaytest.V2RefundNotification(map[string]string{"appid": "wx1", "mch_id": "1230000109"},
		map[string]string{"transaction_id": "42", "out_trade_no": "V", "refund_id": "50", "out_refund_no": "R", "total_fee": "1", "refund_fee": "1", "refund_status": "SUCCESS"}, m.APIv2Key)
	f.Add(refund, "", "", "", "", "/notify/1230000109")
	if !v2Authentic(v2, m.APIv2Key, m.MchID) || !v2Authentic(refund, m.APIv2Key, m.MchID) || v2Authentic(bytes.Replace(v2, []byte("[V]"), []byte("[W]"), 1), m.APIv2Key, m.MchID) {
		f.Fatal("the fuzz oracle misjudges the seeds")
	}
	f.Fuzz(func(t *testing.T, body []byte, fts, fnonce, fsig, fserial, path string) {
		if len(path) == 0 || path[0] != '/' {
			path = "/" + path
		}
		req := httptest.NewRequest("POST", "/", bytes.NewReader(body))
		req.URL.Path = path
		req.Header.Set("Wechatpay-Timestamp", fts)
		req.Header.Set("Wechatpay-Nonce", fnonce)
		req.Header.Set("Wechatpay-Signature", fsig)
		req.Header.Set("Wechatpay-Serial", fserial)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code < 200 || rec.Code >= 300 {
			return
		}
		validV3 := bytes.Equal(body, n.Body) && fts == ts && fnonce == nonce
		if validV3 {
			return
		}
		// A v2 body may be accepted only if it is authentic by this test's
		// own reading of the v2 rules (not pkg/wxpay's).
		if v2Authentic(body, m.APIv2Key, m.MchID) {
			return
		}
		t.Fatalf("answered %d to an unsigned or altered notification: path %q body %q", rec.Code, path, body)
	})
}

// v2Authentic is the fuzz target's own reading of an authentic v2
// notification for merchant mchid, written apart from pkg/wxpay: the <xml>
// fields (decoded by encoding/xml) report return_code SUCCESS and mch_id
// mchid, and either carry req_info that decrypts under the key (AES-256-ECB
// under hex(MD5(key)), PKCS#7) to a <root> document, or carry a sign equal
// to the MD5 (HMAC-SHA256 for a 64-character sign) of the sorted non-empty
// fields with &key= appended, and result_code SUCCESS.
func v2Authentic(body []byte, key, mchid string) bool {
	var doc struct {
		XMLName xml.Name
		Fields  []struct {
			XMLName xml.Name
			Value   string `xml:",chardata"`
		} `xml:",any"`
	}
	if err := xml.Unmarshal(bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")), &doc); err != nil || doc.XMLName.Local != "xml" {
		return false
	}
	f := map[string]string{}
	for _, fl := range doc.Fields {
		f[fl.XMLName.Local] = fl.Value
	}
	if f["return_code"] != "SUCCESS" || f["mch_id"] != mchid {
		return false
	}
	if reqInfo, ok := f["req_info"]; ok {
		ct, err := base64.StdEncoding.DecodeString(reqInfo)
		if err != nil || len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
			return false
		}
		sum := md5.Sum([]byte(key))
		block, _ := aes.NewCipher([]byte(hex.EncodeToString(sum[:])))
		plain := make([]byte, len(ct))
		for i := 0; i < len(ct); i += aes.BlockSize {
			block.Decrypt(plain[i:], ct[i:i+aes.BlockSize])
		}
		pad := int(plain[len(plain)-1])
		if pad == 0 || pad > aes.BlockSize || !bytes.Equal(plain[len(plain)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
			return false
		}
		var root struct{ XMLName xml.Name }
		return xml.Unmarshal(plain[:len(plain)-pad], &root) == nil && root.XMLName.Local == "root"
	}
	names := make([]string, 0, len(f))
	for k, v := range f {
		if k != "sign" && v != "" {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	var signed strings.Builder
	for _, k := range names {
		signed.WriteString(k + "=" + f[k] + "&")
	}
	signed.WriteString("key=" + key)
	var want []byte
	if len(f["sign"]) == 64 {
		mac := hmac.New(sha256.New, []byte(key))
		mac.Write([]byte(signed.String()))
		want = mac.Sum(nil)
	} else {
		s := md5.Sum([]byte(signed.String()))
		want = s[:]
	}
	return strings.EqualFold(f["sign"], hex.EncodeToString(want)) && f["result_code"] == "SUCCESS"
}
