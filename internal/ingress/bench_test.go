package ingress_test

import (
	"net/http/httptest"
	"testing"

	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/internal/ingress"
	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// BenchmarkHandler is one notification through the ingress handler, from
// the raw request to the JetStream acknowledgement (the same notification
// each time, so JetStream answers duplicate after the first). The load
// figure with real HTTP and NATS is bench/ingress.sh.
func BenchmarkHandler(b *testing.B) {
	srv := wxpaytest.NewServer(b, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{MchID: "1230000109"})
	c, err := wxpay.NewClient(srv.ClientConfig(m))
	if err != nil {
		b.Fatal(err)
	}
	nt := testenv.StartNATS(b)
	_, js := testenv.Connect(b, nt.URL)
	if _, err := events.EnsureStreams(b.Context(), js, events.StreamConfig{}); err != nil {
		b.Fatal(err)
	}
	h, err := ingress.NewHandler([]ingress.Merchant{{MchID: m.MchID, Client: c}}, events.NewPublisher(js, events.PublisherConfig{}), ingress.Config{Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	n, err := srv.NewNotification(m, wxpay.EventTransactionSuccess, paid(m.MchID, "BENCH"), wxpaytest.NotificationOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, n.Request("/notify/1230000109"))
			if rec.Code != 200 {
				b.Fatalf("status %d %s", rec.Code, rec.Body)
			}
		}
	})
}
