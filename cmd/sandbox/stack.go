package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/internal/admin"
	"github.com/wxpay-notify/wxpay-notify/internal/config"
	"github.com/wxpay-notify/wxpay-notify/internal/handlers"
	"github.com/wxpay-notify/wxpay-notify/internal/ingress"
	"github.com/wxpay-notify/wxpay-notify/internal/reconcile"
	"github.com/wxpay-notify/wxpay-notify/internal/tracking"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// Fixed settings of the parts.
const (
	mchid = "1230000109"
	// consumer is the worker's durable consumer.
	consumer = "sandbox"
	// timeScale shortens WeChat's notification retry schedule (15 s
	// becomes 150 ms) and the delays the traffic asks for.
	timeScale = 0.01
	// redisTick is how often miniredis's clock is moved on, so that the
	// TTLs of locks expire as they would in Redis.
	redisTick = 100 * time.Millisecond
)

// sandbox is the running parts, composed as the ingress, worker and
// reconciler commands compose them, each with its own NATS connection and
// its own WeChat Pay client as separate processes would have.
type sandbox struct {
	o     options
	clock *clock
	log   zerolog.Logger
	reg   *prometheus.Registry

	dir      string // JetStream files and bills
	tempDir  bool   // dir is removed at exit
	ns       *server.Server
	mini     *miniredis.Miniredis
	rdb      *redis.Client
	platform *wxpaytest.Server
	merchant *wxpaytest.Merchant
	conns    []*nats.Conn
	adminJS  jetstream.JetStream
	business *business
	router   *events.Router
	recon    *reconcile.Reconciler
	reconSum reconcile.Summary
	reconMu  sync.Mutex
	adminSrv *http.Server

	notifyURL, metricsAddr string

	ctx       context.Context    // ends when the sandbox closes
	cancel    context.CancelFunc // stops the background parts
	bg        sync.WaitGroup
	stopRecon context.CancelFunc
	reconDone chan struct{}
	closers   []func()
}

// start brings every part up; on failure what started is stopped again.
func start(ctx context.Context, o options, stderr io.Writer, h hooks) (sb *sandbox, err error) {
	log, err := config.NewLogger(config.Common{LogLevel: o.logLevel, LogFormat: "console"}, "sandbox", version, stderr)
	if err != nil {
		return nil, fmt.Errorf("%w: --log-level: %v", errUsage, err)
	}
	bgCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	sb = &sandbox{o: o, clock: newClock(time.Now()), log: log, reg: admin.NewRegistry(), ctx: bgCtx, cancel: cancel}
	defer func() {
		if err != nil {
			sb.close()
			sb = nil
		}
	}()
	steps := []func(context.Context) error{sb.startDir, sb.startNATS, sb.startRedis, sb.startPlatform,
		sb.startIngress, func(ctx context.Context) error { return sb.startWorker(ctx, h) }, sb.startReconciler, sb.startAdmin}
	for _, step := range steps {
		if err := step(bgCtx); err != nil {
			return sb, err
		}
	}
	return sb, nil
}

// background runs fn until the sandbox closes.
func (sb *sandbox) background(fn func()) {
	sb.bg.Go(fn)
}

// onClose registers fn to run at close, last registered first.
func (sb *sandbox) onClose(fn func()) { sb.closers = append(sb.closers, fn) }

// close stops every part, in the reverse order of their start.
func (sb *sandbox) close() {
	sb.cancel()
	sb.bg.Wait()
	for i := len(sb.closers) - 1; i >= 0; i-- {
		sb.closers[i]()
	}
}

func (sb *sandbox) startDir(context.Context) error {
	if sb.o.dataDir != "" {
		sb.dir = sb.o.dataDir
		// The fake platform numbers transactions and refunds afresh in
		// every run, so a previous run's events would share their dedupe
		// keys with this run's and be taken for duplicates.
		if entries, _ := os.ReadDir(filepath.Join(sb.dir, "jetstream")); len(entries) > 0 {
			return fmt.Errorf("%w: --data-dir %s holds the events of an earlier run, whose ids this run would repeat: give an empty directory, or remove it", errUsage, sb.dir)
		}
		return os.MkdirAll(sb.dir, 0o750)
	}
	dir, err := os.MkdirTemp("", "wxpay-sandbox-")
	if err != nil {
		return fmt.Errorf("creating a temporary directory (check TMPDIR): %w", err)
	}
	sb.dir, sb.tempDir = dir, true
	sb.onClose(func() { os.RemoveAll(dir) })
	return nil
}

// startNATS starts the embedded NATS server with JetStream on a loopback
// port and creates the WXPAY streams.
func (sb *sandbox) startNATS(ctx context.Context) error {
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(sb.dir, "jetstream"),
		NoLog: true, NoSigs: true}
	ns, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("embedded NATS server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return errors.New("the embedded NATS server did not start within 10s")
	}
	sb.ns = ns
	sb.onClose(func() { ns.Shutdown(); ns.WaitForShutdown() })
	_, js, err := sb.connect("wxpay-sandbox")
	if err != nil {
		return err
	}
	sb.adminJS = js
	_, err = events.EnsureStreams(ctx, js, events.StreamConfig{})
	return err
}

// connect opens one part's NATS connection, closed at exit.
func (sb *sandbox) connect(name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(sb.ns.ClientURL(), nats.Name(name))
	if err != nil {
		return nil, nil, fmt.Errorf("connecting %s to the embedded NATS server: %w", name, err)
	}
	sb.onClose(nc.Close)
	js, err := jetstream.New(nc)
	return nc, js, err
}

// startRedis starts miniredis and moves its clock on with real time.
func (sb *sandbox) startRedis(ctx context.Context) error {
	m, err := miniredis.Run()
	if err != nil {
		return fmt.Errorf("miniredis: %w", err)
	}
	sb.mini = m
	sb.onClose(m.Close)
	sb.rdb = redis.NewClient(&redis.Options{Addr: m.Addr()})
	sb.onClose(func() { sb.rdb.Close() })
	sb.background(func() {
		t := time.NewTicker(redisTick)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				m.FastForward(now.Sub(last))
				last = now
			}
		}
	})
	return nil
}

// startPlatform starts the fake WeChat Pay platform on the sandbox clock,
// with one merchant.
func (sb *sandbox) startPlatform(context.Context) error {
	sb.platform = wxpaytest.NewServer(nil, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, Now: sb.clock.Now, TimeScale: timeScale})
	sb.onClose(sb.platform.Close)
	sb.merchant = sb.platform.AddMerchant(wxpaytest.MerchantOptions{MchID: mchid})
	return nil
}

// client is one part's WeChat Pay client of the merchant, on the sandbox
// clock (ClientConfig passes the platform's).
func (sb *sandbox) client() (*wxpay.Client, error) {
	c, err := wxpay.NewClient(sb.platform.ClientConfig(sb.merchant))
	if err != nil {
		return nil, fmt.Errorf("WeChat Pay client: %w", err)
	}
	return c, nil
}

// startIngress serves the notification endpoint on the loopback listener
// and points the platform's notifications at it.
func (sb *sandbox) startIngress(ctx context.Context) error {
	client, err := sb.client()
	if err != nil {
		return err
	}
	_, js, err := sb.connect("wxpay-ingress")
	if err != nil {
		return err
	}
	h, err := ingress.NewHandler([]ingress.Merchant{{MchID: mchid, Client: client, APIv2Key: sb.merchant.APIv2Key}},
		events.NewPublisher(js, events.PublisherConfig{}),
		ingress.Config{Logger: sb.log.With().Str("part", "ingress").Logger(), Registerer: sb.reg, Now: sb.clock.Now})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", sb.o.listen)
	if err != nil {
		return fmt.Errorf("%w: --listen %s: %v", errUsage, sb.o.listen, err)
	}
	sb.notifyURL = "http://" + ln.Addr().String() + "/notify/" + mchid
	srv := ingress.NewServer(h, ingress.ServerConfig{})
	sb.background(func() {
		if err := srv.Run(ctx, ln); err != nil {
			sb.log.Error().Err(err).Msg("ingress server")
		}
	})
	return nil
}

// startWorker runs the router with the log (quiet), tracker and business
// handlers on every event of the merchant.
func (sb *sandbox) startWorker(ctx context.Context, h hooks) error {
	_, js, err := sb.connect("wxpay-worker-" + consumer)
	if err != nil {
		return err
	}
	chain, err := handlers.Chain([]string{"log", "tracker"}, handlers.Deps{Logger: zerolog.Nop(), Redis: sb.rdb})
	if err != nil {
		return err
	}
	sb.business = newBusiness(h.repeatEffect)
	r, err := events.NewRouter(js, sb.rdb, events.RouterConfig{
		Consumer:   consumer,
		AckWait:    5 * time.Second,
		MaxDeliver: 5,
		RetryBase:  50 * time.Millisecond,
		RetryMax:   time.Second,
		Logger:     sb.log.With().Str("part", "worker").Logger(),
		Registerer: sb.reg,
	})
	if err != nil {
		return err
	}
	if err := r.Register(events.Pattern(mchid, events.AnyEventType), append(chain, sb.business)...); err != nil {
		return err
	}
	sb.router = r
	sb.background(func() {
		if err := r.Run(ctx); err != nil {
			sb.log.Error().Err(err).Msg("worker")
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for r.Ready() != nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("the worker was not ready within 30s: %v", r.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// startReconciler builds the reconciler and runs its orders step every
// --reconcile-every.
func (sb *sandbox) startReconciler(ctx context.Context) error {
	client, err := sb.client()
	if err != nil {
		return err
	}
	_, js, err := sb.connect("wxpay-reconciler")
	if err != nil {
		return err
	}
	sb.recon = reconcile.New([]reconcile.Merchant{{MchID: mchid, Client: client}},
		tracking.NewStore(sb.rdb, tracking.Config{}), events.NewPublisher(js, events.PublisherConfig{}),
		reconcile.Config{StaleAfter: sb.o.staleAfter, Rate: 200, BackoffBase: 50 * time.Millisecond,
			Logger: sb.log.With().Str("part", "reconciler").Logger(), Now: sb.clock.Now})
	sb.runReconciler(ctx)
	return nil
}

// runReconciler starts the periodic orders step; stopReconciler ends it.
func (sb *sandbox) runReconciler(ctx context.Context) {
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	sb.stopRecon, sb.reconDone = stop, done
	sb.background(func() {
		defer close(done)
		t := time.NewTicker(sb.o.reconcileEvery)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
				sb.reconcileOnce(rctx)
			}
		}
	})
}

// stopReconciler stops the periodic orders step and waits for its run.
func (sb *sandbox) stopReconciler() {
	sb.stopRecon()
	<-sb.reconDone
}

// reconcileOnce runs the orders step under the reconciler's lock, as
// `reconciler orders` does, and adds up its summary.
func (sb *sandbox) reconcileOnce(ctx context.Context) {
	err := reconcile.WithLock(ctx, sb.rdb, reconcile.LockKey(events.DefaultKeyPrefix), reconcile.DefaultLockTTL, func(ctx context.Context) error {
		sum, err := sb.recon.Orders(ctx)
		sb.reconMu.Lock()
		sb.reconSum.Add(sum)
		sb.reconMu.Unlock()
		return err
	})
	if err != nil && ctx.Err() == nil {
		sb.log.Error().Err(err).Msg("reconciler orders")
	}
}

// startAdmin serves /metrics, /healthz and /readyz of every part.
func (sb *sandbox) startAdmin(ctx context.Context) error {
	srv, addr, err := admin.Listen(sb.o.metricsAddr, admin.Handler(sb.reg))
	if err != nil {
		return fmt.Errorf("%w: --metrics-addr: %v", errUsage, err)
	}
	sb.adminSrv, sb.metricsAddr = srv, addr
	sb.onClose(func() { srv.Close() })
	return nil
}

// serve prints the addresses and keeps everything running until ctx ends.
func (sb *sandbox) serve(ctx context.Context, w io.Writer) {
	fmt.Fprintf(w, "\nsandbox serving until SIGINT or SIGTERM:\n  notify URL   %s\n  NATS URL     %s\n  Redis        %s (redis://%s/0)\n  metrics URL  http://%s/metrics\n",
		sb.notifyURL, sb.ns.ClientURL(), sb.mini.Addr(), sb.mini.Addr(), sb.metricsAddr)
	fmt.Fprintf(w, "  WeChat Pay   %s (the fake platform; merchant %s)\n", sb.platform.URL(), mchid)
	fmt.Fprintf(w, "  try: nats --server %s sub 'wxpay.>'\n", sb.ns.ClientURL())
	if !sb.tempDir {
		fmt.Fprintf(w, "  data dir     %s\n", sb.dir)
	}
	<-ctx.Done()
}
