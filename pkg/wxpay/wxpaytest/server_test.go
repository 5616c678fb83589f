package wxpaytest_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

func TestDeliverRetriesOnWeChatSchedule(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, TimeScale: 0.001})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	c, err := wxpay.NewClient(srv.ClientConfig(m))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []time.Time
	var nonces []string
	receiver := httptest.NewServer(wxpay.NotifyHandler(c, func(ctx context.Context, n *wxpay.Notification) error {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, time.Now())
		if len(seen) < 4 {
			return errors.New("not yet")
		}
		return nil
	}))
	defer receiver.Close()
	// Record each attempt's nonce: every re-send is signed anew.
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		nonces = append(nonces, r.Header.Get(wxpay.HeaderNonce))
		mu.Unlock()
		r.URL.Scheme, r.URL.Host = "http", receiver.Listener.Addr().String()
		resp, err := http.DefaultTransport.RoundTrip(r.Clone(r.Context()))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
	}))
	defer proxy.Close()
	n, err := srv.NewNotification(m, wxpay.EventTransactionSuccess, `{"out_trade_no":"T1","trade_state":"SUCCESS"}`, wxpaytest.NotificationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	req := proxy.URL + "/notify"
	attempts, err := srv.Deliver(context.Background(), req, n)
	if err != nil {
		t.Fatal(err)
	}
	if len(attempts) != 4 || attempts[3].StatusCode != 200 || attempts[0].StatusCode != 500 {
		t.Fatalf("attempts: %+v", attempts)
	}
	// Waits of 15 s, 15 s, 30 s scaled by 0.001.
	want := []time.Duration{15 * time.Millisecond, 15 * time.Millisecond, 30 * time.Millisecond}
	for i, w := range want {
		if gap := seen[i+1].Sub(seen[i]); gap < w {
			t.Fatalf("gap %d: got %s, want at least %s", i, gap, w)
		}
	}
	if nonces[0] == nonces[1] || nonces[1] == nonces[2] {
		t.Fatalf("re-sends reuse the nonce: %v", nonces)
	}
}

func TestDeliverGivesUpAfterTheSchedule(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, TimeScale: 0.00001})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	defer down.Close()
	n, _ := srv.NewNotification(m, wxpay.EventRefundSuccess, `{}`, wxpaytest.NotificationOptions{})
	attempts, err := srv.Deliver(context.Background(), down.URL, n)
	if !errors.Is(err, wxpaytest.ErrNotDelivered) || len(attempts) != 1+len(wxpaytest.RetrySchedule) {
		t.Fatalf("got %v after %d attempts, want ErrNotDelivered after 16", err, len(attempts))
	}
	var total time.Duration
	for _, d := range wxpaytest.RetrySchedule {
		total += d
	}
	if total != 24*time.Hour+4*time.Minute {
		t.Fatalf("schedule totals %s, want 24h4m", total)
	}
}

func TestServerRejectsRequestsAsWeChatDoes(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	tests := []struct {
		name   string
		edit   func(r *http.Request)
		status int
		code   string
	}{
		{"no authorization", func(r *http.Request) {}, 401, "SIGN_ERROR"},
		{"no user agent", func(r *http.Request) { r.Header.Set("User-Agent", "") }, 400, "INVALID_REQUEST"},
		{"wrong scheme", func(r *http.Request) { r.Header.Set("Authorization", "Bearer x") }, 401, "SIGN_ERROR"},
		{"unknown merchant", func(r *http.Request) {
			r.Header.Set("Authorization", `WECHATPAY2-SHA256-RSA2048 mchid="999",nonce_str="n",timestamp="1",serial_no="s",signature="x"`)
		}, 401, "SIGN_ERROR"},
		{"wrong serial", func(r *http.Request) {
			r.Header.Set("Authorization", `WECHATPAY2-SHA256-RSA2048 mchid="`+m.MchID+`",nonce_str="n",timestamp="1",serial_no="s",signature="x"`)
		}, 401, "SIGN_ERROR"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := http.NewRequest("GET", srv.URL()+"/v3/certificates", nil)
			r.Header.Set("User-Agent", "test")
			r.Header.Set("Accept", "application/json")
			tc.edit(r)
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("got %d, want %d", resp.StatusCode, tc.status)
			}
			if resp.Header.Get(wxpay.HeaderSignature) == "" {
				t.Fatal("error answer is not signed")
			}
		})
	}
}
