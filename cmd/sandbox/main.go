// Command sandbox shows the payment flow end to end in one process, with
// nothing installed but Go: an embedded NATS server with JetStream,
// miniredis, the fake WeChat Pay platform (wxpaytest), the ingress on a
// loopback port, a worker with the log and tracker handlers and a counting
// business handler, and the reconciler. A traffic generator announces,
// pays and refunds orders while the platform duplicates, delays and drops
// notifications; at the end the bill of the day is checked, a tally is
// printed, and the exit status says whether every payment and refund had
// its business effect exactly once.
//
// Usage: go run ./cmd/sandbox [flags] (--help lists them).
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
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// errUsage marks a configuration error: exit status 2.
var errUsage = errors.New("usage")

// errUnaccounted marks a run whose tally does not add up: exit status 1.
var errUnaccounted = errors.New("not every payment and refund was accounted for exactly once")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, hooks{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
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
	}
	return 1
}

// options are the sandbox's flags.
type options struct {
	orders         int
	rate           float64
	dup, drop      float64
	duration       time.Duration
	serve          bool
	dataDir        string
	seed           uint64
	reconcileEvery time.Duration
	staleAfter     time.Duration
	listen         string
	metricsAddr    string
	logLevel       string
}

// hooks let tests plant defects; the command runs with the zero value.
type hooks struct {
	// repeatEffect, when it returns true for a business id, makes the
	// business handler apply that effect twice (a handler that is not
	// idempotent), which the tally must catch.
	repeatEffect func(id string) bool
}

// parseOptions reads the flags; help is true when --help was asked for.
func parseOptions(args []string, stdout io.Writer) (o options, help bool, err error) {
	fs := flag.NewFlagSet("sandbox", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.IntVar(&o.orders, "orders", 200, "orders the traffic generator places and pays")
	fs.Float64Var(&o.rate, "rate", 20, "orders per second (raised when --orders would not fit in half of --duration)")
	fs.Float64Var(&o.dup, "dup", 0.2, "share of notifications WeChat sends twice")
	fs.Float64Var(&o.drop, "drop", 0.05, "share of notifications WeChat never sends (the reconciler must find them)")
	fs.DurationVar(&o.duration, "duration", 60*time.Second, "longest run: the traffic stops at half of it, the rest is for late notifications and the reconciler")
	fs.BoolVar(&o.serve, "serve", false, "keep everything running after the traffic and print the addresses, until SIGINT or SIGTERM")
	fs.StringVar(&o.dataDir, "data-dir", "", "keep the JetStream files and the bills here (default: a temporary directory removed at exit)")
	fs.Uint64Var(&o.seed, "seed", 0, "seed of the traffic's random choices, to repeat a run (default: from the clock, printed)")
	fs.DurationVar(&o.reconcileEvery, "reconcile-every", 3*time.Second, "how often the reconciler's orders step runs")
	fs.DurationVar(&o.staleAfter, "stale-after", 2*time.Second, "the reconciler's --stale-after: pending items younger than this are left to their notification")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:0", "the ingress's listener (the notify URL)")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "127.0.0.1:0", "the listener of /metrics, /healthz and /readyz")
	fs.StringVar(&o.logLevel, "log-level", "warn", "level of the parts' log lines on standard error (debug, info, warn, error)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, true, nil
		}
		return o, false, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return o, false, fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if err := o.validate(); err != nil {
		return o, false, fmt.Errorf("%w: %v", errUsage, err)
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	return o, false, nil
}

func (o options) validate() error {
	var problems []error
	if o.orders <= 0 {
		problems = append(problems, fmt.Errorf("--orders must be positive, not %d", o.orders))
	}
	if o.rate <= 0 {
		problems = append(problems, fmt.Errorf("--rate must be positive, not %v", o.rate))
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"--dup", o.dup}, {"--drop", o.drop}} {
		if p.v < 0 || p.v > 1 {
			problems = append(problems, fmt.Errorf("%s is a share between 0 and 1, not %v", p.name, p.v))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"--duration", o.duration}, {"--reconcile-every", o.reconcileEvery}, {"--stale-after", o.staleAfter}} {
		if d.v <= 0 {
			problems = append(problems, fmt.Errorf("%s must be positive, not %v", d.name, d.v))
		}
	}
	return errors.Join(problems...)
}

// run is the whole command: it returns the tally of the run (nil when it
// did not get that far) and an error wrapping errUnaccounted when the
// tally does not add up.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, h hooks) (*Tally, error) {
	o, help, err := parseOptions(args, stdout)
	if err != nil || help {
		return nil, err
	}
	sb, err := start(ctx, o, stderr, h)
	if err != nil {
		return nil, err
	}
	defer sb.close()
	fmt.Fprintf(stdout, "sandbox: %d orders at %.4g/s, dup %.2g, drop %.2g, seed %d; notify URL %s; ledger and bill day %s\n",
		o.orders, o.rate, o.dup, o.drop, o.seed, sb.notifyURL, sb.clock.day().Format("2006-01-02"))
	started := time.Now()
	deadline := started.Add(o.duration)
	gen := newTraffic(o, sb)
	gen.run(ctx, deadline, stdout, stderr)
	sb.settle(ctx, deadline, gen)
	t, err := sb.finish(ctx, gen, started)
	if err != nil {
		return nil, err
	}
	t.print(stdout)
	result := t.err()
	if o.serve {
		sb.serve(ctx, stdout)
	}
	return t, result
}
