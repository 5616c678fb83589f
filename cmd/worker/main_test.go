package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/webhook"
)

func paidEnvelope(outTradeNo, txID string) events.Envelope {
	return events.Envelope{ID: "EV-" + txID, DedupeKey: events.TransactionKey(txID), EventType: "TRANSACTION.SUCCESS",
		MchID: "1230000109", Source: events.SourceCallback, CreateTime: "2024-03-01T10:00:00+08:00", ReceivedAt: time.Now(),
		ResourceType: "encrypt-resource", OriginalType: "transaction",
		Resource: json.RawMessage(`{"mchid":"1230000109","out_trade_no":"` + outTradeNo + `","transaction_id":"` + txID + `","trade_state":"SUCCESS","success_time":"2024-03-01T10:00:00+08:00","amount":{"total":100}}`)}
}

func TestWorkerForwardTrackerAndDLQ(t *testing.T) {
	nt := testenv.StartNATS(t)
	rs := testenv.StartRedis(t)
	_, js := testenv.Connect(t, nt.URL)
	ctx := context.Background()
	if _, err := events.EnsureStreams(ctx, js, events.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	secret := "a-forward-secret-of-32-bytes...."
	var mu sync.Mutex
	received := map[string]int{}
	refuse := map[string]bool{"T-BAD": true}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhook.Verify([]byte(secret), r.Header, body, 0, time.Now()); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var ev events.Envelope
		json.Unmarshal(body, &ev)
		var res struct {
			OutTradeNo string `json:"out_trade_no"`
		}
		json.Unmarshal(ev.Resource, &res)
		mu.Lock()
		defer mu.Unlock()
		if refuse[res.OutTradeNo] {
			http.Error(w, "unknown order", http.StatusUnprocessableEntity)
			return
		}
		received[r.Header.Get("Idempotency-Key")]++
	}))
	defer recv.Close()

	env := map[string]string{
		"NATS_URL": nt.URL, "REDIS_URL": rs.URL, "ADMIN_ADDR": "127.0.0.1:0",
		"WORKER_CONSUMER": "fulfilment", "WORKER_SUBJECTS": "wxpay.*.transaction.success",
		"WORKER_HANDLERS": "log,tracker,forward", "FORWARD_URL": recv.URL, "FORWARD_SECRET": secret,
		"WORKER_RETRY_BASE": "20ms", "WORKER_ACK_WAIT": "2s", "FORWARD_TIMEOUT": "1s",
	}
	getenv := func(k string) string { return env[k] }
	wctx, stop := context.WithCancel(ctx)
	out := &testenv.Buffer{}
	done := make(chan error, 1)
	adminAddrs := make(chan string, 1)
	go func() { done <- run(wctx, nil, getenv, out, func(a string) { adminAddrs <- a }) }()
	var adminAddr string
	select {
	case adminAddr = <-adminAddrs:
	case err := <-done:
		t.Fatalf("worker stopped: %v\n%s", err, out)
	case <-time.After(20 * time.Second):
		t.Fatal("worker did not start")
	}
	pub := events.NewPublisher(js, events.PublisherConfig{})
	for _, e := range []events.Envelope{paidEnvelope("T-1", "4200000001"), paidEnvelope("T-2", "4200000002"), paidEnvelope("T-BAD", "4200000003")} {
		if _, err := pub.Publish(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	opt, _ := redis.ParseURL(rs.URL)
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	// The ages of what the streams' max age would remove are exported.
	for _, name := range []string{`wxpay_worker_oldest_unacked_seconds{consumer="fulfilment"}`, `wxpay_dlq_oldest_seconds{consumer="fulfilment"}`} {
		waitFor(t, name, func() bool { return metric(t, adminAddr, name) >= 0 })
	}
	waitFor(t, "two events forwarded and one dead-lettered", func() bool {
		mu.Lock()
		n := len(received)
		mu.Unlock()
		dls, _ := events.ListDeadLetters(ctx, js, events.DLQFilter{})
		return n == 2 && len(dls) == 1
	})
	if v, _ := rdb.HLen(ctx, "wxpay:ledger:1230000109:20240301").Result(); v != 3 {
		t.Fatalf("ledger entries %d, want 3 (the tracker ran before forward refused T-BAD)", v)
	}

	// dlq list shows the refusal; replay after the receiver is fixed delivers it.
	var listOut bytes.Buffer
	if err := run(ctx, []string{"dlq", "list"}, getenv, &listOut, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(listOut.String(), "fulfilment") || !strings.Contains(listOut.String(), "422") || !strings.Contains(listOut.String(), "1 dead letter(s)") {
		t.Fatalf("dlq list:\n%s", listOut.String())
	}
	if err := run(ctx, []string{"dlq", "replay"}, getenv, io.Discard, nil); !errors.Is(err, errUsage) {
		t.Fatalf("replay without a filter: got %v, want a usage error", err)
	}
	mu.Lock()
	refuse["T-BAD"] = false
	mu.Unlock()
	var replayOut bytes.Buffer
	if err := run(ctx, []string{"dlq", "replay", "--consumer", "fulfilment"}, getenv, &replayOut, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(replayOut.String(), "replayed 1") {
		t.Fatalf("replay: %s", replayOut.String())
	}
	waitFor(t, "the replayed event forwarded", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return received[events.TransactionKey("4200000003")] == 1
	})
	// Duplicates of processed events are not forwarded again. The copy
	// has a Nats-Msg-Id of its own, or WXPAY's duplicate window would
	// drop it before the worker sees it.
	data, err := json.Marshal(paidEnvelope("T-1", "4200000001"))
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: events.Subject("1230000109", "TRANSACTION.SUCCESS"), Data: data}, jetstream.WithMsgID("a-copy-of-T-1"))
	if err != nil || ack.Duplicate {
		t.Fatalf("publishing a copy of T-1: %v, %+v; want it stored", err, ack)
	}
	waitFor(t, "the copy acknowledged as a duplicate, or forwarded", func() bool {
		mu.Lock()
		forwarded := received[events.TransactionKey("4200000001")]
		mu.Unlock()
		return forwarded > 1 || metric(t, adminAddr, `wxpay_worker_duplicates_total{consumer="fulfilment",event_type="transaction.success"}`) == 1
	})
	mu.Lock()
	for k, n := range received {
		if n != 1 {
			t.Errorf("%s forwarded %d times", k, n)
		}
	}
	mu.Unlock()

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("worker exit: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not stop")
	}
	if strings.Contains(out.String(), secret) {
		t.Fatal("forward secret logged")
	}
}

func TestWorkerConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"no consumer", map[string]string{}, "WORKER_CONSUMER"},
		{"unknown handler", map[string]string{"WORKER_CONSUMER": "t", "WORKER_HANDLERS": "log,email"}, "email"},
		{"forward without URL", map[string]string{"WORKER_CONSUMER": "t", "WORKER_HANDLERS": "forward", "FORWARD_SECRET": "0123456789abcdef0123"}, "FORWARD_URL"},
		{"forward without secret", map[string]string{"WORKER_CONSUMER": "t", "WORKER_HANDLERS": "forward", "FORWARD_URL": "http://x"}, "FORWARD_SECRET"},
		{"bad ack wait", map[string]string{"WORKER_CONSUMER": "t", "WORKER_ACK_WAIT": "long"}, "WORKER_ACK_WAIT"},
		{"bad redis url", map[string]string{"WORKER_CONSUMER": "t", "REDIS_URL": "http://x"}, "REDIS_URL"},
		{"bad handler timeout", map[string]string{"WORKER_CONSUMER": "t", "WORKER_HANDLER_TIMEOUT": "long", "NATS_URL": "nats://127.0.0.1:1", "REDIS_URL": "redis://127.0.0.1:1"}, "WORKER_HANDLER_TIMEOUT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := run(context.Background(), nil, func(k string) string { return tc.env[k] }, io.Discard, nil)
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a usage error naming %s", err, tc.want)
			}
		})
	}
}

// A forward call allowed as long as the handlers of a delivery, or longer,
// would be cut on every attempt while the receiver completes it: the worker
// refuses to start, naming both settings and what to raise.
func TestWorkerForwardTimeoutWithinHandlerTimeout(t *testing.T) {
	forward := map[string]string{"WORKER_CONSUMER": "t", "WORKER_HANDLERS": "log,forward",
		"FORWARD_URL": "http://127.0.0.1:1/hook", "FORWARD_SECRET": "0123456789abcdef0123", "NATS_URL": "nats://127.0.0.1:1", "REDIS_URL": "redis://127.0.0.1:1"}
	with := func(kv ...string) map[string]string {
		env := maps.Clone(forward)
		for i := 0; i < len(kv); i += 2 {
			env[kv[i]] = kv[i+1]
		}
		return env
	}
	refused := []struct {
		name string
		env  map[string]string
		args []string
	}{
		{"ack wait 3s, forward timeout by default (10s)", with("WORKER_ACK_WAIT", "3s"), nil},
		{"forward timeout over the default handler timeout", with("WORKER_ACK_WAIT", "3s", "FORWARD_TIMEOUT", "8s"), nil},
		{"forward timeout equal to the handler timeout", with("WORKER_ACK_WAIT", "10s", "WORKER_HANDLER_TIMEOUT", "5s", "FORWARD_TIMEOUT", "5s"), nil},
		{"forward timeout 0 means its default", with("WORKER_ACK_WAIT", "10s", "FORWARD_TIMEOUT", "0s"), nil},
		{"flags", with("WORKER_ACK_WAIT", "10s"), []string{"--handler-timeout", "5s", "--forward-timeout", "6s"}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			// Bounded, so that a worker that accepted the timeouts gives up
			// on the missing NATS server instead of waiting for it.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			err := run(ctx, tc.args, func(k string) string { return tc.env[k] }, io.Discard, nil)
			if !errors.Is(err, errUsage) {
				t.Fatalf("got %v, want a usage error", err)
			}
			for _, want := range []string{"FORWARD_TIMEOUT", "WORKER_HANDLER_TIMEOUT", "WORKER_ACK_WAIT", "raise"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %s", err, want)
				}
			}
		})
	}
	// Accepted: the check passes and the worker goes on to connect to
	// NATS, which is not there. A log-only worker has no forward timeout.
	accepted := []struct {
		name string
		env  map[string]string
	}{
		{"defaults", with()},
		{"forward timeout under the default handler timeout", with("WORKER_ACK_WAIT", "3s", "FORWARD_TIMEOUT", "2s")},
		{"handler timeout raised", with("WORKER_ACK_WAIT", "10s", "WORKER_HANDLER_TIMEOUT", "9500ms", "FORWARD_TIMEOUT", "9s")},
		{"no forward handler", with("WORKER_HANDLERS", "log", "WORKER_ACK_WAIT", "3s")},
	}
	for _, tc := range accepted {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			err := run(ctx, nil, func(k string) string { return tc.env[k] }, io.Discard, nil)
			if err != nil && strings.Contains(err.Error(), "FORWARD_TIMEOUT") {
				t.Fatalf("got %v, want the timeouts accepted", err)
			}
		})
	}
}

// WORKER_HANDLER_TIMEOUT is the router's: its start line reports it.
func TestWorkerHandlerTimeoutReachesRouter(t *testing.T) {
	nt := testenv.StartNATS(t)
	rs := testenv.StartRedis(t)
	for _, tc := range []struct {
		name string
		env  map[string]string
		want float64 // milliseconds
	}{
		{"set", map[string]string{"WORKER_ACK_WAIT": "2s", "WORKER_HANDLER_TIMEOUT": "1900ms"}, 1900},
		{"default", map[string]string{"WORKER_ACK_WAIT": "2s"}, 1600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"NATS_URL": nt.URL, "REDIS_URL": rs.URL, "ADMIN_ADDR": "127.0.0.1:0",
				"WORKER_CONSUMER": "timeouts-" + tc.name, "WORKER_HANDLERS": "log"}
			maps.Copy(env, tc.env)
			ctx, stop := context.WithCancel(context.Background())
			out := &testenv.Buffer{}
			done := make(chan error, 1)
			go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, out, nil) }()
			var got any
			waitFor(t, "the worker started", func() bool {
				for _, line := range strings.Split(out.String(), "\n") {
					var rec map[string]any
					if json.Unmarshal([]byte(line), &rec) == nil && rec["message"] == "worker started" {
						got = rec["handler_timeout"]
						return true
					}
				}
				return false
			})
			stop()
			if err := <-done; err != nil {
				t.Fatalf("worker exit: %v", err)
			}
			if got != tc.want {
				t.Fatalf("the router started with handler_timeout %v ms, want %v", got, tc.want)
			}
		})
	}
}

// metric returns the value of the sample named series (name{labels} as
// /metrics prints it) on the admin listener at addr, -1 when absent.
func metric(t *testing.T, addr, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return f
		}
	}
	return -1
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHandlerFlagRepeats(t *testing.T) {
	tests := []struct {
		env  string
		args []string
		want string
	}{
		{"", nil, "log"},
		{"tracker,forward", nil, "tracker,forward"},
		{"tracker", []string{"--handler", "log", "--handler", "forward"}, "log,forward"},
		{"", []string{"--handler", "log,tracker"}, "log,tracker"},
	}
	for _, tc := range tests {
		var l listFlag
		l.setDefault(tc.env, "log")
		for i := 1; i < len(tc.args); i += 2 {
			l.Set(tc.args[i])
		}
		if got := l.String(); got != tc.want {
			t.Errorf("env %q args %q: got %s, want %s", tc.env, tc.args, got, tc.want)
		}
	}
}

// The worker ensures the streams with the settings the ingress was given:
// ensuring only raises a stream's settings, so a worker on its defaults
// would set a shorter duplicate window or max age back to them.
func TestWorkerKeepsStreamSettings(t *testing.T) {
	nt := testenv.StartNATS(t)
	rs := testenv.StartRedis(t)
	_, js := testenv.Connect(t, nt.URL)
	bg := context.Background()
	want := events.StreamConfig{DuplicateWindow: 30 * time.Second, MaxAge: 24 * time.Hour}
	if _, err := events.EnsureStreams(bg, js, want); err != nil { // as the ingress does
		t.Fatal(err)
	}
	env := map[string]string{"NATS_URL": nt.URL, "REDIS_URL": rs.URL, "ADMIN_ADDR": "127.0.0.1:0",
		"WORKER_CONSUMER": "streams", "WORKER_HANDLERS": "log", "STREAM_DUPLICATE_WINDOW": "30s", "STREAM_MAX_AGE": "24h"}
	ctx, stop := context.WithCancel(bg)
	out := &testenv.Buffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, out, nil) }()
	waitFor(t, "the worker started", func() bool {
		return strings.Contains(out.String(), `"worker started"`) || strings.Contains(out.String(), `"level":"error"`)
	})
	stop()
	if err := <-done; err != nil {
		t.Fatalf("worker exit: %v", err)
	}
	st, err := js.Stream(bg, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(bg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"worker started"`) {
		t.Fatalf("the worker did not start:\n%s", out.String())
	}
	if info.Config.Duplicates != want.DuplicateWindow || info.Config.MaxAge != want.MaxAge {
		t.Fatalf("after the worker started: duplicate window %v, max age %v; want %v, %v",
			info.Config.Duplicates, info.Config.MaxAge, want.DuplicateWindow, want.MaxAge)
	}
}
