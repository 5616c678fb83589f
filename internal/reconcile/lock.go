package reconcile

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultLockTTL is the life of the run lock between refreshes.
const DefaultLockTTL = 10 * time.Minute

// LockKey returns the Redis key of the run lock: <prefix>reconciler:lock.
func LockKey(prefix string) string { return prefix + "reconciler:lock" }

// ErrLocked: another run holds the lock.
var ErrLocked = errors.New("reconcile: another reconciler run holds the lock")

// Release and refresh only by the owner (the value is the owner token).
var (
	releaseScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)
	refreshScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end return 0`)
)

// WithLock runs fn while holding the run lock key (SET NX with an owner
// token and ttl), refreshing it every ttl/3, and releases it on every exit
// path (also when fn panics). When another run holds the lock, fn does not
// run and WithLock returns ErrLocked. If the lock is lost while fn runs
// (it expired, or was taken), fn's context is cancelled, so that it stops
// between items.
func WithLock(ctx context.Context, rdb redis.UniversalClient, key string, ttl time.Duration, fn func(context.Context) error) error {
	if ttl <= 0 {
		ttl = DefaultLockTTL
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	token := hex.EncodeToString(b[:])
	ok, err := rdb.SetNX(ctx, key, token, ttl).Result()
	if err != nil {
		return fmt.Errorf("reconcile: taking the run lock %s: %w", key, err)
	}
	if !ok {
		return ErrLocked
	}
	runCtx, cancel := context.WithCancelCause(ctx)
	refreshed := make(chan struct{})
	go func() {
		defer close(refreshed)
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				n, err := refreshScript.Run(runCtx, rdb, []string{key}, token, ttl.Milliseconds()).Int()
				if err == nil && n == 0 {
					cancel(fmt.Errorf("reconcile: the run lock %s was lost", key))
					return
				}
				// A Redis error is retried at the next tick; the TTL leaves room.
			}
		}
	}()
	defer func() {
		cancel(nil)
		<-refreshed
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer rcancel()
		_ = releaseScript.Run(rctx, rdb, []string{key}, token).Err()
	}()
	return fn(runCtx)
}
