package wxpay_test

import (
	"bytes"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

var sentinels = []error{wxpay.ErrMalformed, wxpay.ErrMissingHeader, wxpay.ErrBadSignature, wxpay.ErrTimestampSkew,
	wxpay.ErrUnknownSerial, wxpay.ErrDecrypt, wxpay.ErrCertificateRefresh}

// FuzzParseNotification: no input panics, every rejection wraps a sentinel,
// and nothing but the exact signed body and headers is accepted.
func FuzzParseNotification(f *testing.F) {
	srv := wxpaytest.NewServer(f, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	fixed := srv.Now()
	cfg := srv.ClientConfig(m)
	cfg.Now = func() time.Time { return fixed }
	c, err := wxpay.NewClient(cfg)
	if err != nil {
		f.Fatal(err)
	}
	n, err := srv.NewNotification(m, wxpay.EventTransactionSuccess, paidTransaction(m, "T1"), wxpaytest.NotificationOptions{})
	if err != nil {
		f.Fatal(err)
	}
	h := n.Header
	ts, nonce, sig, serial := h.Get(wxpay.HeaderTimestamp), h.Get(wxpay.HeaderNonce), h.Get(wxpay.HeaderSignature), h.Get(wxpay.HeaderSerial)
	f.Add(n.Body, ts, nonce, sig, serial)
	f.Add(n.Body[:len(n.Body)-1], ts, nonce, sig, serial)
	f.Add(append([]byte(" "), n.Body...), ts, nonce, sig, serial)
	f.Add(n.Body, ts, nonce, "WECHATPAY/SIGNTEST/"+sig, serial)
	f.Add(n.Body, ts+"0", nonce, sig, serial)
	f.Add([]byte(`{}`), ts, nonce, sig, serial)
	f.Add([]byte(nil), "", "", "", "")
	f.Fuzz(func(t *testing.T, body []byte, fts, fnonce, fsig, fserial string) {
		hh := http.Header{}
		hh.Set(wxpay.HeaderTimestamp, fts)
		hh.Set(wxpay.HeaderNonce, fnonce)
		hh.Set(wxpay.HeaderSignature, fsig)
		hh.Set(wxpay.HeaderSerial, fserial)
		got, err := c.ParseNotification(ctx, hh, body)
		if err != nil {
			for _, s := range sentinels {
				if errors.Is(err, s) {
					return
				}
			}
			t.Fatalf("error wraps no sentinel: %v", err)
		}
		if !bytes.Equal(body, n.Body) || fts != ts || fnonce != nonce || got.ID != n.ID {
			t.Fatalf("accepted a mutated notification: body %q ts %q nonce %q", body, fts, fnonce)
		}
	})
}
