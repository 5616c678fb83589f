package runreport

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// gateway stands in for a Pushgateway: it records each request and answers
// with status.
type gateway struct {
	*httptest.Server
	status int

	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	method, path, contentType, body string
	user, pass                      string
	hasAuth                         bool
}

func newGateway(t *testing.T, status int) *gateway {
	g := &gateway{status: status}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		user, pass, ok := r.BasicAuth()
		g.mu.Lock()
		g.reqs = append(g.reqs, recorded{r.Method, r.URL.EscapedPath(), r.Header.Get("Content-Type"), string(body), user, pass, ok})
		g.mu.Unlock()
		if g.status != http.StatusOK {
			http.Error(w, "storage is broken", g.status)
		}
	}))
	t.Cleanup(g.Close)
	return g
}

func (g *gateway) requests() []recorded {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]recorded(nil), g.reqs...)
}

func testRun() RunMetrics {
	start := time.Date(2024, 5, 1, 3, 0, 0, 0, time.UTC)
	return RunMetrics{
		Command:  "orders",
		Started:  start,
		Finished: start.Add(90 * time.Second),
		ExitCode: 0,
		Counts:   map[string]float64{"published": 12, "closed": 3},
	}
}

func TestPushPutsTheRunMetricsToTheJobGroup(t *testing.T) {
	g := newGateway(t, http.StatusOK)
	err := Push(context.Background(), g.URL, "wxpay_reconciler", map[string]string{"instance": "prod"},
		testRun().Collectors("wxpay_reconciler")...)
	if err != nil {
		t.Fatal(err)
	}
	reqs := g.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	// PUT replaces the whole group: a kind counted in an earlier run and not
	// in this one must not linger.
	if r.method != http.MethodPut {
		t.Errorf("method %s, want PUT", r.method)
	}
	if r.path != "/metrics/job/wxpay_reconciler/instance/prod" {
		t.Errorf("path %s, want /metrics/job/wxpay_reconciler/instance/prod", r.path)
	}
	if !strings.HasPrefix(r.contentType, "text/plain") {
		t.Errorf("content type %q, want the text format", r.contentType)
	}
	for _, line := range []string{
		`wxpay_reconciler_last_run_start_timestamp_seconds{command="orders"} 1.7145324e+09`,
		`wxpay_reconciler_last_run_duration_seconds{command="orders"} 90`,
		`wxpay_reconciler_last_run_exit_code{command="orders"} 0`,
		`wxpay_reconciler_last_run_success{command="orders"} 1`,
		`wxpay_reconciler_last_run_items{command="orders",kind="closed"} 3`,
		`wxpay_reconciler_last_run_items{command="orders",kind="published"} 12`,
	} {
		if !strings.Contains(r.body, line+"\n") {
			t.Errorf("body lacks %q:\n%s", line, r.body)
		}
	}
}

func TestFailedRunReportsExitCodeAndNoSuccess(t *testing.T) {
	g := newGateway(t, http.StatusOK)
	m := testRun()
	m.ExitCode = 2
	m.Counts = nil
	if err := Push(context.Background(), g.URL, "j", nil, m.Collectors("ns")...); err != nil {
		t.Fatal(err)
	}
	body := g.requests()[0].body
	for _, line := range []string{
		`ns_last_run_exit_code{command="orders"} 2`,
		`ns_last_run_success{command="orders"} 0`,
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("body lacks %q:\n%s", line, body)
		}
	}
	if strings.Contains(body, "last_run_items") {
		t.Errorf("no counts, yet an items gauge:\n%s", body)
	}
	if g.requests()[0].path != "/metrics/job/j" {
		t.Errorf("path %s, want /metrics/job/j", g.requests()[0].path)
	}
}

func TestCredentialsInTheURLAreSentButNeverShown(t *testing.T) {
	g := newGateway(t, http.StatusInternalServerError)
	u := strings.Replace(g.URL, "http://", "http://pusher:s3cret-pw@", 1)
	err := Push(context.Background(), u, "wxpay_reconciler", nil, testRun().Collectors("ns")...)
	if err == nil {
		t.Fatal("a 500 answer gave no error")
	}
	r := g.requests()[0]
	if !r.hasAuth || r.user != "pusher" || r.pass != "s3cret-pw" {
		t.Errorf("basic auth sent: %v %q %q, want pusher/s3cret-pw", r.hasAuth, r.user, r.pass)
	}
	msg := err.Error()
	if strings.Contains(msg, "s3cret-pw") {
		t.Errorf("the password appears in the error: %s", msg)
	}
	for _, want := range []string{"500 Internal Server Error", "storage is broken", "pusher:xxxxx@", "wxpay_reconciler", "Pushgateway listens there"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
}

func TestRefusedConnectionSaysWhatToCheck(t *testing.T) {
	// A port that was listening a moment ago and no longer is.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	err = Push(context.Background(), "http://pusher:s3cret-pw@"+addr, "wxpay_reconciler", nil, testRun().Collectors("ns")...)
	if err == nil {
		t.Fatal("pushing to a closed port gave no error")
	}
	msg := err.Error()
	if strings.Contains(msg, "s3cret-pw") {
		t.Errorf("the password appears in the error: %s", msg)
	}
	for _, want := range []string{"connection refused", addr, "check the Pushgateway URL", "Pushgateway listens there"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
}

func TestPushGivesUpAfterTheTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	// The caller's own deadline is a backstop, so that a push without its
	// timeout fails this test rather than hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	err := PushOptions{Timeout: 100 * time.Millisecond}.Push(ctx, srv.URL, "j", nil, testRun().Collectors("ns")...)
	if err == nil {
		t.Fatal("a Pushgateway that never answers gave no error")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("push took %s with a 100ms timeout", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("errors.Is(err, context.DeadlineExceeded) = false for %v", err)
	}
	if !strings.Contains(err.Error(), "no answer within 100ms") {
		t.Errorf("error %q does not say how long it waited", err)
	}
}

func TestBadPushURLsAreRefusedBeforeSending(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"", "no Pushgateway URL"},
		{"ftp://gw:9091", `scheme "ftp"`},
		{"http://u:s3cret-pw@gw:9091/metrics/job/x", "remove /metrics/job"},
		{"http://u:s3cret-pw@gw:9091?token=1", "query"},
		{"http://u:s3cret-pw@gw:9091/%zz", "not a URL"},
	} {
		err := Push(context.Background(), tc.url, "j", nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Push(%q) = %v, want an error about %q", tc.url, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "s3cret-pw") {
			t.Errorf("the password appears in the error: %v", err)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://gw:9091":              "http://gw:9091",
		"http://u:pw@gw:9091":         "http://u:xxxxx@gw:9091",
		"https://token@gw/prefix":     "https://xxxxx@gw/prefix",
		"gw:9091":                     "gw:9091",
		"u:pw@gw:9091":                "xxxxx@gw:9091",
		"http://u:pw@gw:9091/%zz":     "(invalid URL)",
		"http://u:p%40ss@gw:9091/pre": "http://u:xxxxx@gw:9091/pre",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCollectorsLabelEveryGaugeWithTheCommand(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(testRun().Collectors("ns")...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
		for _, m := range mf.GetMetric() {
			found := false
			for _, l := range m.GetLabel() {
				found = found || (l.GetName() == "command" && l.GetValue() == "orders")
			}
			if !found {
				t.Errorf("%s %v lacks command=\"orders\"", mf.GetName(), m.GetLabel())
			}
		}
	}
	for _, name := range []string{
		"ns_last_run_start_timestamp_seconds", "ns_last_run_duration_seconds",
		"ns_last_run_exit_code", "ns_last_run_success", "ns_last_run_items",
	} {
		if !got[name] {
			t.Errorf("no %s among %v", name, got)
		}
	}
}
