package handlers

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/webhook"
)

var forwardSecret = []byte("0123456789abcdef-secret")

// forwardNow is the forward handler's clock in these tests.
var forwardNow = time.Date(2024, 3, 1, 1, 30, 0, 0, time.UTC)

// receiver is a test endpoint that records what reaches it.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	requests []*http.Request
	bodies   [][]byte
	answer   func(w http.ResponseWriter, r *http.Request)
}

func newReceiver(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	rc := &receiver{answer: answer}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.requests, rc.bodies = append(rc.requests, r), append(rc.bodies, b)
		rc.mu.Unlock()
		rc.answer(w, r)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) got() ([]*http.Request, [][]byte) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]*http.Request(nil), rc.requests...), append([][]byte(nil), rc.bodies...)
}

func newForward(t *testing.T, cfg ForwardConfig) *Forward {
	t.Helper()
	if cfg.Secret == nil {
		cfg.Secret = forwardSecret
	}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return forwardNow }
	}
	f, err := NewForward(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestForwardPostsSignedEnvelope(t *testing.T) {
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	f := newForward(t, ForwardConfig{URL: rc.URL + "/hooks/wxpay"})
	ev := envelope("TRANSACTION.SUCCESS", `{"out_trade_no":"T1"}`)
	if err := f.HandleEvent(ctx, ev); err != nil {
		t.Fatalf("got %v, want success on 204", err)
	}
	reqs, bodies := rc.got()
	if len(reqs) != 1 {
		t.Fatalf("got %d requests, want 1", len(reqs))
	}
	r, body := reqs[0], bodies[0]
	if r.Method != http.MethodPost || r.URL.Path != "/hooks/wxpay" {
		t.Fatalf("got %s %s, want POST /hooks/wxpay", r.Method, r.URL.Path)
	}
	if got := r.Header.Get("Content-Type"); got != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", got)
	}
	if got := r.Header.Get("Idempotency-Key"); got != ev.DedupeKey {
		t.Fatalf("Idempotency-Key %q, want %q", got, ev.DedupeKey)
	}
	// The signature, computed as a receiver in any language would: "v1="
	// and the hex HMAC-SHA256 over "<timestamp>.<body>".
	ts := r.Header.Get("Wxpay-Notify-Timestamp")
	if ts != strconv.FormatInt(forwardNow.Unix(), 10) {
		t.Fatalf("timestamp %q, want %d", ts, forwardNow.Unix())
	}
	mac := hmac.New(sha256.New, forwardSecret)
	mac.Write([]byte(ts + "." + string(body)))
	if got, want := r.Header.Get("Wxpay-Notify-Signature"), "v1="+hex.EncodeToString(mac.Sum(nil)); got != want {
		t.Fatalf("signature %q, want %q", got, want)
	}
	if err := webhook.Verify(forwardSecret, r.Header, body, 0, forwardNow); err != nil {
		t.Fatalf("receiver cannot verify: %v", err)
	}
	var back events.Envelope
	if err := json.Unmarshal(body, &back); err != nil || back.DedupeKey != ev.DedupeKey || string(back.Resource) != `{"out_trade_no":"T1"}` {
		t.Fatalf("body %s (%v), want the envelope", body, err)
	}
}

func TestForwardClassifiesAnswers(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		retryAfter string
		permanent  bool
		delay      time.Duration // a RetryAfterError's delay; 0: none
	}{
		{name: "200", status: 200},
		{name: "202", status: 202},
		{name: "204", status: 204},
		{name: "408", status: 408},
		{name: "429", status: 429},
		{name: "429 Retry-After seconds", status: 429, retryAfter: "7", delay: 7 * time.Second},
		{name: "429 Retry-After capped", status: 429, retryAfter: "86400", delay: time.Hour},
		{name: "500", status: 500},
		{name: "502", status: 502},
		{name: "503", status: 503},
		{name: "503 Retry-After date", status: 503, retryAfter: forwardNow.Add(90 * time.Second).Format(http.TimeFormat), delay: 90 * time.Second},
		{name: "504", status: 504},
		{name: "300", status: 300, permanent: true},
		{name: "301", status: 301, permanent: true},
		{name: "302", status: 302, permanent: true},
		{name: "304", status: 304, permanent: true},
		{name: "307", status: 307, permanent: true},
		{name: "400", status: 400, permanent: true},
		{name: "401", status: 401, permanent: true},
		{name: "403", status: 403, permanent: true},
		{name: "404", status: 404, permanent: true},
		{name: "409", status: 409, permanent: true},
		{name: "422", status: 422, permanent: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.WriteHeader(tc.status)
			})
			f := newForward(t, ForwardConfig{URL: rc.URL})
			err := f.HandleEvent(ctx, envelope("TRANSACTION.SUCCESS", `{"out_trade_no":"T1"}`))
			if tc.status < 300 {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
				return
			}
			if err == nil || events.IsPermanent(err) != tc.permanent {
				t.Fatalf("got %v, want an error with permanent=%v", err, tc.permanent)
			}
			var ra *events.RetryAfterError
			switch {
			case tc.delay > 0 && (!errors.As(err, &ra) || ra.Delay != tc.delay):
				t.Fatalf("got %v, want a retry after %s", err, tc.delay)
			case tc.delay == 0 && errors.As(err, &ra):
				t.Fatalf("got a retry after %s, want the router's backoff", ra.Delay)
			}
		})
	}
}

// A receiver that redirects never got the event: the redirect is not
// followed, and the event is dead-lettered with where it pointed, so the
// operator fixes FORWARD_URL.
func TestForwardDoesNotFollowRedirects(t *testing.T) {
	for _, code := range []int{301, 302, 303, 307, 308} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			t.Parallel()
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/hooks" {
					http.Redirect(w, r, "/moved/hooks?token=redirect-s3cret", code)
				}
			})
			// Also when the caller's client would follow redirects. It
			// has a transport of its own: on http.DefaultTransport, a
			// parallel subtest's httptest.Server.Close (which closes
			// that transport's idle connections) could break this
			// request's reused connection.
			own := &http.Transport{}
			t.Cleanup(own.CloseIdleConnections)
			for _, client := range []*http.Client{nil, {Transport: own}} {
				f := newForward(t, ForwardConfig{URL: rc.URL + "/hooks", HTTPClient: client})
				err := f.HandleEvent(ctx, envelope("TRANSACTION.SUCCESS", `{"out_trade_no":"T1"}`))
				if !events.IsPermanent(err) {
					t.Fatalf("got %v, want a permanent error", err)
				}
				if msg := err.Error(); !strings.Contains(msg, "redirected") || !strings.Contains(msg, rc.URL+"/moved/hooks") || strings.Contains(msg, "redirect-s3cret") {
					t.Fatalf("error %q: want it to say the receiver redirected to %s/moved/hooks, without the query", msg, rc.URL)
				}
			}
			reqs, _ := rc.got()
			for _, r := range reqs {
				if r.URL.Path != "/hooks" {
					t.Fatalf("the redirect was followed: %s %s", r.Method, r.URL)
				}
			}
			if len(reqs) != 2 {
				t.Fatalf("got %d requests, want 2 (one per client)", len(reqs))
			}
		})
	}
}

// FORWARD_URL's user info and query often hold credentials: no error text
// (logged, and the dead letter's Wxpay-Dlq-Reason) shows them.
func TestForwardErrorsHideCredentials(t *testing.T) {
	const password, token = "hunter2-pw", "s3cret-token"
	withSecrets := func(base string) string {
		return strings.Replace(base, "http://", "http://ops:"+password+"@", 1) + "/hooks?token=" + token
	}
	leaks := func(t *testing.T, err error) {
		t.Helper()
		if err == nil {
			t.Fatal("got success, want an error")
		}
		if msg := err.Error(); strings.Contains(msg, password) || strings.Contains(msg, token) {
			t.Fatalf("error text shows a credential: %s", msg)
		}
	}
	ev := envelope("TRANSACTION.SUCCESS", `{"out_trade_no":"T1"}`)

	t.Run("connection refused", func(t *testing.T) {
		gone := httptest.NewServer(http.NotFoundHandler())
		gone.Close()
		err := newForward(t, ForwardConfig{URL: withSecrets(gone.URL)}).HandleEvent(ctx, ev)
		leaks(t, err)
		if events.IsPermanent(err) {
			t.Fatalf("got %v, want a retryable error", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		defer close(release)
		err := newForward(t, ForwardConfig{URL: withSecrets(rc.URL), Timeout: 50 * time.Millisecond}).HandleEvent(ctx, ev)
		leaks(t, err)
		if events.IsPermanent(err) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want a retryable timeout", err)
		}
	})
	for _, code := range []int{302, 404, 500} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
				if code == 302 {
					w.Header().Set("Location", r.URL.String()) // the path and query as received
				}
				w.WriteHeader(code)
			})
			err := newForward(t, ForwardConfig{URL: withSecrets(rc.URL)}).HandleEvent(ctx, ev)
			leaks(t, err)
			if reqs, _ := rc.got(); len(reqs) != 1 || reqs[0].URL.Query().Get("token") != token {
				t.Fatalf("the receiver did not get the query: %v", reqs)
			}
		})
	}
	t.Run("config error", func(t *testing.T) {
		_, err := NewForward(ForwardConfig{URL: "ftp://ops:" + password + "@example.com/?token=" + token, Secret: forwardSecret})
		leaks(t, err)
	})
}

func TestNewForwardRejectsBadConfig(t *testing.T) {
	for _, cfg := range []ForwardConfig{
		{URL: "ftp://x", Secret: make([]byte, 32)},
		{URL: "http://", Secret: make([]byte, 32)},
		{URL: "x", Secret: make([]byte, 32)},
		{URL: "http://x", Secret: []byte("short")},
	} {
		if _, err := NewForward(cfg); err == nil {
			t.Fatalf("accepted URL %q with a %d-byte secret", cfg.URL, len(cfg.Secret))
		}
	}
}

// A retryable error's text becomes the dead letter's reason
// (Wxpay-Dlq-Reason, `worker dlq list`) when the last attempt fails, so it
// says what happened and not what happens next: whether the event is
// retried is the router's decision, and its log line says so.
func TestRetryableErrorsDoNotPromiseARetry(t *testing.T) {
	ev := envelope("TRANSACTION.SUCCESS", `{"out_trade_no":"T1"}`)
	check := func(t *testing.T, err error) {
		t.Helper()
		if err == nil || events.IsPermanent(err) {
			t.Fatalf("got %v, want a retryable error", err)
		}
		if strings.Contains(strings.ToLower(err.Error()), "will retry") {
			t.Errorf("error text %q says it will be retried, which the router decides", err)
		}
	}
	for _, tc := range []struct {
		code       int
		retryAfter string
	}{{408, ""}, {429, ""}, {429, "0"}, {500, ""}, {503, "5"}} {
		t.Run(strconv.Itoa(tc.code)+" "+tc.retryAfter, func(t *testing.T) {
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.WriteHeader(tc.code)
			})
			check(t, newForward(t, ForwardConfig{URL: rc.URL}).HandleEvent(ctx, ev))
		})
	}
	t.Run("connection refused", func(t *testing.T) {
		gone := httptest.NewServer(http.NotFoundHandler())
		gone.Close()
		check(t, newForward(t, ForwardConfig{URL: gone.URL}).HandleEvent(ctx, ev))
	})
	t.Run("tracker: redis down", func(t *testing.T) {
		down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
		defer down.Close()
		check(t, NewTracker(down, TrackerConfig{}).HandleEvent(ctx, envelope("ORDER.CREATED", `{"out_trade_no":"T1"}`)))
	})
}

// A receiver answering 429 with "Retry-After: 0" on every attempt does not
// use up the event's attempts within moments: each retry waits at least the
// router's backoff.
func TestForwardRetryAfterZeroKeepsBackoff(t *testing.T) {
	const maxDeliver, retryBase = 3, 300 * time.Millisecond
	var mu sync.Mutex
	var posts []time.Time
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		posts = append(posts, time.Now())
		mu.Unlock()
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(http.StatusTooManyRequests)
	})
	f := newForward(t, ForwardConfig{URL: rc.URL, Now: time.Now})

	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	ns := testenv.StartNATS(t)
	_, js := testenv.Connect(t, ns.URL)
	if _, err := events.EnsureStreams(tctx, js, events.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	opt, err := redis.ParseURL(testenv.StartRedis(t).URL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	r, err := events.NewRouter(js, rdb, events.RouterConfig{
		Consumer: "forward", AckWait: 5 * time.Second, MaxDeliver: maxDeliver,
		RetryBase: retryBase, RetryMax: retryBase,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.Handle("wxpay.>", f)
	runCtx, stop := context.WithCancel(tctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	defer func() {
		stop()
		<-done
	}()
	ev := envelope("TRANSACTION.SUCCESS", `{"out_trade_no":"T1"}`)
	if _, err := events.NewPublisher(js, events.PublisherConfig{}).Publish(tctx, ev); err != nil {
		t.Fatal(err)
	}
	for {
		dls, err := events.ListDeadLetters(tctx, js, events.DLQFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(dls) > 0 {
			break
		}
		if tctx.Err() != nil {
			t.Fatal("the event was not dead-lettered")
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(posts) != maxDeliver {
		t.Fatalf("the receiver got %d POSTs, want %d", len(posts), maxDeliver)
	}
	for i := 1; i < len(posts); i++ {
		if gap := posts[i].Sub(posts[i-1]); gap < retryBase*3/4 {
			t.Errorf("attempt %d came %v after the previous one, want at least the backoff %v", i+1, gap, retryBase)
		}
	}
}

// TestForwardReusesConnections: a worker forwarding as many events at once as
// its default concurrency dials the receiver once per concurrent call, then
// reuses those connections for the next wave instead of dialing again.
// On http.DefaultTransport's two idle connections per host it would dial 30.
func TestForwardReusesConnections(t *testing.T) {
	const wave = forwardIdleConns
	var (
		mu      sync.Mutex
		dialed  int
		arrived = make(chan struct{}, wave)
		release = make(chan struct{})
	)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		arrived <- struct{}{}
		<-release // every call of the wave is in flight at once
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			dialed++
			mu.Unlock()
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	f := newForward(t, ForwardConfig{URL: srv.URL})
	for round := 0; round < 2; round++ {
		errs := make(chan error, wave)
		for i := 0; i < wave; i++ {
			go func() {
				errs <- f.HandleEvent(context.Background(), envelope("TRANSACTION.SUCCESS", `{"out_trade_no":"T1"}`))
			}()
		}
		for i := 0; i < wave; i++ {
			<-arrived
		}
		for i := 0; i < wave; i++ {
			release <- struct{}{}
		}
		for i := 0; i < wave; i++ {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// A connection goes back to the pool just after its call returns, so a
	// call of the second wave may dial before the last one is back: allow a
	// few. Two idle connections per host (the default transport's) would
	// dial most of the second wave again.
	if dialed > wave+wave/4 {
		t.Fatalf("%d connections for two waves of %d calls, want about %d: the second wave must reuse the first's", dialed, wave, wave)
	}
}
