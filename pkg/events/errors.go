package events

import (
	"errors"
	"fmt"
	"time"
)

// Sentinels of the consume half. Test for them with errors.Is.
var (
	// ErrNoHandler is the reason an event is dead-lettered when it reached
	// the consumer but no registered pattern matches its subject (the
	// consumer's Subjects filter is wider than its handlers). Its text is
	// exactly "no handler", the Wxpay-Dlq-Reason of such dead letters.
	ErrNoHandler = errors.New("no handler")

	// ErrRedisUnavailable is wrapped by (*Router).Ready while the router
	// cannot reach Redis. No handler runs without dedupe: the router stops
	// fetching until Redis answers again.
	ErrRedisUnavailable = errors.New("events: redis unavailable")

	// ErrNotRunning is returned by (*Router).Ready before Run has created
	// the consumer and after Run returned.
	ErrNotRunning = errors.New("events: router not running")

	// ErrServerTooOld is wrapped by Run when the NATS server is older than
	// 2.10, which consumers with several filter subjects (FilterSubjects)
	// need. The error names the server's version.
	ErrServerTooOld = errors.New("events: NATS server too old")

	// ErrRegistration is wrapped by every error of (*Router).Register (and
	// the value Handle panics with): an invalid pattern, a pattern
	// registered twice, one outside RouterConfig.Subjects, or a
	// registration after Run started.
	ErrRegistration = errors.New("events: handler registration")
)

// PermanentError marks a handler error that retrying cannot cure: the
// router dead-letters the event at once instead of retrying it. Build it
// with Permanent; test for it with IsPermanent.
type PermanentError struct {
	// Err is the cause; its text becomes the dead letter's reason.
	Err error
}

// Error returns the text of the cause, unchanged, so that the dead
// letter's Wxpay-Dlq-Reason reads as the handler wrote it.
func (e *PermanentError) Error() string {
	if e.Err == nil {
		return "permanent error"
	}
	return e.Err.Error()
}

// Unwrap returns the cause, so errors.Is and errors.As see through the
// mark.
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as permanent: a handler that returns it (wrapped or
// not) has its event dead-lettered at once, without further retries. Use
// it for faults that will not change on a retry: a resource that does not
// decode, an order the business system does not know, a 4xx from a
// downstream API. Permanent(nil) is nil.
//
// It is this package's own type rather than backoff.Permanent, because
// backoff.Retry strips that wrapper.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err, or an error it wraps, was marked with
// Permanent, or is an ErrMalformedEnvelope error (an envelope that breaks
// the contract fails the same way every time).
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p) || errors.Is(err, ErrMalformedEnvelope)
}

// RetryAfterError is a handler error that asks for the next attempt after
// a given delay, for example when a downstream API answered "rate limited"
// (FREQUENCY_LIMITED) or sent Retry-After. The router waits for that delay
// or for its exponential backoff, whichever is longer: a short request such
// as "Retry-After: 0" never hastens a retry. Build it with RetryAfter.
type RetryAfterError struct {
	// Delay is how long to wait before the event is delivered again.
	Delay time.Duration
	// Err is the cause; it may be nil.
	Err error
}

// Error describes the delay and the cause.
func (e *RetryAfterError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("retry after %v", e.Delay)
	}
	return fmt.Sprintf("retry after %v: %v", e.Delay, e.Err)
}

// Unwrap returns the cause.
func (e *RetryAfterError) Unwrap() error { return e.Err }

// RetryAfter returns an error that asks the router to deliver the event
// again after d (a negative d counts as 0), or after its usual backoff
// when that is longer. It is never nil, even when err
// is, so a handler can return RetryAfter(d, nil) to be called again later.
//
// The delivery still counts: on the last allowed delivery
// (RouterConfig.MaxDeliver) the event is dead-lettered like any other
// failure. A Permanent error wrapped inside it wins: the event is
// dead-lettered at once.
func RetryAfter(d time.Duration, err error) error {
	return &RetryAfterError{Delay: max(d, 0), Err: err}
}

// retryAfterDelay returns the delay a handler asked for with RetryAfter.
func retryAfterDelay(err error) (time.Duration, bool) {
	var ra *RetryAfterError
	if errors.As(err, &ra) {
		return ra.Delay, true
	}
	return 0, false
}
