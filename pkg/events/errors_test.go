package events

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

func TestPermanent(t *testing.T) {
	t.Parallel()
	cause := errors.New("order 42 unknown")
	tests := []struct {
		name          string
		err           error
		wantPermanent bool
		wantText      string
		wantIs        error
	}{
		{"nil stays nil", Permanent(nil), false, "", nil},
		{"plain error", cause, false, "order 42 unknown", cause},
		{"marked", Permanent(cause), true, "order 42 unknown", cause},
		{"marked and wrapped", fmt.Errorf("fulfil: %w", Permanent(cause)), true, "fulfil: order 42 unknown", cause},
		{"malformed envelope", fmt.Errorf("%w: no id", ErrMalformedEnvelope), true, "events: malformed envelope: no id", ErrMalformedEnvelope},
		{"retry after is not permanent", RetryAfter(time.Second, cause), false, "retry after 1s: order 42 unknown", cause},
		{"permanent inside retry after", RetryAfter(time.Second, Permanent(io.EOF)), true, "retry after 1s: EOF", io.EOF},
		{"permanent without cause", &PermanentError{}, true, "permanent error", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := IsPermanent(tt.err); got != tt.wantPermanent {
				t.Errorf("IsPermanent(%v) = %v, want %v", tt.err, got, tt.wantPermanent)
			}
			if tt.err == nil {
				return
			}
			if got := tt.err.Error(); got != tt.wantText {
				t.Errorf("Error() = %q, want %q", got, tt.wantText)
			}
			if tt.wantIs != nil && !errors.Is(tt.err, tt.wantIs) {
				t.Errorf("errors.Is(%v, %v) = false, want true", tt.err, tt.wantIs)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		err       error
		wantDelay time.Duration
		wantOK    bool
	}{
		{"plain error", errors.New("boom"), 0, false},
		{"nil", nil, 0, false},
		{"retry after", RetryAfter(3*time.Second, errors.New("FREQUENCY_LIMITED")), 3 * time.Second, true},
		{"wrapped", fmt.Errorf("forward: %w", RetryAfter(time.Minute, nil)), time.Minute, true},
		{"negative delay", RetryAfter(-time.Second, nil), 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, ok := retryAfterDelay(tt.err)
			if d != tt.wantDelay || ok != tt.wantOK {
				t.Errorf("retryAfterDelay(%v) = %v, %v; want %v, %v", tt.err, d, ok, tt.wantDelay, tt.wantOK)
			}
		})
	}
	if err := RetryAfter(time.Second, nil); err == nil {
		t.Error("RetryAfter(1s, nil) = nil, want an error")
	}
	var ra *RetryAfterError
	if err := RetryAfter(time.Second, io.EOF); !errors.As(err, &ra) || ra.Delay != time.Second || !errors.Is(err, io.EOF) {
		t.Errorf("RetryAfter(1s, EOF) = %#v, want a *RetryAfterError of 1s wrapping EOF", err)
	}
}

func TestDecodeResource(t *testing.T) {
	t.Parallel()
	env := rtEnvelope("1230000109", "4200000001")
	tx, err := DecodeResource[wxpay.Transaction](env)
	if err != nil {
		t.Fatalf("DecodeResource: %v", err)
	}
	if tx.TransactionID != "4200000001" || tx.TradeState != "SUCCESS" {
		t.Errorf("got transaction %q state %q, want 4200000001 SUCCESS", tx.TransactionID, tx.TradeState)
	}

	tests := []struct {
		name     string
		resource string
	}{
		{"empty", ""},
		{"not JSON", "{"},
		{"wrong type", `{"transaction_id": 42}`},
		{"array", `[]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := env
			env.Resource = []byte(tt.resource)
			_, err := DecodeResource[wxpay.Transaction](env)
			if !IsPermanent(err) || !errors.Is(err, ErrMalformedEnvelope) {
				t.Errorf("got error %v, want a permanent ErrMalformedEnvelope error", err)
			}
		})
	}
}
