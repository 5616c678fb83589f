package ingress_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxpay-notify/wxpay-notify/internal/ingress"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// sharedKeys adds merchant 1230000110, configured with the keys of the
// fixture's merchant 1230000109 (a group's merchants often share them).
func sharedKeys(f *fixture) []ingress.Merchant {
	cfg := f.srv.ClientConfig(f.m)
	cfg.MchID = "1230000110"
	c, err := wxpay.NewClient(cfg)
	if err != nil {
		panic(err)
	}
	return []ingress.Merchant{{MchID: "1230000110", Client: c, APIv2Key: f.m.APIv2Key}}
}

// subjectMsgs counts the stream's messages on subject.
func (f *fixture) subjectMsgs(t *testing.T, subject string) uint64 {
	t.Helper()
	s, err := f.js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

func failMessage(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var body struct{ Code, Message string }
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Code != "FAIL" {
		t.Fatalf("answer %s is not a v3 FAIL", rec.Body)
	}
	return body.Message
}

// A notification for merchant A posted to merchant B's URL is refused,
// although B's keys verify it: stored on B's subject, it would also have
// made A's genuine delivery a duplicate.
func TestMerchantMismatchRefused(t *testing.T) {
	f := setupWith(t, false, sharedKeys, nil)
	n := f.notification(t, "MISROUTED", wxpaytest.NotificationOptions{}) // resource mchid 1230000109
	rec := f.post(t, "/notify/1230000110", n)
	if rec.Code != 400 {
		t.Fatalf("A's notification on B's URL: got %d %s, want 400", rec.Code, rec.Body)
	}
	if msg := failMessage(t, rec); !strings.Contains(msg, "1230000109") || !strings.Contains(msg, "1230000110") {
		t.Fatalf("message %q does not name both merchants", msg)
	}
	if got := f.streamMsgs(t); got != 0 {
		t.Fatalf("stream holds %d messages after the refusal", got)
	}
	if got := counterValue(t, f.reg, "wxpay_ingress_requests_total", "outcome", "merchant_mismatch"); got != 1 {
		t.Fatalf("merchant_mismatch counter %v, want 1", got)
	}
	// A's genuine delivery is stored, on A's subject, not a duplicate.
	rec = f.post(t, "/notify/1230000109", f.notification(t, "MISROUTED", wxpaytest.NotificationOptions{ID: n.ID}))
	if rec.Code != 200 {
		t.Fatalf("A's own delivery: %d %s", rec.Code, rec.Body)
	}
	if got := counterValue(t, f.reg, "wxpay_ingress_requests_total", "outcome", "duplicate"); got != 0 {
		t.Fatal("A's own delivery was taken for a duplicate")
	}
	if got := f.subjectMsgs(t, "wxpay.1230000109.transaction.success"); got != 1 {
		t.Fatalf("A's subject holds %d, want 1", got)
	}
	if !strings.Contains(f.logs.String(), `"outcome":"merchant_mismatch"`) || !strings.Contains(f.logs.String(), "notify_url") {
		t.Fatalf("mismatch not logged with what to check:\n%s", f.logs)
	}

	// The v2 form: mch_id must match the URL's merchant too.
	pay := wxpaytest.V2PayNotification(map[string]string{
		"appid": "wx2421b1c4370ec43b", "mch_id": "1230000109", "openid": "o", "trade_type": "JSAPI", "total_fee": "1",
		"transaction_id": "4200000215201811190261405421", "out_trade_no": "V2MIS", "time_end": "20181119153000",
	}, f.m.APIv2Key, wxpay.V2SignMD5)
	rec = httptest.NewRecorder()
	f.h.ServeHTTP(rec, httptest.NewRequest("POST", "/notify/1230000110", bytes.NewReader(pay)))
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "1230000109") {
		t.Fatalf("v2 for A on B's URL: %d %s", rec.Code, rec.Body)
	}
	if got := seriesValue(t, f.reg, "wxpay_ingress_requests_total", map[string]string{"outcome": "merchant_mismatch", "event_type": "unknown", "format": "v2"}); got != 1 {
		t.Fatalf("v2 merchant_mismatch counter %v, want 1", got)
	}
	if got := f.streamMsgs(t); got != 1 {
		t.Fatalf("stream holds %d messages, want A's one", got)
	}
}

// In partner mode the configured merchant is the service provider: the
// resource's sp_mchid must be it, and any sub-merchant is accepted.
func TestMerchantMismatchPartnerMode(t *testing.T) {
	const sp = "1900000109"
	f := setupWith(t, false, func(f *fixture) []ingress.Merchant {
		cfg := f.srv.ClientConfig(f.m)
		cfg.MchID, cfg.PartnerMode = sp, true
		c, err := wxpay.NewClient(cfg)
		if err != nil {
			panic(err)
		}
		return []ingress.Merchant{{MchID: sp, Client: c}}
	}, nil)
	partnerPaid := func(spMchID, subMchID, outTradeNo string) *wxpaytest.Notification {
		res := fmt.Sprintf(`{"sp_appid":"wx8888888888888888","sp_mchid":"%s","sub_mchid":"%s","out_trade_no":"%s","transaction_id":"4200000%s","trade_type":"JSAPI","trade_state":"SUCCESS","amount":{"total":1}}`,
			spMchID, subMchID, outTradeNo, outTradeNo)
		n, err := f.srv.NewNotification(f.m, wxpay.EventTransactionSuccess, res, wxpaytest.NotificationOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, sub := range []string{"1900000001", "1900000002"} {
		if rec := f.post(t, "/notify/"+sp, partnerPaid(sp, sub, "P"+sub)); rec.Code != 200 {
			t.Fatalf("sub-merchant %s: %d %s", sub, rec.Code, rec.Body)
		}
	}
	// Another provider's notification, whose sub_mchid happens to be the
	// configured id, is refused all the same.
	rec := f.post(t, "/notify/"+sp, partnerPaid("1900000777", sp, "POTHER"))
	if rec.Code != 400 || !strings.Contains(failMessage(t, rec), "sp_mchid") {
		t.Fatalf("another provider's notification: %d %s", rec.Code, rec.Body)
	}
	// A direct merchant's notification (mchid) on the provider's URL.
	if rec := f.post(t, "/notify/"+sp, f.notification(t, "PDIRECT", wxpaytest.NotificationOptions{})); rec.Code != 400 {
		t.Fatalf("direct merchant's notification on the provider's URL: %d %s", rec.Code, rec.Body)
	}
	if got := f.streamMsgs(t); got != 2 {
		t.Fatalf("stream holds %d, want the two sub-merchants' payments", got)
	}
}

// A resource that names no merchant (an event type this project does not
// know) is accepted: nothing in it says it is another merchant's.
func TestResourceWithoutMerchantAccepted(t *testing.T) {
	f := setupWith(t, false, sharedKeys, nil)
	n, err := f.srv.NewNotification(f.m, "COMPLAINT.CREATE", `{"complaint_id":"200201820200101080076610000","action_type":"CREATE_COMPLAINT"}`, wxpaytest.NotificationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rec := f.post(t, "/notify/1230000110", n); rec.Code != 200 {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
	// A merchant field that is not a string names no merchant we can trust.
	n, err = f.srv.NewNotification(f.m, wxpay.EventTransactionSuccess, `{"mchid":1230000110,"transaction_id":"4200000000000000000000000000","trade_state":"SUCCESS"}`, wxpaytest.NotificationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rec := f.post(t, "/notify/1230000110", n); rec.Code != 400 {
		t.Fatalf("numeric mchid: got %d %s, want 400", rec.Code, rec.Body)
	}
}

// Untrusted values (the mchid of the path, headers) come back in answers
// and log lines bounded, whatever their size.
func TestUntrustedValuesBounded(t *testing.T) {
	f := setup(t, false)
	huge := strings.Repeat("9", 900<<10)
	hugeText := strings.Repeat("x", 900<<10)
	n := f.notification(t, "HUGE", wxpaytest.NotificationOptions{})
	tests := []struct {
		name   string
		req    func() *http.Request
		status int
		msg    string
	}{
		{"900 KB of digits as mchid", func() *http.Request { return n.Request("/notify/" + huge) }, 404, "is not 1-32 digits"},
		{"900 KB mchid that is not digits", func() *http.Request { return n.Request("/notify/" + hugeText) }, 404, "is not 1-32 digits"},
		{"mchid with a dot", func() *http.Request { return n.Request("/notify/1230000109.x") }, 404, "is not 1-32 digits"},
		{"900 KB Wechatpay-Serial", func() *http.Request {
			r := n.Request("/notify/1230000109")
			r.Header.Set("Wechatpay-Serial", hugeText)
			return r
		}, 401, "unknown Wechatpay-Serial"},
		{"900 KB Request-ID", func() *http.Request {
			r := f.notification(t, "HUGE2", wxpaytest.NotificationOptions{}).Request("/notify/1230000109")
			r.Header.Set("Request-ID", hugeText)
			return r
		}, 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.logs.Reset()
			rec := httptest.NewRecorder()
			f.h.ServeHTTP(rec, tc.req())
			if rec.Code != tc.status {
				t.Fatalf("got %d, want %d: %.300s", rec.Code, tc.status, rec.Body)
			}
			if rec.Body.Len() > 1<<10 {
				t.Fatalf("answer of %d bytes: %.200s…", rec.Body.Len(), rec.Body)
			}
			if tc.msg != "" && !strings.Contains(failMessage(t, rec), tc.msg) {
				t.Fatalf("answer %s lacks %q", rec.Body, tc.msg)
			}
			if f.logs.Len() > 2<<10 {
				t.Fatalf("log line of %d bytes: %.300s…", f.logs.Len(), f.logs)
			}
			if tc.name != "mchid with a dot" && !strings.Contains(rec.Body.String()+f.logs.String(), "(921600 bytes)") {
				t.Fatalf("the cut value does not say how long it was:\n%s\n%s", rec.Body, f.logs)
			}
		})
	}
	if _, err := ingress.NewHandler([]ingress.Merchant{{MchID: "12300.00109", Client: wxpayClient(t, f)}}, &memPublisher{seen: map[string]bool{}}, ingress.Config{}); err == nil {
		t.Fatal("a configured mchid that is not digits was accepted")
	}

	// Whatever a dependency puts in an error, the answer and the log line
	// stay bounded.
	for _, tc := range []struct {
		name   string
		err    error
		status int
	}{
		{"900 KB publish error", errors.New("publish not acknowledged: " + hugeText), http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &bytes.Buffer{}
			h, err := ingress.NewHandler([]ingress.Merchant{{MchID: f.m.MchID, Client: wxpayClient(t, f)}},
				failingPublisher{err: tc.err}, ingress.Config{Logger: newLogger(logs), Registerer: prometheus.NewRegistry()})
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, f.notification(t, "HUGE3", wxpaytest.NotificationOptions{}).Request("/notify/1230000109"))
			if rec.Code != tc.status {
				t.Fatalf("got %d, want %d: %.300s", rec.Code, tc.status, rec.Body)
			}
			if rec.Body.Len() > 1<<10 {
				t.Fatalf("answer of %d bytes: %.200s…", rec.Body.Len(), rec.Body)
			}
			if logs.Len() > 2<<10 {
				t.Fatalf("log line of %d bytes: %.300s…", logs.Len(), logs)
			}
		})
	}
}

// failingPublisher fails every publish with err.
type failingPublisher struct{ err error }

func (p failingPublisher) Publish(context.Context, events.Envelope) (events.Published, error) {
	return events.Published{}, p.err
}

func wxpayClient(t *testing.T, f *fixture) *wxpay.Client {
	t.Helper()
	c, err := wxpay.NewClient(f.srv.ClientConfig(f.m))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A signed v2 notification with an XML declaration, a BOM, comments or
// leading whitespace is still a v2 notification.
func TestV2WithProlog(t *testing.T) {
	f := setup(t, false)
	for i, prolog := range []string{
		`<?xml version="1.0" encoding="UTF-8"?>`,
		"\xef\xbb\xbf",
		"\r\n  \t",
		"<!-- WeChat Pay -->\n",
		"\xef\xbb\xbf<?xml version=\"1.0\"?>\n<!-- a --><!-- b -->\n",
	} {
		pay := wxpaytest.V2PayNotification(map[string]string{
			"appid": "wx2421b1c4370ec43b", "mch_id": "1230000109", "openid": "o", "trade_type": "JSAPI", "total_fee": "1",
			"transaction_id": fmt.Sprintf("420000021520181119026140550%d", i), "out_trade_no": fmt.Sprintf("PROLOG%d", i), "time_end": "20181119153000",
		}, f.m.APIv2Key, wxpay.V2SignHMACSHA256)
		body := append([]byte(prolog), pay...)
		if _, err := wxpay.ParseV2Notification(body, f.m.APIv2Key); err != nil {
			t.Fatalf("pkg/wxpay refuses the body with prolog %q: %v", prolog, err)
		}
		rec := httptest.NewRecorder()
		f.h.ServeHTTP(rec, httptest.NewRequest("POST", "/notify/1230000109", bytes.NewReader(body)))
		if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/xml") {
			t.Fatalf("prolog %q: got %d %s %s", prolog, rec.Code, rec.Header().Get("Content-Type"), rec.Body)
		}
	}
	if got := f.streamMsgs(t); got != 5 {
		t.Fatalf("stream holds %d, want 5", got)
	}
}

// An <xml> post to a merchant without an API v2 key: anyone can send one,
// so it is a warning and a metric, and still 500 (for a real v2
// notification it is a configuration fault, and WeChat retries).
func TestV2WithoutKeyIsWarnedAndCounted(t *testing.T) {
	f := setup(t, true) // 1900000001 has no API v2 key
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, httptest.NewRequest("POST", "/notify/1900000001", strings.NewReader(`<xml><mch_id>1900000001</mch_id></xml>`)))
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), "WXPAY_APIV2_KEY") {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
	if got := seriesValue(t, f.reg, "wxpay_ingress_requests_total", map[string]string{"outcome": "v2_not_configured", "event_type": "unknown", "format": "v2"}); got != 1 {
		t.Fatalf("v2_not_configured counter %v, want 1", got)
	}
	var line struct{ Level, Outcome string }
	if err := json.Unmarshal(f.logs.Bytes(), &line); err != nil {
		t.Fatalf("log %s: %v", f.logs, err)
	}
	if line.Level != "warn" || line.Outcome != "v2_not_configured" {
		t.Fatalf("logged %+v, want a warning with outcome v2_not_configured", line)
	}
}

// slowReader hands out its data in pieces, waiting between them.
type slowReader struct {
	data  []byte
	piece int
	wait  time.Duration
}

func (r *slowReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	time.Sleep(r.wait)
	n := copy(p[:min(len(p), r.piece)], r.data)
	r.data = r.data[n:]
	return n, nil
}

// The answer's budget starts once the body is in: a body that took longer
// than the whole budget to arrive is still published and answered 200.
func TestBudgetStartsAfterTheBody(t *testing.T) {
	f := setupWith(t, false, nil, func(c *ingress.Config) {
		c.AnswerDeadline, c.PublishTimeout = time.Second, 900*time.Millisecond
	})
	n := f.notification(t, "TRICKLED", wxpaytest.NotificationOptions{})
	req := n.Request("/notify/1230000109")
	pieces := 10
	req.Body = io.NopCloser(&slowReader{data: n.Body, piece: len(n.Body)/pieces + 1, wait: 150 * time.Millisecond})
	start := time.Now()
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	if took := time.Since(start); took < time.Second {
		t.Fatalf("the body arrived in %s: the test needs it slower than the budget", took)
	}
	if rec.Code != 200 {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
	if got := f.streamMsgs(t); got != 1 {
		t.Fatalf("stream holds %d", got)
	}
}

// gatePublisher blocks every publish until release is closed.
type gatePublisher struct {
	memPublisher
	entered chan struct{}
	release chan struct{}
}

func (p *gatePublisher) Publish(ctx context.Context, env events.Envelope) (events.Published, error) {
	p.entered <- struct{}{}
	select {
	case <-p.release:
	case <-ctx.Done():
		return events.Published{}, ctx.Err()
	}
	return p.memPublisher.Publish(ctx, env)
}

// Beyond MaxInFlight notifications at once, one more is answered 503 at
// once, once read (reading holds no slot: TestSlowUploadsHoldNoInFlightSlot);
// the ones in flight finish normally.
func TestMaxInFlight(t *testing.T) {
	f := setup(t, false) // for the fake platform and its merchant
	pub := &gatePublisher{memPublisher: memPublisher{seen: map[string]bool{}}, entered: make(chan struct{}, 8), release: make(chan struct{})}
	f.reg = prometheus.NewRegistry()
	h, err := ingress.NewHandler([]ingress.Merchant{{MchID: f.m.MchID, Client: wxpayClient(t, f)}}, pub, ingress.Config{
		MaxInFlight: 2, Registerer: f.reg, Logger: newLogger(f.logs), AnswerDeadline: 30 * time.Second, PublishTimeout: 20 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	codes := make(chan int, 2)
	for i := range 2 {
		n := f.notification(t, fmt.Sprintf("INFLIGHT%d", i), wxpaytest.NotificationOptions{})
		wg.Go(func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, n.Request("/notify/1230000109"))
			codes <- rec.Code
		})
	}
	for range 2 {
		select {
		case <-pub.entered:
		case <-time.After(20 * time.Second):
			t.Fatal("the first two notifications never reached the publisher")
		}
	}
	third := f.notification(t, "INFLIGHT2", wxpaytest.NotificationOptions{})
	req := third.Request("/notify/1230000109")
	req.Body = io.NopCloser(&slowReader{data: third.Body, piece: len(third.Body)})
	rec := httptest.NewRecorder()
	refused := make(chan struct{})
	go func() { h.ServeHTTP(rec, req); close(refused) }()
	select {
	case <-refused:
	case <-time.After(20 * time.Second):
		close(pub.release)
		t.Fatal("the notification beyond the limit was taken in, not answered at once")
	}
	if rec.Code != 503 || !strings.Contains(failMessage(t, rec), "MAX_IN_FLIGHT") {
		t.Fatalf("third notification: %d %s, want 503", rec.Code, rec.Body)
	}
	if got := counterValue(t, f.reg, "wxpay_ingress_requests_total", "outcome", "busy"); got != 1 {
		t.Fatalf("busy counter %v", got)
	}
	close(pub.release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("a notification in flight was answered %d", c)
		}
	}
	// The slots are free again.
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, f.notification(t, "INFLIGHT3", wxpaytest.NotificationOptions{}).Request("/notify/1230000109"))
	if rec.Code != 200 {
		t.Fatalf("after the rush: %d %s", rec.Code, rec.Body)
	}
}
