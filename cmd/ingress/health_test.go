package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// `ingress health` is the container health check: it exits 0 (nil) only
// once the running ingress is ready, with the same ADMIN_ADDR.
func TestHealthSubcommandFollowsReadiness(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	nt := testenv.StartNATS(t)
	env := merchantEnv(t, srv, m)
	env["NATS_URL"] = nt.URL
	_, cancel, done, out, _, adminAddr := startRun(t, env)
	health := func(args ...string) (string, error) {
		var b bytes.Buffer
		err := run(context.Background(), append([]string{"health"}, args...), func(k string) string {
			if k == "ADMIN_ADDR" {
				return adminAddr
			}
			return env[k]
		}, &b, nil)
		return b.String(), err
	}
	eventually(t, 20*time.Second, "ingress health to pass", func() bool { _, err := health(); return err == nil })
	if out, err := health("--live"); err != nil || out != "ok\n" {
		t.Fatalf("ingress health --live: %q, %v", out, err)
	}
	if _, err := health("--timeout", "-1s"); !errors.Is(err, errUsage) {
		t.Fatalf("ingress health --timeout -1s: %v, want a usage error (exit 2)", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	if _, err := health(); err == nil || !strings.Contains(err.Error(), "ADMIN_ADDR") {
		t.Fatalf("ingress health after shutdown: %v, want a failure pointing at ADMIN_ADDR", err)
	}
}
