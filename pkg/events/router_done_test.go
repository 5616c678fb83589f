package events

import (
	"context"
	"testing"
	"time"
)

// TestRouterDoneMarkerTTL checks the done marker the router itself writes
// after a handled event: WeChat retries a notification for about a day,
// and every retry must find the marker.
func TestRouterDoneMarkerTTL(t *testing.T) {
	tests := []struct {
		name    string
		doneTTL time.Duration // RouterConfig.DoneTTL
		want    time.Duration
	}{
		{"default", 0, 7 * 24 * time.Hour},
		{"configured", 30 * time.Hour, 30 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newRTEnv(t)
			cfg := testRouterConfig("billing")
			cfg.DoneTTL = tt.doneTTL
			r := e.newRouter(cfg, nil)
			c := newCounter()
			r.HandleFunc("wxpay.>", func(ctx context.Context, ev Envelope) error {
				c.begin(ev.DedupeKey)
				c.end(ev.DedupeKey, true)
				return nil
			})
			e.start(r)
			env := rtEnvelope(testMchA, "4200000001")
			e.publish(env, "m1")
			rtWait(t, 20*time.Second, "the event settled", func() bool {
				return c.effectsOf(env.DedupeKey) == 1 && e.settled("billing")
			})
			done := doneKey(DefaultKeyPrefix, "billing", env.DedupeKey)
			ttl := e.rdb.TTL(e.ctx, done).Val()
			if ttl < tt.want-time.Minute || ttl > tt.want {
				t.Errorf("done marker %s TTL = %v, want %v", done, ttl, tt.want)
			}
			if ttl < MinDoneTTL {
				t.Errorf("done marker TTL %v is under %v: WeChat's retries would run the handlers again", ttl, MinDoneTTL)
			}
		})
	}
}
