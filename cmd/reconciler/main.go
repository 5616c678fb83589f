// Command reconciler runs once and exits (a Kubernetes CronJob): it
// queries WeChat Pay for what the notifications missed and publishes it.
//
// Usage:
//
//	reconciler orders [flags]   query pending orders and refunds, close expired orders
//	reconciler bills            not implemented yet
//	reconciler all              not implemented yet
//
// Exit status: 0 clean (also when another run holds the lock), 1 errors,
// 2 usage or configuration errors.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wxpay-notify/wxpay-notify/internal/config"
	"github.com/wxpay-notify/wxpay-notify/internal/reconcile"
	"github.com/wxpay-notify/wxpay-notify/internal/tracking"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// errUsage marks a usage or configuration error: exit status 2.
var errUsage = errors.New("usage")

// errFailed marks a run that finished with errors: exit status 1.
var errFailed = errors.New("the run had errors")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "reconciler:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func usageErr(err error) error { return fmt.Errorf("%w: %v", errUsage, err) }

const usage = "reconciler orders|bills|all [flags] (reconciler orders --help lists the settings)"

// backoffBase is the first backoff after a rate-limited answer (tests
// shorten it).
var backoffBase = reconcile.DefaultBackoffBase

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageErr(errors.New(usage))
	}
	switch args[0] {
	case "orders":
		return runOrders(ctx, args[1:], getenv, stdout)
	case "bills", "all":
		return usageErr(fmt.Errorf("reconciler %s is not implemented yet; run reconciler orders", args[0]))
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, "usage:", usage)
		return nil
	}
	return usageErr(fmt.Errorf("unknown command %q: %s", args[0], usage))
}

func runOrders(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("reconciler orders", flag.ContinueOnError)
	fs.SetOutput(stdout)
	common := config.RegisterCommon(fs, getenv)
	merchantFlags := config.RegisterMerchants(fs, getenv)
	staleAfter := config.Duration(fs, getenv, "stale-after", "RECONCILE_STALE_AFTER", reconcile.DefaultStaleAfter, "pending orders and refunds younger than this are left to their notification")
	expireAfter := config.Duration(fs, getenv, "expire-after", "RECONCILE_EXPIRE_AFTER", reconcile.DefaultExpireAfter, "unpaid orders older than this are closed; orders WeChat does not know, older than this, are removed")
	maxAge := config.Duration(fs, getenv, "max-age", "RECONCILE_MAX_AGE", reconcile.DefaultMaxAge, "entries older than this are queried one last time, then dropped")
	rate := config.Float64(fs, getenv, "rate", "RECONCILE_QPS", reconcile.DefaultRate, "most WeChat Pay API calls per second")
	keyPrefix := config.String(fs, getenv, "key-prefix", "REDIS_KEY_PREFIX", events.DefaultKeyPrefix, "prefix of every Redis key")
	replicas := config.Int(fs, getenv, "stream-replicas", "STREAM_REPLICAS", events.DefaultReplicas, "replicas of the WXPAY streams")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageErr(err)
	}
	if fs.NArg() > 0 {
		return usageErr(fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	merchants, merr := merchantFlags.Resolve()
	problems := []error{config.Err(fs), common.Validate(), merr}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"RECONCILE_STALE_AFTER (--stale-after)", *staleAfter}, {"RECONCILE_EXPIRE_AFTER (--expire-after)", *expireAfter}, {"RECONCILE_MAX_AGE (--max-age)", *maxAge}} {
		if d.v <= 0 {
			problems = append(problems, fmt.Errorf("%s must be positive, not %v", d.name, d.v))
		}
	}
	if *rate <= 0 {
		problems = append(problems, fmt.Errorf("RECONCILE_QPS (--rate) must be positive, not %v", *rate))
	}
	if *expireAfter > 0 && *maxAge > 0 && *maxAge < *expireAfter {
		problems = append(problems, fmt.Errorf("RECONCILE_MAX_AGE (%v) is shorter than RECONCILE_EXPIRE_AFTER (%v)", *maxAge, *expireAfter))
	}
	if err := errors.Join(problems...); err != nil {
		return usageErr(err)
	}
	log, err := config.NewLogger(*common, "reconciler", version, stdout)
	if err != nil {
		return usageErr(err)
	}
	clients, err := config.NewClients(merchants)
	if err != nil {
		return usageErr(err)
	}
	log.Info().Object("config", common).Int("merchants", len(clients)).Stringer("stale_after", *staleAfter).
		Stringer("expire_after", *expireAfter).Stringer("max_age", *maxAge).Float64("rate", *rate).Msg("starting")
	rdb, err := common.ConnectRedis()
	if err != nil {
		return usageErr(err)
	}
	defer rdb.Close()
	nc, js, err := common.ConnectNATS("wxpay-reconciler", log)
	if err != nil {
		return err
	}
	defer nc.Close()

	lockKey := reconcile.LockKey(*keyPrefix)
	var summary reconcile.Summary
	err = reconcile.WithLock(ctx, rdb, lockKey, reconcile.DefaultLockTTL, func(ctx context.Context) error {
		// Platform certificates, for the merchants that download them;
		// the refresher ends with the run.
		config.StartCertificateRefresh(ctx, clients, log)
		if err := config.EnsureStreams(ctx, js, events.StreamConfig{Replicas: *replicas}, log); err != nil {
			return err
		}
		ms := make([]reconcile.Merchant, len(clients))
		for i, mc := range clients {
			ms[i] = reconcile.Merchant{MchID: mc.Merchant.MchID, Client: mc.Client}
		}
		r := reconcile.New(ms, tracking.NewStore(rdb, tracking.Config{KeyPrefix: *keyPrefix}),
			events.NewPublisher(js, events.PublisherConfig{}), reconcile.Config{
				StaleAfter: *staleAfter, ExpireAfter: *expireAfter, MaxAge: *maxAge, Rate: *rate,
				BackoffBase: backoffBase, Logger: log,
			})
		var err error
		summary, err = r.Orders(ctx)
		return err
	})
	if errors.Is(err, reconcile.ErrLocked) {
		log.Warn().Str("lock", lockKey).Msg("another reconciler run holds the lock; nothing to do")
		fmt.Fprintf(stdout, "reconciler orders: another run holds the lock %s; exiting\n", lockKey)
		return nil
	}
	if summary.Published != nil {
		log.Info().Int("queried", summary.Queried).Interface("published", summary.Published).Int("closed", summary.Closed).
			Int("dropped", summary.Dropped).Int("still_pending", summary.StillPending).Int("skipped", summary.Skipped).
			Int("errors", summary.Errors).Msg("done")
		fmt.Fprintln(stdout, "reconciler orders:", summary)
	}
	if err != nil {
		return err
	}
	if !summary.Clean() {
		return fmt.Errorf("%w: %d error(s); see the log", errFailed, summary.Errors)
	}
	return nil
}
