package events_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// A team's worker: one durable consumer, one handler, run until its
// context ends. In production ctx comes from signal.NotifyContext (SIGTERM
// ends the worker), js from nats.Connect and rdb from redis.NewClient; here
// in-process servers stand in for them, and the handler stops the worker
// after the one event the example publishes.
func ExampleRouter() {
	js, rdb, closeServices := exampleServices()
	defer closeServices()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	r, err := events.NewRouter(js, rdb, events.RouterConfig{Consumer: "fulfilment"})
	if err != nil {
		fmt.Println(err)
		return
	}
	r.HandleFunc(events.Pattern(events.AnyMerchant, wxpay.EventTransactionSuccess), func(ctx context.Context, ev events.Envelope) error {
		tx, err := events.DecodeResource[wxpay.Transaction](ev)
		if err != nil {
			return err // permanent: dead-lettered at once
		}
		zerolog.Ctx(ctx).Info().Str("out_trade_no", tx.OutTradeNo).Msg("paid")
		fmt.Println("paid:", tx.OutTradeNo, tx.TradeState)
		stop()     // the example's SIGTERM
		return nil // done: marked in Redis, then acknowledged
	})

	// What ingress publishes when WeChat reports the payment.
	_, err = events.NewPublisher(js, events.PublisherConfig{}).Publish(ctx, events.Envelope{
		ID:           "rc-4200000000000000000000000001",
		DedupeKey:    events.TransactionKey("4200000000000000000000000001"),
		EventType:    wxpay.EventTransactionSuccess,
		MchID:        "1230000109",
		Source:       events.SourceReconciler,
		ReceivedAt:   time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
		OriginalType: events.OriginalTypeTransaction,
		Resource:     []byte(`{"out_trade_no":"T1001","transaction_id":"4200000000000000000000000001","trade_state":"SUCCESS"}`),
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	err = r.Run(ctx) // returns once the event in flight is done
	fmt.Println("worker stopped:", err)
	// Output:
	// paid: T1001 SUCCESS
	// worker stopped: <nil>
}

// exampleServices starts an in-process JetStream server with the WXPAY
// streams and an in-process Redis, and returns clients of both and a
// function that closes everything.
func exampleServices() (jetstream.JetStream, *redis.Client, func()) {
	dir, err := os.MkdirTemp("", "router-example")
	if err != nil {
		panic(err)
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		panic(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		panic("nats-server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		panic(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := events.EnsureStreams(ctx, js, events.StreamConfig{}); err != nil {
		panic(err)
	}
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	return js, rdb, func() {
		rdb.Close()
		mr.Close()
		nc.Close()
		ns.Shutdown()
		ns.WaitForShutdown()
		os.RemoveAll(dir)
	}
}

func ExampleDecodeResource() {
	ev := events.Envelope{
		DedupeKey: events.TransactionKey("4200000000000000000000000001"),
		Resource:  []byte(`{"out_trade_no":"T1001","transaction_id":"4200000000000000000000000001","trade_state":"SUCCESS"}`),
	}
	tx, err := events.DecodeResource[wxpay.Transaction](ev)
	fmt.Println(tx.OutTradeNo, tx.TradeState, err)

	ev.Resource = []byte(`{"out_trade_no": 1001}`)
	_, err = events.DecodeResource[wxpay.Transaction](ev)
	fmt.Println(events.IsPermanent(err), errors.Is(err, events.ErrMalformedEnvelope))
	// Output:
	// T1001 SUCCESS <nil>
	// true true
}

func ExamplePermanent() {
	handle := func(status int) error {
		switch {
		case status == 429:
			return events.RetryAfter(30*time.Second, fmt.Errorf("receiver answered %d", status))
		case status >= 500:
			return fmt.Errorf("receiver answered %d", status) // retried with backoff
		case status >= 400:
			return events.Permanent(fmt.Errorf("receiver refused the event with %d", status))
		}
		return nil
	}
	for _, status := range []int{200, 503, 429, 404} {
		err := handle(status)
		fmt.Printf("%d: permanent=%v err=%v\n", status, events.IsPermanent(err), err)
	}
	// Output:
	// 200: permanent=false err=<nil>
	// 503: permanent=false err=receiver answered 503
	// 429: permanent=false err=retry after 30s: receiver answered 429
	// 404: permanent=true err=receiver refused the event with 404
}
