package events

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
)

func TestDedupeKeyNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, prefix, consumer, key string
		wantDone, wantLock          string
	}{
		{"default prefix", DefaultKeyPrefix, "billing", "transaction:4200000001:SUCCESS",
			"wxpay:done:billing:transaction:4200000001:SUCCESS", "wxpay:lock:billing:transaction:4200000001:SUCCESS"},
		{"custom prefix", "staging:wxpay:", "ledger", "refund:5000001:CLOSED",
			"staging:wxpay:done:ledger:refund:5000001:CLOSED", "staging:wxpay:lock:ledger:refund:5000001:CLOSED"},
		{"event key", DefaultKeyPrefix, "audit", "event:rc-bill-20240101",
			"wxpay:done:audit:event:rc-bill-20240101", "wxpay:lock:audit:event:rc-bill-20240101"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := doneKey(tt.prefix, tt.consumer, tt.key); got != tt.wantDone {
				t.Errorf("doneKey = %q, want %q", got, tt.wantDone)
			}
			if got := lockKey(tt.prefix, tt.consumer, tt.key); got != tt.wantLock {
				t.Errorf("lockKey = %q, want %q", got, tt.wantLock)
			}
		})
	}
}

func TestNewLockToken(t *testing.T) {
	t.Parallel()
	a, b := newLockToken(), newLockToken()
	if a == b {
		t.Errorf("two tokens are both %q, want them different", a)
	}
	if !strings.HasPrefix(a, lockTokenPrefix) {
		t.Errorf("token %q does not start with host:pid %q", a, lockTokenPrefix)
	}
}

// dedupeEnv is a dedupe on the test Redis (miniredis or the real one).
func dedupeEnv(t *testing.T, lockTTL time.Duration) (*dedupe, *testenv.Redis, *redis.Client) {
	t.Helper()
	if !testenv.RealRedis() {
		t.Parallel()
	}
	rd := testenv.StartRedis(t)
	opt, err := redis.ParseURL(rd.URL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	return &dedupe{rdb: rdb, prefix: DefaultKeyPrefix, consumer: "billing", lockTTL: lockTTL, doneTTL: DefaultDoneTTL}, rd, rdb
}

// passTime lets d pass for Redis TTLs: miniredis's clock is moved, a real
// Redis is waited for.
func passTime(rd *testenv.Redis, d time.Duration) {
	if rd.Mini != nil {
		rd.Mini.FastForward(d)
		return
	}
	time.Sleep(d)
}

func TestDedupeLock(t *testing.T) {
	const key = "transaction:4200000001:SUCCESS"
	lockTTL := 400 * time.Millisecond
	d, rd, rdb := dedupeEnv(t, lockTTL)
	ctx := testContext(t, 30*time.Second)
	a, b := newLockToken(), newLockToken()
	lock := lockKey(DefaultKeyPrefix, "billing", key)

	claim := func(token string, want claimResult) time.Duration {
		t.Helper()
		got, ttl, err := d.claim(ctx, key, token)
		if err != nil {
			t.Fatalf("claim: %v", err)
		}
		if got != want {
			t.Fatalf("claim = %v, want %v", got, want)
		}
		return ttl
	}

	claim(a, claimAcquired)
	if v := rdb.Get(ctx, lock).Val(); v != a {
		t.Errorf("lock value = %q, want the owner token %q", v, a)
	}
	if ttl := rdb.PTTL(ctx, lock).Val(); ttl <= 0 || ttl > lockTTL {
		t.Errorf("lock TTL = %v, want in (0, %v]", ttl, lockTTL)
	}
	if ttl := claim(b, claimBusy); ttl <= 0 || ttl > lockTTL {
		t.Errorf("busy claim reports the holder's TTL %v, want in (0, %v]", ttl, lockTTL)
	}

	// Only the owner extends or releases.
	if ok, err := d.refresh(ctx, key, b); err != nil || ok {
		t.Errorf("refresh by another token = %v, %v; want false, nil", ok, err)
	}
	if ok, err := d.release(ctx, key, b); err != nil || ok {
		t.Errorf("release by another token = %v, %v; want false, nil", ok, err)
	}
	if n := rdb.Exists(ctx, lock).Val(); n != 1 {
		t.Fatalf("lock gone after a release by another token")
	}
	if ok, err := d.refresh(ctx, key, a); err != nil || !ok {
		t.Errorf("refresh by the owner = %v, %v; want true, nil", ok, err)
	}

	// A lock that is not released expires: a crashed worker's event is
	// taken over.
	passTime(rd, lockTTL+100*time.Millisecond)
	claim(b, claimAcquired)
	if ok, _ := d.refresh(ctx, key, a); ok {
		t.Error("the expired owner extended the new owner's lock")
	}
	if ok, _ := d.release(ctx, key, a); ok {
		t.Error("the expired owner released the new owner's lock")
	}
	if ok, err := d.release(ctx, key, b); err != nil || !ok {
		t.Errorf("release by the owner = %v, %v; want true, nil", ok, err)
	}
	if n := rdb.Exists(ctx, lock).Val(); n != 0 {
		t.Error("lock still there after its owner released it")
	}
}

func TestDedupeDone(t *testing.T) {
	const key = "refund:5000001:SUCCESS"
	d, rd, rdb := dedupeEnv(t, time.Second)
	ctx := testContext(t, 30*time.Second)
	done := doneKey(DefaultKeyPrefix, "billing", key)

	tok := newLockToken()
	if got, _, err := d.claim(ctx, key, tok); err != nil || got != claimAcquired {
		t.Fatalf("claim = %v, %v; want acquired", got, err)
	}
	if released, err := d.finish(ctx, key, tok, "now", 0); err != nil || !released {
		t.Fatalf("finish = %v, %v; want the lock released, nil", released, err)
	}
	if ttl := rdb.TTL(ctx, done).Val(); ttl < DefaultDoneTTL-time.Minute || ttl > DefaultDoneTTL {
		t.Errorf("done TTL = %v, want about %v", ttl, DefaultDoneTTL)
	}
	if got, _, err := d.claim(ctx, key, newLockToken()); err != nil || got != claimDuplicate {
		t.Errorf("claim after done = %v, %v; want duplicate", got, err)
	}
	if n := rdb.Exists(ctx, lockKey(DefaultKeyPrefix, "billing", key)).Val(); n != 0 {
		t.Error("a duplicate claim left a lock behind")
	}
	// Another consumer has its own keys.
	other := *d
	other.consumer = "ledger"
	if got, _, err := other.claim(ctx, key, newLockToken()); err != nil || got != claimAcquired {
		t.Errorf("claim by another consumer = %v, %v; want acquired", got, err)
	}

	if rd.Mini == nil {
		return // a real Redis cannot skip 7 days
	}
	rd.Mini.FastForward(DefaultDoneTTL - time.Second)
	if got, _, _ := d.claim(ctx, key, newLockToken()); got != claimDuplicate {
		t.Errorf("claim a second before the done TTL ends = %v, want duplicate", got)
	}
	rd.Mini.FastForward(2 * time.Second)
	if got, _, _ := d.claim(ctx, key, newLockToken()); got != claimAcquired {
		t.Errorf("claim after the done TTL = %v, want acquired", got)
	}
}

// doneBeforeLockHook writes the done marker just before the lock is taken,
// as a worker finishing between the two steps of claim would.
type doneBeforeLockHook struct {
	rdb  *redis.Client
	done string
}

func (h doneBeforeLockHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h doneBeforeLockHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if strings.EqualFold(cmd.Name(), "set") && strings.Contains(cmd.String(), "lock:") {
				h.rdb.Set(ctx, h.done, "by the other worker", time.Hour)
				break
			}
		}
		return next(ctx, cmds)
	}
}
func (h doneBeforeLockHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if strings.EqualFold(cmd.Name(), "set") && strings.Contains(cmd.String(), "lock:") {
			h.rdb.Set(ctx, h.done, "by the other worker", time.Hour)
		}
		return next(ctx, cmd)
	}
}

func TestDedupeClaimRechecksDone(t *testing.T) {
	const key = "transaction:4200000009:SUCCESS"
	d, rd, rdb := dedupeEnv(t, time.Second)
	ctx := testContext(t, 30*time.Second)
	opt, _ := redis.ParseURL(rd.URL)
	hooked := redis.NewClient(opt)
	t.Cleanup(func() { hooked.Close() })
	hooked.AddHook(doneBeforeLockHook{rdb: rdb, done: doneKey(DefaultKeyPrefix, "billing", key)})
	d.rdb = hooked

	got, _, err := d.claim(ctx, key, newLockToken())
	if err != nil || got != claimDuplicate {
		t.Fatalf("claim when done appears before the lock = %v, %v; want duplicate", got, err)
	}
	if n := rdb.Exists(ctx, lockKey(DefaultKeyPrefix, "billing", key)).Val(); n != 0 {
		t.Error("the lock was not released after finding done")
	}
}

func TestDedupeRedisDown(t *testing.T) {
	d, _, _ := dedupeEnv(t, time.Second)
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { down.Close() })
	d.rdb = down
	ctx := testContext(t, 10*time.Second)
	if _, _, err := d.claim(ctx, "k", newLockToken()); err == nil {
		t.Error("claim with Redis down = nil error, want an error")
	}
	if _, err := d.finish(ctx, "k", newLockToken(), "v", 0); !errors.Is(err, errMarker) {
		t.Errorf("finish with Redis down = %v, want an error wrapping %v", err, errMarker)
	}
	if _, err := d.countAttempt(ctx, "k", 1); err == nil {
		t.Error("countAttempt with Redis down = nil error, want an error")
	}
}

func TestDedupeAttempts(t *testing.T) {
	const key = "transaction:4200000007:SUCCESS"
	d, _, rdb := dedupeEnv(t, time.Second)
	ctx := testContext(t, 30*time.Second)
	counter := "wxpay:attempts:billing:transaction:4200000007:SUCCESS:12"
	if got := attemptsKey(DefaultKeyPrefix, "billing", key, 12); got != counter {
		t.Fatalf("attemptsKey = %q, want %q", got, counter)
	}
	for want := uint64(1); want <= 3; want++ {
		if got, err := d.countAttempt(ctx, key, 12); err != nil || got != want {
			t.Fatalf("countAttempt = %d, %v; want %d, nil", got, err, want)
		}
	}
	if ttl := rdb.TTL(ctx, counter).Val(); ttl < DefaultDoneTTL-time.Minute || ttl > DefaultDoneTTL {
		t.Errorf("attempt counter TTL = %v, want about %v", ttl, DefaultDoneTTL)
	}
	// Another stored copy of the event (a replayed dead letter) has a
	// budget of its own.
	if got, err := d.countAttempt(ctx, key, 13); err != nil || got != 1 {
		t.Errorf("countAttempt of another copy = %d, %v; want 1, nil", got, err)
	}
	// Done forgets the copy's failures.
	tok := newLockToken()
	if got, _, err := d.claim(ctx, key, tok); err != nil || got != claimAcquired {
		t.Fatalf("claim = %v, %v; want acquired", got, err)
	}
	if _, err := d.finish(ctx, key, tok, "now", 12); err != nil {
		t.Fatalf("finish: %v", err)
	}
	if n := rdb.Exists(ctx, counter).Val(); n != 0 {
		t.Errorf("attempt counter exists %d after done, want 0", n)
	}
}
