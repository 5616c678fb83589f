package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
)

// get serves one GET through h and returns the status and body.
func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
	return w.Code, w.Body.String()
}

func TestHealthzIsAlwaysOK(t *testing.T) {
	failing := func(context.Context) error { return errors.New("redis down") }
	h := Handler(prometheus.NewRegistry(), failing, NewFlag("not started").Check)
	if code, body := get(t, h, "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("got %d %q, want 200 \"ok\\n\" while dependencies fail", code, body)
	}
}

func TestReadyzWaitsForEveryCheck(t *testing.T) {
	started := NewFlag("consumer not started yet")
	var redisErr atomic.Pointer[error]
	down := errors.New("Redis: connection refused (check REDIS_URL)")
	redisErr.Store(&down)
	redis := func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); !ok {
			return errors.New("check called without a deadline")
		}
		return *redisErr.Load()
	}
	h := Handler(prometheus.NewRegistry(), started.Check, redis)

	code, body := get(t, h, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "consumer not started yet") || !strings.Contains(body, "check REDIS_URL") {
		t.Fatalf("got %d %q, want 503 naming both failing checks", code, body)
	}
	started.Set()
	started.Set() // a second Set is harmless
	code, body = get(t, h, "/readyz")
	if code != http.StatusServiceUnavailable || strings.Contains(body, "consumer not started") || !strings.Contains(body, "check REDIS_URL") {
		t.Fatalf("got %d %q, want 503 naming only the Redis check", code, body)
	}
	var ok error
	redisErr.Store(&ok)
	if code, body = get(t, h, "/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Fatalf("got %d %q, want 200 once every check passes", code, body)
	}
	// A dependency lost later makes the process not ready again.
	redisErr.Store(&down)
	if code, body = get(t, h, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "check REDIS_URL") {
		t.Fatalf("got %d %q, want 503 after Redis went away", code, body)
	}
}

func TestMetricsServesTheGatherer(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "wxpay_test_events_total", Help: "Events seen by the test."})
	reg.MustRegister(c)
	c.Add(3)
	code, body := get(t, Handler(reg), "/metrics")
	if code != http.StatusOK || !strings.Contains(body, "wxpay_test_events_total 3") {
		t.Fatalf("got %d, want the registry's counter at 3:\n%s", code, body)
	}
	if !strings.Contains(body, "go_goroutines") {
		t.Fatalf("want the Go collector's metrics:\n%s", body)
	}
}

func TestNATSReady(t *testing.T) {
	srv := testenv.StartNATS(t)
	nc, js := testenv.Connect(t, srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	check := NATSReady(nc, js, "ADMIN_READY_A", "ADMIN_READY_B")
	if err := check(ctx); err == nil || !strings.Contains(err.Error(), "ADMIN_READY_A") {
		t.Fatalf("got %v, want the missing stream named", err)
	}
	for _, name := range []string{"ADMIN_READY_A", "ADMIN_READY_B"} {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{strings.ToLower(name) + ".>"}, Storage: jetstream.MemoryStorage})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { js.DeleteStream(context.Background(), name) })
	}
	if err := check(ctx); err != nil {
		t.Fatalf("got %v, want ready with both streams", err)
	}
	nc.Close()
	if err := check(ctx); err == nil || !strings.Contains(err.Error(), "NATS not connected") {
		t.Fatalf("got %v, want not connected", err)
	}
}

func TestListenServes(t *testing.T) {
	srv, addr, err := Listen("127.0.0.1:0", Handler(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Fatalf("got %d %q, want 200 ok from %s", resp.StatusCode, body, addr)
	}
	// The address in use: an error that names the listener.
	if _, _, err := Listen(addr, http.NotFoundHandler()); err == nil || !strings.Contains(err.Error(), "admin listener "+addr) {
		t.Fatalf("got %v, want an error naming the admin listener", err)
	}
}
