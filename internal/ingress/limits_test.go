package ingress_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
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

// memPeak samples the heap and goroutine stacks in use until the
// returned stop is called, which returns the peak growth over their use at
// the start.
func memPeak() (stop func() int64) {
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak atomic.Uint64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse+ms.StackInuse > peak.Load() {
				peak.Store(ms.HeapInuse + ms.StackInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return func() int64 {
		close(done)
		<-sampled
		return int64(peak.Load()) - int64(before.HeapInuse+before.StackInuse)
	}
}

// Thousands of connections beyond MaxConnections, each sending 16,000
// bytes of header without its end, hold a bounded amount of memory: only a
// few refusals are in progress at once, each with a small buffer. Once the
// flood is over, a genuine request beyond the limit is still answered 503
// with the JSON body.
func TestRefusedConnectionsHoldLittleMemory(t *testing.T) {
	f := memSetup(t, nil, ingress.Config{})
	addr := serve(t, f.h, ingress.ServerConfig{MaxConnections: 1, ReadHeaderTimeout: time.Minute, IdleTimeout: time.Minute})
	held, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	busy := func(what string) {
		t.Helper()
		resp, err := client.Do(f.notification(t, "REFUSED").Request("http://" + addr + "/notify/1230000109"))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var ans struct{ Code, Message string }
		if resp.StatusCode != 503 || json.Unmarshal(body, &ans) != nil || ans.Code != "FAIL" || !strings.Contains(ans.Message, "too many connections") {
			t.Fatalf("%s: %d %s, want 503 with the JSON answer", what, resp.StatusCode, body)
		}
	}
	busy("before the flood") // and the held connection has its place

	head := []byte("POST /notify/1230000109 HTTP/1.1\r\nHost: ingress\r\nX-Padding: ")
	head = append(head, bytes.Repeat([]byte("a"), 16000-len(head))...)
	const conns, dialers = 3000, 50
	stop := memPeak()
	var (
		mu   sync.Mutex
		open []net.Conn
		wg   sync.WaitGroup
	)
	for range dialers {
		wg.Go(func() {
			for range conns / dialers {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					continue
				}
				c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				c.Write(head) // the server may cut it: no matter
				mu.Lock()
				open = append(open, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	time.Sleep(200 * time.Millisecond)
	growth := stop()
	for _, c := range open {
		c.Close()
	}
	t.Logf("%d connections refused; heap and stacks in use grew by %d KiB", len(open), growth>>10)
	if growth > 8<<20 {
		t.Fatalf("%d refused connections grew the heap and stacks by %d MiB", len(open), growth>>20)
	}
	if got := gatherCounter(t, f.reg, "wxpay_ingress_connections_refused_total"); got < conns/2 {
		t.Fatalf("refused connections counted %v", got)
	}
	time.Sleep(2 * time.Second) // the refusals in progress end
	busy("after the flood")
}

// Slow uploads hold no MAX_IN_FLIGHT slot: more stalled bodies than slots
// do not make a genuine notification busy.
func TestSlowUploadsHoldNoInFlightSlot(t *testing.T) {
	f := memSetup(t, nil, ingress.Config{MaxInFlight: 2})
	addr := serve(t, f.h, ingress.ServerConfig{ReadHeaderTimeout: time.Minute, ReadTimeout: time.Minute, WriteTimeout: 2 * time.Minute})
	for i := range 3 {
		n := f.notification(t, "STALLED"+strconv.Itoa(i))
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(append(rawRequest(n, "/notify/1230000109", ""), n.Body[0])) // and the rest never comes
	}
	time.Sleep(300 * time.Millisecond) // the stalled requests reach the handler
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(f.notification(t, "GENUINE").Request("http://" + addr + "/notify/1230000109"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("with 3 slow uploads and MAX_IN_FLIGHT=2: %d %s, want 200", resp.StatusCode, body)
	}
}

// A declared Content-Length over the body limit is answered 413 at once,
// without waiting for the body.
func TestDeclaredOversizeBodyRefusedAtOnce(t *testing.T) {
	f := memSetup(t, nil, ingress.Config{})
	addr := serve(t, f.h, ingress.ServerConfig{ReadHeaderTimeout: time.Minute, ReadTimeout: time.Minute, WriteTimeout: 2 * time.Minute})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("POST /notify/1230000109 HTTP/1.1\r\nHost: ingress\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer within 5 s to a declared 10 MB body: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "over") {
		t.Fatalf("got %d %s, want 413", resp.StatusCode, body)
	}
	if got := counterValue(t, f.reg, "wxpay_ingress_requests_total", "outcome", "too_large"); got != 1 {
		t.Fatalf("too_large counter %v", got)
	}
}

// The request line and headers are limited to DefaultMaxHeaderBytes
// exactly, net/http's slack included: 16 KiB passes, one byte more is 431.
func TestServerHeaderLimitIsExact(t *testing.T) {
	f := memSetup(t, nil, ingress.Config{})
	addr := serve(t, f.h, ingress.ServerConfig{})
	for i, tc := range []struct{ size, want int }{
		{ingress.DefaultMaxHeaderBytes, 200},
		{ingress.DefaultMaxHeaderBytes + 1, http.StatusRequestHeaderFieldsTooLarge},
		{17000, http.StatusRequestHeaderFieldsTooLarge},
	} {
		n := f.notification(t, "EXACT"+strconv.Itoa(i))
		head := rawRequest(n, "/notify/1230000109", "X-Padding: \r\n")
		head = rawRequest(n, "/notify/1230000109", "X-Padding: "+strings.Repeat("p", tc.size-len(head))+"\r\n")
		if len(head) != tc.size {
			t.Fatalf("built %d bytes of head, want %d", len(head), tc.size)
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(append(head, n.Body...))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil {
			t.Fatalf("%d bytes of request line and headers: %v", tc.size, err)
		}
		if resp.StatusCode != tc.want {
			t.Fatalf("%d bytes of request line and headers: got %d, want %d", tc.size, resp.StatusCode, tc.want)
		}
	}
}

// refusePublisher fails every publish as a NATS client does when its
// server is unreachable.
type refusePublisher struct{}

func (refusePublisher) Publish(context.Context, events.Envelope) (events.Published, error) {
	return events.Published{}, errors.New(`nats: dial tcp 10.1.2.3:4222: connect: connection refused (nats://10.1.2.3:4222)`)
}

// Answers to WeChat carry no internal address nor dependency error: an
// unknown serial while the certificate refresh fails, and a failed
// publish, are answered a fixed message naming the class; the log line
// has the detail.
func TestFailureAnswersCarryNoInternals(t *testing.T) {
	platform := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModeCertificate})
	cm := platform.AddMerchant(wxpaytest.MerchantOptions{MchID: "1900000001"})
	ccfg := platform.ClientConfig(cm)
	ccfg.BaseURL = "http://127.0.0.1:1" // unreachable: the refresh fails
	cc, err := wxpay.NewClient(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	pkPlatform := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	pm := pkPlatform.AddMerchant(wxpaytest.MerchantOptions{MchID: "1230000109"})
	pc, err := wxpay.NewClient(pkPlatform.ClientConfig(pm))
	if err != nil {
		t.Fatal(err)
	}
	logs := &bytes.Buffer{}
	h, err := ingress.NewHandler([]ingress.Merchant{{MchID: cm.MchID, Client: cc}, {MchID: pm.MchID, Client: pc}}, refusePublisher{},
		ingress.Config{Logger: newLogger(logs), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path     string
		n              *wxpaytest.Notification
		status         int
		answer, logged string
	}{
		{"unknown serial, refresh failing", "/notify/1900000001", nil, 503, "certificate refresh failed, retry later", "127.0.0.1:1"},
		{"publish failing", "/notify/1230000109", nil, 503, "event not stored, retry later", "10.1.2.3:4222"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs.Reset()
			srv, m := platform, cm
			if tc.path == "/notify/1230000109" {
				srv, m = pkPlatform, pm
			}
			n, err := srv.NewNotification(m, wxpay.EventTransactionSuccess, paid(m.MchID, "INTERNALS"), wxpaytest.NotificationOptions{})
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, n.Request(tc.path))
			if rec.Code != tc.status {
				t.Fatalf("got %d %s, want %d", rec.Code, rec.Body, tc.status)
			}
			var ans struct{ Code, Message string }
			if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil || ans.Message != tc.answer {
				t.Fatalf("answer %s, want the message %q", rec.Body, tc.answer)
			}
			for _, leak := range []string{"http://", "dial", "127.0.0.1", "10.1.2.3", "nats"} {
				if strings.Contains(rec.Body.String(), leak) {
					t.Fatalf("the answer carries %q: %s", leak, rec.Body)
				}
			}
			if !strings.Contains(logs.String(), tc.logged) || !strings.Contains(logs.String(), "dial") {
				t.Fatalf("the log line lacks the detail %q:\n%s", tc.logged, logs)
			}
		})
	}
}
