// Package admin serves the admin listener every command has: /healthz
// (the process is alive), /readyz (its dependencies answer) and /metrics
// (Prometheus). It is never mounted on a public listener.
package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check reports why a dependency is not ready, or nil.
type Check func(ctx context.Context) error

// NewRegistry returns a registry with the Go and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves /healthz, /readyz and /metrics. Every check must pass for
// /readyz to answer 200; otherwise 503 names what failed.
func Handler(g prometheus.Gatherer, checks ...Check) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		var errs []error
		for _, c := range checks {
			if err := c(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return mux
}

// NATSReady checks that the connection is up and the streams exist.
func NATSReady(nc *nats.Conn, js jetstream.JetStream, streams ...string) Check {
	return func(ctx context.Context) error {
		if !nc.IsConnected() {
			return fmt.Errorf("NATS not connected (status %s; check NATS_URL and the server)", nc.Status())
		}
		for _, s := range streams {
			if _, err := js.Stream(ctx, s); err != nil {
				return fmt.Errorf("JetStream stream %s: %w", s, err)
			}
		}
		return nil
	}
}

// Flag is a Check that fails with msg until Set is called: a readiness
// condition that becomes true once, such as "the consumer has started".
type Flag struct {
	ch  chan struct{}
	msg string
}

// NewFlag returns a not-yet-set Flag.
func NewFlag(msg string) *Flag { return &Flag{ch: make(chan struct{}), msg: msg} }

// Set marks the condition met (once; later calls do nothing).
func (f *Flag) Set() {
	select {
	case <-f.ch:
	default:
		close(f.ch)
	}
}

// Check implements Check.
func (f *Flag) Check(context.Context) error {
	select {
	case <-f.ch:
		return nil
	default:
		return errors.New(f.msg)
	}
}

// Listen starts serving h on addr in the background and returns the
// server, so the caller can Shutdown it, and the bound address.
func Listen(addr string, h http.Handler) (*http.Server, string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("admin listener %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	go srv.Serve(ln)
	return srv, ln.Addr().String(), nil
}
