package events

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
)

// On a three-server NATS cluster (NATS_URL lists all three, the streams
// have three replicas) the publish and consume path survives the loss of
// any one server and its return on the same store: every event published
// and acknowledged is handled, once.
func TestPublishAndConsumeSurviveALostNATSServer(t *testing.T) {
	cl := testenv.StartNATSCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, js := testenv.Connect(t, cl.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if _, err := EnsureStreams(ctx, js, StreamConfig{Replicas: 3}); err != nil {
		t.Fatalf("EnsureStreams with 3 replicas: %v", err)
	}
	st, err := js.Stream(ctx, StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(ctx); err != nil || info.Config.Replicas != 3 {
		t.Fatalf("stream %s: replicas %v, %v; want 3", StreamName, info.Config.Replicas, err)
	}

	opt, err := redis.ParseURL(testenv.StartRedis(t).URL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	_, wjs := testenv.Connect(t, cl.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	r, err := NewRouter(wjs, rdb, testRouterConfig("ha"))
	if err != nil {
		t.Fatal(err)
	}
	c := newCounter()
	r.HandleFunc("wxpay.>", func(ctx context.Context, ev Envelope) error {
		c.begin(ev.DedupeKey)
		c.end(ev.DedupeKey, true)
		return nil
	})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	defer func() {
		stop()
		<-done
	}()

	pub := NewPublisher(js, PublisherConfig{})
	published := 0
	publish := func(n int) {
		t.Helper()
		for range n {
			env := rtEnvelope(testMchA, fmt.Sprintf("42200%05d", published))
			// A publish may fail while the stream elects a new leader:
			// the ingress answers 503 then and WeChat sends it again,
			// which this loop stands for.
			deadline := time.Now().Add(30 * time.Second)
			for {
				if _, err := pub.Publish(ctx, env); err == nil {
					break
				} else if time.Now().After(deadline) {
					t.Fatalf("publishing %s for 30 s: %v", env.DedupeKey, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			published++
		}
	}
	settled := func(what string) {
		t.Helper()
		rtWait(t, 60*time.Second, what, func() bool { return c.distinctEffects() == published })
	}

	publish(30)
	settled("the first events handled")
	for i := range cl.Servers { // each server in turn is lost and comes back
		cl.Stop(i)
		publish(20)
		settled(fmt.Sprintf("events handled with server %d down", i))
		cl.Restart(t, i)
		publish(10)
		settled(fmt.Sprintf("events handled after server %d came back", i))
	}
	for i := range published {
		key := TransactionKey(fmt.Sprintf("42200%05d", i))
		if got := c.effectsOf(key); got != 1 {
			t.Errorf("%s took effect %d times, want 1", key, got)
		}
	}
}
