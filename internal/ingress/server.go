package ingress

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of ServerConfig.
const (
	// DefaultReadHeaderTimeout bounds the request line and headers.
	DefaultReadHeaderTimeout = 3 * time.Second
	// DefaultReadTimeout bounds the whole request, body included: a body
	// still arriving then is answered 408 (slow_upload).
	DefaultReadTimeout = 5 * time.Second
	// DefaultWriteTimeout bounds a request from its headers to the end of
	// its answer; it is longer than DefaultReadTimeout plus
	// DefaultAnswerDeadline, so it only cuts what WeChat gave up on.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultIdleTimeout is how long a keep-alive connection may wait for
	// its next request.
	DefaultIdleTimeout = 30 * time.Second
	// DefaultMaxHeaderBytes bounds the request line and headers: WeChat's
	// are well under 2 KiB.
	DefaultMaxHeaderBytes = 16 << 10
	// DefaultMaxRefusing bounds the refusals in progress (see
	// limitListener): a connection beyond MaxConnections while that many
	// are being answered is closed at once, without an answer.
	DefaultMaxRefusing = 64
	// DefaultMaxConnections bounds the open connections of the public
	// listener.
	DefaultMaxConnections = 4096
	// DefaultShutdownTimeout bounds the wait for the requests in flight
	// when Run shuts down.
	DefaultShutdownTimeout = 15 * time.Second
)

// ServerConfig holds the limits of the public listener; the zero value is
// the defaults.
type ServerConfig struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	// MaxHeaderBytes bounds the request line and headers together, in
	// bytes (never less than 4097: see headerSlack).
	MaxHeaderBytes int
	// MaxConnections: a connection beyond it is answered 503 and closed
	// at once.
	MaxConnections int
	// ShutdownTimeout bounds Run's wait for the requests in flight.
	ShutdownTimeout time.Duration
}

// headerSlack is what net/http reads beyond http.Server.MaxHeaderBytes
// before it answers 431: it allows 4096 bytes more for its read buffer. The
// server's MaxHeaderBytes is set that much lower, so that the limit on the
// request line and headers is ServerConfig.MaxHeaderBytes itself.
const headerSlack = 4096

// positiveOr sets *p to def unless it is positive: the zero value of a
// setting means its default.
func positiveOr[T int | int64 | time.Duration](p *T, def T) {
	if *p <= 0 {
		*p = def
	}
}

// Server is the HTTP server of the public listener.
type Server struct {
	*http.Server
	maxConns        int
	shutdownTimeout time.Duration
	h               *Handler
	stopping        atomic.Bool // set once Run begins to shut down
}

// NewServer returns the server for h with the limits of cfg.
func NewServer(h *Handler, cfg ServerConfig) *Server {
	positiveOr(&cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	positiveOr(&cfg.ReadTimeout, DefaultReadTimeout)
	positiveOr(&cfg.WriteTimeout, DefaultWriteTimeout)
	positiveOr(&cfg.IdleTimeout, DefaultIdleTimeout)
	positiveOr(&cfg.MaxHeaderBytes, DefaultMaxHeaderBytes)
	positiveOr(&cfg.MaxConnections, DefaultMaxConnections)
	positiveOr(&cfg.ShutdownTimeout, DefaultShutdownTimeout)
	return &Server{
		Server: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: cfg.ReadHeaderTimeout,
			ReadTimeout:       cfg.ReadTimeout,
			WriteTimeout:      cfg.WriteTimeout,
			IdleTimeout:       cfg.IdleTimeout,
			// Minus net/http's slack (at least 1: 0 means its default, 1 MiB).
			MaxHeaderBytes: max(cfg.MaxHeaderBytes-headerSlack, 1),
		},
		maxConns:        cfg.MaxConnections,
		shutdownTimeout: cfg.ShutdownTimeout,
		h:               h,
	}
}

// Run serves ln until ctx ends, then shuts down in this order: Ready fails
// (the admin listener's /readyz turns 503, so no new traffic is sent
// here), the listener stops accepting, and the notifications in flight
// finish with their real answers, for at most ShutdownTimeout. It then
// returns nil; it returns the listener's error if serving fails before.
// What the handler publishes through (the NATS connection) is the
// caller's to drain once Run returned.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return fmt.Errorf("public listener: %w", err)
	}
	s.stopping.Store(true)
	s.h.log.Info().Msg("shutting down: finishing in-flight notifications")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.shutdownTimeout)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil {
		s.h.log.Error().Err(err).Msg("in-flight requests did not finish in time")
	}
	return nil
}

// Ready is a readiness check for the admin listener: nil until Run begins
// to shut down.
func (s *Server) Ready(context.Context) error {
	if s.stopping.Load() {
		return errors.New("shutting down")
	}
	return nil
}

// Serve accepts connections on ln, at most MaxConnections at once, until
// Shutdown or Close.
func (s *Server) Serve(ln net.Listener) error {
	return s.Server.Serve(&limitListener{
		Listener: ln, max: int64(s.maxConns), refused: s.h.metrics.refusedConns.Inc,
		refusing: make(chan struct{}, DefaultMaxRefusing),
	})
}

// limitListener answers a connection beyond max with a 503 and closes it,
// so that a flood of connections (slow senders among them) holds a bounded
// amount of memory: at most cap(refusing) refusals are in progress at once,
// each a goroutine with a small buffer for at most refuseTimeout twice; a
// connection beyond those is closed at once, without an answer.
type limitListener struct {
	net.Listener
	max      int64
	open     atomic.Int64
	refused  func()
	refusing chan struct{} // one per refusal in progress
}

// busyAnswer is written, whole, to a connection beyond the limit.
var busyAnswer = func() []byte {
	body := `{"code":"FAIL","message":"too many connections, retry"}`
	return []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\nConnection: close\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}()

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			l.refused()
			select {
			case l.refusing <- struct{}{}:
				go func() {
					defer func() { <-l.refusing }()
					refuse(c)
				}()
			default:
				c.Close()
			}
			continue
		}
		return &limitedConn{Conn: c, release: func() { l.open.Add(-1) }}, nil
	}
}

// refuseTimeout bounds each of the two reads of refuse.
const refuseTimeout = 500 * time.Millisecond

// maxRefusedHead bounds what refuse reads of a request's head.
const maxRefusedHead = 16 << 10

// headEnd ends a request's head.
const headEnd = "\r\n\r\n"

// refuse answers 503 and closes c. It first reads the request's head (for
// refuseTimeout and maxRefusedHead bytes at most, through a small buffer,
// keeping only the last 3 bytes read to find "\r\n\r\n" across reads), so
// that the answer comes as the answer to a request rather than
// unsolicited, which an HTTP client may drop as a broken connection; then
// it reads what else the client sent (refuseTimeout at most) so that the
// close does not reset the connection before the client has read the
// answer.
func refuse(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(refuseTimeout))
	// buf holds the last 3 bytes read, then what the next read brings.
	var buf [len(headEnd) - 1 + 512]byte
	kept := 0
	for read := 0; read < maxRefusedHead; {
		m, err := c.Read(buf[kept:])
		read += m
		n := kept + m
		if bytes.Contains(buf[:n], []byte(headEnd)) || err != nil {
			break
		}
		kept = copy(buf[:], buf[max(n-(len(headEnd)-1), 0):n])
	}
	c.SetDeadline(time.Now().Add(refuseTimeout))
	if _, err := c.Write(busyAnswer); err != nil {
		return
	}
	if tc, ok := c.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
	}
	for {
		if _, err := c.Read(buf[:]); err != nil {
			return
		}
	}
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
