package events

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// stallProxy is a TCP proxy in front of Redis that a test can make stop
// answering without closing anything, the way a hung server or a network
// partition looks to the client: while paused, what either side sends is
// read and dropped. Resume closes the connections of the pause (the client
// has given up on them) and forwards again.
type stallProxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	paused bool
	conns  map[net.Conn]struct{}
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.closeAll()
	})
	return p
}

func (p *stallProxy) addr() string { return p.ln.Addr().String() }

// pause makes the server stop answering.
func (p *stallProxy) pause() {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
}

// resume forwards again, on new connections.
func (p *stallProxy) resume() {
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
	p.closeAll()
}

func (p *stallProxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]struct{}{}
}

func (p *stallProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c] = struct{}{}
		p.conns[up] = struct{}{}
		p.mu.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *stallProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			paused := p.paused
			p.mu.Unlock()
			if !paused {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// cause records the cause of the first handler run's context end.
type cause struct {
	mu  sync.Mutex
	err error
	set bool
}

func (c *cause) record(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.set {
		c.err, c.set = err, true
	}
}

func (c *cause) get() (error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err, c.set
}

// TestRouterUnconfirmedLockCancelsHandler: Redis stops answering one
// worker while its handler runs, so the lock can no longer be extended and
// will expire; the handler's context must end before the lock's TTL can
// run out (when another worker may claim the event), even with a handler
// timeout as long as the ack wait allows.
func TestRouterUnconfirmedLockCancelsHandler(t *testing.T) {
	e := newRTEnv(t)
	proxy := newStallProxy(t, e.redisAddr())
	cfg := testRouterConfig("billing")
	cfg.AckWait = 3 * time.Second
	cfg.HandlerTimeout = cfg.AckWait - 10*time.Millisecond
	r := e.newRouter(cfg, e.redisClient(proxy.addr()))
	env := rtEnvelope(testMchA, "4200000001")
	c := newCounter()
	var first cause
	r.HandleFunc("wxpay.>", func(ctx context.Context, ev Envelope) error {
		if c.begin(ev.DedupeKey) > 1 {
			c.end(ev.DedupeKey, true)
			return nil
		}
		defer c.end(ev.DedupeKey, false)
		proxy.pause() // before the first extension of the lock is due
		<-ctx.Done()
		first.record(context.Cause(ctx))
		return ctx.Err()
	})
	e.start(r)
	e.publish(env, "m1")

	rtWait(t, 30*time.Second, "the first handler's context to end", func() bool { _, ok := first.get(); return ok })
	if err, _ := first.get(); !errors.Is(err, errLockUnconfirmed) {
		t.Errorf("the handler's context ended with %v, want %v: a handler must stop before its unextended lock can expire", err, errLockUnconfirmed)
	}

	// Redis answers again; the lock the worker could not release expires.
	proxy.resume()
	passTime(e.redis, cfg.AckWait)
	rtWait(t, 30*time.Second, "the event handled again", func() bool {
		return c.effectsOf(env.DedupeKey) == 1 && e.settled("billing")
	})
	if len(c.overlaps) > 0 {
		t.Errorf("two runs at once for %v", c.overlaps)
	}
}

// TestRouterLostLockCancelsHandler: another worker holds the event's lock
// (the first one's had expired); the first worker's handler is cancelled
// at its next extension.
func TestRouterLostLockCancelsHandler(t *testing.T) {
	e := newRTEnv(t)
	cfg := testRouterConfig("billing")
	cfg.HandlerTimeout = cfg.AckWait - 10*time.Millisecond
	r := e.newRouter(cfg, nil)
	env := rtEnvelope(testMchA, "4200000001")
	lock := lockKey(DefaultKeyPrefix, "billing", env.DedupeKey)
	c := newCounter()
	var first cause
	r.HandleFunc("wxpay.>", func(ctx context.Context, ev Envelope) error {
		if c.begin(ev.DedupeKey) > 1 {
			c.end(ev.DedupeKey, true)
			return nil
		}
		defer c.end(ev.DedupeKey, false)
		if err := e.rdb.Set(e.ctx, lock, "other-host:1:taken-over", cfg.AckWait).Err(); err != nil {
			t.Errorf("taking the lock over: %v", err)
		}
		<-ctx.Done()
		first.record(context.Cause(ctx))
		return ctx.Err()
	})
	e.start(r)
	e.publish(env, "m1")

	rtWait(t, 30*time.Second, "the first handler's context to end", func() bool { _, ok := first.get(); return ok })
	if err, _ := first.get(); !errors.Is(err, errLockLost) {
		t.Errorf("the handler's context ended with %v, want %v", err, errLockLost)
	}
	if v := e.rdb.Get(e.ctx, lock).Val(); v != "other-host:1:taken-over" {
		t.Errorf("lock = %q after the first worker gave up, want the new owner's", v)
	}
	// The other worker ends without writing done; the event runs again.
	e.rdb.Del(e.ctx, lock)
	rtWait(t, 30*time.Second, "the event handled again", func() bool {
		return c.effectsOf(env.DedupeKey) == 1 && e.settled("billing")
	})
}

// TestRouterLongHandlerKeepsMessageAndLock: a handler that runs longer
// than the ack wait keeps its message (no redelivery) and its lock, and
// its context lasts the whole HandlerTimeout while the lock is extended.
func TestRouterLongHandlerKeepsMessageAndLock(t *testing.T) {
	e := newRTEnv(t)
	cfg := testRouterConfig("billing")
	cfg.AckWait = 1500 * time.Millisecond
	cfg.HandlerTimeout = cfg.AckWait - 10*time.Millisecond
	r := e.newRouter(cfg, nil)
	env := rtEnvelope(testMchA, "4200000001")
	lock := lockKey(DefaultKeyPrefix, "billing", env.DedupeKey)
	c := newCounter()
	started := make(chan time.Time, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseHandler := func() { releaseOnce.Do(func() { close(release) }) }
	var ended cause
	r.HandleFunc("wxpay.>", func(ctx context.Context, ev Envelope) error {
		c.begin(ev.DedupeKey)
		select {
		case started <- time.Now():
		default:
		}
		<-ctx.Done()
		ended.record(context.Cause(ctx))
		// It goes on past its HandlerTimeout: the router must stay safe
		// with a handler that finishes its work regardless.
		<-release
		c.end(ev.DedupeKey, true)
		return nil
	})
	e.start(r)
	t.Cleanup(releaseHandler) // after start's: cleanups run last first
	e.publish(env, "m1")
	var start time.Time
	select {
	case start = <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("the handler did not start")
	}

	// Most of the lock's TTL passes; the router extends it again.
	passTime(e.redis, cfg.AckWait-100*time.Millisecond)
	rtWait(t, 20*time.Second, "the lock extended", func() bool {
		return e.rdb.PTTL(e.ctx, lock).Val() > cfg.AckWait/2
	})
	if v := e.rdb.Get(e.ctx, lock).Val(); !strings.HasPrefix(v, lockTokenPrefix) {
		t.Errorf("lock value %q, want this process's token", v)
	}
	// Hold the handler well past the ack wait.
	if d := time.Until(start.Add(3 * cfg.AckWait)); d > 0 {
		time.Sleep(d)
	}
	releaseHandler()
	rtWait(t, 20*time.Second, "the event settled", func() bool {
		return c.effectsOf(env.DedupeKey) == 1 && e.settled("billing")
	})
	if err, _ := ended.get(); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("the handler's context ended with %v, want the HandlerTimeout (%v): its lock was extended all along", err, context.DeadlineExceeded)
	}
	if got := e.consumerInfo("billing").Delivered.Consumer; got != 1 {
		t.Errorf("the event was delivered %d times, want once: the ack wait must be extended while the handler runs", got)
	}
	if got := c.callsOf(env.DedupeKey); got != 1 {
		t.Errorf("the handler ran %d times, want 1", got)
	}
}

// TestRouterConcurrentCopiesNeverOverlap: copies of one dedupe_key stored
// back to back (a WeChat retry after the duplicate window, the
// reconciler's finding) reach two workers at once; their handlers never
// run at the same time, and run once.
func TestRouterConcurrentCopiesNeverOverlap(t *testing.T) {
	const copies = 6
	e := newRTEnv(t)
	reg := prometheus.NewRegistry()
	env := rtEnvelope(testMchA, "4200000001")
	for i := range copies {
		e.publish(env, fmt.Sprintf("%s#%d", env.DedupeKey, i))
	}
	c := newCounter()
	var inside, peak atomic.Int32
	for range 2 {
		cfg := testRouterConfig("billing")
		cfg.Concurrency = copies
		cfg.Registerer = reg
		r := e.newRouter(cfg, nil)
		r.HandleFunc("wxpay.>", func(ctx context.Context, ev Envelope) error {
			n := inside.Add(1)
			defer inside.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			c.begin(ev.DedupeKey)
			time.Sleep(300 * time.Millisecond)
			c.end(ev.DedupeKey, true)
			return nil
		})
		e.start(r)
	}
	rtWait(t, 60*time.Second, "every copy settled", func() bool {
		return c.effectsOf(env.DedupeKey) >= 1 && e.settled("billing")
	})
	if got := peak.Load(); got != 1 {
		t.Errorf("%d handlers of one dedupe_key ran at once, want 1", got)
	}
	if len(c.overlaps) > 0 {
		t.Errorf("handlers ran twice at once for %v", c.overlaps)
	}
	if got := c.effectsOf(env.DedupeKey); got != 1 {
		t.Errorf("the event took effect %d times, want 1", got)
	}
	if got := metricValue(t, reg, "wxpay_worker_duplicates_total", map[string]string{"consumer": "billing"}); got != copies-1 {
		t.Errorf("duplicates = %v, want %d", got, copies-1)
	}
}
