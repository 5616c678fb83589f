package events

import (
	"context"
	"errors"
	"strings"
	"testing"

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

func TestRouterRegisterSeveral(t *testing.T) {
	t.Parallel()
	nop := HandlerFunc(func(context.Context, Envelope) error { return nil })
	tests := []struct {
		name    string
		hs      []Handler
		wantErr bool
	}{
		{"one", []Handler{nop}, false},
		{"three", []Handler{nop, nop, nop}, false},
		{"none", nil, true},
		{"one nil among them", []Handler{nop, nil, nop}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := unitRouter(t, RouterConfig{Consumer: "c"})
			if err != nil {
				t.Fatal(err)
			}
			err = r.Register("wxpay.>", tt.hs...)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("Register(%d handlers) = %v, want error %v", len(tt.hs), err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrRegistration) {
				t.Errorf("Register error %v does not wrap ErrRegistration", err)
			}
			if err == nil && len(r.match("wxpay.1.transaction.success")[0].hs) != len(tt.hs) {
				t.Errorf("route holds %d handlers, want %d", len(r.match("wxpay.1.transaction.success")[0].hs), len(tt.hs))
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
