package events

import (
	"context"
	"fmt"
	"time"
)

// Ready reports whether the router is taking work: nil while Run is
// active, its consumer exists and Redis answers; otherwise an error
// wrapping ErrNotRunning, ErrRedisUnavailable, or the consumer's last
// failure. Serve it on /readyz.
func (r *Router) Ready() error {
	r.state.Lock()
	defer r.state.Unlock()
	switch {
	case !r.active:
		return ErrNotRunning
	case r.consumerErr != nil:
		return fmt.Errorf("events: consumer %s: %w", r.cfg.Consumer, r.consumerErr)
	case r.redisErr != nil:
		return fmt.Errorf("%w: %v", ErrRedisUnavailable, r.redisErr)
	}
	return nil
}

// setActive records whether Run is taking work.
func (r *Router) setActive(active bool) {
	r.state.Lock()
	r.active = active
	r.state.Unlock()
}

// setConsumerErr records the consumer's state; nil means fine.
func (r *Router) setConsumerErr(err error) {
	r.state.Lock()
	r.consumerErr = err
	r.state.Unlock()
}

// setRedis records whether Redis answers (err nil) and logs the changes.
func (r *Router) setRedis(err error) {
	r.state.Lock()
	was := r.redisErr
	r.redisErr = err
	r.state.Unlock()
	switch {
	case err != nil && was == nil:
		r.metrics.redisUp.WithLabelValues(r.cfg.Consumer).Set(0)
		r.log.Error().Err(err).Msg("redis unavailable: not taking events until it answers")
	case err == nil && was != nil:
		r.metrics.redisUp.WithLabelValues(r.cfg.Consumer).Set(1)
		r.log.Info().Msg("redis answers: taking events")
	}
}

// pingRedis checks Redis once and records the result.
func (r *Router) pingRedis(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	r.setRedis(r.rdb.Ping(ctx).Err())
}

// healthLoop pings Redis every healthInterval until ctx ends.
func (r *Router) healthLoop(ctx context.Context) {
	t := time.NewTicker(r.healthInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.pingRedis(ctx)
		}
	}
}
