package wxpay_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

const certificatesRoute = "GET /v3/certificates"

// slowDownloadClient is a client for m whose HTTP client waits a minute, so
// that a certificate download held by the fake platform stays blocked
// until the test releases it.
func slowDownloadClient(t *testing.T, srv *wxpaytest.Server, m *wxpaytest.Merchant, edit func(*wxpay.Config)) *wxpay.Client {
	t.Helper()
	return newClient(t, srv, m, func(cfg *wxpay.Config) {
		cfg.HTTPClient = &http.Client{Timeout: time.Minute}
		if edit != nil {
			edit(cfg)
		}
	})
}

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A notification signed with a serial the client does not know yet
// arrives while a background refresh hangs: the notification must be
// answered by its own deadline (503, WeChat retries), not when the
// download ends.
func TestUnknownSerialWaitEndsWithContext(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	c := slowDownloadClient(t, srv, m, nil)
	release := srv.HoldCertificates()
	defer release()

	background := make(chan error, 1)
	go func() { background <- c.RefreshCertificates(context.Background()) }()
	eventually(t, "the background download to reach the platform", func() bool { return srv.Requests(certificatesRoute) == 1 })

	n, err := srv.NewNotification(m, wxpay.EventTransactionSuccess, paidTransaction(m, "T1"), wxpaytest.NotificationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	answered := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := c.ParseNotification(rctx, n.Header, n.Body)
		answered <- err
	}()
	select {
	case err := <-answered:
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, wxpay.ErrCertificateRefresh) {
			t.Fatalf("got %v, want a context deadline error wrapped in ErrCertificateRefresh", err)
		}
		if s := wxpay.NotificationStatus(err); s != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503 so that WeChat retries", s)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("a notification with a 200 ms deadline was not answered after %s: it waits for the held download", time.Since(start).Round(time.Millisecond))
	}
	select {
	case err := <-background:
		t.Fatalf("the background refresh ended (%v) while the platform held it", err)
	default:
	}

	release()
	if err := <-background; err != nil {
		t.Fatalf("background refresh after release: %v", err)
	}
	if _, err := c.ParseNotification(ctx, n.Header, n.Body); err != nil {
		t.Fatalf("after the background refresh: %v", err)
	}
	if got := srv.Requests(certificatesRoute); got != 1 {
		t.Fatalf("certificate downloads: got %d, want 1 (the background one)", got)
	}
}

// A download cut short by its caller's deadline says nothing about WeChat:
// the next notification downloads again instead of inheriting the context
// error for a whole MinRefreshInterval.
func TestDownloadCutByCallerDeadlineDoesNotCount(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	c := slowDownloadClient(t, srv, m, nil)
	n, err := srv.NewNotification(m, wxpay.EventTransactionSuccess, paidTransaction(m, "T1"), wxpaytest.NotificationOptions{})
	if err != nil {
		t.Fatal(err)
	}

	release := srv.HoldCertificates()
	rctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err = c.ParseNotification(rctx, n.Header, n.Body)
	cancel()
	release()
	if !errors.Is(err, context.DeadlineExceeded) || wxpay.NotificationStatus(err) != http.StatusServiceUnavailable {
		t.Fatalf("held download: got %v (status %d), want a context deadline error, 503", err, wxpay.NotificationStatus(err))
	}

	got, err := c.ParseNotification(ctx, n.Header, n.Body)
	if err != nil {
		t.Fatalf("the retry within MinRefreshInterval: %v", err)
	}
	if got.KeyID != srv.PlatformCertificates()[0].ID {
		t.Fatalf("verified with %s, want the platform certificate %s", got.KeyID, srv.PlatformCertificates()[0].ID)
	}
	if got := srv.Requests(certificatesRoute); got != 2 {
		t.Fatalf("certificate downloads: got %d, want 2 (the cut one and the retry)", got)
	}
}

// Unknown serials trigger one download, whatever the number of
// notifications that carry them: every caller that arrives while it runs
// waits for it, and within MinRefreshInterval its result answers for the
// next unknown serial too. The platform holds the download until every
// caller has either downloaded or started waiting, so the count does not
// depend on scheduling.
func TestUnknownSerialRefreshIsSingleFlight(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	clock := srv.Now()
	c := slowDownloadClient(t, srv, m, func(cfg *wxpay.Config) { cfg.Now = func() time.Time { return clock } })
	var waiting atomic.Int64
	wxpay.SetRefreshWaitHook(c, func() { waiting.Add(1) })
	n, err := srv.NewNotification(m, wxpay.EventTransactionSuccess, paidTransaction(m, "T1"), wxpaytest.NotificationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Header.Set(wxpay.HeaderSerial, "0123456789ABCDEF0123456789ABCDEF01234567")

	release := srv.HoldCertificates()
	defer release()
	const callers = 8
	errs := make(chan error, callers)
	for range callers {
		go func() {
			_, err := c.ParseNotification(ctx, n.Header, n.Body)
			errs <- err
		}()
	}
	eventually(t, "every caller to download or wait", func() bool {
		return int(waiting.Load())+srv.Requests(certificatesRoute) >= callers
	})
	if got := srv.Requests(certificatesRoute); got != 1 {
		t.Fatalf("certificate downloads for %d concurrent unknown serials: got %d, want 1", callers, got)
	}
	if got := waiting.Load(); got != callers-1 {
		t.Fatalf("callers waiting for the download: got %d, want %d", got, callers-1)
	}

	release()
	for range callers {
		select {
		case err := <-errs:
			if !errors.Is(err, wxpay.ErrUnknownSerial) || wxpay.NotificationStatus(err) != http.StatusUnauthorized {
				t.Fatalf("got %v (status %d), want ErrUnknownSerial, 401", err, wxpay.NotificationStatus(err))
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a caller is still waiting after the download ended")
		}
	}
	if got := srv.Requests(certificatesRoute); got != 1 {
		t.Fatalf("certificate downloads after release: got %d, want 1", got)
	}

	// Another unknown serial within MinRefreshInterval: no new download.
	n.Header.Set(wxpay.HeaderSerial, "76543210FEDCBA9876543210FEDCBA9876543210")
	if _, err := c.ParseNotification(ctx, n.Header, n.Body); !errors.Is(err, wxpay.ErrUnknownSerial) {
		t.Fatalf("second unknown serial: got %v, want ErrUnknownSerial", err)
	}
	if got := srv.Requests(certificatesRoute); got != 1 {
		t.Fatalf("certificate downloads within MinRefreshInterval: got %d, want 1", got)
	}
}
