package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

func merchantEnv(t *testing.T, srv *wxpaytest.Server, m *wxpaytest.Merchant) map[string]string {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "apiclient_key.pem")
	pubFile := filepath.Join(dir, "pub_key.pem")
	os.WriteFile(keyFile, wxpaytest.PrivateKeyPEM(m.PrivateKey), 0o600)
	os.WriteFile(pubFile, wxpaytest.PublicKeyPEM(&srv.PublicKey().PrivateKey.PublicKey), 0o600)
	return map[string]string{
		"WXPAY_MCHID":            m.MchID,
		"WXPAY_APIV3_KEY":        m.APIv3Key,
		"WXPAY_PRIVATE_KEY_FILE": keyFile,
		"WXPAY_CERT_SERIAL_NO":   m.CertSerialNo,
		"WXPAY_PUBLIC_KEY_FILE":  pubFile,
		"WXPAY_PUBLIC_KEY_ID":    srv.PublicKey().ID,
		"WXPAY_APIV2_KEY":        m.APIv2Key,
		"WXPAY_API_BASE":         srv.URL(),
		"LISTEN_ADDR":            "127.0.0.1:0",
		"ADMIN_ADDR":             "127.0.0.1:0",
	}
}

func TestRunServesAndShutsDown(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	nt := testenv.StartNATS(t)
	env := merchantEnv(t, srv, m)
	env["NATS_URL"] = nt.URL
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan [2]string, 1)
	out := &testenv.Buffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nil, func(k string) string { return env[k] }, out, func(p, a string) { addrs <- [2]string{p, a} })
	}()
	var public, adminAddr string
	select {
	case a := <-addrs:
		public, adminAddr = a[0], a[1]
	case err := <-done:
		t.Fatalf("run returned early: %v\n%s", err, out)
	case <-time.After(20 * time.Second):
		t.Fatal("ingress did not start")
	}
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
