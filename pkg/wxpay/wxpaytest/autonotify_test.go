package wxpaytest_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// arrival is one notification post the receiver verified.
type arrival struct {
	at     time.Time
	path   string
	v2     bool
	id     string // v3 notification id
	event  string // v3 event type
	tx     *wxpay.Transaction
	refund *wxpay.RefundNotice
	v2n    *wxpay.V2Notification
}

// receiver is a merchant's notify endpoint: it verifies every post with
// the merchant's keys (v3 with a real client, v2 with the API v2 key),
// records it and answers what status says (200 by default).
type receiver struct {
	*httptest.Server
	t      *testing.T
	client *wxpay.Client
	m      *wxpaytest.Merchant

	mu     sync.Mutex
	got    []arrival
	posts  int
	status func(post int, a arrival) int // post counts from 1
}

func newReceiver(t *testing.T, srv *wxpaytest.Server, m *wxpaytest.Merchant) *receiver {
	t.Helper()
	c, err := wxpay.NewClient(srv.ClientConfig(m))
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{t: t, client: c, m: m}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	a := arrival{at: time.Now(), path: req.URL.Path}
	if strings.HasPrefix(string(body), "<") {
		a.v2 = true
		if ct := req.Header.Get("Content-Type"); ct != "text/xml" {
			r.t.Errorf("v2 notification posted as %q, want text/xml", ct)
		}
		n, err := wxpay.ParseV2Notification(body, r.m.APIv2Key)
		if err != nil {
			r.t.Errorf("v2 notification does not verify with the merchant's API v2 key: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		a.v2n = n
		if n.Kind == wxpay.V2KindRefund {
			a.refund, err = n.Refund(r.m.MchID)
		} else {
			a.tx, err = n.Transaction(r.m.MchID)
		}
		if err != nil {
			r.t.Errorf("v2 notification does not map onto v3: %v", err)
		}
	} else {
		n, err := r.client.ParseNotification(req.Context(), req.Header, body)
		if err != nil {
			r.t.Errorf("v3 notification does not verify: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		a.id, a.event = n.ID, n.EventType
		if strings.HasPrefix(n.EventType, "REFUND.") {
			a.refund, err = n.Refund()
		} else {
			a.tx, err = n.Transaction()
		}
		if err != nil {
			r.t.Errorf("notification resource: %v", err)
		}
	}
	r.mu.Lock()
	r.posts++
	post, status := r.posts, r.status
	r.got = append(r.got, a)
	r.mu.Unlock()
	code := http.StatusOK
	if status != nil {
		code = status(post, a)
	}
	if a.v2 {
		w.WriteHeader(http.StatusOK)
		w.Write(wxpay.V2Answer(code == http.StatusOK, ""))
		return
	}
	w.WriteHeader(code)
}

func (r *receiver) arrivals() []arrival {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]arrival(nil), r.got...)
}

func waitNotifications(t *testing.T, srv *wxpaytest.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.WaitNotifications(ctx); err != nil {
		t.Fatalf("WaitNotifications: %v", err)
	}
}

func TestAutoNotifySendsEveryStateChange(t *testing.T) {
	t.Parallel()
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, TimeScale: 0.001})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	rcv := newReceiver(t, srv, m)
	c := rcv.client
	ctx := context.Background()

	// Off by default: a test that delivers by hand gets nothing extra.
	srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: "ORDER-QUIET", NotifyURL: rcv.URL + "/pay"})
	srv.Pay("ORDER-QUIET")
	waitNotifications(t, srv)
	if got := rcv.arrivals(); len(got) != 0 {
		t.Fatalf("AutoNotify off, yet %d notifications arrived", len(got))
	}

	srv.AutoNotify(wxpaytest.AutoNotifyConfig{URL: rcv.URL + "/configured"})
	srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: "ORDER-0001", Total: 900, Attach: "cart=7",
		NotifyURL: rcv.URL + "/pay"})
	paid, err := srv.Pay("ORDER-0001")
	if err != nil {
		t.Fatal(err)
	}
	for i, no := range []string{"REFUND-OK", "REFUND-BAD", "REFUND-CLOSED"} {
		req := &wxpay.RefundRequest{OutTradeNo: "ORDER-0001", OutRefundNo: no, Refund: 100, Total: 900}
		if i == 0 {
			req.NotifyURL = rcv.URL + "/refund"
		}
		if _, err := c.CreateRefund(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	srv.CompleteRefund("REFUND-OK")
	srv.FailRefund("REFUND-BAD")
	srv.CloseRefund("REFUND-CLOSED")
	waitNotifications(t, srv)

	got := map[string]arrival{}
	for _, a := range rcv.arrivals() {
		key := a.event
		if a.refund != nil {
			key += " " + a.refund.OutRefundNo
		}
		if _, dup := got[key]; dup {
			t.Errorf("%s arrived twice without a fault asking for it", key)
		}
		got[key] = a
	}
	if len(got) != 4 {
		t.Fatalf("arrived %v, want one payment and three refund notifications", got)
	}
	pay := got[wxpay.EventTransactionSuccess]
	if pay.path != "/pay" || pay.tx == nil || pay.tx.TransactionID != paid.TransactionID || pay.tx.Amount.Total != 900 ||
		pay.tx.Attach != "cart=7" || pay.tx.MchID != m.MchID || pay.tx.TradeState != wxpay.TradeStateSuccess {
		t.Errorf("payment notification at %s: %+v", pay.path, pay.tx)
	}
	for _, tc := range []struct{ key, path, status string }{
		{wxpay.EventRefundSuccess + " REFUND-OK", "/refund", wxpay.RefundStatusSuccess},
		{wxpay.EventRefundAbnormal + " REFUND-BAD", "/configured", wxpay.RefundStatusAbnormal},
		{wxpay.EventRefundClosed + " REFUND-CLOSED", "/configured", wxpay.RefundStatusClosed},
	} {
		a, ok := got[tc.key]
		if !ok {
			t.Errorf("%s did not arrive", tc.key)
			continue
		}
		if a.path != tc.path || a.refund.RefundStatus != tc.status || a.refund.Amount.Refund != 100 || a.refund.MchID != m.MchID {
			t.Errorf("%s at %s: %+v", tc.key, a.path, a.refund)
		}
	}
	st := srv.NotifyStats()
	want := wxpaytest.NotifyStats{
		Payment: wxpaytest.NotifyCounts{Notifications: 1, Sent: 1, Attempts: 1, Acknowledged: 1},
		Refund:  wxpaytest.NotifyCounts{Notifications: 3, Sent: 3, Attempts: 3, Acknowledged: 3},
	}
	if st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
}

func TestAutoNotifyFaults(t *testing.T) {
	t.Parallel()
	const scale = 0.01
	const delay = 5 * time.Second // 50 ms on the scaled clock
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, TimeScale: scale})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	rcv := newReceiver(t, srv, m)
	var mu sync.Mutex
	var asked []wxpaytest.AutoNotification
	srv.AutoNotify(wxpaytest.AutoNotifyConfig{URL: rcv.URL, Fault: func(n wxpaytest.AutoNotification) wxpaytest.NotifyFault {
		mu.Lock()
		asked = append(asked, n)
		mu.Unlock()
		no := n.OutTradeNo
		if n.Kind == wxpaytest.NotifyRefund {
			no = n.OutRefundNo
		}
		switch no {
		case "DROP":
			return wxpaytest.NotifyFault{Drop: true, Duplicates: 3}
		case "DELAY":
			return wxpaytest.NotifyFault{Delay: delay}
		case "DUP":
			return wxpaytest.NotifyFault{Duplicates: 2}
		case "DUP-RACE":
			return wxpaytest.NotifyFault{Duplicates: 2, Concurrent: true}
		case "PAYV2", "PAYV2R-V2":
			return wxpaytest.NotifyFault{V2: true}
		}
		return wxpaytest.NotifyFault{}
	}})
	pay := func(no string, total int64) wxpaytest.Order {
		t.Helper()
		if _, err := srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: no, Total: total}); err != nil {
			t.Fatal(err)
		}
		o, err := srv.Pay(no)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	pay("DROP", 100)
	start := time.Now()
	pay("DELAY", 100)
	dup := pay("DUP", 100)
	pay("DUP-RACE", 100)
	v2pay := pay("PAYV2", 300)
	// A refund that arrives as a v2 XML notification, as a console refund.
	ctx := context.Background()
	if _, err := rcv.client.CreateRefund(ctx, &wxpay.RefundRequest{OutTradeNo: "PAYV2", OutRefundNo: "PAYV2R-V2", Refund: 120, Total: 300}); err != nil {
		t.Fatal(err)
	}
	refund, err := srv.CompleteRefund("PAYV2R-V2")
	if err != nil {
		t.Fatal(err)
	}
	waitNotifications(t, srv)

	byOrder := map[string][]arrival{}
	for _, a := range rcv.arrivals() {
		no := ""
		switch {
		case a.refund != nil:
			no = a.refund.OutRefundNo
		case a.tx != nil:
			no = a.tx.OutTradeNo
		}
		byOrder[no] = append(byOrder[no], a)
	}
	if n := len(byOrder["DROP"]); n != 0 {
		t.Errorf("a dropped notification arrived %d times", n)
	}
	if d := byOrder["DELAY"]; len(d) != 1 {
		t.Errorf("delayed notification arrived %d times, want once", len(d))
	} else if after, want := d[0].at.Sub(start), time.Duration(float64(delay)*scale); after < want {
		t.Errorf("delayed notification arrived after %v, want at least %v", after, want)
	}
	for _, no := range []string{"DUP", "DUP-RACE"} {
		d := byOrder[no]
		if len(d) != 3 {
			t.Errorf("%s arrived %d times, want 3 (2 duplicates)", no, len(d))
			continue
		}
		for _, a := range d {
			if a.id != d[0].id || a.id == "" || a.event != wxpay.EventTransactionSuccess {
				t.Errorf("%s copies differ: id %q event %s, first id %q", no, a.id, a.event, d[0].id)
			}
		}
	}
	if d := byOrder["DUP"]; len(d) == 3 && d[0].tx.TransactionID != dup.TransactionID {
		t.Errorf("duplicate of another payment: %+v", d[0].tx)
	}
	if d := byOrder["PAYV2"]; len(d) != 1 || !d[0].v2 || d[0].v2n.Kind != wxpay.V2KindPay ||
		d[0].tx.TransactionID != v2pay.TransactionID || d[0].tx.Amount.Total != 300 {
		t.Errorf("v2 payment notification: %+v", d)
	}
	if d := byOrder["PAYV2R-V2"]; len(d) != 1 || !d[0].v2 || d[0].v2n.Kind != wxpay.V2KindRefund ||
		d[0].refund.RefundID != refund.RefundID || d[0].refund.RefundStatus != wxpay.RefundStatusSuccess ||
		d[0].refund.Amount.Refund != 120 || d[0].refund.Amount.Total != 300 || d[0].refund.SuccessTime == "" {
		t.Errorf("v2 refund notification: %+v", d)
	} else if _, err := wxpay.ParseV2Notification(d[0].v2Body(), "another key"); err == nil {
		t.Error("the v2 refund notification decrypts with another key")
	}

	st := srv.NotifyStats()
	want := wxpaytest.NotifyStats{
		Payment: wxpaytest.NotifyCounts{Notifications: 5, Dropped: 1, Delayed: 1, Duplicated: 4, V2: 1,
			Sent: 8, Attempts: 8, Acknowledged: 8},
		Refund: wxpaytest.NotifyCounts{Notifications: 1, V2: 1, Sent: 1, Attempts: 1, Acknowledged: 1},
	}
	if st != want {
		t.Errorf("stats %+v\nwant  %+v", st, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 6 || asked[0].Kind != wxpaytest.NotifyPayment || asked[5].Kind != wxpaytest.NotifyRefund ||
		asked[5].EventType != wxpay.EventRefundSuccess || asked[0].Seq != 1 || asked[5].Seq != 6 || asked[0].URL != rcv.URL {
		t.Errorf("the policy saw %+v", asked)
	}
}

// v2nBody rebuilds the posted XML of a v2 arrival from its fields, to try
// it with another key.
func (a arrival) v2Body() []byte {
	var b strings.Builder
	b.WriteString("<xml>")
	for k, v := range a.v2n.Fields {
		b.WriteString("<" + k + "><![CDATA[" + v + "]]></" + k + ">")
	}
	b.WriteString("</xml>")
	return []byte(b.String())
}

func TestAutoNotifyRetriesOnSchedule(t *testing.T) {
	t.Parallel()
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, TimeScale: 0.001})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	rcv := newReceiver(t, srv, m)
	rcv.status = func(post int, a arrival) int {
		if post <= 3 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}
	srv.AutoNotify(wxpaytest.AutoNotifyConfig{URL: rcv.URL})
	srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: "ORDER-RETRY"})
	srv.Pay("ORDER-RETRY")
	waitNotifications(t, srv)
	got := rcv.arrivals()
	if len(got) != 4 {
		t.Fatalf("%d posts, want 4 (three answered 500)", len(got))
	}
	// Waits of 15 s, 15 s, 30 s scaled by 0.001.
	for i, w := range []time.Duration{15 * time.Millisecond, 15 * time.Millisecond, 30 * time.Millisecond} {
		if gap := got[i+1].at.Sub(got[i].at); gap < w {
			t.Errorf("re-send %d after %v, want at least %v", i+1, gap, w)
		}
		if got[i+1].id != got[0].id {
			t.Errorf("re-send %d carries id %q, want %q", i+1, got[i+1].id, got[0].id)
		}
	}
	want := wxpaytest.NotifyCounts{Notifications: 1, Sent: 1, Attempts: 4, Acknowledged: 1}
	if st := srv.NotifyStats(); st.Payment != want {
		t.Errorf("stats %+v, want %+v", st.Payment, want)
	}

	// A v2 receiver says FAIL in the body of a 200 answer: that is a
	// failure too, and the refund is sent again.
	rcv.mu.Lock()
	rcv.posts, rcv.got = 0, nil
	rcv.status = func(post int, a arrival) int {
		if post == 1 {
			return http.StatusInternalServerError // written as 200 with return_code FAIL
		}
		return http.StatusOK
	}
	rcv.mu.Unlock()
	srv.AutoNotify(wxpaytest.AutoNotifyConfig{URL: rcv.URL, Fault: func(wxpaytest.AutoNotification) wxpaytest.NotifyFault {
		return wxpaytest.NotifyFault{V2: true}
	}})
	if _, err := rcv.client.CreateRefund(context.Background(), &wxpay.RefundRequest{OutTradeNo: "ORDER-RETRY", OutRefundNo: "R-V2", Refund: 1, Total: 1}); err != nil {
		t.Fatal(err)
	}
	srv.CompleteRefund("R-V2")
	waitNotifications(t, srv)
	if got := rcv.arrivals(); len(got) != 2 || !got[0].v2 || !got[1].v2 {
		t.Errorf("v2 refund answered FAIL then SUCCESS: %d posts, want 2", len(got))
	}
	want = wxpaytest.NotifyCounts{Notifications: 1, V2: 1, Sent: 1, Attempts: 2, Acknowledged: 1}
	if st := srv.NotifyStats(); st.Refund != want {
		t.Errorf("refund stats %+v, want %+v", st.Refund, want)
	}
}

func TestAutoNotifyGivesUp(t *testing.T) {
	t.Parallel()
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	rcv := newReceiver(t, srv, m)
	rcv.status = func(int, arrival) int { return http.StatusServiceUnavailable }
	// The configuration's time scale overrides the server's (1 here).
	srv.AutoNotify(wxpaytest.AutoNotifyConfig{URL: rcv.URL, TimeScale: 0.00001,
		Fault: func(wxpaytest.AutoNotification) wxpaytest.NotifyFault { return wxpaytest.NotifyFault{Duplicates: 1} }})
	srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: "ORDER-DOWN"})
	srv.Pay("ORDER-DOWN")
	waitNotifications(t, srv)
	attempts := 2 * (1 + len(wxpaytest.RetrySchedule))
	want := wxpaytest.NotifyCounts{Notifications: 1, Duplicated: 1, Sent: 2, Attempts: attempts, GaveUp: 2}
	if st := srv.NotifyStats(); st.Payment != want || len(rcv.arrivals()) != attempts {
		t.Errorf("stats %+v with %d posts, want %+v", st.Payment, len(rcv.arrivals()), want)
	}
}

func TestAutoNotifyPartnerShape(t *testing.T) {
	t.Parallel()
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	sp := srv.AddMerchant(wxpaytest.MerchantOptions{})
	rcv := newReceiver(t, srv, sp)
	srv.AutoNotify(wxpaytest.AutoNotifyConfig{URL: rcv.URL, Fault: func(n wxpaytest.AutoNotification) wxpaytest.NotifyFault {
		return wxpaytest.NotifyFault{V2: n.OutRefundNo == "R-V2"}
	}})
	srv.CreateOrder(wxpaytest.NewOrder{MchID: sp.MchID, SubMchID: "1900000109", OutTradeNo: "PARTNER-1", Total: 500})
	srv.Pay("PARTNER-1")
	cfg := srv.ClientConfig(sp)
	cfg.PartnerMode = true
	pc, err := wxpay.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, no := range []string{"R-V3", "R-V2"} {
		if _, err := pc.CreateRefund(context.Background(), &wxpay.RefundRequest{SubMchID: "1900000109", OutTradeNo: "PARTNER-1",
			OutRefundNo: no, Refund: 100, Total: 500}); err != nil {
			t.Fatal(err)
		}
		srv.CompleteRefund(no)
	}
	waitNotifications(t, srv)
	got := rcv.arrivals()
	if len(got) != 3 {
		t.Fatalf("%d notifications, want 3", len(got))
	}
	for _, a := range got {
		switch {
		case a.tx != nil:
			if a.tx.SpMchID != sp.MchID || a.tx.SubMchID != "1900000109" || a.tx.MchID != "" {
				t.Errorf("partner payment notification: mchid %q sp_mchid %q sub_mchid %q", a.tx.MchID, a.tx.SpMchID, a.tx.SubMchID)
			}
		case a.v2:
			if a.v2n.MchID() != sp.MchID || a.v2n.Fields["sub_mch_id"] != "1900000109" {
				t.Errorf("partner v2 refund notification: %v", a.v2n.Fields)
			}
		default:
			if a.refund.SpMchID != sp.MchID || a.refund.SubMchID != "1900000109" || a.refund.MchID != "" {
				t.Errorf("partner refund notification: %+v", a.refund)
			}
		}
	}
}

func TestWaitNotificationsReportsWhatCouldNotBeSent(t *testing.T) {
	t.Parallel()
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	rcv := newReceiver(t, srv, m)
	srv.AutoNotify(wxpaytest.AutoNotifyConfig{})
	srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: "NOWHERE"})
	srv.Pay("NOWHERE")
	err := srv.WaitNotifications(context.Background())
	if err == nil || !strings.Contains(err.Error(), "NOWHERE") || !strings.Contains(err.Error(), "AutoNotifyConfig.URL") {
		t.Fatalf("WaitNotifications = %v, want the order with no URL named", err)
	}
	if st := srv.NotifyStats(); st.Payment.Errors != 1 || st.Payment.Sent != 0 {
		t.Errorf("stats %+v, want one error and nothing sent", st.Payment)
	}

	// A delayed notification is waited for; a context that ends first
	// ends the wait.
	srv.AutoNotify(wxpaytest.AutoNotifyConfig{URL: rcv.URL, Fault: func(wxpaytest.AutoNotification) wxpaytest.NotifyFault {
		return wxpaytest.NotifyFault{Delay: time.Hour}
	}})
	srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: "LATER"})
	srv.Pay("LATER")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := srv.WaitNotifications(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitNotifications with a notification an hour away = %v, want the context's deadline", err)
	}
}

// Close stops every delivery (a delay, a re-send wait, a post under way)
// and returns only once their goroutines have; nothing is left behind.
// Not parallel: it counts the process's goroutines.
func TestAutoNotifyCloseStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	srv := wxpaytest.NewServer(nil, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	rcv := newReceiver(t, srv, m)
	hang := make(chan struct{})
	var hung sync.Once
	rcv.status = func(post int, a arrival) int {
		if a.tx != nil && a.tx.OutTradeNo == "HANG" {
			<-hang // a post under way when Close comes
		}
		return http.StatusInternalServerError
	}
	defer hung.Do(func() { close(hang) })
	// A post that takes a while to unwind once canceled, so that a Close
	// that did not wait for it would return first.
	inner := http.DefaultTransport.(*http.Transport).Clone()
	defer inner.CloseIdleConnections()
	slow := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := inner.RoundTrip(r)
		if err != nil && r.Context().Err() != nil {
			time.Sleep(200 * time.Millisecond)
		}
		return resp, err
	})
	srv.AutoNotify(wxpaytest.AutoNotifyConfig{URL: rcv.URL, Client: &http.Client{Transport: slow}, Fault: func(n wxpaytest.AutoNotification) wxpaytest.NotifyFault {
		switch n.OutTradeNo {
		case "LATE":
			return wxpaytest.NotifyFault{Delay: time.Hour}
		case "DUPS":
			return wxpaytest.NotifyFault{Duplicates: 2}
		}
		return wxpaytest.NotifyFault{}
	}})
	for _, no := range []string{"LATE", "RETRYING", "DUPS", "HANG"} {
		srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: no})
		srv.Pay(no)
	}
	// Wait for the first posts: RETRYING and DUPS wait 15 s to re-send,
	// HANG hangs.
	deadline := time.Now().Add(5 * time.Second)
	for len(rcv.arrivals()) < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	closed := make(chan struct{})
	go func() { srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return: it does not stop the deliveries")
	}
	st := srv.NotifyStats().Payment
	if st.Sent != 6 || st.Canceled != 6 || st.Acknowledged != 0 || st.GaveUp != 0 {
		t.Errorf("after Close: %+v, want all 6 deliveries canceled", st)
	}
	if err := srv.WaitNotifications(context.Background()); err != nil {
		t.Errorf("WaitNotifications after Close: %v", err)
	}
	// A state change after Close sends nothing.
	srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: "AFTER"})
	srv.Pay("AFTER")
	if st := srv.NotifyStats().Payment; st.Canceled != 7 || st.Attempts != 3 {
		t.Errorf("a payment after Close: %+v, want it canceled and not posted", st)
	}
	buf := make([]byte, 1<<20)
	if stacks := string(buf[:runtime.Stack(buf, true)]); strings.Contains(stacks, "wxpaytest.(*Server).sendCopies") {
		t.Errorf("a delivery goroutine outlived Close:\n%s", stacks)
	}
	hung.Do(func() { close(hang) })
	rcv.Close()
	inner.CloseIdleConnections()
	deadline = time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// Concurrent duplicates are in flight at the same time: the receiver
// holds each post until all three copies have arrived (or a second has
// passed, which is a failure).
func TestAutoNotifyConcurrentDuplicatesRace(t *testing.T) {
	t.Parallel()
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, TimeScale: 0.001})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	rcv := newReceiver(t, srv, m)
	var mu sync.Mutex
	inFlight, most := 0, 0
	all := make(chan struct{})
	rcv.status = func(post int, a arrival) int {
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		if inFlight == 3 {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
		case <-time.After(time.Second):
		}
		mu.Lock()
		inFlight--
		mu.Unlock()
		return http.StatusOK
	}
	srv.AutoNotify(wxpaytest.AutoNotifyConfig{URL: rcv.URL, Fault: func(wxpaytest.AutoNotification) wxpaytest.NotifyFault {
		return wxpaytest.NotifyFault{Duplicates: 2, Concurrent: true}
	}})
	srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: "ORDER-RACE"})
	srv.Pay("ORDER-RACE")
	waitNotifications(t, srv)
	mu.Lock()
	defer mu.Unlock()
	if got := rcv.arrivals(); len(got) != 3 || most != 3 {
		t.Errorf("%d copies arrived, at most %d at once; want 3, all at once", len(got), most)
	}
}
