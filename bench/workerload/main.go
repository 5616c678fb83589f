// Command workerload measures events per second through one worker (an
// events.Router, as cmd/worker runs it) with real Redis dedupe: it
// publishes N distinct events to WXPAY first, then starts the router and
// times how long it takes to handle them all, with a no-op handler or the
// forward handler posting to a local receiver.
//
//	go run ./bench/workerload -nats nats://127.0.0.1:4223 -redis redis://127.0.0.1:6379/14 -n 200000 -mode noop
//
// -mode floor runs, in place of the router, the least a worker with the
// same guarantees must do: a loop that fetches a batch, claims it in one
// Redis pipeline (SET NX PX of each lock, EXISTS of each done marker),
// finishes it in another (SET of each done marker, compare-and-delete of
// each lock) and acknowledges it, with the same key names; no envelope
// decoding, handler, metrics or log. -mode compare runs floor and noop
// alternately (-runs pairs, each in a fresh process on fresh streams and
// database) and prints the ratio worker/floor of the medians.
//
// It deletes and recreates the WXPAY streams and flushes the Redis
// database it is given: point it at servers used for nothing else.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
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

// consumer is the durable consumer of every mode; the floor uses its key
// names too.
const consumer = "bench"

func run() error {
	natsURL := flag.String("nats", "nats://127.0.0.1:4223", "NATS server (2.10 or later); its WXPAY streams are recreated")
	redisURL := flag.String("redis", "redis://127.0.0.1:6379/14", "Redis database; it is flushed")
	n := flag.Int("n", 100000, "distinct events")
	mode := flag.String("mode", "noop", "noop, forward, floor or compare")
	concurrency := flag.Int("concurrency", 64, "router concurrency; the floor's batch size")
	runs := flag.Int("runs", 3, "compare: floor/noop pairs")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the handling phase to this file")
	memprofile := flag.String("memprofile", "", "write an allocation profile (alloc_objects, alloc_space) to this file at the end")
	logFile := flag.String("log", "", "the router's log at info (one line per event), through the batched writer cmd/worker uses; default a temporary file removed at the end; 'off' for none")
	flag.Parse()
	switch *mode {
	case "noop", "forward", "floor":
	case "compare":
		return compare(*runs)
	default:
		return fmt.Errorf("-mode %q: want noop, forward, floor or compare", *mode)
	}
	logger := zerolog.Nop()
	logLines := func() string { return "log off" }
	if *logFile != "off" && *mode != "floor" {
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
	if err := publish(ctx, js, *n); err != nil {
		return err
	}

	var handled atomic.Int64
	var elapsed, cpu time.Duration
	var start time.Time
	var cpu0 time.Duration
	// finished records the handling phase's time and CPU, before the
	// router's shutdown (which waits for its last pull to expire).
	finished := func() { elapsed, cpu = time.Since(start), cpuTime()-cpu0 }
	var handle func() error // runs the handling phase until every event was handled
	if *mode == "floor" {
		handle = func() error { return floor(ctx, js, rdb, *n, *concurrency) }
	} else {
		h, stop, err := handler(*mode, *concurrency, &handled)
		if err != nil {
			return err
		}
		defer stop()
		r, err := events.NewRouter(js, rdb, events.RouterConfig{Consumer: consumer, Concurrency: *concurrency, MaxAckPending: -1, Logger: logger})
		if err != nil {
			return err
		}
		r.Handle("wxpay.*.transaction.success", h)
		handle = func() error {
			rctx, cancel := context.WithCancel(ctx)
			defer cancel()
			done := make(chan error, 1)
			start := time.Now()
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
			finished()
			cancel()
			return <-done
		}
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	cpu0 = cpuTime()
	start = time.Now()
	if err := handle(); err != nil {
		return err
	}
	if elapsed == 0 {
		finished()
	}
	pprof.StopCPUProfile()
	if *memprofile != "" {
		f, err := os.Create(*memprofile)
		if err != nil {
			return err
		}
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			return err
		}
		f.Close()
	}
	dones, _ := rdb.Keys(ctx, events.DefaultKeyPrefix+"done:"+consumer+":*").Result()
	rate := float64(*n) / elapsed.Seconds()
	perEvent := float64(cpu.Microseconds()) / float64(*n)
	fmt.Printf("mode %s: %d events in %s = %.0f events/s (worker process CPU %.2f s = %.0f µs/event, GOMAXPROCS %d); done markers %d; %s\n",
		*mode, *n, elapsed.Round(time.Millisecond), rate, cpu.Seconds(), perEvent, runtime.GOMAXPROCS(0), len(dones), logLines())
	if len(dones) != *n {
		return fmt.Errorf("%d done markers, want %d", len(dones), *n)
	}
	fmt.Printf("RESULT mode=%s events_per_s=%.0f cpu_us_per_event=%.1f\n", *mode, rate, perEvent)
	return nil
}

// publish puts n distinct events on WXPAY (asynchronously, then waits for
// every ack). The corpus is the same in every run and mode.
func publish(ctx context.Context, js jetstream.JetStream, n int) error {
	start := time.Now()
	for i := range n {
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
	fmt.Printf("published %d events in %s\n", n, time.Since(start).Round(time.Millisecond))
	return nil
}

// handler returns the handler of mode noop or forward, counting into
// handled, and what stops its receiver.
func handler(mode string, concurrency int, handled *atomic.Int64) (events.Handler, func(), error) {
	if mode == "noop" {
		return events.HandlerFunc(func(ctx context.Context, ev events.Envelope) error {
			handled.Add(1)
			return nil
		}), func() {}, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	recv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(204)
	})}
	go recv.Serve(ln)
	f, err := handlers.NewForward(handlers.ForwardConfig{URL: "http://" + ln.Addr().String() + "/hook", Secret: []byte("benchmark-forward-secret-32bytes"),
		HTTPClient: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency * 2}}})
	if err != nil {
		recv.Close()
		return nil, nil, err
	}
	return events.HandlerFunc(func(ctx context.Context, ev events.Envelope) error {
		if err := f.HandleEvent(ctx, ev); err != nil {
			return err
		}
		handled.Add(1)
		return nil
	}), func() { recv.Close() }, nil
}

// releaseScript is the router's compare-and-delete of a lock.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// floor handles the n events the way the router must at the least: per
// fetched batch, one pipeline claiming every event (lock SET NX PX with an
// owner token, done EXISTS), one finishing the claimed ones (done SET,
// compare-and-delete of the lock), then the acks. The dedupe key is read
// from the Nats-Msg-Id header, which the publisher sets to it, so no body
// is decoded. It uses the router's consumer settings and key names.
func floor(ctx context.Context, js jetstream.JetStream, rdb *redis.Client, n, batch int) error {
	const ackWait = 30 * time.Second
	const doneTTL = 7 * 24 * time.Hour
	cons, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{
		Durable: consumer, AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait: ackWait, MaxAckPending: -1, FilterSubjects: []string{"wxpay.*.transaction.success"},
	})
	if err != nil {
		return err
	}
	token := "floor:" + strconv.Itoa(os.Getpid())
	prefix := events.DefaultKeyPrefix
	type claim struct {
		msg  jetstream.Msg
		key  string
		set  *redis.BoolCmd
		done *redis.IntCmd
	}
	claims := make([]claim, 0, batch)
	handled := 0
	for handled < n {
		b, err := cons.Fetch(batch, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return err
		}
		claims = claims[:0]
		for msg := range b.Messages() {
			claims = append(claims, claim{msg: msg, key: msg.Headers().Get(nats.MsgIdHdr)})
		}
		if err := b.Error(); err != nil {
			return err
		}
		if len(claims) == 0 {
			continue
		}
		p := rdb.Pipeline()
		for i := range claims {
			c := &claims[i]
			c.set = p.SetNX(ctx, prefix+"lock:"+consumer+":"+c.key, token, ackWait)
			c.done = p.Exists(ctx, prefix+"done:"+consumer+":"+c.key)
		}
		if _, err := p.Exec(ctx); err != nil {
			return err
		}
		p = rdb.Pipeline()
		value := time.Now().UTC().Format(time.RFC3339)
		for _, c := range claims {
			if !c.set.Val() || c.done.Val() > 0 {
				return fmt.Errorf("event %s: lock taken %v, done %v: the corpus has distinct events", c.key, c.set.Val(), c.done.Val())
			}
			p.Set(ctx, prefix+"done:"+consumer+":"+c.key, value, doneTTL)
			releaseScript.Eval(ctx, p, []string{prefix + "lock:" + consumer + ":" + c.key}, token)
		}
		if _, err := p.Exec(ctx); err != nil {
			return err
		}
		for _, c := range claims {
			if err := c.msg.Ack(); err != nil {
				return err
			}
		}
		handled += len(claims)
	}
	return js.Conn().Flush()
}

// compare runs floor and noop alternately, runs times each, each in a
// fresh process of this program with the same flags, and prints every
// run's figures and the ratio worker/floor of the medians.
func compare(runs int) error {
	var args []string
	flag.Visit(func(f *flag.Flag) {
		if f.Name != "mode" && f.Name != "runs" && f.Name != "cpuprofile" {
			args = append(args, "-"+f.Name+"="+f.Value.String())
		}
	})
	rates := map[string][]float64{}
	cpus := map[string][]float64{}
	for i := range runs {
		for _, mode := range []string{"floor", "noop"} {
			fmt.Printf("== run %d/%d: %s — %s, load average %s\n", i+1, runs, mode, time.Now().UTC().Format("15:04:05 UTC"), loadavg())
			cmd := exec.Command(os.Args[0], append([]string{"-mode=" + mode}, args...)...)
			var out bytes.Buffer
			cmd.Stdout = io.MultiWriter(os.Stdout, &out)
			cmd.Stderr = os.Stderr
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("%s run %d: %w", mode, i+1, err)
			}
			sc := bufio.NewScanner(&out)
			for sc.Scan() {
				var m string
				var rate, cpu float64
				if _, err := fmt.Sscanf(sc.Text(), "RESULT mode=%s events_per_s=%g cpu_us_per_event=%g", &m, &rate, &cpu); err == nil {
					rates[mode] = append(rates[mode], rate)
					cpus[mode] = append(cpus[mode], cpu)
				}
			}
		}
	}
	for _, mode := range []string{"floor", "noop"} {
		if len(rates[mode]) != runs {
			return fmt.Errorf("%s: %d results of %d runs", mode, len(rates[mode]), runs)
		}
	}
	fmt.Printf("\n== comparison, %s, load average %s\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), loadavg())
	for _, mode := range []string{"floor", "noop"} {
		fmt.Printf("%-6s events/s %s (median %.0f); CPU µs/event %s (median %.1f)\n", mode,
			list(rates[mode], "%.0f"), median(rates[mode]), list(cpus[mode], "%.1f"), median(cpus[mode]))
	}
	fmt.Printf("worker/floor: events/s %.2f, CPU per event %.2f\n",
		median(rates["noop"])/median(rates["floor"]), median(cpus["noop"])/median(cpus["floor"]))
	return nil
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func list(v []float64, format string) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(parts, ", ")
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
