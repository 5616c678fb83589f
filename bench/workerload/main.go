// Command workerload measures events per second through one worker (an
// events.Router, as cmd/worker runs it) with real Redis dedupe: it
// publishes N distinct events to WXPAY first, then starts the router and
// times how long it takes to handle them all, with a no-op handler or the
// forward handler posting to a local receiver.
//
//	go run ./bench/workerload -nats nats://127.0.0.1:4223 -redis redis://127.0.0.1:6379/14 -n 200000 -mode noop
//
// It deletes and recreates the WXPAY streams and flushes the Redis
// database it is given: point it at servers used for nothing else.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/internal/config"
	"github.com/wxpay-notify/wxpay-notify/internal/handlers"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "workerload:", err)
		os.Exit(1)
	}
}

func run() error {
	natsURL := flag.String("nats", "nats://127.0.0.1:4223", "NATS server (2.10 or later); its WXPAY streams are recreated")
	redisURL := flag.String("redis", "redis://127.0.0.1:6379/14", "Redis database; it is flushed")
	n := flag.Int("n", 100000, "distinct events")
	mode := flag.String("mode", "noop", "noop or forward")
	concurrency := flag.Int("concurrency", 64, "router concurrency")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the handling phase to this file")
	logFile := flag.String("log", "", "the router's log at info (one line per event), through the batched writer cmd/worker uses; default a temporary file removed at the end; 'off' for none")
	flag.Parse()
	if *mode != "noop" && *mode != "forward" {
		return fmt.Errorf("-mode %q: want noop or forward", *mode)
	}
	logger := zerolog.Nop()
	logLines := func() string { return "log off" }
	if *logFile != "off" {
		var f *os.File
		var err error
		if *logFile == "" {
			f, err = os.CreateTemp("", "workerload-*.log")
		} else {
			f, err = os.Create(*logFile)
		}
		if err != nil {
			return err
		}
		if *logFile == "" {
			defer os.Remove(f.Name())
		}
		defer f.Close()
		lb := config.NewLogBuffer(f, 0)
		defer lb.Close()
		logger = zerolog.New(lb).Level(zerolog.InfoLevel).With().Timestamp().Str("service", "worker").Logger()
		logLines = func() string {
			lb.Flush()
			st, err := f.Stat()
			if err != nil {
				return "log: " + err.Error()
			}
			return fmt.Sprintf("log at info: %d bytes written", st.Size())
		}
	}
	ctx := context.Background()
	nc, err := nats.Connect(*natsURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for _, s := range []string{events.StreamName, events.DLQStreamName} {
		if err := js.DeleteStream(ctx, s); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return err
		}
	}
	if _, err := events.EnsureStreams(ctx, js, events.StreamConfig{}); err != nil {
		return err
	}
	opt, err := redis.ParseURL(*redisURL)
	if err != nil {
		return err
	}
	opt.PoolSize = *concurrency * 2
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}

	// Publish the events first (asynchronously, then wait for every ack).
	start := time.Now()
	for i := range *n {
		id := strconv.Itoa(4200000000 + i)
		env := events.Envelope{ID: "EV-" + id, DedupeKey: events.TransactionKey(id), EventType: "TRANSACTION.SUCCESS",
			MchID: "1230000109", Source: events.SourceCallback, CreateTime: "2024-03-01T10:00:00+08:00", ReceivedAt: time.Now(),
			ResourceType: "encrypt-resource", OriginalType: "transaction",
			Resource: json.RawMessage(`{"mchid":"1230000109","appid":"wxd678efh567hg6787","out_trade_no":"T` + id + `","transaction_id":"` + id + `","trade_type":"JSAPI","trade_state":"SUCCESS","bank_type":"CMC","success_time":"2024-03-01T10:00:00+08:00","amount":{"total":100,"payer_total":100,"currency":"CNY"}}`)}
		body, _ := json.Marshal(env)
		msg := nats.NewMsg(events.Subject(env.MchID, env.EventType))
		msg.Data = body
		msg.Header.Set(nats.MsgIdHdr, env.DedupeKey)
		if _, err := js.PublishMsgAsync(msg); err != nil {
			return err
		}
		if i%2000 == 1999 { // stay under the async window
			<-js.PublishAsyncComplete()
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		return errors.New("publishing did not complete")
	}
	fmt.Printf("published %d events in %s\n", *n, time.Since(start).Round(time.Millisecond))

	var handled atomic.Int64
	var h events.Handler = events.HandlerFunc(func(ctx context.Context, ev events.Envelope) error {
		handled.Add(1)
		return nil
	})
	if *mode == "forward" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		recv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(204)
		})}
		go recv.Serve(ln)
		defer recv.Close()
		f, err := handlers.NewForward(handlers.ForwardConfig{URL: "http://" + ln.Addr().String() + "/hook", Secret: []byte("benchmark-forward-secret-32bytes"),
			HTTPClient: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *concurrency * 2}}})
		if err != nil {
			return err
		}
		h = events.HandlerFunc(func(ctx context.Context, ev events.Envelope) error {
			if err := f.HandleEvent(ctx, ev); err != nil {
				return err
			}
			handled.Add(1)
			return nil
		})
	}
	r, err := events.NewRouter(js, rdb, events.RouterConfig{Consumer: "bench", Concurrency: *concurrency, MaxAckPending: -1, Logger: logger})
	if err != nil {
		return err
	}
	r.Handle("wxpay.*.transaction.success", h)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	cpu0 := cpuTime()
	start = time.Now()
	go func() { done <- r.Run(rctx) }()
	for handled.Load() < int64(*n) {
		select {
		case err := <-done:
			return fmt.Errorf("router stopped: %w", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Since(start) > 10*time.Minute {
			return fmt.Errorf("only %d of %d handled in 10 minutes", handled.Load(), *n)
		}
	}
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	cancel()
	<-done
	dones, _ := rdb.Keys(ctx, "wxpay:done:bench:*").Result()
	fmt.Printf("mode %s: %d events in %s = %.0f events/s (worker process CPU %.2f s = %.0f µs/event, GOMAXPROCS %d); done markers %d; %s\n",
		*mode, *n, elapsed.Round(time.Millisecond), float64(*n)/elapsed.Seconds(), cpu.Seconds(), float64(cpu.Microseconds())/float64(*n), runtime.GOMAXPROCS(0), len(dones), logLines())
	if len(dones) != *n {
		return fmt.Errorf("%d done markers, want %d", len(dones), *n)
	}
	return nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
