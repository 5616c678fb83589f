package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/wxpay-notify/wxpay-notify/internal/config"
	"github.com/wxpay-notify/wxpay-notify/internal/doctor"
)

// errChecksFailed is the doctor's result when a check failed: exit status 1.
var errChecksFailed = errors.New("doctor: a check failed")

const doctorUsage = `Usage: ingress doctor [flags]

Checks a setup before go-live and says what is wrong and how to fix it:
the notify_url given to WeChat Pay, the key files and keys of every
merchant, the platform certificates, a signed test request to the WeChat
Pay API (a query of an order that does not exist), the clock against
WeChat Pay's, NATS JetStream and its streams, and Redis.

It takes the same settings as ingress, as variables or flags, so that it
can run with the ingress's own command line; it uses the merchant and
shared ones (the WXPAY_*, NATS_URL and REDIS_URL variables). Problems in
them are reported as failed checks rather than refused.

--notify-url (WXPAY_NOTIFY_URL) is the notify_url your payment code sends
WeChat Pay; with several merchants write {mchid} where each merchant's id
goes, e.g. https://pay.example.com/notify/{mchid}.

Exit status: 0 when no check failed (warnings allowed), 1 when one did,
2 for a usage error.

Flags:
`

// runDoctor is "ingress doctor": it runs the checks and writes the report
// to stdout, as text or JSON.
func runDoctor(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ingress doctor", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), doctorUsage)
		fs.PrintDefaults()
	}
	s := register(fs, getenv)
	common, merchants := s.common, s.merchants
	notifyURL := config.String(fs, getenv, "notify-url", "WXPAY_NOTIFY_URL", "", "the notify_url given to WeChat Pay (`url`; {mchid} stands for each merchant's id)")
	timeout := config.Duration(fs, getenv, "timeout", "DOCTOR_TIMEOUT", doctor.DefaultTimeout, "longest wait of each network check")
	output := fs.String("output", "text", "report `format`: text or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: doctor takes no arguments, got %q", errUsage, strings.Join(fs.Args(), " "))
	}
	if *output != "text" && *output != "json" {
		return fmt.Errorf("%w: --output %q: want text or json", errUsage, *output)
	}
	if *timeout <= 0 {
		return fmt.Errorf("%w: --timeout (DOCTOR_TIMEOUT) must be positive, got %s", errUsage, *timeout)
	}

	ms, merr := merchants.Resolve()
	cfg := doctor.Config{
		Merchants:   ms,
		ConfigError: errors.Join(config.Err(fs), merr),
		NotifyURL:   *notifyURL,
		Timeout:     *timeout,
	}
	if fs.Lookup("merchants-file") != nil {
		cfg.MerchantsFile = fs.Lookup("merchants-file").Value.String()
	}
	if err := common.Validate(); err != nil {
		cfg.ConfigError = errors.Join(cfg.ConfigError, err)
	} else {
		cfg.Common = common
	}
	report := doctor.Run(ctx, cfg)
	var err error
	if *output == "json" {
		err = report.WriteJSON(stdout)
	} else {
		err = report.WriteText(stdout)
	}
	if err != nil {
		return err
	}
	if report.Failed() {
		return fmt.Errorf("%w (%d failed)", errChecksFailed, report.Count(doctor.Fail))
	}
	return nil
}
