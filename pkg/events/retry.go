package events

import "time"

// retryJitter is the share of a redelivery delay that is randomised, up
// or down: 0.25 spreads a delay of 4s over [3s, 5s).
const retryJitter = 0.25

// redeliveryDelay returns how long a failed event waits before its next
// delivery (NakWithDelay), given how often it was delivered so far
// (NumDelivered, 1 on the first delivery). It is a pure function of its
// arguments: rand returns a number in [0, 1) (math/rand/v2's Float64, or a
// fixed value in tests).
//
// The delay grows exponentially from cfg.RetryBase, doubling with every
// delivery up to cfg.RetryMax, and is then spread by ±retryJitter so that
// events that failed together do not come back together. The result is
// never below RetryBase nor above RetryMax. cfg must have its defaults
// applied.
func redeliveryDelay(numDelivered uint64, cfg RouterConfig, rand func() float64) time.Duration {
	base := cfg.RetryBase
	for i := uint64(1); i < numDelivered && base < cfg.RetryMax; i++ {
		base *= 2 // RetryMax is at most a day, so this does not overflow
	}
	base = min(base, cfg.RetryMax)
	r := rand()
	if r < 0 || r >= 1 {
		r = 0.5
	}
	d := time.Duration(float64(base) * (1 - retryJitter + 2*retryJitter*r))
	return min(max(d, cfg.RetryBase), cfg.RetryMax)
}
