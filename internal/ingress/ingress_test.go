package ingress_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxpay-notify/wxpay-notify/internal/ingress"
	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

var ctx = context.Background()

type fixture struct {
	srv      *wxpaytest.Server
	m        *wxpaytest.Merchant
	h        *ingress.Handler
	js       jetstream.JetStream
	reg      *prometheus.Registry
	nats     *testenv.NATS
	proxy    *testenv.Proxy
	logs     *bytes.Buffer
	certSrv  *wxpaytest.Server
	certMchs *wxpaytest.Merchant
}

// setup builds an ingress for one public-key merchant (and, with
// certMerchant, a second one in certificate mode) publishing through a
// proxy in front of JetStream.
func setup(t *testing.T, certMerchant bool) *fixture {
	t.Helper()
	return setupWith(t, certMerchant, nil, nil)
}

// setupWith is setup with more merchants, built by extra from the
// fixture's fake platform, and a Config edited by edit.
func setupWith(t *testing.T, certMerchant bool, extra func(f *fixture) []ingress.Merchant, edit func(*ingress.Config)) *fixture {
	t.Helper()
	f := &fixture{logs: &bytes.Buffer{}, reg: prometheus.NewRegistry()}
	f.srv = wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, TimeScale: 0.001})
	f.m = f.srv.AddMerchant(wxpaytest.MerchantOptions{MchID: "1230000109", APIv2Key: "192006250b4c09247ec02edce69f6a2d"})
	c, err := wxpay.NewClient(f.srv.ClientConfig(f.m))
	if err != nil {
		t.Fatal(err)
	}
	merchants := []ingress.Merchant{{MchID: f.m.MchID, Client: c, APIv2Key: f.m.APIv2Key}}
	if certMerchant {
		f.certSrv = wxpaytest.NewServer(t, wxpaytest.Options{})
		f.certMchs = f.certSrv.AddMerchant(wxpaytest.MerchantOptions{MchID: "1900000001"})
		ccfg := f.certSrv.ClientConfig(f.certMchs)
		ccfg.MinRefreshInterval = time.Millisecond // a failed refresh may be retried at once
		cc, err := wxpay.NewClient(ccfg)
		if err != nil {
			t.Fatal(err)
		}
		merchants = append(merchants, ingress.Merchant{MchID: f.certMchs.MchID, Client: cc})
	}
	if extra != nil {
		merchants = append(merchants, extra(f)...)
	}
	f.nats = testenv.StartNATS(t)
	_, admin := testenv.Connect(t, f.nats.URL)
	if _, err := events.EnsureStreams(ctx, admin, events.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	f.js = admin
	f.proxy = testenv.NewProxy(t, strings.TrimPrefix(f.nats.URL, "nats://"))
	_, js := testenv.Connect(t, "nats://"+f.proxy.Addr(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond), nats.ReconnectBufSize(-1))
	cfg := ingress.Config{Registerer: f.reg, Logger: newLogger(f.logs), PublishTimeout: time.Second}
	if edit != nil {
		edit(&cfg)
	}
	f.h, err = ingress.NewHandler(merchants, events.NewPublisher(js, events.PublisherConfig{Timeout: cfg.PublishTimeout}), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) streamMsgs(t *testing.T) uint64 {
	t.Helper()
	s, err := f.js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func (f *fixture) post(t *testing.T, path string, n *wxpaytest.Notification) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, n.Request(path))
	return rec
}

func paid(mchid, outTradeNo string) string {
	return fmt.Sprintf(`{"mchid":"%s","appid":"wxd678efh567hg6787","out_trade_no":"%s","transaction_id":"42000002152018111902%s","trade_type":"JSAPI","trade_state":"SUCCESS","trade_state_desc":"支付成功","bank_type":"CMC","attach":"","success_time":"2018-06-08T10:34:56+08:00","payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"}}`,
		mchid, outTradeNo, fmt.Sprintf("%08d", crc32.ChecksumIEEE([]byte(outTradeNo))%100000000))
}

func (f *fixture) notification(t *testing.T, outTradeNo string, o wxpaytest.NotificationOptions) *wxpaytest.Notification {
	t.Helper()
	n, err := f.srv.NewNotification(f.m, wxpay.EventTransactionSuccess, paid(f.m.MchID, outTradeNo), o)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSuccessIsPublishedThenAnswered(t *testing.T) {
	f := setup(t, false)
	n := f.notification(t, "T1", wxpaytest.NotificationOptions{})
	rec := f.post(t, "/notify/1230000109", n)
	if rec.Code != 200 || rec.Body.String() != `{"code":"SUCCESS","message":"成功"}` {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
	s, _ := f.js.Stream(ctx, events.StreamName)
	msg, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject != "wxpay.1230000109.transaction.success" {
		t.Fatalf("subject %s", msg.Subject)
	}
	var env events.Envelope
	if err := json.Unmarshal(msg.Data, &env); err != nil {
		t.Fatal(err)
	}
	if env.ID != n.ID || env.Source != "callback" || !strings.HasPrefix(env.DedupeKey, "transaction:") || msg.Header.Get("Nats-Msg-Id") != env.DedupeKey {
		t.Fatalf("envelope %+v, Nats-Msg-Id %s", env, msg.Header.Get("Nats-Msg-Id"))
	}
	var res map[string]any
	if err := json.Unmarshal(env.Resource, &res); err != nil || res["out_trade_no"] != "T1" {
		t.Fatalf("resource %s", env.Resource)
	}
	// A retry of the same notification (re-signed by WeChat) is a duplicate: 200, one message.
	rec = f.post(t, "/notify/1230000109", f.notification(t, "T1", wxpaytest.NotificationOptions{ID: n.ID}))
	if rec.Code != 200 || f.streamMsgs(t) != 1 {
		t.Fatalf("duplicate: got %d, stream holds %d", rec.Code, f.streamMsgs(t))
	}
	// POST /notify works with one merchant.
	if rec := f.post(t, "/notify", f.notification(t, "T2", wxpaytest.NotificationOptions{})); rec.Code != 200 {
		t.Fatalf("/notify: %d %s", rec.Code, rec.Body)
	}
	if got := counterValue(t, f.reg, "wxpay_ingress_requests_total", "outcome", "duplicate"); got != 1 {
		t.Fatalf("duplicate counter %v", got)
	}
	// Each verification is counted by the key that verified it: here the
	// WeChat Pay public key, three times (T1, its retry, T2).
	if got := seriesValue(t, f.reg, "wxpay_ingress_verified_total", map[string]string{"mchid": "1230000109", "key_kind": "public_key", "key_id": f.srv.PublicKey().ID}); got != 3 {
		t.Fatalf("wxpay_ingress_verified_total by the public key = %v, want 3", got)
	}
	// Nothing secret or personal in the log.
	for _, secret := range []string{f.m.APIv3Key, "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", "ciphertext", string(n.Body[:40])} {
		if strings.Contains(f.logs.String(), secret) {
			t.Fatalf("log contains %q:\n%s", secret, f.logs)
		}
	}
	if !strings.Contains(f.logs.String(), `"outcome":"ok"`) || !strings.Contains(f.logs.String(), `"event_id":"`+n.ID+`"`) {
		t.Fatalf("log lacks the request line:\n%s", f.logs)
	}
}

func TestStatusTable(t *testing.T) {
	f := setup(t, true)
	now := f.srv.Now()
	tests := []struct {
		name   string
		path   string
		req    func() *http.Request
		status int
		msg    string
	}{
		{"missing headers", "/notify/1230000109", func() *http.Request {
			r := f.notification(t, "A", wxpaytest.NotificationOptions{}).Request("/notify/1230000109")
			r.Header.Del("Wechatpay-Signature")
			return r
		}, 400, "Wechatpay-Signature"},
		{"malformed JSON, no headers", "", func() *http.Request {
			return httptest.NewRequest("POST", "/notify/1230000109", strings.NewReader(`{"id":`))
		}, 400, "missing header"},
		{"bad signature", "", func() *http.Request {
			n := f.notification(t, "B", wxpaytest.NotificationOptions{})
			n.Body = bytes.Replace(n.Body, []byte("支付成功"), []byte("支付失败"), 1)
			return n.Request("/notify/1230000109")
		}, 401, "signature"},
		{"signature probe", "", func() *http.Request {
			return f.notification(t, "C", wxpaytest.NotificationOptions{Signature: "WECHATPAY/SIGNTEST/AAAA"}).Request("/notify/1230000109")
		}, 401, "SIGNTEST"},
		{"timestamp 6 minutes old", "", func() *http.Request {
			return f.notification(t, "D", wxpaytest.NotificationOptions{Timestamp: now.Add(-6 * time.Minute)}).Request("/notify/1230000109")
		}, 401, "clock"},
		{"unknown public key id", "", func() *http.Request {
			r := f.notification(t, "E", wxpaytest.NotificationOptions{}).Request("/notify/1230000109")
			r.Header.Set("Wechatpay-Serial", "PUB_KEY_ID_0000000000000000000000000000000009")
			return r
		}, 401, "unknown Wechatpay-Serial"},
		{"unknown merchant", "", func() *http.Request {
			return f.notification(t, "F", wxpaytest.NotificationOptions{}).Request("/notify/1999999999")
		}, 404, "not configured"},
		{"several merchants on /notify", "", func() *http.Request {
			return f.notification(t, "G", wxpaytest.NotificationOptions{}).Request("/notify")
		}, 404, "/notify/{mchid}"},
		{"body over 64 KiB", "", func() *http.Request {
			return httptest.NewRequest("POST", "/notify/1230000109", strings.NewReader(`{"id":"`+strings.Repeat("x", 64<<10)+`"}`))
		}, 413, "over"},
		{"body over 64 KiB without a Content-Length", "", func() *http.Request {
			// A reader of unknown length: the request carries no Content-Length.
			r := httptest.NewRequest("POST", "/notify/1230000109", io.MultiReader(strings.NewReader(`{"id":"`+strings.Repeat("x", 64<<10)+`"}`)))
			if r.ContentLength > 0 {
				t.Fatalf("the request declares %d bytes", r.ContentLength)
			}
			return r
		}, 413, "over"},
		{"wrong APIv3 key: authentic but undecryptable", "", func() *http.Request {
			return f.notification(t, "H", wxpaytest.NotificationOptions{APIv3Key: "someOtherAPIv3Key000000000000032"}).Request("/notify/1230000109")
		}, 500, "check the APIv3 key"},
		{"unknown certificate serial, refresh failed", "", func() *http.Request {
			f.certSrv.SetCertificatesAnswer(503, "SERVICE_UNAVAILABLE", "服务不可用")
			n, _ := f.certSrv.NewNotification(f.certMchs, wxpay.EventTransactionSuccess, paid(f.certMchs.MchID, "I"), wxpaytest.NotificationOptions{})
			return n.Request("/notify/1900000001")
		}, 503, "refresh"},
		{"GET is not allowed", "", func() *http.Request { return httptest.NewRequest("GET", "/notify/1230000109", nil) }, 405, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			f.h.ServeHTTP(rec, tc.req())
			if rec.Code != tc.status {
				t.Fatalf("got %d %s, want %d", rec.Code, rec.Body, tc.status)
			}
			if tc.status != 405 {
				var body struct{ Code, Message string }
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Code != "FAIL" || !strings.Contains(body.Message, tc.msg) {
					t.Fatalf("body %s, want FAIL mentioning %q", rec.Body, tc.msg)
				}
			}
		})
	}
	if got := f.streamMsgs(t); got != 0 {
		t.Fatalf("stream holds %d messages after only failures", got)
	}
	if got := counterValue(t, f.reg, "wxpay_ingress_signature_probes_total", "mchid", "1230000109"); got != 1 {
		t.Fatalf("probe counter %v, want 1", got)
	}
	if !strings.Contains(f.logs.String(), `"level":"error"`) || !strings.Contains(f.logs.String(), "check the APIv3 key") {
		t.Fatalf("decrypt failure not logged loudly:\n%s", f.logs)
	}
	// The certificate merchant, once the refresh works, verifies: counted by certificate serial.
	f.certSrv.SetCertificatesAnswer(0, "", "")
	n, err := f.certSrv.NewNotification(f.certMchs, wxpay.EventTransactionSuccess, paid(f.certMchs.MchID, "J"), wxpaytest.NotificationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rec := f.post(t, "/notify/1900000001", n); rec.Code != 200 {
		t.Fatalf("certificate merchant after the refresh recovered: %d %s", rec.Code, rec.Body)
	}
	serial := n.Header.Get("Wechatpay-Serial")
	if got := seriesValue(t, f.reg, "wxpay_ingress_verified_total", map[string]string{"mchid": "1900000001", "key_kind": "certificate", "key_id": serial}); got != 1 {
		t.Fatalf("wxpay_ingress_verified_total by certificate %s = %v, want 1", serial, got)
	}
}

func TestV2Notifications(t *testing.T) {
	f := setup(t, true)
	pay := wxpaytest.V2PayNotification(map[string]string{
		"appid": "wx2421b1c4370ec43b", "mch_id": "1230000109", "openid": "oUpF8uMEb4qRXf22hE3X68TekukE",
		"trade_type": "JSAPI", "bank_type": "CMC", "total_fee": "100", "cash_fee": "100", "fee_type": "CNY",
		"transaction_id": "4200000215201811190261405420", "out_trade_no": "V2PAY", "time_end": "20181119153000",
	}, f.m.APIv2Key, wxpay.V2SignHMACSHA256)
	refund := wxpaytest.V2RefundNotification(map[string]string{"appid": "wx2421b1c4370ec43b", "mch_id": "1230000109"},
		map[string]string{"transaction_id": "4200000215201811190261405420", "out_trade_no": "V2PAY", "refund_id": "50000404922017112502468056157",
			"out_refund_no": "R1", "total_fee": "100", "refund_fee": "100", "refund_status": "SUCCESS", "success_time": "2018-11-19 16:00:00",
			"refund_recv_accout": "支付用户零钱", "refund_account": "REFUND_SOURCE_RECHARGE_FUNDS", "refund_request_source": "VENDOR_PLATFORM"},
		f.m.APIv2Key)
	okXML := `<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>`
	tests := []struct {
		name    string
		path    string
		body    []byte
		status  int
		subject string
	}{
		{"pay", "/notify/1230000109", pay, 200, "wxpay.1230000109.transaction.success"},
		{"pay again is a duplicate", "/notify/1230000109", pay, 200, ""},
		{"console refund", "/notify/1230000109", refund, 200, "wxpay.1230000109.refund.success"},
		{"bad sign", "/notify/1230000109", bytes.Replace(pay, []byte("V2PAY"), []byte("V2PAX"), 1), 401, ""},
		{"malformed XML", "/notify/1230000109", []byte("<xml><a>"), 400, ""},
		{"no v2 key for the merchant", "/notify/1900000001", pay, 500, ""},
		{"unknown merchant", "/notify/1999999999", pay, 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			f.h.ServeHTTP(rec, httptest.NewRequest("POST", tc.path, bytes.NewReader(tc.body)))
			if rec.Code != tc.status {
				t.Fatalf("got %d %s, want %d", rec.Code, rec.Body, tc.status)
			}
			if !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/xml") {
				t.Fatalf("content type %s", rec.Header().Get("Content-Type"))
			}
			if tc.status == 200 && rec.Body.String() != okXML {
				t.Fatalf("answer %s", rec.Body)
			}
			if tc.status != 200 && !strings.Contains(rec.Body.String(), "<return_code><![CDATA[FAIL]]></return_code>") {
				t.Fatalf("answer %s", rec.Body)
			}
		})
	}
	if got := f.streamMsgs(t); got != 2 {
		t.Fatalf("stream holds %d, want 2 (pay and refund)", got)
	}
	// pay, its duplicate and the refund were verified by the API v2 key.
	if got := seriesValue(t, f.reg, "wxpay_ingress_verified_total", map[string]string{"mchid": "1230000109", "key_kind": "apiv2_key", "key_id": ""}); got != 3 {
		t.Fatalf("wxpay_ingress_verified_total by the API v2 key = %v, want 3", got)
	}
	// The v2 refund maps to the same dedupe key as its v3 form.
	n, _ := f.srv.NewNotification(f.m, wxpay.EventRefundSuccess, `{"mchid":"1230000109","out_trade_no":"V2PAY","transaction_id":"4200000215201811190261405420","out_refund_no":"R1","refund_id":"50000404922017112502468056157","refund_status":"SUCCESS","success_time":"2018-11-19T16:00:00+08:00","amount":{"total":100,"refund":100,"payer_total":100,"payer_refund":100}}`, wxpaytest.NotificationOptions{})
	if rec := f.post(t, "/notify/1230000109", n); rec.Code != 200 {
		t.Fatalf("v3 refund: %d %s", rec.Code, rec.Body)
	}
	if got := f.streamMsgs(t); got != 2 {
		t.Fatalf("the v3 form of the same refund was stored again: %d messages", got)
	}
}

func TestDuplicateStorm(t *testing.T) {
	f := setup(t, false)
	n := f.notification(t, "STORM", wxpaytest.NotificationOptions{})
	var wg sync.WaitGroup
	codes := make(chan int, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := httptest.NewRecorder()
			f.h.ServeHTTP(rec, n.Request("/notify/1230000109"))
			codes <- rec.Code
		}()
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("a duplicate was answered %d", c)
		}
	}
	if got := f.streamMsgs(t); got != 1 {
		t.Fatalf("stream holds %d messages, want 1", got)
	}
}

func TestNATSOutage(t *testing.T) {
	f := setup(t, false)
	ts := httptest.NewServer(f.h)
	defer ts.Close()
	// Warm up: one event stored.
	if rec := f.post(t, "/notify/1230000109", f.notification(t, "BEFORE", wxpaytest.NotificationOptions{})); rec.Code != 200 {
		t.Fatalf("before the outage: %d", rec.Code)
	}
	f.proxy.Cut()
	var answered []string
	for i := range 5 {
		n := f.notification(t, fmt.Sprintf("DURING%d", i), wxpaytest.NotificationOptions{})
		start := time.Now()
		rec := f.post(t, "/notify/1230000109", n)
		if took := time.Since(start); took > 3*time.Second {
			t.Fatalf("answer took %s, over WeChat's 3 s", took)
		}
		if rec.Code == 200 {
			answered = append(answered, n.ID)
		} else if rec.Code != 503 {
			t.Fatalf("during the outage: got %d %s, want 503", rec.Code, rec.Body)
		}
	}
	if len(answered) != 0 {
		t.Fatalf("answered success while JetStream was unreachable: %v", answered)
	}
	// WeChat keeps re-sending; JetStream comes back; the retries land.
	n := f.notification(t, "RETRIED", wxpaytest.NotificationOptions{})
	done := make(chan error, 1)
	go func() {
		attempts, err := f.srv.Deliver(ctx, ts.URL+"/notify/1230000109", n)
		if err == nil && len(attempts) < 2 {
			err = fmt.Errorf("delivered at the first attempt although JetStream was down")
		}
		done <- err
	}()
	time.Sleep(1500 * time.Millisecond)
	f.proxy.Restore()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Everything answered 200 is in the stream: BEFORE and RETRIED.
	if got := f.streamMsgs(t); got < 2 {
		t.Fatalf("stream holds %d messages, want at least 2", got)
	}
	found := false
	for _, m := range testenv.StreamMsgs(t, f.js, events.StreamName) {
		if bytes.Contains(m.Data, []byte(`"`+n.ID+`"`)) {
			found = true
		}
	}
	if !found {
		t.Fatal("the notification answered 200 after the outage is not in the stream")
	}
}

// WeChat hanging up while the ingress works does not abandon the event: it
// is published all the same, and WeChat's retry is then a duplicate.
func TestClientHangUpStillPublishes(t *testing.T) {
	f := setup(t, false)
	n := f.notification(t, "HANGUP", wxpaytest.NotificationOptions{})
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, n.Request("/notify/1230000109").WithContext(cctx))
	if rec.Code != 200 {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
	if got := f.streamMsgs(t); got != 1 {
		t.Fatalf("stream holds %d messages, want 1", got)
	}
}

// Body buffers are reused: requests of different sizes and formats, one
// after the other and concurrently, each publish their own content.
func TestBodyBuffersReused(t *testing.T) {
	f := setup(t, false)
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			// Every third one has a long attach, so the bodies differ in size.
			res := paid(f.m.MchID, fmt.Sprintf("REUSE-%d", i))
			if i%3 == 0 {
				res = strings.Replace(res, `"attach":""`, `"attach":"`+strings.Repeat("x", 3000)+`"`, 1)
			}
			n, err := f.srv.NewNotification(f.m, wxpay.EventTransactionSuccess, res, wxpaytest.NotificationOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			if rec := f.post(t, "/notify/1230000109", n); rec.Code != 200 {
				t.Errorf("%d: %d %s", i, rec.Code, rec.Body)
			}
		})
	}
	wg.Wait()
	msgs := testenv.StreamMsgs(t, f.js, events.StreamName)
	if len(msgs) != 40 {
		t.Fatalf("stream holds %d messages, want 40", len(msgs))
	}
	seen := map[string]bool{}
	for _, msg := range msgs {
		var env events.Envelope
		if err := json.Unmarshal(msg.Data, &env); err != nil {
			t.Fatal(err)
		}
		var tx struct {
			OutTradeNo string `json:"out_trade_no"`
			Attach     string `json:"attach"`
		}
		if err := json.Unmarshal(env.Resource, &tx); err != nil {
			t.Fatal(err)
		}
		var i int
		if _, err := fmt.Sscanf(tx.OutTradeNo, "REUSE-%d", &i); err != nil {
			t.Fatalf("message %d: out_trade_no %q", msg.Sequence, tx.OutTradeNo)
		}
		if wantLong := i%3 == 0; (len(tx.Attach) == 3000) != wantLong {
			t.Fatalf("%s: attach of %d bytes", tx.OutTradeNo, len(tx.Attach))
		}
		seen[tx.OutTradeNo] = true
	}
	if len(seen) != 40 {
		t.Fatalf("%d distinct events of 40", len(seen))
	}
}
