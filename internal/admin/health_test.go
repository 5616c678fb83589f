package admin

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// serveAdmin starts the admin handler on a loopback port with the given
// readiness checks and returns the port.
func serveAdmin(t *testing.T, checks ...Check) string {
	t.Helper()
	srv, addr, err := Listen("127.0.0.1:0", Handler(prometheus.NewRegistry(), checks...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(addr)
	return port
}

var errUsage = errors.New("usage")

func runHealth(args []string, env map[string]string) (string, error) {
	var out bytes.Buffer
	err := RunHealth(context.Background(), "worker", errUsage, args, func(k string) string { return env[k] }, &out)
	return out.String(), err
}

func TestHealthExitsZeroOnlyWhenReady(t *testing.T) {
	started := NewFlag("consumer not started yet")
	port := serveAdmin(t, started.Check)
	// The container sets ADMIN_ADDR=:PORT for the command; health reads the
	// same variable and reaches it on loopback.
	env := map[string]string{"ADMIN_ADDR": ":" + port}

	_, err := runHealth(nil, env)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "consumer not started yet") {
		t.Fatalf("health before ready: %v, want an error with 503 and the failing check", err)
	}
	if out, err := runHealth([]string{"--live"}, env); err != nil || out != "ok\n" {
		t.Fatalf("health --live while not ready: %q, %v; want ok (alive)", out, err)
	}
	started.Set()
	if out, err := runHealth(nil, env); err != nil || out != "ready\n" {
		t.Fatalf("health once ready: %q, %v; want ready", out, err)
	}
	// The flag wins over the variable; 0.0.0.0 is reached on loopback.
	if _, err := runHealth([]string{"--admin-addr", "0.0.0.0:" + port}, map[string]string{"ADMIN_ADDR": "127.0.0.1:1"}); err != nil {
		t.Fatalf("health --admin-addr 0.0.0.0:%s: %v", port, err)
	}
}

func TestHealthNamesWhatToCheckWhenNothingListens(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = runHealth(nil, map[string]string{"ADMIN_ADDR": addr})
	if err == nil || errors.Is(err, errUsage) || !strings.Contains(err.Error(), "ADMIN_ADDR") {
		t.Fatalf("health with nothing listening: %v, want a failure that points at ADMIN_ADDR", err)
	}
}

func TestHealthRejectsBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, map[string]string{"ADMIN_ADDR": "9090"}, "ADMIN_ADDR"},
		{[]string{"--timeout", "0s"}, nil, "--timeout"},
		{[]string{"extra"}, nil, "unexpected arguments"},
		{[]string{"--nope"}, nil, "nope"},
	} {
		_, err := runHealth(tc.args, tc.env)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("health %q env %v: %v, want a usage error naming %q", tc.args, tc.env, err, tc.want)
		}
	}
	if out, err := runHealth([]string{"--help"}, nil); err != nil || !strings.Contains(out, "usage: worker health") {
		t.Errorf("health --help: %q, %v", out, err)
	}
}
