package events

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// fetchLoop fetches events into free slots of sem and dispatches them,
// until ctx ends or the connection is closed.
func (r *Router) fetchLoop(ctx context.Context, cons jetstream.Consumer, filters []string, sem chan struct{}, wg *sync.WaitGroup) error {
	failures := 0
	pause := func(err error) bool {
		failures++
		r.setConsumerErr(err)
		r.log.Warn().Err(err).Int("failures", failures).Msg("fetching events failed; retrying")
		d := min(100*time.Millisecond<<min(failures, 6), 5*time.Second)
		return sleepCtx(ctx, d)
	}
	for ctx.Err() == nil {
		if ok, err := r.waitForRedis(ctx); err != nil {
			return err
		} else if !ok {
			break
		}
		n := acquire(ctx, sem)
		if n == 0 {
			break
		}
		batch, err := cons.Fetch(n, jetstream.FetchMaxWait(r.pollWait))
		if err != nil {
			release(sem, n)
			if r.connClosed(err) {
				return fmt.Errorf("events: consumer %s: %w", r.cfg.Consumer, err)
			}
			if !pause(err) {
				break
			}
			cons = r.recreate(ctx, cons, filters, err)
			continue
		}
		got := 0
		var held []jetstream.Msg
		for msg := range batch.Messages() {
			got++
			if ctx.Err() != nil {
				// Fetched while stopping. Handing it back now would put it
				// straight back into this pull, which stays open until it
				// expires: hold it until then.
				held = append(held, msg)
				release(sem, 1)
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer release(sem, 1)
				r.process(ctx, msg)
			}()
		}
		release(sem, n-got)
		// The pull has ended: nothing handed back now can come back to it.
		for _, msg := range held {
			r.handBack(msg)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.Canceled) {
			if r.connClosed(err) {
				return fmt.Errorf("events: consumer %s: %w", r.cfg.Consumer, err)
			}
			if !pause(err) {
				break
			}
			cons = r.recreate(ctx, cons, filters, err)
			continue
		}
		if failures > 0 {
			failures = 0
			r.setConsumerErr(nil)
			r.log.Info().Msg("fetching events again")
		}
	}
	return nil
}

// connClosed reports whether err means the NATS connection is closed for
// good (not reconnecting).
func (r *Router) connClosed(err error) bool {
	if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, jetstream.ErrConnectionClosed) {
		return true
	}
	nc := r.js.Conn()
	return nc != nil && nc.IsClosed()
}

// waitForRedis blocks while Redis is down. It returns false when ctx
// ended, and an error when waiting is pointless: the NATS connection or
// the Redis client was closed.
func (r *Router) waitForRedis(ctx context.Context) (bool, error) {
	for {
		if nc := r.js.Conn(); nc != nil && nc.IsClosed() {
			return false, fmt.Errorf("events: consumer %s: %w", r.cfg.Consumer, nats.ErrConnectionClosed)
		}
		r.state.Lock()
		err := r.redisErr
		r.state.Unlock()
		switch {
		case err == nil:
			return ctx.Err() == nil, nil
		case errors.Is(err, redis.ErrClosed):
			return false, fmt.Errorf("events: consumer %s: %w", r.cfg.Consumer, err)
		}
		if !sleepCtx(ctx, min(r.healthInterval, 250*time.Millisecond)) {
			return false, nil
		}
	}
}

// acquire takes at least one slot of sem (waiting for it) and then every
// other free one; it returns how many it took, 0 if ctx ended first.
func acquire(ctx context.Context, sem chan struct{}) int {
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return 0
	}
	n := 1
	for {
		select {
		case sem <- struct{}{}:
			n++
		default:
			return n
		}
	}
}

// release frees n slots of sem.
func release(sem chan struct{}, n int) {
	for range n {
		<-sem
	}
}

// sleepCtx waits for d; false means ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// handBackDelay is how long an event handed back while stopping waits
// before its next delivery: as long as a pull lasts, so that it is not
// delivered again into a pull this worker opened before it stopped, and
// goes to another worker (or to this one after its restart) instead.
func (r *Router) handBackDelay() time.Duration { return r.pollWait }

// handBack returns a message fetched while stopping, with handBackDelay.
func (r *Router) handBack(msg jetstream.Msg) {
	delay := r.handBackDelay()
	ev := r.log.Info().Str("subject", msg.Subject()).Str("outcome", "nak").Dur("retry_in", delay).Err(errShutdown)
	if meta, err := msg.Metadata(); err == nil {
		ev = ev.Uint64("stream_seq", meta.Sequence.Stream).Uint64("delivery", meta.NumDelivered)
	}
	if err := msg.NakWithDelay(delay); err != nil {
		ev = ev.AnErr("nak_error", err)
	}
	r.metrics.retries.WithLabelValues(r.cfg.Consumer, "", retryShutdown).Inc()
	ev.Msg("handed back")
}
