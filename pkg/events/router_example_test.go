package events_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// A team's worker: one durable consumer, one handler, run until SIGTERM.
func ExampleRouter() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := zerolog.New(os.Stderr).With().Timestamp().Str("service", "fulfilment").Logger()

	nc, err := nats.Connect(nats.DefaultURL, nats.Name("fulfilment"), nats.MaxReconnects(-1))
	if err != nil {
		log.Fatal().Err(err).Msg("nats")
	}
	defer nc.Drain()
	js, _ := jetstream.New(nc)
	opt, _ := redis.ParseURL("redis://127.0.0.1:6379/0")
	rdb := redis.NewClient(opt)
	defer rdb.Close()

	r, err := events.NewRouter(js, rdb, events.RouterConfig{Consumer: "fulfilment", Logger: log})
	if err != nil {
		log.Fatal().Err(err).Msg("router")
	}
	r.HandleFunc(events.Pattern(events.AnyMerchant, wxpay.EventTransactionSuccess), func(ctx context.Context, ev events.Envelope) error {
		tx, err := events.DecodeResource[wxpay.Transaction](ev)
		if err != nil {
			return err // permanent: dead-lettered at once
		}
		zerolog.Ctx(ctx).Info().Str("out_trade_no", tx.OutTradeNo).Msg("paid")
		return nil // done: marked in Redis, then acknowledged
	})
	if err := r.Run(ctx); err != nil {
		log.Error().Err(err).Msg("worker")
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
