package ingress_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxpay-notify/wxpay-notify/internal/ingress"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// memFixture is an ingress for merchant 1230000109 publishing to memory,
// for the tests of the server's limits (no NATS needed).
type memFixture struct {
	srv  *wxpaytest.Server
	m    *wxpaytest.Merchant
	h    *ingress.Handler
	reg  *prometheus.Registry
	logs *bytes.Buffer
}

func memSetup(t *testing.T, pub ingress.Publisher, cfg ingress.Config) *memFixture {
	t.Helper()
	f := &memFixture{reg: prometheus.NewRegistry(), logs: &bytes.Buffer{}}
	f.srv = wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	f.m = f.srv.AddMerchant(wxpaytest.MerchantOptions{MchID: "1230000109"})
	c, err := wxpay.NewClient(f.srv.ClientConfig(f.m))
	if err != nil {
		t.Fatal(err)
	}
	if pub == nil {
		pub = &memPublisher{seen: map[string]bool{}}
	}
	cfg.Registerer, cfg.Logger = f.reg, newLogger(f.logs)
	if f.h, err = ingress.NewHandler([]ingress.Merchant{{MchID: f.m.MchID, Client: c}}, pub, cfg); err != nil {
		t.Fatal(err)
	}
	return f
}

// serve runs h behind ingress.NewServer on a loopback port until the test
// ends and returns the address.
func serve(t *testing.T, h *ingress.Handler, cfg ingress.ServerConfig) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := ingress.NewServer(h, cfg)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func (f *memFixture) notification(t *testing.T, outTradeNo string) *wxpaytest.Notification {
	t.Helper()
	n, err := f.srv.NewNotification(f.m, wxpay.EventTransactionSuccess, paid(f.m.MchID, outTradeNo), wxpaytest.NotificationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// rawRequest is the request line and headers of n, extra headers
// included.
func rawRequest(n *wxpaytest.Notification, path string, extra string) []byte {
	var b bytes.Buffer
	b.WriteString("POST " + path + " HTTP/1.1\r\nHost: ingress\r\n")
	for k, vs := range n.Header {
		for _, v := range vs {
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	b.WriteString(extra)
	b.WriteString("Content-Length: " + strconv.Itoa(len(n.Body)) + "\r\n\r\n")
	return b.Bytes()
}

// closedWithin reports whether the server closes c (without an answer or
// after one) within d.
func closedWithin(t *testing.T, c net.Conn, d time.Duration) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return true
}

func TestServerDefaults(t *testing.T) {
	f := memSetup(t, nil, ingress.Config{})
	s := ingress.NewServer(f.h, ingress.ServerConfig{})
	if s.ReadHeaderTimeout != ingress.DefaultReadHeaderTimeout || s.ReadTimeout != ingress.DefaultReadTimeout ||
		s.WriteTimeout != ingress.DefaultWriteTimeout || s.IdleTimeout != ingress.DefaultIdleTimeout ||
		s.MaxHeaderBytes != ingress.DefaultMaxHeaderBytes-4096 { // net/http's slack (TestServerHeaderLimitIsExact)
		t.Fatalf("defaults not applied: %+v", s.Server)
	}
	// A request whose body arrives just inside the read timeout and whose
	// work takes the whole answer budget must still get its answer.
	if ingress.DefaultWriteTimeout <= ingress.DefaultReadTimeout+ingress.DefaultAnswerDeadline {
		t.Fatal("the write timeout would cut answers inside the budget")
	}
	if ingress.DefaultMaxHeaderBytes < 16<<10 || ingress.DefaultMaxHeaderBytes > 32<<10 {
		t.Fatalf("header limit %d", ingress.DefaultMaxHeaderBytes)
	}
	if ingress.DefaultIdleTimeout > 30*time.Second {
		t.Fatalf("idle keep-alives held %s", ingress.DefaultIdleTimeout)
	}
}

// A connection whose headers do not arrive is closed after
// ReadHeaderTimeout (not after the far longer read or idle timeouts).
func TestServerReadHeaderTimeout(t *testing.T) {
	f := memSetup(t, nil, ingress.Config{})
	addr := serve(t, f.h, ingress.ServerConfig{ReadHeaderTimeout: 200 * time.Millisecond, ReadTimeout: time.Minute, IdleTimeout: time.Minute})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("POST /notify/1230000109 HTTP/1.1\r\nHost: ingress\r\n"))
	if !closedWithin(t, c, 10*time.Second) {
		t.Fatal("a connection with unfinished headers was held past the read-header timeout")
	}
}

// A body still arriving at ReadTimeout is answered 408, outcome
// slow_upload: not a publish failure, and nothing is published.
func TestServerReadTimeoutIsSlowUpload(t *testing.T) {
	f := memSetup(t, nil, ingress.Config{})
	addr := serve(t, f.h, ingress.ServerConfig{ReadHeaderTimeout: time.Minute, ReadTimeout: 300 * time.Millisecond})
	n := f.notification(t, "SLOW")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(rawRequest(n, "/notify/1230000109", ""))
	c.Write(n.Body[:len(n.Body)/2]) // and the rest never comes
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a slow upload: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), "read timeout") {
		t.Fatalf("got %d %s, want 408", resp.StatusCode, body)
	}
	if got := counterValue(t, f.reg, "wxpay_ingress_requests_total", "outcome", "slow_upload"); got != 1 {
		t.Fatalf("slow_upload counter %v\n%s", got, f.logs)
	}
}

// slowPublisher takes d to acknowledge.
type slowPublisher struct {
	memPublisher
	d time.Duration
}

func (p *slowPublisher) Publish(ctx context.Context, env events.Envelope) (events.Published, error) {
	time.Sleep(p.d)
	return p.memPublisher.Publish(ctx, env)
}

// An answer later than WriteTimeout is not sent: the connection is closed
// (WeChat has given up on it long before the default's 10 s).
func TestServerWriteTimeout(t *testing.T) {
	f := memSetup(t, &slowPublisher{memPublisher{seen: map[string]bool{}}, 1500 * time.Millisecond}, ingress.Config{AnswerDeadline: time.Minute, PublishTimeout: 30 * time.Second})
	addr := serve(t, f.h, ingress.ServerConfig{WriteTimeout: 300 * time.Millisecond})
	client := &http.Client{Timeout: 20 * time.Second}
	resp, err := client.Do(f.notification(t, "LATE").Request("http://" + addr + "/notify/1230000109"))
	if err == nil {
		resp.Body.Close()
		t.Fatalf("an answer after the write timeout was sent: %d", resp.StatusCode)
	}
}

// A keep-alive connection left idle is closed after IdleTimeout.
func TestServerIdleTimeout(t *testing.T) {
	f := memSetup(t, nil, ingress.Config{})
	addr := serve(t, f.h, ingress.ServerConfig{IdleTimeout: 200 * time.Millisecond, ReadTimeout: time.Minute, ReadHeaderTimeout: time.Minute})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := f.notification(t, "IDLE")
	c.Write(append(rawRequest(n, "/notify/1230000109", ""), n.Body...))
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("got %d (close %v), want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.Copy(io.Discard, r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("an idle keep-alive connection was held past the idle timeout")
	}
}

// Headers beyond MaxHeaderBytes are refused (431) before the handler; a
// notification with ordinary headers is not.
func TestServerMaxHeaderBytes(t *testing.T) {
	f := memSetup(t, nil, ingress.Config{})
	addr := serve(t, f.h, ingress.ServerConfig{})
	client := &http.Client{Timeout: 20 * time.Second}
	for _, tc := range []struct {
		pad  int
		want int
	}{{4 << 10, 200}, {64 << 10, http.StatusRequestHeaderFieldsTooLarge}} {
		req := f.notification(t, "HDR"+strconv.Itoa(tc.pad)).Request("http://" + addr + "/notify/1230000109")
		req.Header.Set("X-Padding", strings.Repeat("p", tc.pad))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%d bytes of header: %v", tc.pad, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Fatalf("%d bytes of header: got %d, want %d", tc.pad, resp.StatusCode, tc.want)
		}
	}
}

// A hundred connections each sending a huge header slowly hold little
// memory: each is cut at the header limit.
func TestSlowHeaderSendersHoldLittleMemory(t *testing.T) {
	f := memSetup(t, nil, ingress.Config{})
	addr := serve(t, f.h, ingress.ServerConfig{ReadHeaderTimeout: time.Minute, ReadTimeout: time.Minute})
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	chunk := bytes.Repeat([]byte("a"), 8<<10)
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.Write([]byte("POST /notify/1230000109 HTTP/1.1\r\nHost: ingress\r\nX-Padding: "))
			for range 112 { // 896 KiB, under net/http's default limit of 1 MiB
				c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write(chunk); err != nil {
					return // cut by the server
				}
				time.Sleep(10 * time.Millisecond)
			}
			// Hold the connection a moment, as a slow sender would.
			time.Sleep(200 * time.Millisecond)
		})
	}
	wg.Wait()
	close(stop)
	<-sampled
	growth := int64(peak.Load()) - int64(before.HeapInuse)
	t.Logf("heap in use grew by %d KiB", growth>>10)
	if growth > 32<<20 {
		t.Fatalf("100 slow header senders grew the heap by %d MiB", growth>>20)
	}
}

// Beyond MaxConnections a connection is answered 503 and closed; a
// connection closed frees its place.
func TestServerMaxConnections(t *testing.T) {
	f := memSetup(t, nil, ingress.Config{})
	addr := serve(t, f.h, ingress.ServerConfig{MaxConnections: 3, ReadHeaderTimeout: time.Minute, IdleTimeout: time.Minute})
	var held []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(f.notification(t, "FOURTH").Request("http://" + addr + "/notify/1230000109"))
	if err != nil {
		t.Fatalf("the fourth connection got no answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "too many connections") {
		t.Fatalf("fourth connection: %d %s, want 503", resp.StatusCode, body)
	}
	if v := gatherCounter(t, f.reg, "wxpay_ingress_connections_refused_total"); v != 1 {
		t.Fatalf("refused connections counted %v, want 1", v)
	}
	held[0].Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Do(f.notification(t, "AFTER").Request("http://" + addr + "/notify/1230000109"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed connection never freed its place")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// gatherCounter is the value of an unlabelled counter.
func gatherCounter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// Run shuts down in order once its ctx ends: Ready fails first, the
// notification in flight still gets its real answer, and Run returns
// only after it.
func TestServerRunShutsDownInOrder(t *testing.T) {
	pub := &gatePublisher{memPublisher: memPublisher{seen: map[string]bool{}}, entered: make(chan struct{}, 1), release: make(chan struct{})}
	f := memSetup(t, pub, ingress.Config{PublishTimeout: 8 * time.Second, AnswerDeadline: 9 * time.Second})
	srv := ingress.NewServer(f.h, ingress.ServerConfig{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx, ln) }()
	if err := srv.Ready(ctx); err != nil {
		t.Fatalf("Ready while serving: %v", err)
	}

	answered := make(chan int, 1)
	go func() {
		resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(f.notification(t, "T1").Request("http://" + ln.Addr().String() + "/notify/" + f.m.MchID))
		if err != nil {
			t.Logf("in-flight notification: %v", err)
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	<-pub.entered
	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for srv.Ready(context.Background()) == nil {
		if time.Now().After(deadline) {
			t.Fatal("Ready still passes after ctx ended")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := srv.Ready(context.Background()); !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("Ready: got %v, want shutting down", err)
	}
	select {
	case err := <-ran:
		t.Fatalf("Run returned with a notification in flight: %v", err)
	case code := <-answered:
		t.Fatalf("answered %d before the publish was acknowledged", code)
	case <-time.After(50 * time.Millisecond):
	}
	close(pub.release)
	if code := <-answered; code != http.StatusOK {
		t.Fatalf("the notification in flight: got %d, want 200", code)
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("the listener still accepts after Run returned")
	}
}
