// Command reconciler runs once and exits (a Kubernetes CronJob): it
// queries WeChat Pay for what the notifications missed and publishes it,
// and it downloads the daily bills and reconciles them with the ledger.
//
// Usage:
//
//	reconciler orders [flags]   query pending orders and refunds, close expired orders
//	reconciler bills [flags]    download, verify, store and reconcile a day's bills
//	reconciler all [flags]      orders, then bills
//
// Exit status: 0 clean (also when another run holds the lock), 3 the bills
// do not match the ledger, 1 errors (they win over 3: the run is not
// complete), 2 usage or configuration errors.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/internal/config"
	"github.com/wxpay-notify/wxpay-notify/internal/reconcile"
	"github.com/wxpay-notify/wxpay-notify/internal/runreport"
	"github.com/wxpay-notify/wxpay-notify/internal/tracking"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// errUsage marks a usage or configuration error: exit status 2.
var errUsage = errors.New("usage")

// errFailed marks a run that finished with errors: exit status 1.
var errFailed = errors.New("the run had errors")

// errDiscrepancies marks a run whose bills do not match the ledger: exit
// status 3.
var errDiscrepancies = errors.New("the bills do not match the ledger")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reconciler:", err)
	}
	os.Exit(exitCode(err))
}

// exitCode maps run's error to the exit status.
func exitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, errDiscrepancies):
		return 3
	}
	return 1
}

func usageErr(err error) error { return fmt.Errorf("%w: %v", errUsage, err) }

const usage = "reconciler orders|bills|all [flags] (reconciler <command> --help lists the settings)"

// backoffBase is the first backoff after a rate-limited answer (tests
// shorten it).
var backoffBase = reconcile.DefaultBackoffBase

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageErr(errors.New(usage))
	}
	switch args[0] {
	case "orders", "bills", "all":
		return runCommand(ctx, args[0], args[1:], getenv, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, "usage:", usage)
		return nil
	}
	return usageErr(fmt.Errorf("unknown command %q: %s", args[0], usage))
}

// settings are a command's parsed flags and environment.
type settings struct {
	cmd                          string
	common                       *config.Common
	merchants                    []config.Merchant
	staleAfter, expireAfter, age time.Duration
	rate                         float64
	keyPrefix, billDir, pushURL  string
	output                       string
	maxMismatchEvents            int
	streams                      events.StreamConfig
	day                          time.Time
	orders, bills                bool
}

func parse(cmd string, args []string, getenv func(string) string, stdout io.Writer, now time.Time) (*settings, error) {
	s := &settings{cmd: cmd, orders: cmd != "bills", bills: cmd != "orders"}
	fs := flag.NewFlagSet("reconciler "+cmd, flag.ContinueOnError)
	fs.SetOutput(stdout)
	common := config.RegisterCommon(fs, getenv)
	merchantFlags := config.RegisterMerchants(fs, getenv)
	rate := config.Float64(fs, getenv, "rate", "RECONCILE_QPS", reconcile.DefaultRate, "most WeChat Pay API calls per second")
	keyPrefix := config.String(fs, getenv, "key-prefix", "REDIS_KEY_PREFIX", events.DefaultKeyPrefix, "prefix of every Redis key")
	streams := config.RegisterStreams(fs, getenv)
	output := config.String(fs, getenv, "output", "RECONCILE_OUTPUT", "text", "the summary on standard output: text, or json (one object; the log then goes to standard error)")
	pushURL := config.String(fs, getenv, "pushgateway", "RECONCILE_PUSHGATEWAY", "", "push the run's metrics to this Prometheus Pushgateway (http://host:9091), job wxpay_reconciler")
	var staleAfter, expireAfter, maxAge *time.Duration
	if s.orders {
		staleAfter = config.Duration(fs, getenv, "stale-after", "RECONCILE_STALE_AFTER", reconcile.DefaultStaleAfter, "pending orders and refunds younger than this are left to their notification")
		expireAfter = config.Duration(fs, getenv, "expire-after", "RECONCILE_EXPIRE_AFTER", reconcile.DefaultExpireAfter, "unpaid orders older than this are closed; orders WeChat does not know, older than this, are removed")
		maxAge = config.Duration(fs, getenv, "max-age", "RECONCILE_MAX_AGE", reconcile.DefaultMaxAge, "entries older than this are queried one last time, then dropped")
	}
	var date, billDir *string
	var maxEvents *int
	if s.bills {
		date = fs.String("date", "", "the bills' day, YYYY-MM-DD (default yesterday, China time)")
		billDir = config.String(fs, getenv, "bill-dir", "RECONCILE_BILL_DIR", reconcile.DefaultBillDir, "where verified bills are stored")
		maxEvents = config.Int(fs, getenv, "max-mismatch-events", "RECONCILE_MAX_MISMATCH_EVENTS", reconcile.DefaultMaxMismatchEvents, "most bill.mismatch events per bill (every discrepancy is still counted)")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil
		}
		return nil, usageErr(err)
	}
	if fs.NArg() > 0 {
		return nil, usageErr(fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	merchants, merr := merchantFlags.Resolve()
	problems := []error{config.Err(fs), common.Validate(), merr}
	if *rate <= 0 {
		problems = append(problems, fmt.Errorf("RECONCILE_QPS (--rate) must be positive, not %v", *rate))
	}
	if *output != "text" && *output != "json" {
		problems = append(problems, fmt.Errorf("RECONCILE_OUTPUT (--output) must be text or json, not %q", *output))
	}
	if *pushURL != "" {
		if err := runreport.CheckPushURL(*pushURL); err != nil {
			problems = append(problems, fmt.Errorf("RECONCILE_PUSHGATEWAY (--pushgateway): %w", err))
		}
	}
	if s.orders {
		for _, d := range []struct {
			name string
			v    time.Duration
		}{{"RECONCILE_STALE_AFTER (--stale-after)", *staleAfter}, {"RECONCILE_EXPIRE_AFTER (--expire-after)", *expireAfter}, {"RECONCILE_MAX_AGE (--max-age)", *maxAge}} {
			if d.v <= 0 {
				problems = append(problems, fmt.Errorf("%s must be positive, not %v", d.name, d.v))
			}
		}
		if *expireAfter > 0 && *maxAge > 0 && *maxAge < *expireAfter {
			problems = append(problems, fmt.Errorf("RECONCILE_MAX_AGE (%v) is shorter than RECONCILE_EXPIRE_AFTER (%v)", *maxAge, *expireAfter))
		}
		s.staleAfter, s.expireAfter, s.age = *staleAfter, *expireAfter, *maxAge
	}
	if s.bills {
		day, err := billDay(*date, now)
		if err != nil {
			problems = append(problems, err)
		}
		if *billDir == "" {
			problems = append(problems, errors.New("RECONCILE_BILL_DIR (--bill-dir) is empty"))
		}
		if *maxEvents <= 0 {
			problems = append(problems, fmt.Errorf("RECONCILE_MAX_MISMATCH_EVENTS (--max-mismatch-events) must be positive, not %d", *maxEvents))
		}
		s.day, s.billDir, s.maxMismatchEvents = day, *billDir, *maxEvents
	}
	if err := errors.Join(problems...); err != nil {
		return nil, usageErr(err)
	}
	s.common, s.merchants, s.rate, s.keyPrefix, s.streams, s.output, s.pushURL = common, merchants, *rate, *keyPrefix, streams(), *output, *pushURL
	return s, nil
}

// billDay parses --date (default: yesterday, China time); a day's bills
// exist from the next day on.
func billDay(date string, now time.Time) (time.Time, error) {
	today := now.In(wxpay.ChinaTime())
	today = time.Date(today.Year(), today.Month(), today.Day(), 0, 0, 0, 0, wxpay.ChinaTime())
	if date == "" {
		return today.AddDate(0, 0, -1), nil
	}
	day, err := time.ParseInLocation("2006-01-02", date, wxpay.ChinaTime())
	if err != nil {
		return time.Time{}, fmt.Errorf("--date %q is not a day as YYYY-MM-DD", date)
	}
	if !day.Before(today) {
		return time.Time{}, fmt.Errorf("--date %s: a day's bills are made the next day (after 10:00 China time); today is %s", date, today.Format("2006-01-02"))
	}
	return day, nil
}

// Report is what a run prints with --output json.
type Report struct {
	Command  string    `json:"command"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	ExitCode int       `json:"exit_code"`
	// Locked: another run held the lock; this one did nothing.
	Locked bool                   `json:"locked"`
	Orders *reconcile.Summary     `json:"orders,omitempty"`
	Bills  *reconcile.BillSummary `json:"bills,omitempty"`
	Error  string                 `json:"error,omitempty"`
}

func runCommand(ctx context.Context, cmd string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	started := time.Now()
	s, err := parse(cmd, args, getenv, stdout, started)
	if err != nil || s == nil {
		return err
	}
	logOut := stdout
	if s.output == "json" {
		logOut = stderr
	}
	log, err := config.NewLogger(*s.common, "reconciler", version, logOut)
	if err != nil {
		return usageErr(err)
	}
	clients, err := config.NewClients(s.merchants)
	if err != nil {
		return usageErr(err)
	}
	ev := log.Info().Str("command", cmd).Object("config", s.common).Int("merchants", len(clients)).Float64("rate", s.rate)
	if s.orders {
		ev = ev.Stringer("stale_after", s.staleAfter).Stringer("expire_after", s.expireAfter).Stringer("max_age", s.age)
	}
	if s.bills {
		ev = ev.Str("bill_date", s.day.Format("2006-01-02")).Str("bill_dir", s.billDir)
	}
	ev.Msg("starting")

	rep := Report{Command: cmd, Started: started}
	runErr := work(ctx, s, clients, log, stderr, &rep)
	rep.Finished = time.Now()
	rep.ExitCode = exitCode(runErr)
	if runErr != nil && !errors.Is(runErr, errDiscrepancies) && !errors.Is(runErr, errFailed) {
		rep.Error = runErr.Error()
	}
	if s.pushURL != "" {
		if err := push(ctx, s.pushURL, rep); err != nil {
			log.Error().Err(err).Msg("pushing the run's metrics")
			if runErr == nil || errors.Is(runErr, errDiscrepancies) {
				runErr = fmt.Errorf("%w: pushing the run's metrics: %v", errFailed, err)
				rep.ExitCode, rep.Error = 1, runErr.Error()
			}
		} else {
			log.Debug().Str("pushgateway", config.RedactURL(s.pushURL)).Msg("metrics pushed")
		}
	}
	printReport(stdout, s.output, rep)
	return runErr
}

// work connects, takes the lock and runs the command's steps.
func work(ctx context.Context, s *settings, clients []config.MerchantClient, log zerolog.Logger, stderr io.Writer, rep *Report) error {
	rdb, err := s.common.ConnectRedis()
	if err != nil {
		return usageErr(err)
	}
	defer rdb.Close()
	nc, js, err := s.common.ConnectNATS("wxpay-reconciler", log)
	if err != nil {
		return err
	}
	defer nc.Close()

	progress := runreport.NewProgress(stderr, runreport.ProgressOptions{})
	lockKey := reconcile.LockKey(s.keyPrefix)
	err = reconcile.WithLock(ctx, rdb, lockKey, reconcile.DefaultLockTTL, func(ctx context.Context) error {
		// Platform certificates, for the merchants that download them;
		// the refresher ends with the run.
		config.StartCertificateRefresh(ctx, clients, log)
		if err := config.EnsureStreams(ctx, js, s.streams, log); err != nil {
			return err
		}
		ms := make([]reconcile.Merchant, len(clients))
		for i, mc := range clients {
			ms[i] = reconcile.Merchant{MchID: mc.Merchant.MchID, Client: mc.Client}
		}
		r := reconcile.New(ms, tracking.NewStore(rdb, tracking.Config{KeyPrefix: s.keyPrefix}),
			events.NewPublisher(js, events.PublisherConfig{}), reconcile.Config{
				StaleAfter: s.staleAfter, ExpireAfter: s.expireAfter, MaxAge: s.age, Rate: s.rate,
				BackoffBase: backoffBase, Logger: log, Progress: progressAdapter{progress},
			})
		if s.orders {
			sum, err := r.Orders(ctx)
			rep.Orders = &sum
			log.Info().Int("queried", sum.Queried).Interface("published", sum.Published).Int("closed", sum.Closed).
				Int("dropped", sum.Dropped).Int("still_pending", sum.StillPending).Int("skipped", sum.Skipped).
				Int("errors", sum.Errors).Msg("orders done")
			if err != nil {
				return err
			}
		}
		if s.bills {
			sum, err := r.Bills(ctx, s.day, reconcile.BillOptions{Dir: s.billDir, MaxMismatchEvents: s.maxMismatchEvents,
				Progress: progressAdapter{progress}})
			rep.Bills = &sum
			log.Info().Str("bill_date", sum.Date).Int("bills", len(sum.Bills)).Int64("rows", sum.Rows).
				Int64("mismatches", sum.Mismatches).Int("not_ready", sum.NotReady).Int("errors", sum.Errors).Msg("bills done")
			if err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, reconcile.ErrLocked) {
		rep.Locked = true
		log.Warn().Str("lock", lockKey).Msg("another reconciler run holds the lock; nothing to do")
		return nil
	}
	if err != nil {
		return err
	}
	var problems []string
	if rep.Orders != nil && !rep.Orders.Clean() {
		problems = append(problems, fmt.Sprintf("orders: %d error(s)", rep.Orders.Errors))
	}
	if rep.Bills != nil && rep.Bills.NotReady > 0 {
		problems = append(problems, fmt.Sprintf("bills: %d not ready yet (WeChat answered STATEMENT_CREATING; run again after 10:00 China time)", rep.Bills.NotReady))
	}
	if rep.Bills != nil && rep.Bills.Errors > rep.Bills.NotReady {
		problems = append(problems, fmt.Sprintf("bills: %d error(s)", rep.Bills.Errors-rep.Bills.NotReady))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s; see the log", errFailed, joinProblems(problems))
	}
	if rep.Bills != nil && rep.Bills.Mismatches > 0 {
		return fmt.Errorf("%w: %d discrepancies, published as bill.mismatch; see the log", errDiscrepancies, rep.Bills.Mismatches)
	}
	return nil
}

func joinProblems(p []string) string {
	out := p[0]
	for _, s := range p[1:] {
		out += "; " + s
	}
	return out
}

// printReport writes the readable summary, or the JSON report.
func printReport(w io.Writer, output string, rep Report) {
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
		return
	}
	if rep.Locked {
		fmt.Fprintf(w, "reconciler %s: another run holds the lock; exiting\n", rep.Command)
		return
	}
	if rep.Orders != nil {
		fmt.Fprintln(w, "reconciler orders:", rep.Orders)
	}
	if rep.Bills != nil {
		fmt.Fprintln(w, "reconciler bills:", rep.Bills)
		for _, b := range rep.Bills.Bills {
			line := fmt.Sprintf("  %s %s %s: ", b.MchID, b.Bill, b.Type)
			switch {
			case b.NotReady:
				line += "not ready yet"
			case b.Error != "":
				line += "error: " + b.Error
			case b.Empty:
				line += "no bill (an empty day)"
			default:
				line += fmt.Sprintf("%d rows, stored as %s", b.Rows, b.File)
			}
			if n := b.MismatchCount(); n > 0 {
				line += fmt.Sprintf("; %d discrepancies %v", n, b.Mismatches)
			}
			fmt.Fprintln(w, line)
		}
	}
}

// push sends the run's metrics to the Pushgateway, one group per command
// so that orders and bills runs do not replace each other's.
func push(ctx context.Context, url string, rep Report) error {
	counts := map[string]float64{}
	if o := rep.Orders; o != nil {
		counts["queried"] = float64(o.Queried)
		var published int
		for _, n := range o.Published {
			published += n
		}
		counts["published"] = float64(published)
		counts["closed"] = float64(o.Closed)
		counts["dropped"] = float64(o.Dropped)
		counts["still_pending"] = float64(o.StillPending)
		counts["skipped"] = float64(o.Skipped)
		counts["order_errors"] = float64(o.Errors)
	}
	if b := rep.Bills; b != nil {
		counts["bills"] = float64(len(b.Bills))
		counts["bill_rows"] = float64(b.Rows)
		counts["bill_mismatches"] = float64(b.Mismatches)
		counts["bills_not_ready"] = float64(b.NotReady)
		counts["bill_errors"] = float64(b.Errors)
	}
	m := runreport.RunMetrics{Command: rep.Command, Started: rep.Started, Finished: rep.Finished, ExitCode: rep.ExitCode, Counts: counts}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), runreport.DefaultPushTimeout)
	defer cancel()
	return runreport.Push(ctx, url, "wxpay_reconciler", map[string]string{"subcommand": rep.Command}, m.Collectors("wxpay_reconciler")...)
}

// progressAdapter shows the reconciler's long work on the progress line.
type progressAdapter struct{ p *runreport.Progress }

func (a progressAdapter) Start(label string, total int64, bytes bool) reconcile.ProgressTask {
	unit := runreport.Items
	if bytes {
		unit = runreport.Bytes
	}
	return a.p.Task(label, total, unit)
}
