package events

import (
	"time"

	"github.com/cenkalti/backoff/v4"
)

// actionKind is what the router does with a delivery whose handlers
// failed.
type actionKind int

const (
	actionRetry      actionKind = iota // NakWithDelay(delay)
	actionDeadLetter                   // publish to WXPAY_DLQ, then Term
)

// action is the decision for a failed delivery.
type action struct {
	kind  actionKind
	delay time.Duration // actionRetry
	cause string        // actionDeadLetter: dlqPermanent or dlqMaxDeliver
}

// decide maps the handler error of failed attempt n (1 for the first
// delivery whose handlers failed, see countAttempt) to what happens next,
// in one place: a Permanent or malformed-envelope error is dead-lettered
// at once; on attempt MaxDeliver or later any error is dead-lettered; any
// other error is retried after redeliveryDelay(n), or after the delay a
// RetryAfter error asks for when that is longer. A requested delay never
// shortens the backoff: a receiver answering "Retry-After: 0" would
// otherwise use up every attempt within seconds.
func decide(err error, n uint64, cfg RouterConfig, rand func() float64) action {
	switch {
	case IsPermanent(err):
		return action{kind: actionDeadLetter, cause: dlqPermanent}
	case n >= uint64(cfg.MaxDeliver):
		return action{kind: actionDeadLetter, cause: dlqMaxDeliver}
	}
	delay := redeliveryDelay(n, cfg, rand)
	if d, ok := retryAfterDelay(err); ok {
		delay = max(d, delay)
	}
	return action{kind: actionRetry, delay: delay}
}

// retryJitter is the share of a redelivery delay that is randomised, up
// or down: 0.25 spreads a delay of 4s over [3s, 5s).
const retryJitter = 0.25

// redeliveryDelay returns how long a failed event waits before its next
// delivery (NakWithDelay), given its attempt number: how often its
// handlers have run and failed so far, 1 after the first failure. It is a pure function of its
// arguments: rand returns a number in [0, 1) (math/rand/v2's Float64, or a
// fixed value in tests).
//
// The schedule is cenkalti/backoff's exponential one: cfg.RetryBase on the
// first failure, doubling with every attempt up to cfg.RetryMax. The
// spread of ±retryJitter (so that events that failed together do not come
// back together) is applied here rather than by the library, whose jitter
// draws from the global random source and so cannot be pinned in tests.
// The result is never below RetryBase nor above RetryMax. cfg must have its
// defaults applied.
func redeliveryDelay(numDelivered uint64, cfg RouterConfig, rand func() float64) time.Duration {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     cfg.RetryBase,
		RandomizationFactor: 0,
		Multiplier:          2,
		MaxInterval:         cfg.RetryMax,
		MaxElapsedTime:      0, // JetStream's MaxDeliver ends the retries
		Stop:                backoff.Stop,
		Clock:               backoff.SystemClock,
	}
	b.Reset()
	base := b.NextBackOff()
	for i := uint64(1); i < numDelivered && base < cfg.RetryMax; i++ {
		base = b.NextBackOff()
	}
	base = min(base, cfg.RetryMax)
	r := rand()
	if r < 0 || r >= 1 {
		r = 0.5
	}
	d := time.Duration(float64(base) * (1 - retryJitter + 2*retryJitter*r))
	return min(max(d, cfg.RetryBase), cfg.RetryMax)
}
