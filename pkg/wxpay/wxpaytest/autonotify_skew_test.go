package wxpaytest_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// TestAutoNotifyTimestampSkew checks that NotifyFault.TimestampSkew skews
// only the first attempt of a copy: a receiver that refuses a timestamp
// outside its window gets the re-send signed with the platform's clock.
func TestAutoNotifyTimestampSkew(t *testing.T) {
	t.Parallel()
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, TimeScale: 0.001})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	var mu sync.Mutex
	skews := map[string][]time.Duration{} // by out_trade_no, per attempt
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sec, err := strconv.ParseInt(r.Header.Get(wxpay.HeaderTimestamp), 10, 64)
		if err != nil {
			http.Error(w, "no timestamp", http.StatusBadRequest)
			return
		}
		d := time.Unix(sec, 0).Sub(time.Now())
		mu.Lock()
		no := r.URL.Query().Get("no")
		skews[no] = append(skews[no], d)
		mu.Unlock()
		if d > wxpay.DefaultTimestampWindow || d < -wxpay.DefaultTimestampWindow {
			http.Error(w, "stale", http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rcv.Close)
	want := map[string]time.Duration{"IN-PAST": -290 * time.Second, "IN-AHEAD": 290 * time.Second,
		"OUT-PAST": -310 * time.Second, "OUT-AHEAD": 310 * time.Second, "NONE": 0}
	srv.AutoNotify(wxpaytest.AutoNotifyConfig{Fault: func(n wxpaytest.AutoNotification) wxpaytest.NotifyFault {
		return wxpaytest.NotifyFault{TimestampSkew: want[n.OutTradeNo]}
	}})
	for no := range want {
		if _, err := srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: no, Total: 100, NotifyURL: rcv.URL + "/?no=" + no}); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Pay(no); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.WaitNotifications(ctx); err != nil {
		t.Fatal(err)
	}
	near := func(got, want time.Duration) bool { return got-want < 3*time.Second && want-got < 3*time.Second }
	mu.Lock()
	defer mu.Unlock()
	for no, skew := range want {
		got := skews[no]
		outside := skew > wxpay.DefaultTimestampWindow || skew < -wxpay.DefaultTimestampWindow
		switch {
		case len(got) == 0 || !near(got[0], skew):
			t.Errorf("%s: first attempt signed %v off, want %v", no, got, skew)
		case !outside && len(got) != 1:
			t.Errorf("%s: %d attempts inside the window, want 1", no, len(got))
		case outside && (len(got) != 2 || !near(got[1], 0)):
			t.Errorf("%s: attempts signed %v off, want a re-send signed at the platform's clock", no, got)
		}
	}
	if st := srv.NotifyStats().Total(); st.Acknowledged != len(want) || st.Attempts != len(want)+2 {
		t.Errorf("stats %+v: want %d acknowledged in %d attempts", st, len(want), len(want)+2)
	}
}
