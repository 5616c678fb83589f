package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// rawClient is the lighter client (-client raw): HTTP/1.1 over a pool of
// keep-alive connections, each request written with one write by the
// goroutine that then reads the answer (http.ReadResponse) on the same
// connection. net/http's Transport hands every request to two more
// goroutines per connection (writeLoop, readLoop); on a small machine that
// the generator shares with the ingress, those wake-ups are CPU the
// ingress does not get.
type rawClient struct {
	addr, path, host string
	timeout          time.Duration
	dials            *atomic.Int64

	mu   sync.Mutex
	idle []*rawConn // LIFO: the most recently used connection is reused first
}

type rawConn struct {
	c   net.Conn
	br  *bufio.Reader
	buf []byte
}

func newRawClient(u *url.URL, timeout time.Duration, dials *atomic.Int64) *rawClient {
	host := u.Host
	addr := host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	path := u.EscapedPath()
	if u.RawQuery != "" {
		path += "?" + u.RawQuery
	}
	return &rawClient{addr: addr, path: path, host: host, timeout: timeout, dials: dials}
}

func (rc *rawClient) get() (*rawConn, error) {
	rc.mu.Lock()
	if n := len(rc.idle); n > 0 {
		c := rc.idle[n-1]
		rc.idle = rc.idle[:n-1]
		rc.mu.Unlock()
		return c, nil
	}
	rc.mu.Unlock()
	rc.dials.Add(1)
	c, err := net.DialTimeout("tcp", rc.addr, rc.timeout)
	if err != nil {
		return nil, err
	}
	return &rawConn{c: c, br: bufio.NewReaderSize(c, 4096), buf: make([]byte, 0, 2048)}, nil
}

func (rc *rawClient) put(c *rawConn) {
	rc.mu.Lock()
	rc.idle = append(rc.idle, c)
	rc.mu.Unlock()
}

// warm opens n connections into the pool, each with one GET (the mux
// answers 405, nothing is stored): the server times out a new connection
// whose first request does not arrive within its ReadHeaderTimeout, but a
// connection that served a request waits IdleTimeout for the next.
func (rc *rawClient) warm(n int) error {
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			c, err := rc.get()
			if err == nil {
				err = rc.roundTrip(c, []byte("GET "+rc.path+" HTTP/1.1\r\nHost: "+rc.host+"\r\n\r\n"))
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (rc *rawClient) roundTrip(c *rawConn, req []byte) error {
	c.c.SetDeadline(time.Now().Add(rc.timeout))
	if _, err := c.c.Write(req); err != nil {
		c.c.Close()
		return err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.c.Close()
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.Close {
		c.c.Close()
		return err
	}
	rc.put(c)
	return nil
}

// post sends note; a connection that fails or that the server closes is
// dropped.
func (rc *rawClient) post(note *Note) (code int, body []byte, sent time.Time, err error) {
	sent = time.Now()
	c, err := rc.get()
	if err != nil {
		return 0, nil, sent, err
	}
	b := c.buf[:0]
	b = append(b, "POST "...)
	b = append(b, rc.path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, rc.host...)
	b = append(b, "\r\nUser-Agent: Mozilla/4.0\r\nContent-Type: application/json\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(note.Body)), 10)
	b = append(b, "\r\nWechatpay-Timestamp: "...)
	b = append(b, note.Timestamp...)
	b = append(b, "\r\nWechatpay-Nonce: "...)
	b = append(b, note.Nonce...)
	b = append(b, "\r\nWechatpay-Signature: "...)
	b = append(b, note.Signature...)
	b = append(b, "\r\nWechatpay-Serial: "...)
	b = append(b, note.Serial...)
	b = append(b, "\r\nWechatpay-Signature-Type: "+wxpay.SignatureTypeRSA+"\r\n\r\n"...)
	b = append(b, note.Body...)
	c.buf = b
	c.c.SetDeadline(sent.Add(rc.timeout))
	if _, err = c.c.Write(b); err != nil {
		c.c.Close()
		return 0, nil, sent, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.c.Close()
		return 0, nil, sent, err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ = io.ReadAll(io.LimitReader(resp.Body, 512))
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.Close {
		c.c.Close()
	} else {
		rc.put(c)
	}
	return resp.StatusCode, body, sent, err
}
