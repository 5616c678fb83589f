package events

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestRedeliveryDelay(t *testing.T) {
	t.Parallel()
	cfg := RouterConfig{RetryBase: time.Second, RetryMax: 5 * time.Minute}
	tests := []struct {
		name string
		n    uint64
		rand float64
		want time.Duration
	}{
		{"first delivery, no jitter", 1, 0.5, time.Second},
		{"delivery 0 counts as the first", 0, 0.5, time.Second},
		{"second delivery doubles", 2, 0.5, 2 * time.Second},
		{"third delivery", 3, 0.5, 4 * time.Second},
		{"ninth delivery", 9, 0.5, 256 * time.Second},
		{"capped at retry max", 10, 0.5, 5 * time.Minute},
		{"far past the cap", 1000, 0.5, 5 * time.Minute},
		{"jitter down", 3, 0, 3 * time.Second},
		{"jitter up", 3, 0.75, 4500 * time.Millisecond},
		{"jitter below the base is clamped", 1, 0, time.Second},
		{"jitter up on the first delivery", 1, 0.9, 1200 * time.Millisecond},
		{"jitter above the cap is clamped", 20, 0.99, 5 * time.Minute},
		{"jitter down at the cap", 20, 0, 225 * time.Second},
		{"out-of-range rand counts as no jitter", 2, 7, 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := redeliveryDelay(tt.n, cfg, func() float64 { return tt.rand })
			if got != tt.want {
				t.Errorf("redeliveryDelay(%d, rand %v) = %v, want %v", tt.n, tt.rand, got, tt.want)
			}
		})
	}
}

func TestRedeliveryDelayBounds(t *testing.T) {
	t.Parallel()
	cfgs := []RouterConfig{
		{RetryBase: time.Second, RetryMax: 5 * time.Minute},
		{RetryBase: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond},
		{RetryBase: time.Minute, RetryMax: time.Minute},
		{RetryBase: time.Nanosecond, RetryMax: 24 * time.Hour},
	}
	for _, cfg := range cfgs {
		prevLow := time.Duration(0)
		for n := uint64(1); n <= 200; n++ {
			for _, r := range []float64{0, 0.25, 0.5, 0.999999} {
				got := redeliveryDelay(n, cfg, func() float64 { return r })
				if got < cfg.RetryBase || got > cfg.RetryMax {
					t.Fatalf("redeliveryDelay(%d, %+v, rand %v) = %v, want between %v and %v", n, cfg, r, got, cfg.RetryBase, cfg.RetryMax)
				}
			}
			low := redeliveryDelay(n, cfg, func() float64 { return 0 })
			if low < prevLow {
				t.Fatalf("redeliveryDelay(%d, %+v) lower bound %v, want at least the previous %v", n, cfg, low, prevLow)
			}
			prevLow = low
		}
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
		{"retry after 0 keeps the backoff", RetryAfter(0, boom), 1, action{kind: actionRetry, delay: time.Second}},
		{"retry after 0 on the third attempt", RetryAfter(0, boom), 3, action{kind: actionRetry, delay: 4 * time.Second}},
		{"retry after shorter than the backoff", fmt.Errorf("forward: %w", RetryAfter(2*time.Second, boom)), 3, action{kind: actionRetry, delay: 4 * time.Second}},
		{"retry after longer than the backoff", RetryAfter(5*time.Second, boom), 3, action{kind: actionRetry, delay: 5 * time.Second}},
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
