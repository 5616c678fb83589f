package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/webhook"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// recorder is the business handler behind FORWARD_URL: it verifies each
// forwarded event and counts it per business id ("pay:<transaction_id>",
// "refund:<refund_id>") and per Idempotency-Key. Every delivery it
// answers 2xx is one application of the business effect.
type recorder struct {
	secret []byte

	mu    sync.Mutex
	byID  map[string]int
	byKey map[string]int
	// at keeps when each business id was applied, so that a second
	// application can be told apart by when it came.
	at    map[string][]time.Time
	bad   []string // deliveries refused: bad signature or unreadable
	other int      // events that are neither payments nor refunds
	// holdPath, when set, makes the next delivery on that path wait
	// before it is applied, until its sender goes away: held receives its
	// envelope's dedupe key once it waits. A delivery whose sender died
	// before the answer is not applied, as a business handler whose
	// transaction commits with its answer does not apply it.
	holdPath string
	holdType string // "": any event type
	held     chan string
}

func newRecorder(secret []byte) *recorder {
	return &recorder{secret: secret, byID: map[string]int{}, byKey: map[string]int{}, at: map[string][]time.Time{}}
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading the body", http.StatusBadRequest)
		return
	}
	if err := webhook.Verify(rc.secret, r.Header, body, webhook.DefaultTolerance, time.Now()); err != nil {
		rc.refuse(fmt.Sprintf("verify: %v", err))
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var ev events.Envelope
	if err := json.Unmarshal(body, &ev); err != nil {
		rc.refuse(fmt.Sprintf("envelope: %v", err))
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var res struct {
		TransactionID string `json:"transaction_id"`
		RefundID      string `json:"refund_id"`
	}
	id := ""
	switch ev.EventType {
	case wxpay.EventTransactionSuccess:
		if json.Unmarshal(ev.Resource, &res) == nil && res.TransactionID != "" {
			id = "pay:" + res.TransactionID
		}
	case wxpay.EventRefundSuccess, wxpay.EventRefundAbnormal, wxpay.EventRefundClosed:
		if json.Unmarshal(ev.Resource, &res) == nil && res.RefundID != "" {
			id = "refund:" + res.RefundID
		}
	}
	rc.mu.Lock()
	hold := rc.holdPath != "" && r.URL.Path == rc.holdPath && (rc.holdType == "" || rc.holdType == ev.EventType)
	if hold {
		rc.holdPath = ""
	}
	rc.mu.Unlock()
	if hold {
		rc.held <- ev.DedupeKey
		<-r.Context().Done()
		return
	}
	rc.mu.Lock()
	rc.byKey[r.Header.Get(webhook.HeaderIdempotencyKey)]++
	if id != "" {
		rc.byID[id]++
		rc.at[id] = append(rc.at[id], time.Now())
	} else {
		rc.other++
	}
	rc.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// holdNext arms the hold on path and returns where the held delivery's
// dedupe key arrives.
func (rc *recorder) holdNext(path string) <-chan string { return rc.holdNextOf(path, "") }

// holdNextOf is holdNext for the next event of eventType only.
func (rc *recorder) holdNextOf(path, eventType string) <-chan string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.holdPath, rc.holdType, rc.held = path, eventType, make(chan string, 1)
	return rc.held
}

func (rc *recorder) refuse(why string) {
	rc.mu.Lock()
	rc.bad = append(rc.bad, why)
	rc.mu.Unlock()
}

// counts copies the per-business-id counts.
func (rc *recorder) counts() map[string]int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := make(map[string]int, len(rc.byID))
	for k, v := range rc.byID {
		out[k] = v
	}
	return out
}

// appliedAt copies the times id was applied.
func (rc *recorder) appliedAt(id string) []time.Time {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]time.Time(nil), rc.at[id]...)
}

// balancer stands in front of the two ingresses as a load balancer
// does: round robin, and a backend that cannot be reached fails that
// attempt with 502 (WeChat then retries on its schedule).
type balancer struct {
	backends []string // host:port of each ingress's public listener
	next     atomic.Uint64
	client   *http.Client
	failed   atomic.Int64

	// byClock counts the answers to v3 notifications by how far their
	// Wechatpay-Timestamp was from the clock ("outside" the 5-minute
	// window, "edge" within 20 s inside it) and status.
	mu      sync.Mutex
	byClock map[string]int
}

func newBalancer(backends []string) *balancer {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return &balancer{backends: backends, client: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

func (b *balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	backend := b.backends[int(b.next.Add(1)-1)%len(b.backends)]
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading the body", http.StatusBadRequest)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+backend+r.URL.RequestURI(), bytesReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := b.client.Do(req)
	if err != nil {
		b.failed.Add(1)
		http.Error(w, "upstream "+backend+": "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	if class := clockClass(r.Header.Get(wxpay.HeaderTimestamp)); class != "" {
		b.mu.Lock()
		if b.byClock == nil {
			b.byClock = map[string]int{}
		}
		b.byClock[fmt.Sprintf("%s %d", class, resp.StatusCode)]++
		b.mu.Unlock()
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// clockClass says where a Wechatpay-Timestamp lies against the 5-minute
// window: "outside", "edge" (the last 20 s inside it) or "" (well inside,
// or none).
func clockClass(ts string) string {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return ""
	}
	d := time.Unix(sec, 0).Sub(time.Now()).Abs()
	switch {
	case d > wxpay.DefaultTimestampWindow:
		return "outside"
	case d > wxpay.DefaultTimestampWindow-20*time.Second:
		return "edge"
	}
	return ""
}

// clockCounts copies byClock.
func (b *balancer) clockCounts() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]int{}
	for k, v := range b.byClock {
		out[k] = v
	}
	return out
}

// refundJob is a refund the flow makes a few orders after its payment.
type refundJob struct {
	due                     int
	outTradeNo, outRefundNo string
	total, amount           int64
}

// flow is the merchant's traffic: orders created and paid on the fake
// platform at a steady rate, a share of them refunded through the refund
// API a few orders later and then finished by the platform.
type flow struct {
	srv    *wxpaytest.Server
	mchid  string
	client *wxpay.Client
	tag    string
	// beforePay, when set, runs after an order is created and before it
	// is paid (the business announcing it); an error fails the flow.
	beforePay func(ctx context.Context, outTradeNo string) error

	mu       sync.Mutex
	paid     int
	refunded int
	errs     []error
}

// run places orders at rate per second until ctx ends or d has passed,
// then makes the refunds still due.
func (f *flow) run(ctx context.Context, d time.Duration, rate float64) {
	iv := time.Duration(float64(time.Second) / rate)
	begin := time.Now()
	var due []refundJob
	for i := 0; ctx.Err() == nil && time.Since(begin) < d; i++ {
		if wait := time.Until(begin.Add(time.Duration(i) * iv)); wait > 0 {
			time.Sleep(wait)
		}
		no := fmt.Sprintf("E2E%s%06d", f.tag, i)
		total := int64(100 + i%5000)
		if _, err := f.srv.CreateOrder(wxpaytest.NewOrder{MchID: f.mchid, OutTradeNo: no, Total: total, Description: "e2e order"}); err != nil {
			f.fail(err)
			continue
		}
		if f.beforePay != nil {
			if err := f.beforePay(ctx, no); err != nil {
				f.fail(fmt.Errorf("before paying %s: %w", no, err))
			}
		}
		if _, err := f.srv.Pay(no); err != nil {
			f.fail(err)
			continue
		}
		f.mu.Lock()
		f.paid++
		f.mu.Unlock()
		if i%3 == 0 { // a third of the orders are refunded, in part
			due = append(due, refundJob{due: i + 3, outTradeNo: no, outRefundNo: no + "R1", total: total, amount: 1 + total/2})
		}
		due = f.refundsDue(ctx, due, i)
	}
	f.refundsDue(ctx, due, int(^uint(0)>>1))
}

func (f *flow) refundsDue(ctx context.Context, due []refundJob, i int) []refundJob {
	keep := due[:0]
	for _, job := range due {
		if job.due > i {
			keep = append(keep, job)
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := f.client.CreateRefund(rctx, &wxpay.RefundRequest{OutTradeNo: job.outTradeNo, OutRefundNo: job.outRefundNo,
			Reason: "e2e refund", Refund: job.amount, Total: job.total})
		cancel()
		if err != nil {
			f.fail(fmt.Errorf("refund %s: %w", job.outRefundNo, err))
			continue
		}
		if _, err := f.srv.CompleteRefund(job.outRefundNo); err != nil {
			f.fail(err)
			continue
		}
		f.mu.Lock()
		f.refunded++
		f.mu.Unlock()
	}
	return keep
}

func (f *flow) fail(err error) {
	f.mu.Lock()
	f.errs = append(f.errs, err)
	f.mu.Unlock()
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// platformRecord is what the business must have applied once each: the
// platform's paid orders ("pay:<transaction_id>") and successful refunds
// ("refund:<refund_id>"), the recorder's keys, with their counts.
func platformRecord(srv *wxpaytest.Server) (want map[string]bool, payments, refunds int) {
	want = map[string]bool{}
	for _, o := range srv.Orders() {
		if o.TransactionID != "" {
			want["pay:"+o.TransactionID] = true
			payments++
		}
	}
	for _, r := range srv.Refunds() {
		if r.Status == wxpay.RefundStatusSuccess {
			want["refund:"+r.RefundID] = true
			refunds++
		}
	}
	return want, payments, refunds
}
