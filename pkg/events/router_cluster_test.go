package events

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
)

// The worker's dedupe works on a Redis Cluster: an event's done marker
// and lock live in different hash slots, claims and finishes of concurrent
// deliveries go out in pipelines that span nodes, and the scripts touch
// one key each. Every copy of every event takes effect once.
func TestRouterDuplicateStormOnRedisCluster(t *testing.T) {
	const (
		events  = 60
		copies  = 3
		workers = 2
	)
	cluster := testenv.StartRedisCluster(t)
	e := newRTEnv(t)
	reg := prometheus.NewRegistry()
	storm := newCounter()
	for range workers {
		cfg := testRouterConfig("cluster")
		cfg.Concurrency = 8
		cfg.Registerer = reg
		r := e.newRouter(cfg, cluster.Client(t))
		r.HandleFunc("wxpay.*.transaction.success", func(ctx context.Context, ev Envelope) error {
			storm.begin(ev.DedupeKey)
			time.Sleep(time.Millisecond)
			storm.end(ev.DedupeKey, true)
			return nil
		})
		e.start(r)
	}
	keys := make([]string, events)
	for c := range copies {
		for i := range events {
			env := rtEnvelope(testMchA, fmt.Sprintf("42100%05d", i))
			keys[i] = env.DedupeKey
			e.publish(env, fmt.Sprintf("%s#%d", env.DedupeKey, c))
		}
	}
	rtWait(t, 45*time.Second, "every copy settled", func() bool {
		return storm.distinctEffects() == events && e.settled("cluster")
	})
	for _, k := range keys {
		if got := storm.effectsOf(k); got != 1 {
			t.Errorf("%s took effect %d times, want 1", k, got)
		}
	}
	l := map[string]string{"consumer": "cluster"}
	if got := metricValue(t, reg, "wxpay_worker_duplicates_total", l); got != events*(copies-1) {
		t.Errorf("duplicates = %v, want %d", got, events*(copies-1))
	}
	if got := len(e.deadLetters()); got != 0 {
		t.Errorf("got %d dead letters, want 0", got)
	}
}
