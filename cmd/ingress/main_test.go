package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

func merchantEnv(t *testing.T, srv *wxpaytest.Server, m *wxpaytest.Merchant) map[string]string {
	env := testenv.MerchantEnv(t, srv, m)
	env["LISTEN_ADDR"], env["ADMIN_ADDR"] = "127.0.0.1:0", "127.0.0.1:0"
	return env
}

// startRun runs the command with env as its environment until the
// returned cancel (the test's SIGTERM); done receives run's result, out
// collects its log. It returns once the listeners are up.
func startRun(t *testing.T, env map[string]string) (ctx context.Context, cancel context.CancelFunc, done chan error, out *testenv.Buffer, public, adminAddr string) {
	t.Helper()
	ctx, cancel = context.WithCancel(context.Background())
	addrs := make(chan [2]string, 1)
	out = &testenv.Buffer{}
	done = make(chan error, 1)
	go func() {
		done <- run(ctx, nil, func(k string) string { return env[k] }, out, func(p, a string) { addrs <- [2]string{p, a} })
	}()
	select {
	case a := <-addrs:
		return ctx, cancel, done, out, a[0], a[1]
	case err := <-done:
		cancel()
		t.Fatalf("run returned early: %v\n%s", err, out)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("ingress did not start")
	}
	panic("unreachable")
}

func TestRunServesAndShutsDown(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	nt := testenv.StartNATS(t)
	env := merchantEnv(t, srv, m)
	env["NATS_URL"] = nt.URL
	ctx, cancel, done, out, public, adminAddr := startRun(t, env)
	// Ready once the streams exist.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + adminAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	n, _ := srv.NewNotification(m, wxpay.EventTransactionSuccess, `{"mchid":"`+m.MchID+`","out_trade_no":"T1","transaction_id":"4200000001","trade_state":"SUCCESS","amount":{"total":1}}`, wxpaytest.NotificationOptions{})
	attempts, err := srv.Deliver(ctx, "http://"+public+"/notify/"+m.MchID, n)
	if err != nil || attempts[0].StatusCode != 200 {
		t.Fatalf("delivery: %v %+v\n%s", err, attempts, out)
	}
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`wxpay_ingress_requests_total{event_type="TRANSACTION.SUCCESS",format="v3",outcome="ok"} 1`, "wxpay_ingress_publish_seconds_bucket", "wxpay_ingress_verified_total"} {
		if !strings.Contains(string(metrics), want) {
			t.Fatalf("metrics lack %s", want)
		}
	}
	_, js := testenv.Connect(t, nt.URL)
	s, err := js.Stream(context.Background(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(context.Background())
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d", info.State.Msgs)
	}
	cancel() // SIGTERM
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("did not stop")
	}
	if strings.Contains(out.String(), m.APIv3Key) || strings.Contains(out.String(), m.APIv2Key) {
		t.Fatal("a key was logged")
	}
	if !strings.Contains(out.String(), `"message":"stopped"`) {
		t.Fatalf("no stop line:\n%s", out)
	}
}

func TestRunConfigErrors(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	tests := []struct {
		name string
		edit func(map[string]string)
		want string
	}{
		{"no merchant", func(e map[string]string) { delete(e, "WXPAY_MCHID") }, "WXPAY_MCHID"},
		{"short APIv3 key", func(e map[string]string) { e["WXPAY_APIV3_KEY"] = "short" }, "WXPAY_APIV3_KEY"},
		{"bad duration", func(e map[string]string) { e["PUBLISH_TIMEOUT"] = "soon" }, "PUBLISH_TIMEOUT"},
		{"publish timeout over the answer deadline", func(e map[string]string) { e["PUBLISH_TIMEOUT"] = "3s" }, "ANSWER_DEADLINE"},
		{"missing key file", func(e map[string]string) { e["WXPAY_PRIVATE_KEY_FILE"] = "/nonexistent/key.pem" }, "/nonexistent/key.pem"},
		{"bad log level", func(e map[string]string) { e["LOG_LEVEL"] = "loud" }, "LOG_LEVEL"},
		{"no notification allowed in flight", func(e map[string]string) { e["MAX_IN_FLIGHT"] = "0" }, "MAX_IN_FLIGHT"},
		{"no connection allowed", func(e map[string]string) { e["MAX_CONNECTIONS"] = "-1" }, "MAX_CONNECTIONS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := merchantEnv(t, srv, m)
			tc.edit(env)
			err := run(context.Background(), nil, func(k string) string { return env[k] }, io.Discard, nil)
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a usage error naming %s", err, tc.want)
			}
		})
	}
}

// pausableProxy forwards TCP to target; while paused it holds back what
// the server sends, so a client's requests (a publish) arrive but their
// answers (the acknowledgement) wait.
type pausableProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cond   *sync.Cond
	paused bool
	open   atomic.Int64 // client connections not yet closed by the client
}

func newPausableProxy(t *testing.T, target string) *pausableProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pausableProxy{ln: ln, target: target}
	p.cond = sync.NewCond(&p.mu)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.open.Add(1)
			go func() { io.Copy(up, c); p.open.Add(-1); up.Close(); c.Close() }()
			go p.copyHeld(c, up)
		}
	}()
	t.Cleanup(func() { ln.Close(); p.setPaused(false) })
	return p
}

func (p *pausableProxy) copyHeld(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.paused {
				p.cond.Wait()
			}
			p.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *pausableProxy) setPaused(on bool) {
	p.mu.Lock()
	p.paused = on
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *pausableProxy) URL() string { return "nats://" + p.ln.Addr().String() }

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// On SIGTERM the ingress turns /readyz 503 first, lets the notification
// in flight finish with its real answer (200, once JetStream acknowledged
// it), drains its NATS connection and returns nil (exit status 0).
func TestRunShutdownFinishesInFlight(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	nt := testenv.StartNATS(t)
	proxy := newPausableProxy(t, strings.TrimPrefix(nt.URL, "nats://"))
	env := merchantEnv(t, srv, m)
	env["NATS_URL"] = proxy.URL()
	env["PUBLISH_TIMEOUT"], env["ANSWER_DEADLINE"] = "8s", "9s"
	_, cancel, done, out, public, adminAddr := startRun(t, env)
	defer cancel()
	eventually(t, 20*time.Second, "ready", func() bool { code, _ := get(t, "http://"+adminAddr+"/readyz"); return code == 200 })

	// A notification whose acknowledgement is held back.
	proxy.setPaused(true)
	n, _ := srv.NewNotification(m, wxpay.EventTransactionSuccess, `{"mchid":"`+m.MchID+`","out_trade_no":"T1","transaction_id":"4200000001","trade_state":"SUCCESS","amount":{"total":1}}`, wxpaytest.NotificationOptions{})
	answered := make(chan int, 1)
	go func() {
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(n.Request("http://" + public + "/notify/" + m.MchID))
		if err != nil {
			t.Logf("in-flight notification: %v", err)
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	eventually(t, 20*time.Second, "the notification in flight", func() bool {
		_, metrics := get(t, "http://"+adminAddr+"/metrics")
		return strings.Contains(metrics, "wxpay_ingress_in_flight 1")
	})

	cancel() // SIGTERM
	eventually(t, 20*time.Second, "/readyz 503 saying it shuts down", func() bool {
		code, body := get(t, "http://"+adminAddr+"/readyz")
		return code == 503 && strings.Contains(body, "shutting down")
	})
	select {
	case code := <-answered:
		t.Fatalf("the notification in flight was answered %d before JetStream acknowledged it", code)
	case err := <-done:
		t.Fatalf("run returned with a notification in flight: %v", err)
	default:
	}
	proxy.setPaused(false)
	select {
	case code := <-answered:
		if code != 200 {
			t.Fatalf("the notification in flight was answered %d, want 200\n%s", code, out)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the notification in flight got no answer")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("did not stop")
	}
	// Drained: the ingress's NATS connection is closed, the event stored.
	// The ingress reaches NATS only through the proxy, which sees it close.
	eventually(t, 20*time.Second, "the ingress's NATS connection closed", func() bool {
		return proxy.open.Load() == 0
	})
	_, js := testenv.Connect(t, nt.URL)
	s, err := js.Stream(context.Background(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(context.Background())
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d", info.State.Msgs)
	}
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The command's public listener has the ingress's limits: the header
// limit, MAX_IN_FLIGHT and MAX_CONNECTIONS.
func TestRunServerLimits(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	nt := testenv.StartNATS(t)
	proxy := newPausableProxy(t, strings.TrimPrefix(nt.URL, "nats://"))
	env := merchantEnv(t, srv, m)
	env["NATS_URL"] = proxy.URL()
	env["PUBLISH_TIMEOUT"], env["ANSWER_DEADLINE"] = "8s", "9s"
	env["MAX_IN_FLIGHT"], env["MAX_CONNECTIONS"] = "1", "2"
	_, cancel, done, _, public, adminAddr := startRun(t, env)
	defer cancel()
	defer func() {
		proxy.setPaused(false)
		cancel()
		<-done
	}()
	eventually(t, 20*time.Second, "ready", func() bool { code, _ := get(t, "http://"+adminAddr+"/readyz"); return code == 200 })
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	notification := func(outTradeNo string) *wxpaytest.Notification {
		n, err := srv.NewNotification(m, wxpay.EventTransactionSuccess, `{"mchid":"`+m.MchID+`","out_trade_no":"`+outTradeNo+`","transaction_id":"42`+outTradeNo+`","trade_state":"SUCCESS","amount":{"total":1}}`, wxpaytest.NotificationOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	post := func(n *wxpaytest.Notification, pad int) (int, string) {
		req := n.Request("http://" + public + "/notify/" + m.MchID)
		if pad > 0 {
			req.Header.Set("X-Padding", strings.Repeat("p", pad))
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if code, body := post(notification("HDR"), 64<<10); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("64 KiB of headers: %d %s, want 431", code, body)
	}

	proxy.setPaused(true)
	answered := make(chan int, 1)
	go func() { code, _ := post(notification("A"), 0); answered <- code }()
	eventually(t, 20*time.Second, "the notification in flight", func() bool {
		_, metrics := get(t, "http://"+adminAddr+"/metrics")
		return strings.Contains(metrics, "wxpay_ingress_in_flight 1")
	})
	if code, body := post(notification("B"), 0); code != 503 || !strings.Contains(body, "MAX_IN_FLIGHT") {
		t.Fatalf("a second notification with MAX_IN_FLIGHT=1: %d %s, want 503", code, body)
	}
	idle, err := net.Dial("tcp", public)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if code, body := post(notification("C"), 0); code != 503 || !strings.Contains(body, "too many connections") {
		t.Fatalf("a third connection with MAX_CONNECTIONS=2: %d %s, want 503", code, body)
	}
	proxy.setPaused(false)
	select {
	case code := <-answered:
		if code != 200 {
			t.Fatalf("the notification in flight: %d", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the notification in flight got no answer")
	}
}

// /readyz is 503, naming the merchant, while a merchant has no key to
// verify notifications with: in certificate mode with the WeChat Pay API
// unreachable, no platform certificate is ever held.
func TestRunNotReadyWithoutVerificationKey(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	nt := testenv.StartNATS(t)
	env := merchantEnv(t, srv, m) // then without the public key: certificate mode
	delete(env, "WXPAY_PUBLIC_KEY_FILE")
	delete(env, "WXPAY_PUBLIC_KEY_ID")
	env["WXPAY_API_BASE"] = "http://127.0.0.1:1" // unreachable: the download fails
	env["NATS_URL"] = nt.URL
	_, cancel, done, out, _, adminAddr := startRun(t, env)
	defer func() {
		cancel()
		<-done
	}()
	// Once NATS and the streams are ready, only the merchant keeps it not ready.
	var code int
	var body string
	eventually(t, 20*time.Second, "NATS and the streams ready", func() bool {
		code, body = get(t, "http://"+adminAddr+"/readyz")
		return code == 200 || !strings.Contains(body, "NATS") && !strings.Contains(body, "stream")
	})
	if code != http.StatusServiceUnavailable || !strings.Contains(body, m.MchID) || !strings.Contains(body, "platform certificate") {
		t.Fatalf("readyz with no key to verify with: %d %q, want 503 naming merchant %s\n%s", code, body, m.MchID, out)
	}
}
