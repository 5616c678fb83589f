// Command worker runs one team's durable JetStream consumer with the
// built-in handlers (log, tracker, forward): every event is deduplicated
// through Redis, failures retry with backoff, poison events go to the
// WXPAY_DLQ stream.
//
// Usage:
//
//	worker [flags]                     run the consumer
//	worker dlq list [flags]            show dead letters
//	worker dlq replay [flags]          republish dead letters to their subjects
//	worker health [--live]             ask a running worker's admin listener whether it is ready
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/internal/admin"
	"github.com/wxpay-notify/wxpay-notify/internal/config"
	"github.com/wxpay-notify/wxpay-notify/internal/handlers"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
)

var version = "dev"

var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, nil); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer, ready func(adminAddr string)) error {
	if len(args) > 0 && args[0] == "dlq" {
		return runDLQ(ctx, args[1:], getenv, stdout)
	}
	if len(args) > 0 && args[0] == "health" {
		return admin.RunHealth(ctx, "worker", errUsage, args[1:], getenv, stdout)
	}
	return runWorker(ctx, args, getenv, stdout, ready)
}

func usageErr(err error) error { return fmt.Errorf("%w: %v", errUsage, err) }

func parse(fs *flag.FlagSet, args []string) (help bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, usageErr(err)
	}
	if fs.NArg() > 0 {
		return false, usageErr(fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	return false, nil
}

func runWorker(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer, ready func(string)) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stdout)
	common := config.RegisterCommon(fs, getenv)
	consumer := config.String(fs, getenv, "consumer", "WORKER_CONSUMER", "", "durable consumer name, one per team (required)")
	subjects := config.String(fs, getenv, "subjects", "WORKER_SUBJECTS", events.SubjectAll, "comma-separated subject filters, e.g. wxpay.*.transaction.success,wxpay.*.refund.>")
	handlerList := &listFlag{}
	handlerList.setDefault(getenv("WORKER_HANDLERS"), "log")
	fs.Var(handlerList, "handler", "built-in handler to run: "+strings.Join(handlers.Names(), ", ")+"; repeat the flag or separate with commas for several, run in that order (env WORKER_HANDLERS)")
	concurrency := config.Int(fs, getenv, "concurrency", "WORKER_CONCURRENCY", events.DefaultConcurrency, "events handled at once by this process")
	ackWait := config.Duration(fs, getenv, "ack-wait", "WORKER_ACK_WAIT", events.DefaultAckWait, "JetStream ack wait (also the Redis lock TTL)")
	handlerTimeout := config.Duration(fs, getenv, "handler-timeout", "WORKER_HANDLER_TIMEOUT", 0, "how long the handlers of one delivery may run, less than the ack wait; FORWARD_TIMEOUT must be shorter (default 4/5 of the ack wait)")
	maxDeliver := config.Int(fs, getenv, "max-deliver", "WORKER_MAX_DELIVER", events.DefaultMaxDeliver, "failed handler attempts before an event is dead-lettered (deliveries that ran no handler do not count)")
	retryBase := config.Duration(fs, getenv, "retry-base", "WORKER_RETRY_BASE", events.DefaultRetryBase, "first redelivery delay (doubles per delivery)")
	retryMax := config.Duration(fs, getenv, "retry-max", "WORKER_RETRY_MAX", events.DefaultRetryMax, "longest redelivery delay")
	doneTTL := config.Duration(fs, getenv, "done-ttl", "WORKER_DONE_TTL", events.DefaultDoneTTL, "how long a handled event's done marker is kept (at least 25h)")
	keyPrefix := config.String(fs, getenv, "key-prefix", "REDIS_KEY_PREFIX", events.DefaultKeyPrefix, "prefix of every Redis key")
	forwardURL := config.URL(fs, getenv, "forward-url", "FORWARD_URL", "", "forward handler: where to POST each event")
	forwardSecret := config.Secret(fs, getenv, "forward-secret", "FORWARD_SECRET", "forward-secret-file", "FORWARD_SECRET_FILE", "forward handler: HMAC secret of Wxpay-Notify-Signature")
	forwardTimeout := config.Duration(fs, getenv, "forward-timeout", "FORWARD_TIMEOUT", handlers.DefaultForwardTimeout, "forward handler: timeout per call")
	streams := config.RegisterStreams(fs, getenv)
	if help, err := parse(fs, args); help || err != nil {
		return err
	}
	var problems []error
	if err := errors.Join(config.Err(fs), common.Validate()); err != nil {
		problems = append(problems, err)
	}
	if *consumer == "" {
		problems = append(problems, errors.New("WORKER_CONSUMER (--consumer) is required: one durable consumer name per team"))
	}
	names := handlerList.vals
	if len(names) == 0 {
		problems = append(problems, errors.New("WORKER_HANDLERS (--handler) names no handler"))
	}
	if err := handlers.CheckNames(names); err != nil {
		problems = append(problems, fmt.Errorf("WORKER_HANDLERS: %w", err))
	}
	if *handlerTimeout == 0 {
		*handlerTimeout = events.DefaultHandlerTimeout(*ackWait)
	}
	// The router ends the handlers' context after the handler timeout: a
	// forward call allowed longer would be cut on every attempt while the
	// receiver goes on to complete it.
	fwdTimeout := *forwardTimeout
	if fwdTimeout <= 0 {
		fwdTimeout = handlers.DefaultForwardTimeout // what the handler uses then
	}
	if slices.Contains(names, "forward") && fwdTimeout >= *handlerTimeout {
		problems = append(problems, fmt.Errorf("FORWARD_TIMEOUT (--forward-timeout) %v is not shorter than the handler timeout %v (WORKER_HANDLER_TIMEOUT, --handler-timeout; default 4/5 of WORKER_ACK_WAIT), which would cut every forward call: lower FORWARD_TIMEOUT, or raise WORKER_HANDLER_TIMEOUT (and WORKER_ACK_WAIT, which must stay above it)", fwdTimeout, *handlerTimeout))
	}
	if err := errors.Join(problems...); err != nil {
		return usageErr(err)
	}
	// One line per notification: batched into few writes, warnings and
	// errors written at once, the rest flushed at exit.
	logOut := config.NewLogBuffer(stdout, 0)
	defer logOut.Close()
	log, err := config.NewLogger(*common, "worker", version, logOut)
	if err != nil {
		return usageErr(err)
	}
	rdb, err := common.ConnectRedis()
	if err != nil {
		return usageErr(err)
	}
	defer rdb.Close()

	// The handlers, in the order given; all run for each event.
	chain, err := handlers.Chain(names, handlers.Deps{
		Logger:    log,
		Redis:     rdb,
		KeyPrefix: *keyPrefix,
		Forward:   handlers.ForwardConfig{URL: *forwardURL, Timeout: *forwardTimeout},
		ForwardSecret: func() ([]byte, error) {
			secret, _, err := forwardSecret.Resolve()
			return []byte(secret), err
		},
	})
	if err != nil {
		return usageErr(err)
	}

	nc, js, err := common.ConnectNATS("wxpay-worker-"+*consumer, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	reg := admin.NewRegistry()
	r, err := events.NewRouter(js, rdb, events.RouterConfig{
		Consumer:       *consumer,
		Subjects:       config.SplitList(*subjects),
		AckWait:        *ackWait,
		HandlerTimeout: *handlerTimeout,
		MaxDeliver:     *maxDeliver,
		Concurrency:    *concurrency,
		RetryBase:      *retryBase,
		RetryMax:       *retryMax,
		DoneTTL:        *doneTTL,
		KeyPrefix:      *keyPrefix,
		Logger:         log,
		Registerer:     reg,
	})
	if err != nil {
		return usageErr(err)
	}
	for _, s := range config.SplitList(*subjects) {
		if err := r.Register(s, chain...); err != nil {
			return usageErr(fmt.Errorf("WORKER_SUBJECTS: %w", err))
		}
	}
	log.Info().Object("config", common).Str("consumer", *consumer).Strs("subjects", r.FilterSubjects()).Strs("handlers", names).Msg("starting")

	if err := config.EnsureStreams(ctx, js, streams(), log); err != nil {
		return err
	}
	// Ages of what the streams' max age would remove silently: the oldest
	// unacknowledged event and the oldest dead letter of the consumer.
	mon, err := events.NewRetentionMonitor(js, events.RetentionConfig{Consumers: []string{*consumer}, Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	monCtx, stopMon := context.WithCancel(ctx)
	monDone := make(chan struct{})
	go func() {
		defer close(monDone)
		mon.Run(monCtx)
	}()
	defer func() {
		stopMon()
		<-monDone
	}()
	routerReady := func(context.Context) error { return r.Ready() }
	adminSrv, adminAddr, err := admin.Listen(common.AdminAddr, admin.Handler(reg, routerReady, admin.NATSReady(nc, js, events.StreamName, events.DLQStreamName)))
	if err != nil {
		return err
	}
	defer adminSrv.Close()
	if ready != nil {
		ready(adminAddr)
	}
	// Run returns after ctx ends and in-flight handlers finished.
	err = r.Run(ctx)
	if ctx.Err() != nil && err == nil {
		if derr := nc.Drain(); derr != nil {
			log.Error().Err(derr).Msg("NATS drain")
		}
		log.Info().Msg("stopped")
		return nil
	}
	return err
}

// listFlag is a repeatable flag whose values may also be comma-separated;
// the command line replaces the environment's default.
type listFlag struct {
	vals    []string
	fromEnv bool
}

func (l *listFlag) setDefault(env, def string) {
	if env == "" {
		env = def
	}
	l.vals, l.fromEnv = config.SplitList(env), true
}

func (l *listFlag) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(l.vals, ",")
}

func (l *listFlag) Set(s string) error {
	if l.fromEnv {
		l.vals, l.fromEnv = nil, false
	}
	l.vals = append(l.vals, config.SplitList(s)...)
	return nil
}

// runDLQ is `worker dlq list|replay`.
func runDLQ(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "replay") {
		return usageErr(errors.New("worker dlq list|replay [--consumer NAME] [--mchid ID] [--subject PATTERN] [--all]"))
	}
	verb := args[0]
	fs := flag.NewFlagSet("worker dlq "+verb, flag.ContinueOnError)
	fs.SetOutput(stdout)
	common := config.RegisterCommon(fs, getenv)
	consumer := fs.String("consumer", "", "only dead letters of this consumer (team)")
	mchid := fs.String("mchid", "", "only dead letters of this merchant")
	subject := fs.String("subject", "", "only dead letters whose original subject matches this pattern (NATS wildcards)")
	limit := fs.Int("limit", 100, "list: at most this many")
	all := fs.Bool("all", false, "replay: every dead letter (required when no filter is given)")
	if help, err := parse(fs, args[1:]); help || err != nil {
		return err
	}
	if err := errors.Join(config.Err(fs), common.Validate()); err != nil {
		return usageErr(err)
	}
	filter := events.DLQFilter{Consumer: *consumer, MchID: *mchid, Subject: *subject}
	if verb == "replay" && filter == (events.DLQFilter{}) && !*all {
		return usageErr(errors.New("worker dlq replay: give --consumer, --mchid or --subject, or --all to replay every dead letter"))
	}
	log := zerolog.Nop()
	nc, js, err := common.ConnectNATS("wxpay-worker-dlq", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if verb == "list" {
		filter.Limit = *limit
		dls, err := events.ListDeadLetters(ctx, js, filter)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tTIME\tCONSUMER\tSUBJECT\tDELIVERIES\tREASON")
		for _, d := range dls {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\n", d.Seq, d.Time.UTC().Format(time.RFC3339), d.Consumer, d.OriginalSubject, d.Deliveries, d.Reason)
		}
		tw.Flush()
		fmt.Fprintf(stdout, "%d dead letter(s)\n", len(dls))
		return nil
	}
	n, err := events.ReplayDeadLetters(ctx, js, filter)
	fmt.Fprintf(stdout, "replayed %d dead letter(s)\n", n)
	return err
}
