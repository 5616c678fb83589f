package e2e

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/internal/reconcile"
	"github.com/wxpay-notify/wxpay-notify/internal/tracking"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// platformClock is the fake platform's clock: the present while the
// processes run (they sign and check timestamps with theirs), moved to
// the next day for the bill check, since WeChat makes a day's bills only
// once it is over.
type platformClock struct{ offset atomic.Int64 }

func (c *platformClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// setTo moves the clock to at.
func (c *platformClock) setTo(at time.Time) { c.offset.Store(int64(time.Until(at))) }

// chinaDay is midnight, China time, of t's China date.
func chinaDay(t time.Time) time.Time {
	y, m, d := t.In(wxpay.ChinaTime()).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, wxpay.ChinaTime())
}

// checkBills reconciles the bills of every China day from first to the
// platform's present against the ledger the workers' tracker wrote in
// Redis, with the reconciler's own code: the bill rows must all match the
// ledger, and there must be as many as the payments and refunds of the
// run. The reconciler command itself refuses a day that is not over by
// its own clock, which a test cannot move; the fake platform's clock is
// moved instead, once the processes have stopped notifying.
func checkBills(t *testing.T, ctx context.Context, srv *wxpaytest.Server, m *wxpaytest.Merchant, clock *platformClock,
	first time.Time, redisURL string, js jetstream.JetStream, payments, refunds int) {
	t.Helper()
	last := chinaDay(clock.Now())
	clock.setTo(last.AddDate(0, 0, 1).Add(12 * time.Hour)) // noon of the next day: every bill ready
	client, err := wxpay.NewClient(srv.ClientConfig(m))
	if err != nil {
		t.Fatal(err)
	}
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	recon := reconcile.New([]reconcile.Merchant{{MchID: m.MchID, Client: client}},
		tracking.NewStore(rdb, tracking.Config{}), events.NewPublisher(js, events.PublisherConfig{}),
		reconcile.Config{Logger: zerolog.Nop(), Now: clock.Now})
	var matched, rows int64
	for day := chinaDay(first); !day.After(last); day = day.AddDate(0, 0, 1) {
		sum, err := recon.Bills(ctx, day, reconcile.BillOptions{Dir: t.TempDir()})
		if err != nil {
			t.Errorf("the bill check of %s: %v", day.Format("2006-01-02"), err)
			continue
		}
		t.Logf("%s", sum)
		if !sum.Clean() || sum.NotReady > 0 {
			t.Errorf("the bill check of %s is not clean: %s%s", day.Format("2006-01-02"), sum, mismatchDetails(sum))
		}
		rows += sum.Rows
		for _, b := range sum.Bills {
			matched += b.Matched
		}
	}
	if want := int64(payments + refunds); matched != want {
		t.Errorf("%d bill rows (of %d) matched the ledger, want %d: every payment and refund of the run", matched, rows, want)
	}
}

// mismatchDetails names each bill's error and discrepancies.
func mismatchDetails(s reconcile.BillSummary) string {
	out := ""
	for _, b := range s.Bills {
		if b.Error != "" {
			out += fmt.Sprintf("; %s %s: %s", b.Bill, b.Type, b.Error)
		}
		if n := b.MismatchCount(); n > 0 {
			out += fmt.Sprintf("; %s %s: %d discrepancies %v", b.Bill, b.Type, n, b.Mismatches)
		}
	}
	return out
}
