package wxpay_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// quotedBound is the most of one value the sender chose that an error may
// quote: a whole certificate serial or public key id, no more.
const quotedBound = 48

// checkBounded fails unless err quotes at most quotedBound bytes of a value
// filled with fill, is short, and is valid UTF-8.
func checkBounded(t *testing.T, what string, err error, fill string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: accepted", what)
	}
	msg := err.Error()
	if len(msg) >= 300 {
		t.Fatalf("%s: error is %d bytes: %.200s…", what, len(msg), msg)
	}
	if strings.Contains(msg, strings.Repeat(fill, quotedBound/len(fill)+1)) {
		t.Fatalf("%s: error quotes more than %d bytes of the value: %s", what, quotedBound, msg)
	}
	if !utf8.ValidString(msg) {
		t.Fatalf("%s: error is not valid UTF-8: %q", what, msg)
	}
}

func TestErrorsQuoteBoundedValues(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	c := newClient(t, srv, m, nil)
	n, err := srv.NewNotification(m, wxpay.EventTransactionSuccess, paidTransaction(m, "T1"), wxpaytest.NotificationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// "\xff" quotes as four characters: the bound holds for what is
	// printed, not only for the bytes taken.
	for _, fill := range []string{"A", "7", "\xff", "支"} {
		big := strings.Repeat(fill, 100<<10/len(fill))
		for _, name := range []string{wxpay.HeaderTimestamp, wxpay.HeaderNonce, wxpay.HeaderSignature, wxpay.HeaderSerial, wxpay.HeaderSignatureType} {
			h := n.Header.Clone()
			h.Set(name, big)
			_, err := c.ParseNotification(ctx, h, n.Body)
			checkBounded(t, name+" of 100 KB of "+fill, err, fill)
		}
	}

	// Serials up to the longest accepted reach every unknown-key branch.
	long := strings.Repeat("Z", 64)
	for _, serial := range []string{"PUB_KEY_ID_" + long[11:], long} {
		h := n.Header.Clone()
		h.Set(wxpay.HeaderSerial, serial)
		_, err := c.ParseNotification(ctx, h, n.Body)
		if !errors.Is(err, wxpay.ErrUnknownSerial) {
			t.Fatalf("serial %s: got %v, want ErrUnknownSerial", serial, err)
		}
		checkBounded(t, "serial "+serial, err, "Z")
	}
	noPub := newClient(t, srv, m, func(cfg *wxpay.Config) { cfg.PublicKey, cfg.PublicKeyID = nil, ""; cfg.DownloadCertificates = true })
	h := n.Header.Clone()
	h.Set(wxpay.HeaderSerial, "PUB_KEY_ID_"+long[11:])
	_, err = noPub.ParseNotification(ctx, h, n.Body)
	checkBounded(t, "public key id with no public key", err, "Z")

	// Fields of an authentic body.
	bigID := strings.Repeat("I", 100<<10)
	for _, tc := range []struct{ body, fill string }{
		{`{"id":"x","event_type":"E","resource":{"algorithm":"` + strings.Repeat("G", 100<<10) + `"}}`, "G"},
		{`{"id":"` + bigID + `","event_type":"E","resource":{"algorithm":"AEAD_AES_256_GCM","nonce":"short","ciphertext":"AAAA"}}`, "I"},
	} {
		_, err := c.ParseNotification(ctx, signedHeaders(t, srv, []byte(tc.body)), []byte(tc.body))
		checkBounded(t, "body field of 100 KB of "+tc.fill, err, tc.fill)
	}
	wrongKey, err := srv.NewNotification(m, wxpay.EventTransactionSuccess, paidTransaction(m, "T1"),
		wxpaytest.NotificationOptions{ID: bigID, APIv3Key: "another32byteAPIv3keyXXXXXXXXXXX"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ParseNotification(ctx, wrongKey.Header, wrongKey.Body)
	if !errors.Is(err, wxpay.ErrDecrypt) {
		t.Fatalf("got %v, want ErrDecrypt", err)
	}
	checkBounded(t, "id of a notification that does not decrypt", err, "I")
	bad := &wxpay.Notification{ID: bigID, Plaintext: []byte(`[]`)}
	_, err = bad.Transaction()
	checkBounded(t, "Transaction", err, "I")
	_, err = bad.Refund()
	checkBounded(t, "Refund", err, "I")

	// The handler's answer carries the error: bounded too.
	midID := strings.Repeat("I", 50<<10)
	ok, err := srv.NewNotification(m, wxpay.EventTransactionSuccess, paidTransaction(m, "T1"), wxpaytest.NotificationOptions{ID: midID})
	if err != nil {
		t.Fatal(err)
	}
	handler := wxpay.NotifyHandler(c, func(context.Context, *wxpay.Notification) error { return errors.New("store down") })
	req := httptest.NewRequest(http.MethodPost, "/notify", strings.NewReader(string(ok.Body)))
	req.Header = ok.Header.Clone()
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, req)
	if rec.Code != 500 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	checkBounded(t, "handler answer", errors.New(rec.Body.String()), "I")
}

// The certificate-refresh error keeps its detail but quotes the serial
// within the bound.
func TestCertificateRefreshErrorQuotesBoundedSerial(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	c := newClient(t, srv, m, nil)
	srv.SetCertificatesAnswer(503, "SERVICE_UNAVAILABLE", "服务不可用")
	n, err := srv.NewNotification(m, wxpay.EventTransactionSuccess, paidTransaction(m, "T1"), wxpaytest.NotificationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Header.Set(wxpay.HeaderSerial, strings.Repeat("Z", 64)) // the longest serial looked up
	_, err = c.ParseNotification(ctx, n.Header, n.Body)
	if !errors.Is(err, wxpay.ErrCertificateRefresh) || !strings.Contains(err.Error(), "SERVICE_UNAVAILABLE") {
		t.Fatalf("got %v, want ErrCertificateRefresh with the refresh's detail", err)
	}
	checkBounded(t, "refresh failure", err, "Z")
	if !strings.Contains(err.Error(), `"`+strings.Repeat("Z", quotedBound)+`"… (64 bytes)`) {
		t.Fatalf("serial not quoted as its first %d bytes and length: %v", quotedBound, err)
	}
}

func TestTimestampSkewSaysAheadOrBehind(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	now := srv.Now().Truncate(time.Second)
	c := newClient(t, srv, m, func(cfg *wxpay.Config) { cfg.Now = func() time.Time { return now } })
	for _, tc := range []struct {
		off  time.Duration
		want string
	}{
		{301 * time.Second, "is 5m1s ahead of our clock"},
		{-301 * time.Second, "is 5m1s behind our clock"},
		{2 * time.Hour, "is 2h0m0s ahead of our clock"},
		{-2 * time.Hour, "is 2h0m0s behind our clock"},
	} {
		n, err := srv.NewNotification(m, wxpay.EventTransactionSuccess, paidTransaction(m, "T1"), wxpaytest.NotificationOptions{Timestamp: now.Add(tc.off)})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.ParseNotification(ctx, n.Header, n.Body)
		if !errors.Is(err, wxpay.ErrTimestampSkew) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: got %v, want ErrTimestampSkew saying %q", tc.off, err, tc.want)
		}
	}
	// Beyond what a time.Duration holds, either way: still a positive
	// duration on the right side.
	for ts, want := range map[string]string{"-99999999999": " behind our clock", "99999999999": " ahead of our clock"} {
		n, err := srv.NewNotification(m, wxpay.EventTransactionSuccess, paidTransaction(m, "T1"), wxpaytest.NotificationOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n.Header.Set(wxpay.HeaderTimestamp, ts)
		_, err = c.ParseNotification(ctx, n.Header, n.Body)
		if !errors.Is(err, wxpay.ErrTimestampSkew) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "is -") {
			t.Fatalf("timestamp %s: got %v, want a positive duration%s", ts, err, want)
		}
	}
}

// A Wechatpay-Serial longer than any certificate serial or public key id is
// refused as it is: it costs no certificate download.
func TestOverlongSerialStartsNoDownload(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	c := newClient(t, srv, m, nil)
	n, err := srv.NewNotification(m, wxpay.EventTransactionSuccess, paidTransaction(m, "T1"), wxpaytest.NotificationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Header.Set(wxpay.HeaderSerial, strings.Repeat("7", 65))
	_, err = c.ParseNotification(ctx, n.Header, n.Body)
	if !errors.Is(err, wxpay.ErrUnknownSerial) {
		t.Fatalf("got %v, want ErrUnknownSerial", err)
	}
	if got := srv.Requests("GET /v3/certificates"); got != 0 {
		t.Fatalf("certificate downloads for an overlong serial: got %d, want 0", got)
	}
}
