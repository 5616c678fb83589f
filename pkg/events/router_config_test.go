package events

import (
	"strings"
	"testing"
	"time"
)

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
