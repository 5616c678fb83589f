package events

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// errShutdown is the log cause of events handed back while stopping.
var errShutdown = errors.New("worker stopping")

// errLockBusy is the log cause of events another worker is running.
var errLockBusy = errors.New("another worker holds the event's lock")

// errLockLost cancels a handler whose Redis lock expired or was taken.
var errLockLost = errors.New("events: the event's Redis lock expired while its handlers ran")

// errLockUnconfirmed cancels a handler whose Redis lock could not be
// extended in time: it may expire while the handler runs.
var errLockUnconfirmed = errors.New("events: the event's Redis lock could not be extended; it may expire while its handlers run")

// delivery is one message being processed.
type delivery struct {
	msg       jetstream.Msg
	n         uint64 // NumDelivered
	seq       uint64 // stream sequence
	eventType string // lower case, for metrics; "" when malformed
	log       zerolog.Logger
	start     time.Time
}

// process handles one delivery from start to its outcome: ack,
// duplicate, nak or dlq. ctx is Run's; the work itself runs on contexts
// that shutdown does not cancel.
func (r *Router) process(ctx context.Context, msg jetstream.Msg) {
	inFlight := r.inFlight()
	inFlight.Inc()
	defer inFlight.Dec()
	bg := context.WithoutCancel(ctx)
	d := &delivery{msg: msg, start: time.Now()}
	meta, err := msg.Metadata()
	if err != nil { // not a JetStream delivery: cannot happen on a pull consumer
		r.log.Error().Err(err).Str("subject", msg.Subject()).Msg("message without JetStream metadata")
		_ = msg.Nak()
		return
	}
	d.n, d.seq = meta.NumDelivered, meta.Sequence.Stream
	// The delivery's log fields, built once: a second With would copy them.
	fields := r.log.With().Str("subject", msg.Subject()).Str("stream", StreamName).
		Uint64("stream_seq", d.seq).Uint64("delivery", d.n)

	var env Envelope
	if err := decodeEnvelope(msg.Data(), &env); err != nil {
		d.log = fields.Logger()
		r.deadLetter(bg, d, err, dlqMalformed)
		return
	}
	tm := r.typeMetrics(env.EventType)
	d.eventType = tm.label
	d.log = fields.Str("event_id", env.ID).Str("dedupe_key", env.DedupeKey).
		Str("event_type", env.EventType).Str("source", env.Source).Logger()

	routes := r.match(msg.Subject())
	if len(routes) == 0 {
		r.deadLetter(bg, d, ErrNoHandler, dlqNoHandler)
		return
	}
	if ctx.Err() != nil {
		r.nak(d, r.handBackDelay(), retryShutdown, errShutdown)
		return
	}

	token := newLockToken()
	claimed := time.Now() // the lock's TTL runs from about now
	res, ttl, err := r.dedupe.claim(withDeadline(bg, r.opTimeout), env.DedupeKey, token)
	switch {
	case err != nil:
		r.setRedis(err)
		r.nak(d, redeliveryDelay(d.n, r.cfg, r.rand), retryRedis, err)
		return
	case res == claimDuplicate:
		tm.duplicates.Inc()
		if err := r.ack(bg, d); err != nil {
			d.log.Warn().Err(err).Msg("acknowledging a duplicate failed; it will be delivered again")
		}
		d.log.Info().Str("outcome", "duplicate").Dur("duration", time.Since(d.start)).Msg("already done")
		return
	case res == claimBusy:
		r.nak(d, min(max(ttl, 10*time.Millisecond), r.cfg.AckWait), retryLockBusy, errLockBusy)
		return
	}

	// The lock is ours until released or expired.
	hctx, cancelLock := context.WithCancelCause(bg)
	defer cancelLock(nil)
	stopKeepAlive := r.keepAlive(bg, d, env.DedupeKey, token, claimed, cancelLock)
	defer stopKeepAlive()
	unlock := func() {
		ctx, cancel := context.WithTimeout(bg, r.opTimeout)
		defer cancel()
		if _, err := r.dedupe.release(ctx, env.DedupeKey, token); err != nil {
			d.log.Debug().Err(err).Msg("releasing the lock failed; it expires by itself")
		}
	}
	if ctx.Err() != nil {
		stopKeepAlive()
		unlock()
		r.nak(d, r.handBackDelay(), retryShutdown, errShutdown)
		return
	}

	hctx, cancelTimeout := context.WithTimeout(hctx, r.cfg.HandlerTimeout)
	hctx = d.log.WithContext(hctx)
	start := time.Now()
	herr := r.runHandlers(hctx, routes, env)
	cancelTimeout()
	tm.handlerTime.Observe(time.Since(start).Seconds())

	if herr == nil {
		stopKeepAlive()
		if err := r.markDone(bg, env.DedupeKey, token, d); err != nil {
			unlock()
			r.setRedis(err)
			r.nak(d, redeliveryDelay(d.n, r.cfg, r.rand), retryRedis,
				fmt.Errorf("handlers succeeded but the done marker was not written (they run again on the redelivery): %w", err))
			return
		}
		tm.processed.Inc()
		if err := r.ack(bg, d); err != nil {
			d.log.Warn().Err(err).Msg("acknowledging failed; the redelivery will find the done marker")
		}
		d.log.Info().Str("outcome", "ack").Dur("duration", time.Since(d.start)).Msg("handled")
		return
	}

	// Count the failed attempt while the lock is still held. A permanent
	// error needs no count: it is dead-lettered whatever the count.
	var attempt uint64
	if !IsPermanent(herr) {
		cctx, cancel := context.WithTimeout(bg, r.opTimeout)
		n, err := r.dedupe.countAttempt(cctx, env.DedupeKey, d.seq)
		cancel()
		if err != nil {
			stopKeepAlive()
			unlock()
			r.setRedis(err)
			r.nak(d, redeliveryDelay(1, r.cfg, r.rand), retryRedis,
				fmt.Errorf("handlers failed (%v) and the attempt could not be counted (it runs again, uncounted): %w", herr, err))
			return
		}
		attempt = n
		d.log = d.log.With().Uint64("attempt", attempt).Logger()
	}
	act := decide(herr, attempt, r.cfg, r.rand)
	switch act.kind {
	case actionDeadLetter:
		r.deadLetter(bg, d, herr, act.cause)
		stopKeepAlive()
		unlock()
	default:
		stopKeepAlive()
		unlock()
		r.nak(d, act.delay, retryHandlerError, herr)
	}
}

// keepAlive extends the message's ack wait (InProgress) and the Redis lock
// every AckWait/3 until the returned stop is called (stop may be called
// more than once), trying again sooner after a failed extension. It
// cancels the handlers with errLockLost when the lock turns out expired or
// taken, and with errLockUnconfirmed when the last confirmation of the
// lock (its claim at claimed, then each successful extension) is older
// than lockHold: past that, the lock may expire while the handlers run and
// another worker may claim the event.
func (r *Router) keepAlive(ctx context.Context, d *delivery, dedupeKey, token string, claimed time.Time, cancel context.CancelCauseFunc) func() {
	// Timers rather than a goroutine per delivery: most handlers finish
	// long before the first extension is due, and then nothing ran. One
	// struct holds their state, rather than closures sharing it, which
	// would cost an allocation each.
	k := &keeper{
		r: r, ctx: ctx, d: d, dedupeKey: dedupeKey, token: token, claimed: claimed, cancel: cancel,
		// The timers log through their own copy: process goes on changing
		// d.log (the attempt number) while a timer may still fire.
		log:   d.log,
		hold:  r.lockHold(),
		every: r.cfg.AckWait / 3,
	}
	k.mu.Lock()
	k.t = time.AfterFunc(k.every, k.run)
	k.mu.Unlock()
	return k.stop
}

// keeper is the state of one delivery's keepAlive.
type keeper struct {
	r                *Router
	ctx              context.Context
	d                *delivery
	log              zerolog.Logger
	dedupeKey, token string
	claimed          time.Time
	cancel           context.CancelCauseFunc
	hold, every      time.Duration

	mu          sync.Mutex // serialises ticks and stop
	stopped     atomic.Bool
	t, watchdog *time.Timer
}

// tick extends both and returns when to do it again.
func (k *keeper) tick() time.Duration {
	r, log, cancel, hold, every := k.r, k.log, k.cancel, k.hold, k.every
	if k.watchdog == nil {
		// Armed at the first tick, which comes before hold is over;
		// it does not take mu, so that it fires on time even while a
		// tick waits for a Redis that does not answer.
		k.watchdog = time.AfterFunc(time.Until(k.claimed.Add(hold)), k.unconfirmed)
	}
	if err := k.d.msg.InProgress(); err != nil {
		log.Warn().Err(err).Msg("extending the ack wait failed")
	}
	sent := time.Now() // the extension runs from no earlier than this
	rctx, rcancel := context.WithTimeout(k.ctx, r.opTimeout)
	ok, err := r.dedupe.refresh(rctx, k.dedupeKey, k.token)
	rcancel()
	switch {
	case err != nil:
		log.Warn().Err(err).Msg("extending the lock failed")
		return every / 4
	case !ok:
		log.Warn().Err(errLockLost).Msg("lock lost; cancelling the handlers")
		cancel(errLockLost)
		return every
	}
	k.watchdog.Reset(time.Until(sent.Add(hold)))
	return every
}

// unconfirmed is the watchdog's: the lock was not confirmed for hold.
func (k *keeper) unconfirmed() {
	if k.stopped.Load() {
		return
	}
	cancel, hold := k.cancel, k.hold
	k.log.Warn().Err(errLockUnconfirmed).Dur("unconfirmed_for", hold).Msg("lock not extended in time; cancelling the handlers")
	cancel(errLockUnconfirmed)
}

func (k *keeper) run() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stopped.Load() {
		return
	}
	k.t.Reset(k.tick())
}

// stop ends the extensions; it may be called more than once.
func (k *keeper) stop() {
	// Holding mu waits for a running tick; after it no tick starts.
	k.mu.Lock()
	k.stopped.Store(true)
	k.t.Stop()
	if k.watchdog != nil {
		k.watchdog.Stop()
	}
	k.mu.Unlock()
}

// lockHold is how long after the last confirmation of an event's lock its
// handlers may keep running: the lock's TTL (AckWait) less a fifth, the
// share HandlerTimeout leaves by default, so that a handler has time to
// stop before the lock can expire.
func (r *Router) lockHold() time.Duration { return r.cfg.AckWait - r.cfg.AckWait/5 }

// markDone writes the done marker, releases the lock and forgets the
// failed attempts (one round trip), trying a few times within opTimeout.
// A lock that could not be released expires by itself.
func (r *Router) markDone(ctx context.Context, dedupeKey, token string, d *delivery) error {
	ctx = withDeadline(ctx, r.opTimeout)
	var buf [64]byte
	b := time.Now().UTC().AppendFormat(buf[:0], time.RFC3339)
	value := string(strconv.AppendUint(append(b, " seq="...), d.seq, 10))
	// Only a redelivery can have failed attempts to forget; a first
	// delivery saves the command.
	var attemptsSeq uint64
	if d.n > 1 {
		attemptsSeq = d.seq
	}
	var err error
	for attempt := range 3 {
		if attempt > 0 && !sleepCtx(ctx, time.Duration(attempt)*20*time.Millisecond) {
			break
		}
		var released bool
		released, err = r.dedupe.finish(ctx, dedupeKey, token, value, attemptsSeq)
		if err == nil {
			if !released {
				d.log.Debug().Msg("the lock was gone when released; it had expired")
			}
			return nil
		}
		if !errors.Is(err, errMarker) {
			d.log.Debug().Err(err).Msg("releasing the lock failed; it expires by itself")
			return nil
		}
	}
	return err
}

// ack acknowledges the message without waiting for the server's
// confirmation: an ack that is lost leads to a redelivery, which finds the
// done marker and is acknowledged as a duplicate, so the round trip a
// confirmed ack costs buys nothing here.
func (r *Router) ack(_ context.Context, d *delivery) error {
	return d.msg.Ack()
}

// nak hands the delivery back for a redelivery after delay (0: at once)
// and logs the outcome.
func (r *Router) nak(d *delivery, delay time.Duration, reason string, cause error) {
	r.metrics.retries.WithLabelValues(r.cfg.Consumer, d.eventType, reason).Inc()
	var err error
	if delay > 0 {
		err = d.msg.NakWithDelay(delay)
	} else {
		err = d.msg.Nak()
	}
	level := zerolog.WarnLevel
	if reason == retryLockBusy || reason == retryShutdown {
		level = zerolog.InfoLevel
	}
	ev := d.log.WithLevel(level).Str("outcome", "nak").Dur("retry_in", delay).Err(cause)
	if err != nil {
		ev = ev.AnErr("nak_error", err)
	}
	ev.Dur("duration", time.Since(d.start)).Msg("delivered again later")
}

// deadLetter publishes the delivery to WXPAY_DLQ and terminates it once
// the DLQ acknowledged; if the publish fails it hands the delivery back
// with a delay instead, so nothing is dropped.
func (r *Router) deadLetter(ctx context.Context, d *delivery, reason error, cause string) {
	m := deadLetterMsg(r.cfg.Consumer, d.msg.Subject(), d.msg.Headers(), d.msg.Data(), d.seq, d.n, reason.Error())
	pctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	err := publishDeadLetter(pctx, r.js, m, deadLetterMsgID(r.cfg.Consumer, d.msg))
	cancel()
	if err != nil {
		r.nak(d, redeliveryDelay(d.n, r.cfg, r.rand), retryDLQFailed,
			fmt.Errorf("dead-lettering (%v) failed: %w", reason, err))
		return
	}
	r.metrics.deadLetters.WithLabelValues(r.cfg.Consumer, d.eventType, cause).Inc()
	ev := d.log.Error().Str("outcome", "dlq").Err(reason)
	if err := d.msg.TermWithReason(headerValue(reason.Error())); err != nil {
		ev = ev.AnErr("term_error", err)
	}
	ev.Dur("duration", time.Since(d.start)).Msg("dead-lettered")
}

// deadlineCtx is a context.WithTimeout for the batched Redis calls of a
// delivery without what WithTimeout costs per call (a timer, a channel,
// the cancel state): nothing waits on its Done, which is the parent's.
// The batcher drops an operation whose deadline passed before it was sent
// and bounds each pipeline by the latest deadline of its operations.
type deadlineCtx struct {
	context.Context
	deadline time.Time
}

// withDeadline returns parent with a deadline d from now (or the
// parent's, when that is earlier).
func withDeadline(parent context.Context, d time.Duration) context.Context {
	dl := time.Now().Add(d)
	if pdl, ok := parent.Deadline(); ok && pdl.Before(dl) {
		dl = pdl
	}
	return deadlineCtx{Context: parent, deadline: dl}
}

func (c deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }
