package runreport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"

	"github.com/wxpay-notify/wxpay-notify/internal/config"
)

// DefaultPushTimeout bounds a push: a run must not hang at its very end on a
// Pushgateway that does not answer.
const DefaultPushTimeout = 10 * time.Second

// textFormat is the content type of the Prometheus text exposition format
// (expfmt.FmtText). The push package sends protobuf by default; text is
// accepted by every Pushgateway and can be read in a capture.
const textFormat = "text/plain; version=0.0.4; charset=utf-8"

// checkHint ends every error about reaching the Pushgateway.
const checkHint = "check the Pushgateway URL (scheme, host and port, without /metrics) and that a Pushgateway listens there"

// PushOptions configures Push. The zero value pushes with a fresh
// http.Client and DefaultPushTimeout.
type PushOptions struct {
	// Timeout bounds the whole push; 0 means DefaultPushTimeout.
	Timeout time.Duration
	// Client sends the request; nil means a new http.Client. Its own
	// Timeout, if any, applies as well.
	Client *http.Client
}

// Push replaces the group of job and grouping on the Pushgateway at url
// with the metrics of cs, with the default options.
func Push(ctx context.Context, url, job string, grouping map[string]string, cs ...prometheus.Collector) error {
	return PushOptions{}.Push(ctx, url, job, grouping, cs...)
}

// Push replaces the group of job and grouping on the Pushgateway at url
// (http://host:9091, without /metrics) with the metrics of cs: it is an HTTP
// PUT to /metrics/job/<job>/<label>/<value>..., so metrics an earlier run
// pushed to the same group and this run did not are removed. The metrics
// must not carry a job label or a label named in grouping.
//
// Credentials may be given in the URL (http://user:password@host:9091);
// errors never show the password.
func (o PushOptions) Push(ctx context.Context, rawURL, job string, grouping map[string]string, cs ...prometheus.Collector) error {
	if rawURL == "" {
		return errors.New("no Pushgateway URL: set it to the address of a Pushgateway, for example http://pushgateway:9091")
	}
	shown := redactURL(rawURL)
	if err := CheckPushURL(rawURL); err != nil {
		return fmt.Errorf("Pushgateway URL %s: %w", shown, err)
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = DefaultPushTimeout
	}
	client := o.Client
	if client == nil {
		client = &http.Client{}
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()

	doer := &recordingDoer{c: client}
	p := push.New(rawURL, job).Client(doer).Format(textFormat)
	keys := make([]string, 0, len(grouping))
	for k := range grouping {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p.Grouping(k, grouping[k])
	}
	for _, c := range cs {
		p.Collector(c)
	}
	err := p.PushContext(ctx)
	if err == nil {
		return nil
	}

	what := fmt.Sprintf("pushing metrics of job %q to the Pushgateway at %s", job, shown)
	var ue *url.Error
	switch {
	case doer.status != 0 && doer.status != http.StatusOK && doer.status != http.StatusAccepted:
		// The push package's own message repeats the full URL, password
		// included; it is rebuilt from what the server answered.
		msg := fmt.Sprintf("%s: the server answered %s", what, doer.statusLine)
		if body := firstLine(doer.body); body != "" {
			msg += " (" + body + ")"
		}
		return &pushError{msg: redactIn(msg+"; "+checkHint, rawURL, shown)}
	case errors.As(err, &ue):
		// net/http's *url.Error repeats the URL; its cause alone says what
		// went wrong (connection refused, no such host, deadline).
		cause := ue.Err.Error()
		if ctx.Err() != nil && parent.Err() == nil {
			cause = fmt.Sprintf("no answer within %s", timeout)
		}
		return &pushError{
			msg:   redactIn(fmt.Sprintf("%s: %s; %s", what, cause, checkHint), rawURL, shown),
			cause: contextCause(err),
		}
	default:
		// Nothing was sent: the job name or the metrics are wrong.
		return &pushError{msg: redactIn(fmt.Sprintf("%s: %v", what, err), rawURL, shown)}
	}
}

// pushError carries a message with the credentials removed. It unwraps only
// to a context error, so that errors.Is(err, context.DeadlineExceeded)
// works without exposing an error whose text holds the URL.
type pushError struct {
	msg   string
	cause error
}

func (e *pushError) Error() string { return e.msg }
func (e *pushError) Unwrap() error { return e.cause }

func contextCause(err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return context.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return context.Canceled
	}
	return nil
}

// recordingDoer keeps the status and the start of the body of a non-2xx
// answer, for an error message built without the URL.
type recordingDoer struct {
	c          *http.Client
	status     int
	statusLine string
	body       []byte
}

func (d *recordingDoer) Do(req *http.Request) (*http.Response, error) {
	resp, err := d.c.Do(req)
	if err != nil {
		return nil, err
	}
	d.status, d.statusLine = resp.StatusCode, resp.Status
	if resp.StatusCode/100 != 2 {
		d.body, _ = io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(d.body))
	}
	return resp, nil
}

// CheckPushURL refuses URLs the push package would turn into a wrong
// request path: it appends /metrics/job/... to the URL as a string.
func CheckPushURL(raw string) error {
	s := raw
	if !strings.Contains(s, "://") {
		s = "http://" + s // as push.New does
	}
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text repeats the URL, password included
		}
		return fmt.Errorf("not a URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("scheme %q, want http:// or https://", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("no host")
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return errors.New("a query or fragment cannot be used: give only scheme, host, port and an optional path prefix")
	}
	if strings.Contains(u.Path, "/metrics/job") {
		return errors.New("remove /metrics/job/...: the job and grouping labels are added to the URL when pushing")
	}
	return nil
}

// redactURL masks the password of a URL, as everywhere in the commands.
func redactURL(s string) string { return config.RedactURL(s) }

// redactIn replaces the raw URL, and its user info alone, in msg: a last
// guard for texts that come from outside this package.
func redactIn(msg, raw, shown string) string {
	if raw == shown {
		return msg
	}
	msg = strings.ReplaceAll(msg, raw, shown)
	rest := raw
	if i := strings.Index(rest, "://"); i >= 0 {
		rest = rest[i+3:]
	}
	if at := strings.LastIndex(rest, "@"); at > 0 {
		if slash := strings.Index(rest, "/"); slash < 0 || at < slash {
			msg = strings.ReplaceAll(msg, rest[:at+1], "xxxxx@")
		}
	}
	return msg
}

// firstLine is the first line of a server's answer, trimmed and short.
func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// RunMetrics is what a CronJob run reports: when it started and finished,
// how it ended, and how many items of each kind it handled.
type RunMetrics struct {
	// Command names the run (the subcommand: "orders", "refunds").
	Command string
	// Started and Finished bound the run. A zero Finished means now.
	Started, Finished time.Time
	// ExitCode is the process's exit code; 0 is success.
	ExitCode int
	// Counts are items by kind ("published", "closed", "failed").
	Counts map[string]float64
}

// Collectors returns the gauges of the run, each labeled command=<Command>:
//
//	<ns>_last_run_start_timestamp_seconds
//	<ns>_last_run_duration_seconds
//	<ns>_last_run_exit_code
//	<ns>_last_run_success            1 when ExitCode is 0, else 0
//	<ns>_last_run_items{kind="..."}  one per entry of Counts
//
// They are meant for Push: "last run" because each push replaces the
// previous run's values. As a push replaces its whole group, runs of
// different commands must push to different groups (a job name per command,
// or a grouping label such as {"subcommand": "orders"}); the grouping cannot
// use the label name command, which these gauges already carry.
func (m RunMetrics) Collectors(namespace string) []prometheus.Collector {
	labels := prometheus.Labels{"command": m.Command}
	gauge := func(name, help string, v float64) prometheus.Collector {
		g := prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: name, Help: help, ConstLabels: labels,
		})
		g.Set(v)
		return g
	}
	finished := m.Finished
	if finished.IsZero() {
		finished = time.Now()
	}
	success := 0.0
	if m.ExitCode == 0 {
		success = 1
	}
	cs := []prometheus.Collector{
		gauge("last_run_start_timestamp_seconds", "Start of the last run, in seconds since the Unix epoch.",
			float64(m.Started.UnixNano())/1e9),
		gauge("last_run_duration_seconds", "How long the last run took.", finished.Sub(m.Started).Seconds()),
		gauge("last_run_exit_code", "Exit code of the last run; 0 is success.", float64(m.ExitCode)),
		gauge("last_run_success", "1 if the last run succeeded (exit code 0), else 0.", success),
	}
	if len(m.Counts) > 0 {
		items := prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "last_run_items", Help: "Items the last run handled, by kind.",
			ConstLabels: labels,
		}, []string{"kind"})
		for kind, n := range m.Counts {
			items.WithLabelValues(kind).Set(n)
		}
		cs = append(cs, items)
	}
	return cs
}
