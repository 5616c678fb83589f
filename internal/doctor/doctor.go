// Package doctor checks a setup before go-live and says, in plain words,
// what is wrong and how to fix it: the notify_url given to WeChat Pay, the
// key files, the keys, the platform certificates, a signed test request to
// the WeChat Pay API, the clock, NATS JetStream and Redis.
//
// Each check gives a Result: ok, warn (works, but should be fixed), fail
// (will not work) or skip (does not apply to this setup, with the reason).
// A Report is the list of results and the worst status among them.
package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/wxpay-notify/wxpay-notify/internal/config"
)

// Status is the outcome of one check.
type Status string

// The outcomes, from best to worst; skip counts as ok for the overall
// status.
const (
	// OK: the check passed.
	OK Status = "ok"
	// Skip: the check does not apply to this setup; the message says why.
	Skip Status = "skip"
	// Warn: it works, but should be fixed before go-live.
	Warn Status = "warn"
	// Fail: this will not work.
	Fail Status = "fail"
)

func (s Status) rank() int {
	switch s {
	case Warn:
		return 1
	case Fail:
		return 2
	}
	return 0
}

// symbol is the status in the text report.
func (s Status) symbol() string {
	switch s {
	case OK:
		return "✓"
	case Warn:
		return "!"
	case Fail:
		return "✗"
	}
	return "-"
}

// Result is the outcome of one check.
type Result struct {
	// Name names the check: notify_url, private_key_file, public_key_file,
	// merchant_certificate, apiv3_key, apiv2_key, public_key_id,
	// platform_certificates, signed_request, clock, nats, redis, or
	// configuration for a setting that cannot be read at all.
	Name string `json:"name"`
	// MchID is the merchant the check is about; empty for NATS and Redis.
	MchID  string `json:"mchid,omitempty"`
	Status Status `json:"status"`
	// Message says what was found, in plain words.
	Message string `json:"message"`
	// Fix says what to do; empty when there is nothing to do.
	Fix string `json:"fix,omitempty"`
}

// Report is every check's result and the overall status (the worst one).
type Report struct {
	Checks  []Result `json:"checks"`
	Overall Status   `json:"overall"`
}

// Failed reports whether any check failed.
func (r Report) Failed() bool { return r.Overall == Fail }

// Count returns how many checks ended with status s.
func (r Report) Count(s Status) int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == s {
			n++
		}
	}
	return n
}

// WriteText writes one line per check (✓ ok, ! warn, ✗ fail, - skip), its
// name, merchant and message, then "fix: …" indented on the next line, and
// a summary line at the end.
func (r Report) WriteText(w io.Writer) error {
	var b strings.Builder
	for _, c := range r.Checks {
		name := c.Name
		if c.MchID != "" {
			name += " [" + c.MchID + "]"
		}
		fmt.Fprintf(&b, "%s %s: %s\n", c.Status.symbol(), name, c.Message)
		if c.Fix != "" {
			fmt.Fprintf(&b, "    fix: %s\n", c.Fix)
		}
	}
	warnings := "warnings"
	if r.Count(Warn) == 1 {
		warnings = "warning"
	}
	fmt.Fprintf(&b, "\n%s: %d failed, %d %s, %d ok, %d skipped\n",
		r.Overall, r.Count(Fail), r.Count(Warn), warnings, r.Count(OK), r.Count(Skip))
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as one JSON object: {"checks": [...],
// "overall": "ok"|"warn"|"fail"}.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// DefaultTimeout bounds each check that waits for the network.
const DefaultTimeout = 10 * time.Second

// Config is what the doctor checks.
type Config struct {
	// Merchants are the resolved merchants (config.MerchantFlags.Resolve);
	// empty when they could not be resolved (see ConfigError).
	Merchants []config.Merchant
	// MerchantsFile is WXPAY_MERCHANTS_FILE when the merchants come from
	// a file, so that messages name the file's keys instead of the
	// variables.
	MerchantsFile string
	// ConfigError is what reading the configuration reported (unparsable
	// variables, invalid merchants or shared settings). Each problem
	// becomes a failed check.
	ConfigError error
	// Common are the shared settings; nil skips the NATS and Redis checks
	// (they were invalid: see ConfigError).
	Common *config.Common
	// NotifyURL is the notify_url the merchants give WeChat Pay. It may
	// hold {mchid}, replaced by each merchant's id. Empty: not checked (a
	// warning).
	NotifyURL string
	// Timeout bounds each network check; default DefaultTimeout.
	Timeout time.Duration
	// Now is this server's clock; default time.Now.
	Now func() time.Time
}

// Run runs every check and returns the report. It stops early only when
// ctx ends (the remaining checks then fail with ctx's error).
func Run(ctx context.Context, cfg Config) Report {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var out []Result
	out = append(out, configResults(cfg.ConfigError)...)
	for _, m := range cfg.Merchants {
		out = append(out, checkMerchant(ctx, cfg, m)...)
	}
	if cfg.Common != nil {
		out = append(out, CheckNATS(ctx, *cfg.Common, cfg.Timeout))
		out = append(out, CheckRedis(ctx, *cfg.Common, cfg.Timeout))
	} else {
		fix := "fix the configuration problems above, then run the doctor again"
		out = append(out,
			Result{Name: "nats", Status: Skip, Message: "not checked: the shared settings are invalid", Fix: fix},
			Result{Name: "redis", Status: Skip, Message: "not checked: the shared settings are invalid", Fix: fix})
	}
	return NewReport(out)
}

// NewReport computes the overall status of results.
func NewReport(results []Result) Report {
	r := Report{Checks: results, Overall: OK}
	for _, c := range results {
		if c.Status.rank() > r.Overall.rank() {
			r.Overall = c.Status
		}
	}
	return r
}

// configResults turns the problems of reading the configuration into
// failed checks, each under the check it belongs to when it names one (an
// APIv3 key of the wrong length is the apiv3_key check), else under
// configuration. The messages come from package config and already name
// the setting and say what to do.
func configResults(err error) []Result {
	if err == nil {
		return nil
	}
	var out []Result
	for _, e := range flatten(err) {
		msg := e.Error()
		r := Result{Name: "configuration", Status: Fail, Message: msg,
			Fix: "correct the setting named above; the ingress refuses to start until it is fixed"}
		lower := strings.ToLower(msg)
		switch {
		case strings.Contains(lower, "apiv3 key"):
			r.Name = "apiv3_key"
			r.Fix = apiv3Fix
		case strings.Contains(lower, "api v2 key"):
			r.Name = "apiv2_key"
			r.Fix = apiv2Fix
		case strings.Contains(msg, "must start with PUB_KEY_ID_"):
			r.Name = "public_key_id"
			r.Fix = publicKeyIDFix
		}
		out = append(out, r)
	}
	return out
}

// flatten splits errors.Join trees into their leaves.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}
