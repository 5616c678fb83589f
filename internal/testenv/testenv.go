// Package testenv gives tests their NATS JetStream and Redis: embedded
// servers (nats-server as a library, miniredis) by default, the real ones
// when WXPAY_TEST_NATS_URL / WXPAY_TEST_REDIS_URL are set, as .ci/run does.
// Real-server tests share fixed stream names, so .ci/run runs packages one
// at a time (-p 1) against them.
package testenv

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// NATS is a JetStream server for one test.
type NATS struct {
	URL string
	// Embedded is the in-process server, nil against a real one.
	Embedded *server.Server
}

// RealNATS reports whether tests run against a real NATS server.
func RealNATS() bool { return os.Getenv("WXPAY_TEST_NATS_URL") != "" }

// StartNATS returns a JetStream server with the streams WXPAY and
// WXPAY_DLQ absent: a fresh embedded server, or the real one with those
// streams deleted (and deleted again at cleanup).
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	if url := os.Getenv("WXPAY_TEST_NATS_URL"); url != "" {
		deleteStreams(t, url)
		t.Cleanup(func() { deleteStreams(t, url) })
		return &NATS{URL: url}
	}
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("embedded nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("embedded nats-server did not start")
	}
	t.Cleanup(s.Shutdown)
	return &NATS{URL: s.ClientURL(), Embedded: s}
}

func deleteStreams(t testing.TB, url string) {
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("connecting to WXPAY_TEST_NATS_URL %s: %v (is nats-server running with -js?)", url, err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, name := range []string{"WXPAY", "WXPAY_DLQ"} {
		if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Fatalf("deleting stream %s on the test server: %v", name, err)
		}
	}
}

// Connect opens a connection (closed at cleanup) and its JetStream context.
func Connect(t testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("nats connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// Redis is a Redis server for one test.
type Redis struct {
	URL string
	// Mini is the in-process server, nil against a real one.
	Mini *miniredis.Miniredis
}

// RealRedis reports whether tests run against a real Redis server.
func RealRedis() bool { return os.Getenv("WXPAY_TEST_REDIS_URL") != "" }

// StartRedis returns miniredis, or the real Redis (database flushed before
// and after the test).
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	if url := os.Getenv("WXPAY_TEST_REDIS_URL"); url != "" {
		flush := func() {
			opt, err := redis.ParseURL(url)
			if err != nil {
				t.Fatalf("WXPAY_TEST_REDIS_URL: %v", err)
			}
			c := redis.NewClient(opt)
			defer c.Close()
			if err := c.FlushDB(context.Background()).Err(); err != nil {
				t.Fatalf("flushing the test Redis %s: %v (is redis-server running?)", url, err)
			}
		}
		flush()
		t.Cleanup(flush)
		return &Redis{URL: url}
	}
	m := miniredis.RunT(t)
	return &Redis{URL: "redis://" + m.Addr() + "/0", Mini: m}
}

// Proxy is a TCP proxy in front of a server, which a test can cut and
// restore to play an outage of a real or an embedded service alike.
type Proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
}

// NewProxy listens on a loopback port and forwards to target (host:port).
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.Cut() })
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut closes every connection and refuses new ones until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]struct{}{}
}

// Restore accepts connections again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.conns[up] = struct{}{}
		p.mu.Unlock()
		go pipe(c, up)
		go pipe(up, c)
	}
}

func pipe(dst, src net.Conn) {
	io.Copy(dst, src)
	dst.Close()
	src.Close()
}
