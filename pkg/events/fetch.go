package events

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// fetchLoop fetches events into free slots of sem and dispatches them to
// pool, until ctx ends or the connection is closed.
func (r *Router) fetchLoop(ctx context.Context, cons jetstream.Consumer, filters []string, sem chan struct{}, pool *processPool) error {
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
			pool.dispatch(msg)
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
	for yields := 0; ; {
		select {
		case sem <- struct{}{}:
			n++
			continue
		default:
		}
		// While most slots are busy, a few yields let the deliveries that
		// are about to finish free theirs: one fetch of many events costs
		// far less than many fetches of a few (each is a pull request and
		// its subscription). Bounded, so a free slot waits microseconds.
		if n >= cap(sem)/2 || yields == acquireYields {
			return n
		}
		yields++
		runtime.Gosched()
	}
}

// acquireYields bounds how often acquire yields for more free slots.
const acquireYields = 4

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

// processPool runs process for each dispatched message on goroutines
// that stay for the next one: a goroutine per delivery would grow a fresh
// stack for every event. It starts them as needed, at most one per slot
// of sem, so a dispatched message (which holds a slot) never waits for
// long; each frees its slot when process returned.
type processPool struct {
	r       *Router
	ctx     context.Context
	sem     chan struct{}
	work    chan jetstream.Msg
	started int // goroutines; only the fetch loop reads or changes it
	wg      sync.WaitGroup
}

func newProcessPool(ctx context.Context, r *Router, sem chan struct{}) *processPool {
	return &processPool{r: r, ctx: ctx, sem: sem, work: make(chan jetstream.Msg)}
}

// dispatch hands msg to an idle goroutine, or to a new one while there
// are fewer than slots.
func (p *processPool) dispatch(msg jetstream.Msg) {
	if p.started < cap(p.sem) {
		select {
		case p.work <- msg:
			return
		default:
		}
		p.started++
		p.wg.Add(1)
		go p.serve(msg)
		return
	}
	p.work <- msg
}

func (p *processPool) serve(msg jetstream.Msg) {
	defer p.wg.Done()
	for {
		p.r.process(p.ctx, msg)
		release(p.sem, 1)
		var ok bool
		if msg, ok = <-p.work; !ok {
			return
		}
	}
}

// close waits until every dispatched message was processed.
func (p *processPool) close() {
	close(p.work)
	p.wg.Wait()
}
