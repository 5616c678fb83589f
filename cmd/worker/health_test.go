package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
)

// `worker health` is the container health check: it exits 0 (nil) only
// while the running worker is ready, with the same ADMIN_ADDR.
func TestHealthSubcommandFollowsReadiness(t *testing.T) {
	nt := testenv.StartNATS(t)
	rs := testenv.StartRedis(t)
	env := map[string]string{"NATS_URL": nt.URL, "REDIS_URL": rs.URL, "ADMIN_ADDR": "127.0.0.1:0",
		"WORKER_CONSUMER": "health", "WORKER_HANDLERS": "log"}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	out := &testenv.Buffer{}
	done := make(chan error, 1)
	addrs := make(chan string, 1)
	go func() {
		done <- run(ctx, nil, func(k string) string { return env[k] }, out, func(a string) { addrs <- a })
	}()
	var adminAddr string
	select {
	case adminAddr = <-addrs:
	case err := <-done:
		t.Fatalf("worker stopped: %v\n%s", err, out)
	case <-time.After(20 * time.Second):
		t.Fatal("worker did not start")
	}
	health := func(args ...string) (string, error) {
		var b bytes.Buffer
		err := run(context.Background(), append([]string{"health", "--admin-addr", adminAddr}, args...), func(string) string { return "" }, &b, nil)
		return b.String(), err
	}
	waitFor(t, "worker health to pass", func() bool { _, err := health(); return err == nil })
	if _, err := health("--bogus"); !errors.Is(err, errUsage) {
		t.Fatalf("worker health --bogus: %v, want a usage error (exit 2)", err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("worker exit: %v\n%s", err, out)
	}
	if _, err := health(); err == nil || !strings.Contains(err.Error(), "ADMIN_ADDR") {
		t.Fatalf("worker health after shutdown: %v, want a failure pointing at ADMIN_ADDR", err)
	}
}
