package events

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis key families of the worker contract,
// after the configurable prefix (RouterConfig.KeyPrefix, default
// DefaultKeyPrefix).
const (
	doneKeyFamily     = "done:"
	lockKeyFamily     = "lock:"
	attemptsKeyFamily = "attempts:"
)

// doneKey returns <prefix>done:<consumer>:<dedupe_key>, the marker that
// the consumer's handlers succeeded for that event.
func doneKey(prefix, consumer, dedupeKey string) string {
	return prefix + doneKeyFamily + consumer + ":" + dedupeKey
}

// lockKey returns <prefix>lock:<consumer>:<dedupe_key>, held by the worker
// that runs the consumer's handlers for that event.
func lockKey(prefix, consumer, dedupeKey string) string {
	return prefix + lockKeyFamily + consumer + ":" + dedupeKey
}

// attemptsKey returns <prefix>attempts:<consumer>:<dedupe_key>:<stream_seq>,
// the count of the handler runs that failed for one stored copy of the
// event (see countAttempt). The stream sequence makes it the copy's own:
// a replayed dead letter, or another copy of the same dedupe_key, starts
// with the whole budget.
func attemptsKey(prefix, consumer, dedupeKey string, streamSeq uint64) string {
	return prefix + attemptsKeyFamily + consumer + ":" + dedupeKey + ":" + strconv.FormatUint(streamSeq, 10)
}

// releaseScript deletes the lock only if it still holds the caller's token
// (compare-and-delete), so a worker whose lock expired and was taken over
// cannot free somebody else's.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// refreshScript extends the lock only if it still holds the caller's token
// (compare-and-pexpire).
var refreshScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// attemptScript counts one more failed attempt and (re)sets the counter's
// TTL in one step, so that a counter never outlives its TTL.
var attemptScript = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return n
`)

// claimResult is what claim found.
type claimResult int

const (
	// claimAcquired: the caller holds the lock and must run the handlers.
	claimAcquired claimResult = iota
	// claimDuplicate: the done marker exists; ack without running.
	claimDuplicate
	// claimBusy: another worker holds the lock; try again later.
	claimBusy
)

// dedupe implements the worker's Redis sequence for one consumer. Every
// command touches a single key, so it works on Redis Cluster too (the done
// and lock keys of an event are in different slots).
type dedupe struct {
	rdb redis.UniversalClient
	// batch, when set (while the router runs), sends the claims and
	// finishes of concurrent deliveries together in one pipeline.
	batch    *batcher
	prefix   string
	consumer string
	lockTTL  time.Duration
	doneTTL  time.Duration
}

// claim runs the first steps of the dedupe sequence for dedupeKey in one
// round trip, a pipeline of three single-key commands:
//
//  1. SET lock token NX PX lockTTL;
//  2. EXISTS done;
//  3. PTTL lock.
//
// The done marker is read after the lock was taken, so a holder that
// finished in between (it writes done before it releases the lock) is
// seen: taken and done means claimDuplicate (the lock is released again);
// taken and not done means claimAcquired; not taken means claimDuplicate
// when done exists, else claimBusy with the holder's remaining TTL.
//
// Any Redis error is returned as is; the caller runs nothing.
func (d *dedupe) claim(ctx context.Context, dedupeKey, token string) (claimResult, time.Duration, error) {
	done := doneKey(d.prefix, d.consumer, dedupeKey)
	lock := lockKey(d.prefix, d.consumer, dedupeKey)
	var (
		set    *redis.BoolCmd
		exists *redis.IntCmd
		pttl   *redis.DurationCmd
	)
	err := d.pipelined(ctx, func(p redis.Pipeliner) {
		set = p.SetNX(ctx, lock, token, d.lockTTL)
		exists = p.Exists(ctx, done)
		pttl = p.PTTL(ctx, lock)
	})
	if err == nil {
		err = errors.Join(set.Err(), exists.Err(), pttl.Err())
	}
	if err != nil {
		if set != nil && set.Err() == nil && set.Val() {
			_, _ = d.release(context.WithoutCancel(ctx), dedupeKey, token)
		}
		return 0, 0, fmt.Errorf("claiming %s: %w", lock, err)
	}
	taken, isDone := set.Val(), exists.Val() > 0
	switch {
	case taken && isDone:
		if _, err := d.release(ctx, dedupeKey, token); err != nil {
			return 0, 0, err
		}
		return claimDuplicate, 0, nil
	case taken:
		return claimAcquired, 0, nil
	case isDone:
		return claimDuplicate, 0, nil
	}
	ttl := pttl.Val()
	if ttl < 0 { // -2: released meanwhile; -1: no TTL (not ours to fix)
		ttl = 0
	}
	return claimBusy, ttl, nil
}

// pipelined runs queue's commands in one round trip: batched with other
// deliveries' while the router runs, on their own otherwise. Each command
// carries its own result and error; the returned error is only for a
// command that never ran (ctx ended before the batch was sent).
func (d *dedupe) pipelined(ctx context.Context, queue func(p redis.Pipeliner)) error {
	if d.batch != nil {
		return d.batch.do(ctx, queue)
	}
	_, err := d.rdb.Pipelined(ctx, func(p redis.Pipeliner) error { queue(p); return nil })
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	return nil
}

// errMarker marks a finish that did not write the done marker.
var errMarker = errors.New("done marker not written")

// finish writes the done marker and releases the lock in one round trip
// (a pipeline: SET done with the TTL doneTTL, then the compare-and-delete
// of the lock, then, when streamSeq is not 0, the deletion of that copy's
// attempt counter). The marker is written first, so a claim that takes the
// lock afterwards sees it. A failed marker is an error; a failed release
// is only reported, since the lock and the counter expire by themselves.
func (d *dedupe) finish(ctx context.Context, dedupeKey, token, value string, streamSeq uint64) (released bool, err error) {
	done := doneKey(d.prefix, d.consumer, dedupeKey)
	lock := lockKey(d.prefix, d.consumer, dedupeKey)
	var set *redis.StatusCmd
	var rel *redis.Cmd
	perr := d.pipelined(ctx, func(p redis.Pipeliner) {
		set = p.Set(ctx, done, value, d.doneTTL)
		// Eval, not EvalSha: a pipeline cannot fall back on NOSCRIPT, and
		// Redis caches the compiled script by its hash anyway.
		rel = releaseScript.Eval(ctx, p, []string{lock}, token)
		if streamSeq != 0 {
			p.Del(ctx, attemptsKey(d.prefix, d.consumer, dedupeKey, streamSeq))
		}
	})
	if perr != nil && (set == nil || set.Err() == nil) {
		return false, fmt.Errorf("%w: writing %s: %w", errMarker, done, perr)
	}
	if set.Err() != nil {
		return false, fmt.Errorf("%w: writing %s: %w", errMarker, done, set.Err())
	}
	n, err := rel.Int()
	if err != nil {
		return false, fmt.Errorf("releasing %s: %w", lock, err)
	}
	return n == 1, nil
}

// countAttempt records that the handlers of the stored copy streamSeq of
// dedupeKey failed once more and returns how many times they failed so
// far, this one included. The counter lives as long as a done marker
// (doneTTL), longer than any copy waits in the stream for its redelivery.
func (d *dedupe) countAttempt(ctx context.Context, dedupeKey string, streamSeq uint64) (uint64, error) {
	key := attemptsKey(d.prefix, d.consumer, dedupeKey, streamSeq)
	n, err := attemptScript.Run(ctx, d.rdb, []string{key}, d.doneTTL.Milliseconds()).Int64()
	if err != nil {
		return 0, fmt.Errorf("counting the attempt in %s: %w", key, err)
	}
	return uint64(max(n, 1)), nil
}

// release deletes the lock if token still owns it and reports whether it
// did.
func (d *dedupe) release(ctx context.Context, dedupeKey, token string) (bool, error) {
	key := lockKey(d.prefix, d.consumer, dedupeKey)
	n, err := releaseScript.Run(ctx, d.rdb, []string{key}, token).Int()
	if err != nil {
		return false, fmt.Errorf("releasing %s: %w", key, err)
	}
	return n == 1, nil
}

// refresh extends the lock to lockTTL if token still owns it and reports
// whether it did; false means the lock expired (and may be someone
// else's now).
func (d *dedupe) refresh(ctx context.Context, dedupeKey, token string) (bool, error) {
	key := lockKey(d.prefix, d.consumer, dedupeKey)
	n, err := refreshScript.Run(ctx, d.rdb, []string{key}, token, d.lockTTL.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("extending %s: %w", key, err)
	}
	return n == 1, nil
}

// lockTokenPrefix identifies this process in lock values: host:pid.
var lockTokenPrefix = func() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return host + ":" + strconv.Itoa(os.Getpid()) + ":"
}()

// newLockToken returns a value that is unique to one claim, so that only
// that claim can extend or release its lock. It names the host and
// process, to help whoever reads Redis during an incident.
func newLockToken() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on supported platforms.
		panic(errors.Join(errors.New("events: reading random bytes for a lock token"), err))
	}
	buf := make([]byte, len(lockTokenPrefix)+hex.EncodedLen(len(b)))
	hex.Encode(buf[copy(buf, lockTokenPrefix):], b[:])
	return string(buf)
}
