package events

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// unitRouter returns a router on a JetStream context and Redis client that
// are never used.
func unitRouter(t *testing.T, cfg RouterConfig) (*Router, error) {
	t.Helper()
	js, err := jetstream.New(&nats.Conn{})
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { rdb.Close() })
	return NewRouter(js, rdb, cfg)
}

func TestRouterConfigDefaults(t *testing.T) {
	t.Parallel()
	got, err := RouterConfig{Consumer: "billing"}.withDefaults()
	if err != nil {
		t.Fatalf("withDefaults: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"AckWait", got.AckWait, 30 * time.Second},
		{"MaxDeliver", got.MaxDeliver, 10},
		{"MaxAckPending", got.MaxAckPending, 1000},
		{"Concurrency", got.Concurrency, 16},
		{"HandlerTimeout", got.HandlerTimeout, 24 * time.Second},
		{"RetryBase", got.RetryBase, time.Second},
		{"RetryMax", got.RetryMax, 5 * time.Minute},
		{"DoneTTL", got.DoneTTL, 7 * 24 * time.Hour},
		{"KeyPrefix", got.KeyPrefix, "wxpay:"},
		{"Registerer set", got.Registerer != nil, true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	if got, _ := (RouterConfig{Consumer: "x", AckWait: 10 * time.Second}).withDefaults(); got.HandlerTimeout != 8*time.Second {
		t.Errorf("HandlerTimeout for a 10s ack wait: got %v, want 8s", got.HandlerTimeout)
	}
}

func TestRouterConfigInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     RouterConfig
		wantErr string
	}{
		{"no consumer", RouterConfig{}, "consumer name is required"},
		{"consumer with a dot", RouterConfig{Consumer: "a.b"}, "one subject token"},
		{"consumer with a wildcard", RouterConfig{Consumer: "a*"}, "one subject token"},
		{"consumer with a slash", RouterConfig{Consumer: "a/b"}, "one subject token"},
		{"consumer with a space", RouterConfig{Consumer: "a b"}, "one subject token"},
		{"handler timeout equal to ack wait", RouterConfig{Consumer: "c", AckWait: time.Second, HandlerTimeout: time.Second}, "must be less than the ack wait"},
		{"handler timeout over ack wait", RouterConfig{Consumer: "c", HandlerTimeout: time.Minute}, "must be less than the ack wait"},
		{"negative handler timeout", RouterConfig{Consumer: "c", HandlerTimeout: -time.Second}, "not positive"},
		{"tiny ack wait", RouterConfig{Consumer: "c", AckWait: time.Millisecond, HandlerTimeout: time.Microsecond}, "ack wait"},
		{"done TTL under 25h", RouterConfig{Consumer: "c", DoneTTL: 24 * time.Hour}, "done TTL"},
		{"negative max deliver", RouterConfig{Consumer: "c", MaxDeliver: -1}, "max deliver"},
		{"negative concurrency", RouterConfig{Consumer: "c", Concurrency: -1}, "concurrency"},
		{"max ack pending below -1", RouterConfig{Consumer: "c", MaxAckPending: -2}, "max ack pending"},
		{"retry max below base", RouterConfig{Consumer: "c", RetryBase: time.Minute, RetryMax: time.Second}, "retry max"},
		{"retry max over a day", RouterConfig{Consumer: "c", RetryMax: 48 * time.Hour}, "retry max"},
		{"negative retry base", RouterConfig{Consumer: "c", RetryBase: -time.Second}, "retry base"},
		{"invalid subject", RouterConfig{Consumer: "c", Subjects: []string{"orders.>"}}, "not under"},
		{"overlapping subjects", RouterConfig{Consumer: "c", Subjects: []string{"wxpay.*.refund.>", "wxpay.1.refund.success"}}, "overlap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := unitRouter(t, tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewRouter(%+v) error = %v, want one containing %q", tt.cfg, err, tt.wantErr)
			}
		})
	}
	if _, err := NewRouter(nil, nil, RouterConfig{Consumer: "c"}); err == nil {
		t.Error("NewRouter(nil, nil, ...) = nil error, want an error")
	}
}

func TestRouterRegister(t *testing.T) {
	t.Parallel()
	nop := HandlerFunc(func(context.Context, Envelope) error { return nil })
	tests := []struct {
		name     string
		subjects []string
		first    string // registered before, "" for none
		pattern  string
		h        Handler
		wantErr  bool
	}{
		{"valid", nil, "", "wxpay.*.transaction.success", nop, false},
		{"everything", nil, "", "wxpay.>", nop, false},
		{"invalid", nil, "", "wxpay..x", nop, true},
		{"outside the stream", nil, "", "orders.>", nop, true},
		{"upper case event type", nil, "", "wxpay.*.TRANSACTION.SUCCESS", nop, true},
		{"nil handler", nil, "", "wxpay.>", nil, true},
		{"duplicate", nil, "wxpay.*.refund.success", "wxpay.*.refund.success", nop, true},
		{"overlapping is fine", nil, "wxpay.*.refund.success", "wxpay.*.refund.*", nop, false},
		{"inside subjects", []string{"wxpay.*.refund.>"}, "", "wxpay.1230000109.refund.success", nop, false},
		{"equal to a subject", []string{"wxpay.*.refund.>"}, "", "wxpay.*.refund.>", nop, false},
		{"outside subjects", []string{"wxpay.*.refund.>"}, "", "wxpay.*.transaction.success", nop, true},
		{"wider than subjects", []string{"wxpay.*.refund.>"}, "", "wxpay.>", nop, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := unitRouter(t, RouterConfig{Consumer: "c", Subjects: tt.subjects})
			if err != nil {
				t.Fatal(err)
			}
			if tt.first != "" {
				r.Handle(tt.first, nop)
			}
			err = r.Register(tt.pattern, tt.h)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("Register(%q) = %v, want error %v", tt.pattern, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrRegistration) {
				t.Errorf("Register error %v does not wrap ErrRegistration", err)
			}
			// Handle panics exactly when Register fails.
			r2, _ := unitRouter(t, RouterConfig{Consumer: "c", Subjects: tt.subjects})
			if tt.first != "" {
				r2.Handle(tt.first, nop)
			}
			panicked := func() (p bool) {
				defer func() { p = recover() != nil }()
				r2.Handle(tt.pattern, tt.h)
				return false
			}()
			if panicked != tt.wantErr {
				t.Errorf("Handle(%q) panicked %v, want %v", tt.pattern, panicked, tt.wantErr)
			}
		})
	}
}

func TestRouterRegisterAfterRun(t *testing.T) {
	t.Parallel()
	r, err := unitRouter(t, RouterConfig{Consumer: "c"})
	if err != nil {
		t.Fatal(err)
	}
	r.HandleFunc("wxpay.>", func(context.Context, Envelope) error { return nil })
	r.mu.Lock()
	r.running = true
	r.mu.Unlock()
	if err := r.Register("wxpay.*.refund.success", HandlerFunc(func(context.Context, Envelope) error { return nil })); !errors.Is(err, ErrRegistration) {
		t.Errorf("Register while running = %v, want ErrRegistration", err)
	}
	if err := r.Run(t.Context()); err == nil {
		t.Error("second Run = nil, want an error")
	}
}

func TestRouterFilterSubjects(t *testing.T) {
	t.Parallel()
	nop := func(context.Context, Envelope) error { return nil }
	r, _ := unitRouter(t, RouterConfig{Consumer: "c"})
	r.HandleFunc("wxpay.1230000109.transaction.success", nop)
	r.HandleFunc("wxpay.*.transaction.success", nop)
	r.HandleFunc("wxpay.*.refund.*", nop)
	if got, want := strings.Join(r.FilterSubjects(), " "), "wxpay.*.refund.* wxpay.*.transaction.success"; got != want {
		t.Errorf("derived FilterSubjects = %q, want %q", got, want)
	}
	explicit, _ := unitRouter(t, RouterConfig{Consumer: "c", Subjects: []string{"wxpay.>"}})
	explicit.HandleFunc("wxpay.*.refund.*", nop)
	if got, want := strings.Join(explicit.FilterSubjects(), " "), "wxpay.>"; got != want {
		t.Errorf("explicit FilterSubjects = %q, want %q", got, want)
	}
	empty, _ := unitRouter(t, RouterConfig{Consumer: "c"})
	if err := empty.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "no handlers") {
		t.Errorf("Run without handlers = %v, want a \"no handlers\" error", err)
	}
}

func TestDecide(t *testing.T) {
	t.Parallel()
	cfg, err := RouterConfig{Consumer: "c", MaxDeliver: 5, RetryBase: time.Second, RetryMax: time.Minute}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	half := func() float64 { return 0.5 }
	boom := errors.New("boom")
	tests := []struct {
		name string
		err  error
		n    uint64
		want action
	}{
		{"error on the first attempt", boom, 1, action{kind: actionRetry, delay: time.Second}},
		{"error on the third attempt", boom, 3, action{kind: actionRetry, delay: 4 * time.Second}},
		{"error on the last attempt", boom, 5, action{kind: actionDeadLetter, cause: dlqMaxDeliver}},
		{"error past the last attempt", boom, 9, action{kind: actionDeadLetter, cause: dlqMaxDeliver}},
		{"permanent", Permanent(boom), 1, action{kind: actionDeadLetter, cause: dlqPermanent}},
		{"wrapped permanent", fmt.Errorf("fulfil: %w", Permanent(boom)), 1, action{kind: actionDeadLetter, cause: dlqPermanent}},
		{"permanent on the last attempt", Permanent(boom), 5, action{kind: actionDeadLetter, cause: dlqPermanent}},
		{"malformed resource", fmt.Errorf("%w: resource", ErrMalformedEnvelope), 2, action{kind: actionDeadLetter, cause: dlqPermanent}},
		{"retry after", RetryAfter(7*time.Second, boom), 1, action{kind: actionRetry, delay: 7 * time.Second}},
		{"retry after on the last attempt", RetryAfter(7*time.Second, boom), 5, action{kind: actionDeadLetter, cause: dlqMaxDeliver}},
		{"retry after around permanent", RetryAfter(time.Second, Permanent(boom)), 1, action{kind: actionDeadLetter, cause: dlqPermanent}},
		{"handler timeout", context.DeadlineExceeded, 1, action{kind: actionRetry, delay: time.Second}},
		{"cancelled by a lost lock", fmt.Errorf("x: %w", context.Canceled), 2, action{kind: actionRetry, delay: 2 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := decide(tt.err, tt.n, cfg, half); got != tt.want {
				t.Errorf("decide(%v, %d) = %+v, want %+v", tt.err, tt.n, got, tt.want)
			}
		})
	}
}

func TestCheckServerVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		version string
		wantErr bool
	}{
		{"2.15.2", false},
		{"2.10.0", false},
		{"2.10.0-RC.1", false},
		{"v2.11.1", false},
		{"3.0.0", false},
		{"2.9.10", true},
		{"2.9.25", true},
		{"1.4.1", true},
		{"", false},
		{"weird", false},
	}
	for _, tt := range tests {
		err := checkServerVersion(tt.version)
		if (err != nil) != tt.wantErr {
			t.Errorf("checkServerVersion(%q) = %v, want error %v", tt.version, err, tt.wantErr)
			continue
		}
		if err != nil && (!errors.Is(err, ErrServerTooOld) || !strings.Contains(err.Error(), tt.version) || !strings.Contains(err.Error(), "2.10")) {
			t.Errorf("checkServerVersion(%q) = %v, want ErrServerTooOld naming %s and 2.10", tt.version, err, tt.version)
		}
	}
}

// startOldNATS serves just enough of the NATS protocol to look like a
// server of the given version: INFO, then PONG for every PING.
func startOldNATS(t *testing.T, version string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "INFO {\"server_id\":\"OLD\",\"server_name\":\"old\",\"version\":%q,\"go\":\"go1.19\",\"host\":\"127.0.0.1\",\"port\":4222,\"headers\":true,\"max_payload\":1048576,\"proto\":1,\"jetstream\":true}\r\n", version)
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if strings.HasPrefix(sc.Text(), "PING") {
						io.WriteString(c, "PONG\r\n")
					}
				}
			}()
		}
	}()
	return "nats://" + ln.Addr().String()
}

func TestRunRejectsOldServer(t *testing.T) {
	t.Parallel()
	url := startOldNATS(t, "2.9.10")
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("connecting to the fake server: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	r, err := NewRouter(js, rdb, RouterConfig{Consumer: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	r.HandleFunc("wxpay.*.transaction.success", func(context.Context, Envelope) error { return nil })
	done := make(chan error, 1)
	go func() { done <- r.Run(t.Context()) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrServerTooOld) || !strings.Contains(err.Error(), "2.9.10") {
			t.Errorf("Run on NATS 2.9.10 = %v, want ErrServerTooOld naming 2.9.10", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run on NATS 2.9.10 did not return within 5s")
	}
	if err := r.Ready(); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Ready after a failed Run = %v, want ErrNotRunning", err)
	}
}
