package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/internal/reconcile"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// tradeLag is how far back the fake platform dates the run's trades (its
// trade clock, wxpaytest.Options.TradeNow), while it signs and checks
// requests and notifications in the present. Two days back, the trade day
// is over for the reconciler command, which refuses a day its own clock
// says is today, and its bills are ready (WeChat makes them after 10:00 of
// the next day) at whatever hour the run happens.
const tradeLag = 48 * time.Hour

// tradeNow is the fake platform's trade clock.
func tradeNow() time.Time { return time.Now().Add(-tradeLag) }

// chinaDay is midnight, China time, of t's China date.
func chinaDay(t time.Time) time.Time {
	y, m, d := t.In(wxpay.ChinaTime()).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, wxpay.ChinaTime())
}

// billReport is the part of `reconciler bills --output json` checked here.
type billReport struct {
	ExitCode int                    `json:"exit_code"`
	Bills    *reconcile.BillSummary `json:"bills"`
	Error    string                 `json:"error"`
}

// checkBills runs `reconciler bills --date D --output json`, as the daily
// cron job does, for every China day from first to last, against the
// ledger the workers' tracker kept in Redis; env configures it like the
// other processes. Each run must exit 0 with every bill fetched and
// matching the ledger row for row, and the matched rows of all days must
// be as many as the payments and refunds of the run.
func checkBills(t *testing.T, ctx context.Context, reconciler string, env []string, first, last time.Time, payments, refunds int) {
	t.Helper()
	var matched, rows int64
	for day := chinaDay(first); !day.After(last); day = day.AddDate(0, 0, 1) {
		date := day.Format("2006-01-02")
		rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		cmd := exec.CommandContext(rctx, reconciler, "bills", "--date", date, "--output", "json")
		cmd.Env = append(env, "RECONCILE_BILL_DIR="+t.TempDir())
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		cancel()
		var rep billReport
		if jerr := json.Unmarshal(out, &rep); jerr != nil || rep.Bills == nil {
			t.Errorf("reconciler bills --date %s: %v; its report does not decode (%v):\n%s\nits log:\n%s", date, err, jerr, out, stderr.String())
			continue
		}
		sum := *rep.Bills
		t.Logf("reconciler bills --date %s: exit %d, %s", date, rep.ExitCode, sum)
		if err != nil || rep.ExitCode != 0 || !sum.Clean() || sum.NotReady > 0 {
			t.Errorf("reconciler bills --date %s: %v, exit %d %s: not clean: %s%s\nits errors and warnings:\n%s",
				date, err, rep.ExitCode, rep.Error, sum, mismatchDetails(sum), problems(stderr.Bytes()))
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
