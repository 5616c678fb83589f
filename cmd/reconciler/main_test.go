package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxpay-notify/wxpay-notify/internal/reconcile"
	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
	"github.com/wxpay-notify/wxpay-notify/internal/tracking"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

func merchantEnv(t *testing.T, srv *wxpaytest.Server, m *wxpaytest.Merchant) map[string]string {
	return testenv.MerchantEnv(t, srv, m)
}

func TestRunConfigErrors(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	tests := []struct {
		name string
		args []string
		edit func(map[string]string)
		want string
	}{
		{"no command", nil, func(map[string]string) {}, "orders|bills|all"},
		{"unknown command", []string{"reports"}, func(map[string]string) {}, "reports"},
		{"bills", []string{"bills"}, func(map[string]string) {}, "not implemented yet"},
		{"all", []string{"all"}, func(map[string]string) {}, "not implemented yet"},
		{"no merchant", []string{"orders"}, func(e map[string]string) { delete(e, "WXPAY_MCHID") }, "WXPAY_MCHID"},
		{"bad stale-after", []string{"orders"}, func(e map[string]string) { e["RECONCILE_STALE_AFTER"] = "soon" }, "RECONCILE_STALE_AFTER"},
		{"zero rate", []string{"orders"}, func(e map[string]string) { e["RECONCILE_QPS"] = "0" }, "RECONCILE_QPS"},
		{"negative expire-after", []string{"orders", "--expire-after", "-1h"}, func(map[string]string) {}, "RECONCILE_EXPIRE_AFTER"},
		{"max age under expire-after", []string{"orders"}, func(e map[string]string) { e["RECONCILE_MAX_AGE"] = "1h" }, "RECONCILE_MAX_AGE"},
		{"bad log level", []string{"orders"}, func(e map[string]string) { e["LOG_LEVEL"] = "loud" }, "LOG_LEVEL"},
		{"bad redis url", []string{"orders"}, func(e map[string]string) { e["REDIS_URL"] = "http://x" }, "REDIS_URL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := merchantEnv(t, srv, m)
			tc.edit(env)
			err := run(context.Background(), tc.args, func(k string) string { return env[k] }, io.Discard)
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a usage error naming %s", err, tc.want)
			}
		})
	}
}

func TestRunFlagWinsAndHelpListsBoth(t *testing.T) {
	var out testenv.Buffer
	if err := run(context.Background(), []string{"orders", "--help"}, func(string) string { return "" }, &out); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"-stale-after", "RECONCILE_STALE_AFTER", "-expire-after", "RECONCILE_EXPIRE_AFTER", "-max-age", "RECONCILE_MAX_AGE", "-rate", "RECONCILE_QPS", "NATS_URL", "REDIS_URL"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("--help does not list %s", s)
		}
	}
}

// setup starts the services and returns the environment of a run, a
// Redis client and the tracker store.
func setup(t *testing.T) (*wxpaytest.Server, *wxpaytest.Merchant, map[string]string, *redis.Client, *tracking.Store) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	env := merchantEnv(t, srv, m)
	env["NATS_URL"] = testenv.StartNATS(t).URL
	env["REDIS_URL"] = testenv.StartRedis(t).URL
	opt, _ := redis.ParseURL(env["REDIS_URL"])
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	return srv, m, env, rdb, tracking.NewStore(rdb, tracking.Config{})
}

func TestRunOrders(t *testing.T) {
	old := backoffBase
	backoffBase = time.Millisecond
	t.Cleanup(func() { backoffBase = old })
	srv, m, env, rdb, store := setup(t)
	ctx := context.Background()
	srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: "T1", Total: 5})
	srv.Pay("T1")
	srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: "T2"})
	store.AddPending(ctx, tracking.Order, m.MchID, "T1", time.Now().Add(-time.Hour))
	store.AddPending(ctx, tracking.Order, m.MchID, "T2", time.Now().Add(-3*time.Hour))
	srv.RateLimitNext(1)
	var out testenv.Buffer
	// The flag wins over the environment (RECONCILE_STALE_AFTER 24h would skip both).
	env["RECONCILE_STALE_AFTER"] = "24h"
	err := run(ctx, []string{"orders", "--stale-after", "5m", "--rate", "100"}, func(k string) string { return env[k] }, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	want := "reconciler orders: queried 2, published 2 (transaction.closed=1 transaction.success=1), closed 1, dropped 0, still pending 0, skipped 0, errors 0"
	if !strings.Contains(out.String(), want) {
		t.Fatalf("no summary %q in\n%s", want, out.String())
	}
	if items, _ := store.Pending(ctx, tracking.Order, m.MchID, time.Now()); len(items) != 0 {
		t.Fatalf("still pending: %v", items)
	}
	if n, _ := rdb.Exists(ctx, reconcile.LockKey(events.DefaultKeyPrefix)).Result(); n != 0 {
		t.Fatal("lock not released")
	}

	// A bad answer: exit 1 after the rest.
	srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: "T3"})
	srv.Pay("T3")
	store.AddPending(ctx, tracking.Order, m.MchID, "T3", time.Now().Add(-time.Hour))
	srv.SetBadAnswerSignatures(true)
	delete(env, "RECONCILE_STALE_AFTER")
	out = testenv.Buffer{}
	err = run(ctx, []string{"orders"}, func(k string) string { return env[k] }, &out)
	if err == nil || errors.Is(err, errUsage) || !strings.Contains(out.String(), "errors 1") {
		t.Fatalf("bad signature: %v\n%s", err, out.String())
	}
}

func TestRunSecondRunExitsZero(t *testing.T) {
	_, _, env, rdb, _ := setup(t)
	ctx := context.Background()
	key := reconcile.LockKey(events.DefaultKeyPrefix)
	rdb.Set(ctx, key, "other-run", time.Minute)
	var out testenv.Buffer
	if err := run(ctx, []string{"orders"}, func(k string) string { return env[k] }, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "another run holds the lock") {
		t.Fatalf("does not say so:\n%s", out.String())
	}
	if v, _ := rdb.Get(ctx, key).Result(); v != "other-run" {
		t.Fatal("the other run's lock was touched")
	}
}
