package wxpay_test

import (
	"context"
	"crypto/rsa"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

var ctx = context.Background()

func paidTransaction(m *wxpaytest.Merchant, outTradeNo string) map[string]any {
	return map[string]any{
		"mchid": m.MchID, "appid": "wxd678efh567hg6787", "out_trade_no": outTradeNo,
		"transaction_id": "4200000215201811190261405420", "trade_type": "JSAPI", "trade_state": "SUCCESS",
		"trade_state_desc": "支付成功", "bank_type": "CMC", "attach": "", "success_time": "2018-06-08T10:34:56+08:00",
		"payer":  map[string]any{"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
		"amount": map[string]any{"total": 100, "payer_total": 100, "currency": "CNY", "payer_currency": "CNY"},
	}
}

func newClient(t *testing.T, srv *wxpaytest.Server, m *wxpaytest.Merchant, edit func(*wxpay.Config)) *wxpay.Client {
	t.Helper()
	cfg := srv.ClientConfig(m)
	if edit != nil {
		edit(&cfg)
	}
	c, err := wxpay.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParseNotificationModes(t *testing.T) {
	tests := []struct {
		name string
		opts wxpaytest.Options
		// keyIDs chooses the signing keys to try; "" is the default key.
		keys func(s *wxpaytest.Server) []string
	}{
		{"certificate", wxpaytest.Options{Mode: wxpaytest.ModeCertificate}, func(s *wxpaytest.Server) []string {
			return []string{s.PlatformCertificates()[0].ID}
		}},
		{"public key", wxpaytest.Options{Mode: wxpaytest.ModePublicKey}, func(s *wxpaytest.Server) []string {
			return []string{s.PublicKey().ID}
		}},
		{"both (migration)", wxpaytest.Options{Mode: wxpaytest.ModeBoth}, func(s *wxpaytest.Server) []string {
			return []string{s.PublicKey().ID, s.PlatformCertificates()[0].ID}
		}},
		{"rotation with two certificates", wxpaytest.Options{Rotation: true}, func(s *wxpaytest.Server) []string {
			c := s.PlatformCertificates()
			return []string{c[0].ID, c[1].ID}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := wxpaytest.NewServer(t, tc.opts)
			m := srv.AddMerchant(wxpaytest.MerchantOptions{})
			c := newClient(t, srv, m, nil)
			for _, keyID := range tc.keys(srv) {
				n, err := srv.NewNotification(m, wxpay.EventTransactionSuccess, paidTransaction(m, "T-"+keyID), wxpaytest.NotificationOptions{KeyID: keyID})
				if err != nil {
					t.Fatal(err)
				}
				got, err := c.ParseNotification(ctx, n.Header, n.Body)
				if err != nil {
					t.Fatalf("key %s: %v", keyID, err)
				}
				if got.KeyID != keyID || got.ID != n.ID || got.EventType != wxpay.EventTransactionSuccess {
					t.Fatalf("got key %s id %s type %s, want %s %s %s", got.KeyID, got.ID, got.EventType, keyID, n.ID, wxpay.EventTransactionSuccess)
				}
				tx, err := got.Transaction()
				if err != nil {
					t.Fatal(err)
				}
				if tx.OutTradeNo != "T-"+keyID || tx.Amount.Total != 100 || tx.Payer.OpenID == "" || tx.TradeState != wxpay.TradeStateSuccess {
					t.Fatalf("decoded transaction: %+v", tx)
				}
			}
		})
	}
}

func TestParseNotificationRefund(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	c := newClient(t, srv, m, nil)
	res := map[string]any{"mchid": m.MchID, "out_trade_no": "T1", "transaction_id": "4200000215201811190261405420",
		"out_refund_no": "R1", "refund_id": "50000000382019052709732678859", "refund_status": "SUCCESS",
		"success_time": "2018-06-08T10:34:56+08:00", "user_received_account": "招商银行信用卡0403",
		"amount": map[string]any{"total": 999, "refund": 999, "payer_total": 999, "payer_refund": 999}}
	n, err := srv.NewNotification(m, wxpay.EventRefundSuccess, res, wxpaytest.NotificationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.ParseNotification(ctx, n.Header, n.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got.Resource.OriginalType != "refund" || got.Summary != "退款成功" {
		t.Fatalf("envelope: %+v", got)
	}
	r, err := got.Refund()
	if err != nil {
		t.Fatal(err)
	}
	if r.RefundID != "50000000382019052709732678859" || r.RefundStatus != "SUCCESS" || r.Amount.Refund != 999 {
		t.Fatalf("refund: %+v", r)
	}
}

func TestParseNotificationErrors(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	// The client's clock stands still at a whole second: the skew cases are
	// exact, whatever time the cases take to run.
	now := srv.Now().Truncate(time.Second)
	c := newClient(t, srv, m, func(cfg *wxpay.Config) { cfg.Now = func() time.Time { return now } })
	build := func(o wxpaytest.NotificationOptions) *wxpaytest.Notification {
		n, err := srv.NewNotification(m, wxpay.EventTransactionSuccess, paidTransaction(m, "T1"), o)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	tests := []struct {
		name   string
		n      *wxpaytest.Notification
		mutate func(h http.Header, body []byte) []byte
		want   []error
		status int
	}{
		{"missing timestamp", build(wxpaytest.NotificationOptions{}), func(h http.Header, b []byte) []byte { h.Del(wxpay.HeaderTimestamp); return b },
			[]error{wxpay.ErrMissingHeader}, 400},
		{"missing nonce", build(wxpaytest.NotificationOptions{}), func(h http.Header, b []byte) []byte { h.Del(wxpay.HeaderNonce); return b },
			[]error{wxpay.ErrMissingHeader}, 400},
		{"missing signature", build(wxpaytest.NotificationOptions{}), func(h http.Header, b []byte) []byte { h.Set(wxpay.HeaderSignature, ""); return b },
			[]error{wxpay.ErrMissingHeader}, 400},
		{"missing serial", build(wxpaytest.NotificationOptions{}), func(h http.Header, b []byte) []byte { h.Del(wxpay.HeaderSerial); return b },
			[]error{wxpay.ErrMissingHeader}, 400},
		{"non-numeric timestamp", build(wxpaytest.NotificationOptions{}), func(h http.Header, b []byte) []byte { h.Set(wxpay.HeaderTimestamp, "12a"); return b },
			[]error{wxpay.ErrMalformed}, 400},
		{"unsupported signature type", build(wxpaytest.NotificationOptions{}), func(h http.Header, b []byte) []byte {
			h.Set(wxpay.HeaderSignatureType, "WECHATPAY2-SM2-WITH-SM3")
			return b
		}, []error{wxpay.ErrMalformed}, 400},
		{"body changed by a framework", build(wxpaytest.NotificationOptions{}), func(h http.Header, b []byte) []byte {
			var v any
			json.Unmarshal(b, &v)
			out, _ := json.Marshal(v) // re-encoded: escapes the Chinese summary
			return out
		}, []error{wxpay.ErrBadSignature}, 401},
		{"one byte flipped", build(wxpaytest.NotificationOptions{}), func(h http.Header, b []byte) []byte {
			out := append([]byte(nil), b...)
			out[len(out)/2] ^= 1
			return out
		}, []error{wxpay.ErrBadSignature}, 401},
		{"signature not base64", build(wxpaytest.NotificationOptions{Signature: "!!!"}), nil, []error{wxpay.ErrBadSignature}, 401},
		{"signature far too long", build(wxpaytest.NotificationOptions{Signature: strings.Repeat("A", 4000)}), nil, []error{wxpay.ErrBadSignature}, 401},
		{"signature probe", build(wxpaytest.NotificationOptions{Signature: "WECHATPAY/SIGNTEST/bm90IGEgcmVhbCBzaWduYXR1cmU="}), nil,
			[]error{wxpay.ErrBadSignature, wxpay.ErrSignatureProbe}, 401},
		{"timestamp 301 s old", build(wxpaytest.NotificationOptions{Timestamp: now.Add(-301 * time.Second)}), nil, []error{wxpay.ErrTimestampSkew}, 401},
		{"timestamp 301 s ahead", build(wxpaytest.NotificationOptions{Timestamp: now.Add(301 * time.Second)}), nil, []error{wxpay.ErrTimestampSkew}, 401},
		{"unknown public key id", build(wxpaytest.NotificationOptions{}), func(h http.Header, b []byte) []byte {
			h.Set(wxpay.HeaderSerial, "PUB_KEY_ID_0000000000000000000000000000000001")
			return b
		}, []error{wxpay.ErrUnknownSerial}, 401},
		{"unknown certificate serial without download", build(wxpaytest.NotificationOptions{}), func(h http.Header, b []byte) []byte {
			h.Set(wxpay.HeaderSerial, "5157F09EFDC096DE15EBE81A47057A7232F1B8E1")
			return b
		}, []error{wxpay.ErrUnknownSerial}, 401},
		{"wrong APIv3 key", build(wxpaytest.NotificationOptions{APIv3Key: "another32byteAPIv3keyXXXXXXXXXXX"}), nil, []error{wxpay.ErrDecrypt}, 500},
		{"serial longer than any serial", build(wxpaytest.NotificationOptions{}), func(h http.Header, b []byte) []byte {
			h.Set(wxpay.HeaderSerial, "PUB_KEY_ID_"+strings.Repeat("7", 200000))
			return b
		}, []error{wxpay.ErrUnknownSerial}, 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.n.Header.Clone()
			body := tc.n.Body
			if tc.mutate != nil {
				body = tc.mutate(h, append([]byte(nil), body...))
			}
			got, err := c.ParseNotification(ctx, h, body)
			if err == nil {
				t.Fatalf("accepted %+v", got)
			}
			// An error quotes at most a bounded part of what the sender sent.
			if len(err.Error()) > 512 {
				t.Fatalf("error is %d bytes: %.200s…", len(err.Error()), err)
			}
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Fatalf("got %v, want it to match %v", err, w)
				}
			}
			if s := wxpay.NotificationStatus(err); s != tc.status {
				t.Fatalf("status: got %d, want %d", s, tc.status)
			}
		})
	}
	t.Run("decrypt error says to check the APIv3 key", func(t *testing.T) {
		n := build(wxpaytest.NotificationOptions{APIv3Key: "another32byteAPIv3keyXXXXXXXXXXX"})
		_, err := c.ParseNotification(ctx, n.Header, n.Body)
		if err == nil || !strings.Contains(err.Error(), "check the APIv3 key") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("timestamp exactly 300 s off is accepted", func(t *testing.T) {
		fixed := time.Unix(srv.Now().Unix(), 0)
		cc := newClient(t, srv, m, func(cfg *wxpay.Config) { cfg.Now = func() time.Time { return fixed } })
		for _, d := range []time.Duration{-300 * time.Second, 300 * time.Second} {
			n := build(wxpaytest.NotificationOptions{Timestamp: fixed.Add(d)})
			if _, err := cc.ParseNotification(ctx, n.Header, n.Body); err != nil {
				t.Fatalf("%s: %v", d, err)
			}
		}
	})
	t.Run("window is configurable", func(t *testing.T) {
		cc := newClient(t, srv, m, func(cfg *wxpay.Config) { cfg.TimestampWindow = time.Hour })
		n := build(wxpaytest.NotificationOptions{Timestamp: now.Add(-30 * time.Minute)})
		if _, err := cc.ParseNotification(ctx, n.Header, n.Body); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("header names in any casing", func(t *testing.T) {
		n := build(wxpaytest.NotificationOptions{})
		h := http.Header{}
		for k, v := range n.Header {
			h[strings.ToLower(k)] = v
		}
		if _, err := c.ParseNotification(ctx, h, n.Body); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("verified body that is not a notification", func(t *testing.T) {
		// Sign garbage with the platform key: authentic, yet malformed.
		for _, body := range []string{`not json`, `{"id":"x"}`, `{"id":"x","event_type":"E","resource":{"algorithm":"AEAD_SM4_GCM"}}`,
			`{"id":"x","event_type":"E","resource":{"algorithm":"AEAD_AES_256_GCM","nonce":"short","ciphertext":"AAAA"}}`} {
			h := signedHeaders(t, srv, []byte(body))
			_, err := c.ParseNotification(ctx, h, []byte(body))
			if !errors.Is(err, wxpay.ErrMalformed) {
				t.Fatalf("%s: got %v, want ErrMalformed", body, err)
			}
		}
	})
}

// signedHeaders signs body with the server's public-key-mode key, the way
// a notification is signed.
func signedHeaders(t *testing.T, srv *wxpaytest.Server, body []byte) http.Header {
	t.Helper()
	k := srv.PublicKey()
	ts := strconv.FormatInt(srv.Now().Unix(), 10)
	sig, err := wxpay.SignMessage(k.PrivateKey, []byte(ts+"\nNONCE\n"+string(body)+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set(wxpay.HeaderTimestamp, ts)
	h.Set(wxpay.HeaderNonce, "NONCE")
	h.Set(wxpay.HeaderSignature, sig)
	h.Set(wxpay.HeaderSerial, k.ID)
	return h
}

func TestAPIv3KeyRotation(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	const newKey = "theNewAPIv3KeyAfterRotation00032"
	c := newClient(t, srv, m, func(cfg *wxpay.Config) {
		cfg.PreviousAPIv3Keys = []string{cfg.APIv3Key}
		cfg.APIv3Key = newKey
	})
	for _, key := range []string{m.APIv3Key, newKey} {
		n, err := srv.NewNotification(m, wxpay.EventTransactionSuccess, paidTransaction(m, "T1"), wxpaytest.NotificationOptions{APIv3Key: key})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.ParseNotification(ctx, n.Header, n.Body); err != nil {
			t.Fatalf("encrypted with the %s key: %v", map[bool]string{true: "new", false: "old"}[key == newKey], err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModeBoth})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	tests := []struct {
		name    string
		edit    func(*wxpay.Config)
		wantErr string
	}{
		{"ok", func(*wxpay.Config) {}, ""},
		{"no mchid", func(c *wxpay.Config) { c.MchID = "" }, "MchID"},
		{"APIv3 key 31 bytes", func(c *wxpay.Config) { c.APIv3Key = c.APIv3Key[:31] }, "exactly 32 bytes, got 31"},
		{"APIv3 key 16 bytes", func(c *wxpay.Config) { c.APIv3Key = "testMchAPIv3Key0" }, "exactly 32 bytes, got 16"},
		{"previous key short", func(c *wxpay.Config) { c.PreviousAPIv3Keys = []string{"x"} }, "previous APIv3 key #1"},
		{"public key without id", func(c *wxpay.Config) { c.PublicKeyID = "" }, "set both or neither"},
		{"public key id prefix", func(c *wxpay.Config) { c.PublicKeyID = "1234" }, "PUB_KEY_ID_"},
		{"nothing to verify with", func(c *wxpay.Config) {
			c.PublicKey, c.PublicKeyID, c.DownloadCertificates = nil, "", false
		}, "configure the WeChat Pay public key"},
		{"signer without serial", func(c *wxpay.Config) { c.CertSerialNo = "" }, "certificate serial go together"},
		{"download without signer", func(c *wxpay.Config) { c.Signer, c.CertSerialNo = nil, "" }, "needs the merchant private key"},
		{"bad base URL", func(c *wxpay.Config) { c.BaseURL = "ftp://x" }, "BaseURL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := srv.ClientConfig(m)
			tc.edit(&cfg)
			_, err := wxpay.NewClient(cfg)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, wxpay.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want ErrInvalidConfig mentioning %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), m.APIv3Key) {
				t.Fatal("error message contains the APIv3 key")
			}
		})
	}
}

func TestCertificateDownloadOnUnknownSerial(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	c := newClient(t, srv, m, nil)
	if ids := c.KeyIDs(); len(ids) != 0 {
		t.Fatalf("keys before any download: %v", ids)
	}
	n, _ := srv.NewNotification(m, wxpay.EventTransactionSuccess, paidTransaction(m, "T1"), wxpaytest.NotificationOptions{})
	if _, err := c.ParseNotification(ctx, n.Header, n.Body); err != nil {
		t.Fatal(err)
	}
	if got := srv.Requests("GET /v3/certificates"); got != 1 {
		t.Fatalf("certificate downloads: got %d, want 1", got)
	}
	// Known now: no second download.
	if _, err := c.ParseNotification(ctx, n.Header, n.Body); err != nil {
		t.Fatal(err)
	}
	// A rollover: a new certificate signs; the client fetches it at once.
	k := srv.AddPlatformCertificate(srv.Now().Add(-time.Minute), srv.Now().Add(365*24*time.Hour))
	c2 := newClient(t, srv, m, func(cfg *wxpay.Config) { cfg.MinRefreshInterval = time.Nanosecond })
	if _, err := c2.ParseNotification(ctx, n.Header, n.Body); err != nil {
		t.Fatal(err)
	}
	n2, _ := srv.NewNotification(m, wxpay.EventTransactionSuccess, paidTransaction(m, "T2"), wxpaytest.NotificationOptions{KeyID: k.ID})
	if got, err := c2.ParseNotification(ctx, n2.Header, n2.Body); err != nil || got.KeyID != k.ID {
		t.Fatalf("after rollover: %v, key %v", err, got)
	}
}

func TestUnknownSerialRefreshIsRateLimitedAndSingleFlight(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	var mu sync.Mutex
	clock := srv.Now()
	c := newClient(t, srv, m, func(cfg *wxpay.Config) {
		cfg.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	})
	n, _ := srv.NewNotification(m, wxpay.EventTransactionSuccess, paidTransaction(m, "T1"), wxpaytest.NotificationOptions{})
	n.Header.Set(wxpay.HeaderSerial, "0123456789ABCDEF0123456789ABCDEF01234567")
	storm := func() {
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := c.ParseNotification(ctx, n.Header, n.Body)
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if !errors.Is(err, wxpay.ErrUnknownSerial) || wxpay.NotificationStatus(err) != 401 {
				t.Fatalf("got %v (status %d), want ErrUnknownSerial/401", err, wxpay.NotificationStatus(err))
			}
		}
	}
	storm()
	if got := srv.Requests("GET /v3/certificates"); got != 1 {
		t.Fatalf("certificate downloads for 20 concurrent unknown serials: got %d, want 1", got)
	}
	storm()
	if got := srv.Requests("GET /v3/certificates"); got != 1 {
		t.Fatalf("downloads within MinRefreshInterval: got %d, want 1", got)
	}
	mu.Lock()
	clock = clock.Add(wxpay.DefaultMinRefreshInterval + time.Second)
	mu.Unlock()
	n.Header.Set(wxpay.HeaderTimestamp, strconv.FormatInt(clock.Unix(), 10))
	storm()
	if got := srv.Requests("GET /v3/certificates"); got != 2 {
		t.Fatalf("downloads after MinRefreshInterval: got %d, want 2", got)
	}
}

func TestCertificateRefreshFailure(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	c := newClient(t, srv, m, nil)
	srv.SetCertificatesAnswer(503, "SERVICE_UNAVAILABLE", "服务不可用")
	n, _ := srv.NewNotification(m, wxpay.EventTransactionSuccess, paidTransaction(m, "T1"), wxpaytest.NotificationOptions{})
	_, err := c.ParseNotification(ctx, n.Header, n.Body)
	if !errors.Is(err, wxpay.ErrCertificateRefresh) || wxpay.NotificationStatus(err) != 503 {
		t.Fatalf("got %v (status %d), want ErrCertificateRefresh/503", err, wxpay.NotificationStatus(err))
	}
	if !wxpay.IsRetryable(err) {
		t.Fatalf("a 503 from the certificates endpoint should be retryable: %v", err)
	}
}

func TestNoPlatformCertificate(t *testing.T) {
	tests := []struct {
		name   string
		status int
		code   string
	}{
		{"not found (public-key merchant)", 0, ""},
		{"system error", 500, "SYSTEM_ERROR"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
			m := srv.AddMerchant(wxpaytest.MerchantOptions{})
			if tc.status != 0 {
				srv.SetCertificatesAnswer(tc.status, tc.code, "系统繁忙，请稍后重试")
			}
			c := newClient(t, srv, m, func(cfg *wxpay.Config) {
				cfg.DownloadCertificates = true
				cfg.PublicKey, cfg.PublicKeyID = nil, ""
			})
			err := c.RefreshCertificates(ctx)
			if !errors.Is(err, wxpay.ErrNoPlatformCertificate) || !strings.Contains(err.Error(), "public key") {
				t.Fatalf("got %v, want ErrNoPlatformCertificate telling to configure the public key", err)
			}
		})
	}
}

func TestCertificateCacheDir(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Rotation: true})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	dir := filepath.Join(t.TempDir(), "certs")
	c := newClient(t, srv, m, func(cfg *wxpay.Config) { cfg.CertificateCacheDir = dir })
	if err := c.RefreshCertificates(ctx); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.pem"))
	if len(files) != 2 {
		t.Fatalf("cached files: got %v, want 2", files)
	}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if _, err := wxpay.LoadCertificate(b); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	// A new client starts with the cached certificates and downloads nothing.
	before := srv.Requests("GET /v3/certificates")
	c2 := newClient(t, srv, m, func(cfg *wxpay.Config) { cfg.CertificateCacheDir = dir })
	if len(c2.KeyIDs()) != 2 {
		t.Fatalf("keys from cache: %v", c2.KeyIDs())
	}
	n, _ := srv.NewNotification(m, wxpay.EventTransactionSuccess, paidTransaction(m, "T1"), wxpaytest.NotificationOptions{})
	if _, err := c2.ParseNotification(ctx, n.Header, n.Body); err != nil {
		t.Fatal(err)
	}
	if got := srv.Requests("GET /v3/certificates"); got != before {
		t.Fatalf("downloads after start from cache: got %d, want %d", got, before)
	}
	// A corrupt cache file is an error at start that names it.
	os.WriteFile(filepath.Join(dir, "BROKEN.pem"), []byte("junk"), 0o600)
	cfg := srv.ClientConfig(m)
	cfg.CertificateCacheDir = dir
	if _, err := wxpay.NewClient(cfg); err == nil || !strings.Contains(err.Error(), "BROKEN.pem") {
		t.Fatalf("corrupt cache: got %v", err)
	}
}

func TestExpiredCertificatesAreDropped(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	old := srv.PlatformCertificates()[0]
	now := srv.Now()
	clock := now
	var mu sync.Mutex
	c := newClient(t, srv, m, func(cfg *wxpay.Config) {
		cfg.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	})
	n, _ := srv.NewNotification(m, wxpay.EventTransactionSuccess, paidTransaction(m, "T1"), wxpaytest.NotificationOptions{KeyID: old.ID})
	if _, err := c.ParseNotification(ctx, n.Header, n.Body); err != nil {
		t.Fatal(err)
	}
	// Past the certificate's expiry the same serial is no longer trusted.
	mu.Lock()
	clock = old.Certificate.NotAfter.Add(time.Hour)
	mu.Unlock()
	h := n.Header.Clone()
	h.Set(wxpay.HeaderTimestamp, strconv.FormatInt(clock.Unix(), 10))
	_, err := c.ParseNotification(ctx, h, n.Body)
	if err == nil {
		t.Fatal("a notification under an expired certificate was accepted")
	}
	for _, id := range c.KeyIDs() {
		if id == old.ID {
			t.Fatal("expired certificate still listed")
		}
	}
}

func TestResponsesAreVerified(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	srv.HandleAPI("GET /v3/echo", func(c *wxpaytest.Call) (int, any) {
		return 200, map[string]string{"mchid": c.Merchant.MchID, "q": c.Request.URL.Query().Get("q")}
	})
	var infos []wxpay.RequestInfo
	c := newClient(t, srv, m, func(cfg *wxpay.Config) {
		cfg.OnRequest = func(i wxpay.RequestInfo) { infos = append(infos, i) }
	})
	var out struct{ MchID, Q string }
	resp, err := c.DoJSON(ctx, "GET", "/v3/echo?q=a%20b", nil, &out)
	if err != nil {
		t.Fatal(err)
	}
	if out.Q != "a b" || resp.KeyID != srv.PublicKey().ID {
		t.Fatalf("got %+v key %s", out, resp.KeyID)
	}
	if len(infos) != 1 || infos[0].StatusCode != 200 || infos[0].Path != "/v3/echo" || infos[0].KeyID == "" {
		t.Fatalf("OnRequest: %+v", infos)
	}

	srv.SetBadAnswerSignatures(true)
	_, err = c.DoJSON(ctx, "GET", "/v3/echo", nil, &out)
	if !errors.Is(err, wxpay.ErrBadSignature) {
		t.Fatalf("tampered answer: got %v, want ErrBadSignature", err)
	}
	// A tampered error answer is not trusted either.
	_, err = c.DoJSON(ctx, "GET", "/v3/nothing-here", nil, nil)
	var apiErr *wxpay.APIError
	if errors.As(err, &apiErr) || !errors.Is(err, wxpay.ErrBadSignature) {
		t.Fatalf("tampered error answer: got %v", err)
	}
	srv.SetBadAnswerSignatures(false)
	_, err = c.DoJSON(ctx, "GET", "/v3/nothing-here", nil, nil)
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || !apiErr.Verified || !errors.Is(err, wxpay.ErrNotFound) {
		t.Fatalf("404: got %v", err)
	}
}

func TestBadMerchantSignatureIsSignError(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	other := srv.AddMerchant(wxpaytest.MerchantOptions{})
	// m's mchid and serial, other's private key.
	c := newClient(t, srv, m, func(cfg *wxpay.Config) { cfg.Signer = other.PrivateKey })
	_, err := c.DoJSON(ctx, "GET", "/v3/certificates", nil, nil)
	var apiErr *wxpay.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || !errors.Is(err, wxpay.ErrSignError) || !apiErr.Verified {
		t.Fatalf("got %v, want a verified 401 SIGN_ERROR", err)
	}
	if wxpay.IsRetryable(err) {
		t.Fatal("SIGN_ERROR must not be retryable")
	}
	// A clock 10 minutes off is refused the same way.
	c = newClient(t, srv, m, func(cfg *wxpay.Config) {
		cfg.Now = func() time.Time { return time.Now().Add(10 * time.Minute) }
		cfg.TimestampWindow = time.Hour
	})
	if _, err := c.DoJSON(ctx, "GET", "/v3/certificates", nil, nil); !errors.Is(err, wxpay.ErrSignError) {
		t.Fatalf("skewed clock: got %v", err)
	}
}

func TestSensitiveFields(t *testing.T) {
	for _, mode := range []wxpaytest.Mode{wxpaytest.ModePublicKey, wxpaytest.ModeCertificate} {
		srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: mode, Rotation: true})
		m := srv.AddMerchant(wxpaytest.MerchantOptions{})
		c := newClient(t, srv, m, nil)
		if mode == wxpaytest.ModeCertificate {
			if _, _, err := c.EncryptSensitive("x"); !errors.Is(err, wxpay.ErrInvalidConfig) {
				t.Fatalf("before certificates: got %v", err)
			}
			if err := c.RefreshCertificates(ctx); err != nil {
				t.Fatal(err)
			}
		}
		ct, keyID, err := c.EncryptSensitive("张三")
		if err != nil {
			t.Fatal(err)
		}
		var priv *rsa.PrivateKey
		if mode == wxpaytest.ModePublicKey {
			priv = srv.PublicKey().PrivateKey
			if keyID != srv.PublicKey().ID {
				t.Fatalf("key id %s", keyID)
			}
		} else {
			newest := srv.PlatformCertificates()[1]
			if keyID != newest.ID {
				t.Fatalf("encrypted with %s, want the newest certificate %s", keyID, newest.ID)
			}
			priv = newest.PrivateKey
		}
		raw, _ := base64.StdEncoding.DecodeString(ct)
		plain, err := rsa.DecryptOAEP(sha1.New(), nil, priv, raw, nil)
		if err != nil || string(plain) != "张三" {
			t.Fatalf("platform side decrypt: %q %v", plain, err)
		}
		if _, _, err := c.EncryptSensitive(strings.Repeat("x", 215)); !errors.Is(err, wxpay.ErrMalformed) {
			t.Fatalf("too long: got %v", err)
		}
		// WeChat encrypts for the merchant certificate; DecryptSensitive opens it.
		enc, _ := rsa.EncryptOAEP(sha1.New(), strings.NewReader(strings.Repeat("r", 512)), &m.PrivateKey.PublicKey, []byte("13800138000"), nil)
		got, err := c.DecryptSensitive(base64.StdEncoding.EncodeToString(enc))
		if err != nil || got != "13800138000" {
			t.Fatalf("DecryptSensitive: %q %v", got, err)
		}
		if _, err := c.DecryptSensitive(ct); !errors.Is(err, wxpay.ErrDecrypt) {
			t.Fatalf("foreign ciphertext: got %v", err)
		}
	}
}

func TestPayParams(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	c := newClient(t, srv, m, nil)
	p, err := c.JSAPIPayParams("wx2421b1c4370ec43b", "wx201410272009395522657a690389285100")
	if err != nil {
		t.Fatal(err)
	}
	if p.Package != "prepay_id=wx201410272009395522657a690389285100" || p.SignType != "RSA" || len(p.NonceStr) != 32 {
		t.Fatalf("%+v", p)
	}
	msg := p.AppID + "\n" + p.TimeStamp + "\n" + p.NonceStr + "\n" + p.Package + "\n"
	if err := verifyWith(&m.PrivateKey.PublicKey, msg, p.PaySign); err != nil {
		t.Fatalf("JSAPI paySign does not verify: %v", err)
	}
	a, err := c.APPPayParams("wx2421b1c4370ec43b", "wx201410272009395522657a690389285100", "")
	if err != nil {
		t.Fatal(err)
	}
	if a.Package != "Sign=WXPay" || a.PartnerID != m.MchID {
		t.Fatalf("%+v", a)
	}
	if err := verifyWith(&m.PrivateKey.PublicKey, a.AppID+"\n"+a.TimeStamp+"\n"+a.NonceStr+"\n"+a.PrepayID+"\n", a.Sign); err != nil {
		t.Fatalf("APP sign does not verify: %v", err)
	}
	if _, err := c.JSAPIPayParams("", "x"); !errors.Is(err, wxpay.ErrMalformed) {
		t.Fatalf("empty appid: got %v", err)
	}
}

func TestNotifyHandler(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	c := newClient(t, srv, m, nil)
	var got []string
	var fail error
	h := wxpay.NotifyHandler(c, func(_ context.Context, n *wxpay.Notification) error {
		if fail != nil {
			return fail
		}
		got = append(got, n.ID)
		return nil
	})
	n, _ := srv.NewNotification(m, wxpay.EventTransactionSuccess, paidTransaction(m, "T1"), wxpaytest.NotificationOptions{})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, n.Request("/notify"))
	if rec.Code != 200 || rec.Body.String() != `{"code":"SUCCESS","message":"成功"}` || len(got) != 1 {
		t.Fatalf("got %d %s, handled %v", rec.Code, rec.Body, got)
	}
	fail = errors.New("database down")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, n.Request("/notify"))
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), `"code":"FAIL"`) {
		t.Fatalf("handler failure: got %d %s", rec.Code, rec.Body)
	}
	big := n.Request("/notify")
	big.Body = http.NoBody
	big.Body = httptestBody(strings.Repeat("x", wxpay.MaxNotificationBytes+1))
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, big)
	if rec.Code != 413 {
		t.Fatalf("oversized: got %d", rec.Code)
	}
	// Delivered over a real connection by the fake platform, with retries.
	fail = nil
	ts := httptest.NewServer(h)
	defer ts.Close()
	attempts, err := srv.Deliver(ctx, ts.URL, n)
	if err != nil || len(attempts) != 1 || attempts[0].StatusCode != 200 {
		t.Fatalf("Deliver: %v %+v", err, attempts)
	}
}

func TestIsRetryable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"429", &wxpay.APIError{StatusCode: 429}, true},
		{"500", &wxpay.APIError{StatusCode: 500, Code: "SYSTEM_ERROR"}, true},
		{"503", &wxpay.APIError{StatusCode: 503}, true},
		{"FREQUENCY_LIMITED on 403", &wxpay.APIError{StatusCode: 403, Code: "FREQUENCY_LIMITED"}, true},
		{"RATELIMIT_EXCEED on 400", &wxpay.APIError{StatusCode: 400, Code: "RATELIMIT_EXCEED"}, true},
		{"ORDER_NOT_EXIST", &wxpay.APIError{StatusCode: 404, Code: "ORDER_NOT_EXIST"}, false},
		{"PARAM_ERROR", &wxpay.APIError{StatusCode: 400, Code: "PARAM_ERROR"}, false},
		{"transport", errors.Join(wxpay.ErrTransport, errors.New("dial tcp: refused")), true},
		{"canceled", context.Canceled, false},
		{"deadline", context.DeadlineExceeded, false},
		{"bad signature", wxpay.ErrBadSignature, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := wxpay.IsRetryable(tc.err); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	old := &wxpay.APIError{StatusCode: 404, Code: "ORDERNOTEXIST"}
	if !errors.Is(old, wxpay.ErrOrderNotExist) {
		t.Fatal("old spelling ORDERNOTEXIST does not match ErrOrderNotExist")
	}
}

func TestRunCertificateRefresh(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	c := newClient(t, srv, m, func(cfg *wxpay.Config) {
		cfg.CertificateRefreshInterval = 10 * time.Millisecond
		cfg.MinRefreshInterval = 5 * time.Millisecond
	})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	var mu sync.Mutex
	var errs []error
	go func() {
		defer close(done)
		c.RunCertificateRefresh(rctx, func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() })
	}()
	deadline := time.Now().Add(5 * time.Second)
	for srv.Requests("GET /v3/certificates") < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := srv.Requests("GET /v3/certificates"); got < 3 {
		t.Fatalf("periodic refreshes: got %d, want at least 3", got)
	}
	srv.SetCertificatesAnswer(500, "SYSTEM_ERROR", "系统繁忙")
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(errs)
		mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(errs) == 0 {
		t.Fatal("a failing refresh was not reported")
	}
	// Certificates already held survive a failed refresh.
	if len(c.KeyIDs()) != 1 {
		t.Fatalf("keys after failed refresh: %v", c.KeyIDs())
	}
}

func TestPartnerTransaction(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	c := newClient(t, srv, m, func(cfg *wxpay.Config) { cfg.PartnerMode = true })
	if !c.PartnerMode() {
		t.Fatal("PartnerMode not kept")
	}
	res := `{"sp_appid":"wx8888888888888888","sp_mchid":"` + m.MchID + `","sub_appid":"wxd678efh567hg6999","sub_mchid":"1900000109","out_trade_no":"T9","transaction_id":"4200000215201811190261405421","trade_type":"JSAPI","trade_state":"SUCCESS","payer":{"sp_openid":"oUpF8uN95-Ptaags6E_roPHg7AG0","sub_openid":"oUpF8uN95-Ptaags6E_roPHg7AG1"},"amount":{"total":1,"payer_total":1,"currency":"CNY"}}`
	n, _ := srv.NewNotification(m, wxpay.EventTransactionSuccess, res, wxpaytest.NotificationOptions{})
	got, err := c.ParseNotification(ctx, n.Header, n.Body)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := got.Transaction()
	if err != nil {
		t.Fatal(err)
	}
	if tx.SpMchID != m.MchID || tx.SubMchID != "1900000109" || tx.Payer.SubOpenID == "" || tx.MchID != "" {
		t.Fatalf("partner transaction: %+v", tx)
	}
}

func TestRunCertificateRefreshAfterStartRefresh(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	c := newClient(t, srv, m, func(cfg *wxpay.Config) { cfg.CertificateRefreshInterval = time.Hour })
	if err := c.RefreshCertificates(ctx); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); c.RunCertificateRefresh(rctx, nil) }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	<-done
	if got := srv.Requests("GET /v3/certificates"); got != 1 {
		t.Fatalf("downloads: got %d, want 1 (the refresher waits an interval after a fresh download)", got)
	}
}

func TestRequestCarriesWechatpaySerial(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModeBoth})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	srv.HandleAPI("POST /v3/echo-serial", func(c *wxpaytest.Call) (int, any) {
		return 200, map[string]string{"serial": c.Serial, "body": string(c.Body)}
	})
	c := newClient(t, srv, m, nil)
	// By default the public key id: the answer is then signed with the public key.
	var out struct{ Serial, Body string }
	resp, err := c.DoJSON(ctx, "POST", "/v3/echo-serial", map[string]string{"x": "1"}, &out)
	if err != nil || out.Serial != srv.PublicKey().ID || resp.KeyID != srv.PublicKey().ID {
		t.Fatalf("default serial: %v %+v key %v", err, out, resp)
	}
	// A request with an encrypted field names the key it was encrypted with.
	if err := c.RefreshCertificates(ctx); err != nil {
		t.Fatal(err)
	}
	ct, keyID, err := c.EncryptSensitive("张三")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]string{"name": ct})
	r, err := c.Do(ctx, wxpay.Request{Method: "POST", Path: "/v3/echo-serial", Body: body, WechatpaySerial: keyID})
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(r.Body, &out)
	if out.Serial != keyID || out.Body != string(body) {
		t.Fatalf("got serial %s body %s, want %s", out.Serial, out.Body, keyID)
	}
}
