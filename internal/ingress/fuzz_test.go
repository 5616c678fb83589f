package ingress_test

import (
	"bytes"
	"context"
	"net/http/httptest"
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
		// A v2 body may be accepted only if its fields sign correctly,
		// which ParseV2Notification re-checks here.
		if v, err := wxpay.ParseV2Notification(body, m.APIv2Key); err == nil && v.MchID() == m.MchID {
			return
		}
		t.Fatalf("answered %d to an unsigned or altered notification: path %q body %q", rec.Code, path, body)
	})
}
