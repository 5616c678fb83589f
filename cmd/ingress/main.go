// Command ingress is the public WeChat Pay notification endpoint: it
// verifies and decrypts each notification and publishes it to NATS
// JetStream, answering WeChat success only once the event is durable.
//
// Usage: ingress [flags]; every flag also reads an environment variable
// (see --help). The admin listener serves /healthz, /readyz and /metrics.
//
// ingress doctor [flags] checks the same settings before go-live and says
// what is wrong and how to fix it (see ingress doctor --help).
//
// ingress health [--live] asks a running ingress's admin listener
// (ADMIN_ADDR) whether it is ready, for container health checks.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/wxpay-notify/wxpay-notify/internal/admin"
	"github.com/wxpay-notify/wxpay-notify/internal/config"
	"github.com/wxpay-notify/wxpay-notify/internal/ingress"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// errUsage marks a configuration error: exit status 2.
var errUsage = errors.New("usage")

// defaultGCPercent is the garbage collector's setting unless GOGC is set:
// the ingress keeps a few MB live and allocates about 11 KB per
// notification, so at the default (100) a payment rush spends a tenth of
// its CPU collecting; 400 lets the heap grow to a few tens of MB instead.
const defaultGCPercent = 400

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, nil); err != nil {
		fmt.Fprintln(os.Stderr, "ingress:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// settings are ingress's own flags beyond the shared ones.
type settings struct {
	common         *config.Common
	listen         *string
	merchants      *config.MerchantFlags
	publishTimeout *time.Duration
	answerDeadline *time.Duration
	streams        func() events.StreamConfig
	maxInFlight    *int
	maxConnections *int
}

// register registers the ingress's settings on fs. "ingress doctor"
// registers them too, so that it runs with the same flags as the ingress.
func register(fs *flag.FlagSet, getenv func(string) string) settings {
	return settings{
		common:         config.RegisterCommon(fs, getenv),
		listen:         config.ListenAddr(fs, getenv),
		merchants:      config.RegisterMerchants(fs, getenv),
		publishTimeout: config.Duration(fs, getenv, "publish-timeout", "PUBLISH_TIMEOUT", events.DefaultPublishTimeout, "longest wait for the JetStream acknowledgement"),
		answerDeadline: config.Duration(fs, getenv, "answer-deadline", "ANSWER_DEADLINE", ingress.DefaultAnswerDeadline, "budget for all work on one notification once its body is in (WeChat allows 3-5 s)"),
		streams:        config.RegisterStreams(fs, getenv),
		maxInFlight:    config.Int(fs, getenv, "max-in-flight", "MAX_IN_FLIGHT", ingress.DefaultMaxInFlight, "most notifications verified and published at once (after their body is read); more are answered 503 (WeChat retries)"),
		maxConnections: config.Int(fs, getenv, "max-connections", "MAX_CONNECTIONS", ingress.DefaultMaxConnections, "most open connections on the public listener; more are answered 503 and closed"),
	}
}

// run is the whole command; ready, when not nil, receives the bound
// public and admin addresses once serving (for tests).
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer, ready func(public, admin string)) error {
	if len(args) > 0 && args[0] == "doctor" {
		return runDoctor(ctx, args[1:], getenv, stdout)
	}
	if len(args) > 0 && args[0] == "health" {
		return admin.RunHealth(ctx, "ingress", errUsage, args[1:], getenv, stdout)
	}
	fs := flag.NewFlagSet("ingress", flag.ContinueOnError)
	fs.SetOutput(stdout)
	s := register(fs, getenv)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	merchants, merr := s.merchants.Resolve()
	if err := errors.Join(config.Err(fs), s.common.Validate(), merr); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *s.publishTimeout >= *s.answerDeadline {
		return fmt.Errorf("%w: PUBLISH_TIMEOUT (%s) must be shorter than ANSWER_DEADLINE (%s)", errUsage, *s.publishTimeout, *s.answerDeadline)
	}
	if *s.maxInFlight <= 0 || *s.maxConnections <= 0 {
		return fmt.Errorf("%w: MAX_IN_FLIGHT (%d) and MAX_CONNECTIONS (%d) must be positive", errUsage, *s.maxInFlight, *s.maxConnections)
	}
	// One line per notification: batched into few writes, warnings and
	// errors written at once, the rest flushed at exit.
	logOut := config.NewLogBuffer(stdout, 0)
	defer logOut.Close()
	log, err := config.NewLogger(*s.common, "ingress", version, logOut)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	log.Info().Object("config", s.common).Int("merchants", len(merchants)).Str("listen_addr", *s.listen).Msg("starting")

	// WeChat Pay clients, one per merchant, with their platform
	// certificates when they download them.
	clients, err := config.NewClients(merchants)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	config.StartCertificateRefresh(ctx, clients, log)

	// NATS: keep trying in the background; /readyz says whether we can publish.
	nc, js, err := s.common.ConnectNATS("wxpay-ingress", log)
	if err != nil {
		return err
	}
	streamsReady := admin.NewFlag("streams WXPAY/WXPAY_DLQ not yet ensured")
	go func() {
		if config.EnsureStreams(ctx, js, s.streams(), log) == nil {
			streamsReady.Set()
		}
	}()

	// The notification endpoint on the public listener.
	reg := admin.NewRegistry()
	ims := make([]ingress.Merchant, len(clients))
	for i, mc := range clients {
		ims[i] = ingress.Merchant{MchID: mc.Merchant.MchID, Client: mc.Client, APIv2Key: mc.Merchant.APIv2Key()}
	}
	h, err := ingress.NewHandler(ims, events.NewPublisher(js, events.PublisherConfig{Timeout: *s.publishTimeout}), ingress.Config{
		PublishTimeout: *s.publishTimeout,
		AnswerDeadline: *s.answerDeadline,
		MaxInFlight:    *s.maxInFlight,
		Logger:         log,
		Registerer:     reg,
	})
	if err != nil {
		return err
	}
	// Timeouts and header limit: ingress.ServerConfig's defaults.
	srv := ingress.NewServer(h, ingress.ServerConfig{MaxConnections: *s.maxConnections})
	adminSrv, adminAddr, err := admin.Listen(s.common.AdminAddr, admin.Handler(reg, srv.Ready, h.CanVerify, streamsReady.Check, admin.NATSReady(nc, js, events.StreamName)))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *s.listen)
	if err != nil {
		return fmt.Errorf("LISTEN_ADDR %s: %w", *s.listen, err)
	}
	log.Info().Str("listen_addr", ln.Addr().String()).Str("admin_addr", adminAddr).Strs("merchants", h.MerchantIDs()).Msg("serving")
	if ready != nil {
		ready(ln.Addr().String(), adminAddr)
	}

	// Until SIGTERM; then not ready, stop accepting, finish the
	// notifications in flight, drain NATS, close the admin listener.
	if err := srv.Run(ctx, ln); err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ingress.DefaultShutdownTimeout)
	defer cancel()
	if err := nc.Drain(); err != nil {
		log.Error().Err(err).Msg("NATS drain")
	}
	for nc.IsDraining() && sctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	adminSrv.Shutdown(sctx)
	log.Info().Msg("stopped")
	return nil
}
