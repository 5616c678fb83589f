package ingress

import (
	"bytes"
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
	// DefaultMaxConnections bounds the open connections of the public
	// listener.
	DefaultMaxConnections = 4096
)

// ServerConfig holds the limits of the public listener; the zero value is
// the defaults.
type ServerConfig struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	// MaxConnections: a connection beyond it is answered 503 and closed
	// at once.
	MaxConnections int
}

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
	maxConns int
	h        *Handler
}

// NewServer returns the server for h with the limits of cfg.
func NewServer(h *Handler, cfg ServerConfig) *Server {
	positiveOr(&cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	positiveOr(&cfg.ReadTimeout, DefaultReadTimeout)
	positiveOr(&cfg.WriteTimeout, DefaultWriteTimeout)
	positiveOr(&cfg.IdleTimeout, DefaultIdleTimeout)
	positiveOr(&cfg.MaxHeaderBytes, DefaultMaxHeaderBytes)
	positiveOr(&cfg.MaxConnections, DefaultMaxConnections)
	return &Server{
		Server: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: cfg.ReadHeaderTimeout,
			ReadTimeout:       cfg.ReadTimeout,
			WriteTimeout:      cfg.WriteTimeout,
			IdleTimeout:       cfg.IdleTimeout,
			MaxHeaderBytes:    cfg.MaxHeaderBytes,
		},
		maxConns: cfg.MaxConnections,
		h:        h,
	}
}

// Serve accepts connections on ln, at most MaxConnections at once, until
// Shutdown or Close.
func (s *Server) Serve(ln net.Listener) error {
	return s.Server.Serve(&limitListener{Listener: ln, max: int64(s.maxConns), refused: s.h.metrics.refusedConns.Inc})
}

// limitListener answers a connection beyond max with a 503 and closes it,
// so that a flood of connections (slow senders among them) holds a bounded
// amount of memory.
type limitListener struct {
	net.Listener
	max     int64
	open    atomic.Int64
	refused func()
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
			go refuse(c)
			continue
		}
		return &limitedConn{Conn: c, release: func() { l.open.Add(-1) }}, nil
	}
}

// refuse answers 503 and closes c. It first reads the request's head (for
// a second and 16 KiB at most), so that the answer comes as the answer to
// a request rather than unsolicited, which an HTTP client may drop as a
// broken connection; then it reads what else the client sent (a second at
// most) so that the close does not reset the connection before the client
// has read the answer.
func refuse(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	var head [16 << 10]byte
	n := 0
	for n < len(head) && !bytes.Contains(head[:n], []byte("\r\n\r\n")) {
		m, err := c.Read(head[n:])
		n += m
		if err != nil {
			break
		}
	}
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write(busyAnswer); err != nil {
		return
	}
	if tc, ok := c.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
	}
	for {
		if _, err := c.Read(head[:]); err != nil {
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
