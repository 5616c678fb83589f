package config

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
)

// logLines decodes JSON log lines; a line that is not JSON fails the test.
func logLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		lines = append(lines, m)
	}
	return lines
}

// The commands' logger receives go-redis's own lines: JSON at warn level,
// not plain text on stderr.
func TestNewLoggerRoutesRedisLogs(t *testing.T) {
	var out testenv.Buffer
	if _, err := NewLogger(Common{LogLevel: "info", LogFormat: "json"}, "worker", "v1", &out); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { RouteRedisLogs(zerolog.Nop()) })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: go-redis logs its failed dial
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1, DialTimeout: 5 * time.Second})
	defer rdb.Close()
	if err := rdb.Ping(context.Background()).Err(); err == nil {
		t.Fatal("Ping succeeded with nothing listening")
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "failed to dial") {
		if time.Now().After(deadline) {
			t.Fatalf("no go-redis line in the log: %q", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, l := range logLines(t, out.String()) {
		if l["level"] != "warn" || l["component"] != "go-redis" || l["service"] != "worker" {
			t.Fatalf("got %v, want level warn, component go-redis and service worker", l)
		}
	}
}

// A burst of the same failure is one line per interval, with the count of
// the lines left out.
func TestRedisLogsRateLimited(t *testing.T) {
	var out testenv.Buffer
	now := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	l := newRedisLogger(zerolog.New(&out), 10*time.Second, clock)
	dialFailed := func(i int) {
		l.Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts: %v", 1+i%5,
			fmt.Errorf("dial tcp 10.0.0.7:%d: connect: connection refused", 6379+i%3))
	}

	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() { defer wg.Done(); dialFailed(i) }()
	}
	wg.Wait()
	l.Printf(context.Background(), "redis: %s", "another failure") // its own budget
	lines := logLines(t, out.String())
	if len(lines) != 2 {
		t.Fatalf("got %d lines for a burst of 100 and one other, want 2:\n%s", len(lines), out.String())
	}
	if msg, _ := lines[0]["message"].(string); !strings.HasPrefix(msg, "redis: connection pool: failed to dial") || lines[0]["level"] != "warn" {
		t.Fatalf("first line %v, want the dial failure at warn", lines[0])
	}
	if lines[1]["message"] != "redis: another failure" {
		t.Fatalf("second line %v, want the other failure", lines[1])
	}

	advance(9 * time.Second)
	dialFailed(0)
	if n := len(logLines(t, out.String())); n != 2 {
		t.Fatalf("got %d lines 9s later, want still 2", n)
	}
	advance(time.Second)
	dialFailed(0)
	lines = logLines(t, out.String())
	if len(lines) != 3 || lines[2]["suppressed"] != float64(100) {
		t.Fatalf("got %v, want a third line 10s later with suppressed=100", lines)
	}
}

// Lines of ever new shapes cannot grow the logger without bound.
func TestRedisLogsBoundedShapes(t *testing.T) {
	var out testenv.Buffer
	l := newRedisLogger(zerolog.New(&out), 10*time.Second, func() time.Time { return time.Unix(0, 0) })
	for i := range 1000 {
		l.Printf(context.Background(), "redis: unknown node %s", strings.Repeat("x", i%500+1)+"y")
	}
	if n := len(l.shapes); n > maxRedisLogShapes+1 {
		t.Fatalf("remembers %d shapes, want at most %d", n, maxRedisLogShapes+1)
	}
	if n := len(logLines(t, out.String())); n != maxRedisLogShapes+1 {
		t.Fatalf("wrote %d lines, want %d (one per remembered shape, one for the rest)", n, maxRedisLogShapes+1)
	}
}
