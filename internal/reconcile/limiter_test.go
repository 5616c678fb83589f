package reconcile

import (
	"context"
	"sync"
	"testing"
	"time"
)

// The limiter spaces calls 1/rate apart whatever the number of callers: the
// last of n concurrent callers cannot go before (n-1)/rate has passed.
// (A lower bound only: sleeps are never shorter than asked, so this holds
// on a loaded machine too.)
func TestLimiterSpacesConcurrentCallers(t *testing.T) {
	l := newLimiter(100) // 10 ms apart
	const n = 10
	start := time.Now()
	var mu sync.Mutex
	var last time.Time
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if err := l.wait(context.Background()); err != nil {
				t.Error(err)
			}
			mu.Lock()
			if now := time.Now(); now.After(last) {
				last = now
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if span := last.Sub(start); span < (n-1)*10*time.Millisecond {
		t.Fatalf("%d calls at 100/s were let through within %v, want at least %v", n, span, (n-1)*10*time.Millisecond)
	}
}
