package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxpay-notify/wxpay-notify/internal/reconcile"
	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
	"github.com/wxpay-notify/wxpay-notify/internal/tracking"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
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
		{"bad date", []string{"bills", "--date", "2026-13-01"}, func(map[string]string) {}, "YYYY-MM-DD"},
		{"today's bills", []string{"bills", "--date", time.Now().In(wxpay.ChinaTime()).Format("2006-01-02")}, func(map[string]string) {}, "made the next day"},
		{"empty bill dir", []string{"all", "--bill-dir="}, func(map[string]string) {}, "RECONCILE_BILL_DIR"},
		{"bad output", []string{"bills"}, func(e map[string]string) { e["RECONCILE_OUTPUT"] = "yaml" }, "RECONCILE_OUTPUT"},
		{"bad pushgateway", []string{"orders", "--pushgateway", "ftp://u:secret@gw"}, func(map[string]string) {}, "RECONCILE_PUSHGATEWAY"},
		{"orders flag on bills", []string{"bills", "--stale-after", "5m"}, func(map[string]string) {}, "stale-after"},
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
			err := run(context.Background(), tc.args, func(k string) string { return env[k] }, io.Discard, io.Discard)
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a usage error naming %s", err, tc.want)
			}
		})
	}
}

func TestRunFlagWinsAndHelpListsBoth(t *testing.T) {
	var out testenv.Buffer
	if err := run(context.Background(), []string{"orders", "--help"}, func(string) string { return "" }, &out, io.Discard); err != nil {
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
	err := run(ctx, []string{"orders", "--stale-after", "5m", "--rate", "100"}, func(k string) string { return env[k] }, &out, io.Discard)
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
	err = run(ctx, []string{"orders"}, func(k string) string { return env[k] }, &out, io.Discard)
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
	if err := run(ctx, []string{"orders"}, func(k string) string { return env[k] }, &out, io.Discard); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "another run holds the lock") {
		t.Fatalf("does not say so:\n%s", out.String())
	}
	if v, _ := rdb.Get(ctx, key).Result(); v != "other-run" {
		t.Fatal("the other run's lock was touched")
	}
}

// yesterday is the default bill day: midnight China time.
func yesterday() time.Time {
	y, m, d := time.Now().In(wxpay.ChinaTime()).AddDate(0, 0, -1).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, wxpay.ChinaTime())
}

func billRow(m *wxpaytest.Merchant, tx, no string, total int64) wxpaytest.BillRow {
	return wxpaytest.BillRow{TradeTime: yesterday().Add(9 * time.Hour), MchID: m.MchID, TransactionID: tx, OutTradeNo: no, Total: total}
}

func TestRunBillsExitStatus(t *testing.T) {
	srv, m, env, _, store := setup(t)
	ctx := context.Background()
	srv.Bills().SetOptions(wxpaytest.BillOptions{NoHistory: true})
	env["RECONCILE_BILL_DIR"] = t.TempDir()
	getenv := func(k string) string { return env[k] }
	srv.Bills().AddTradeRows(billRow(m, "4200000001", "T1", 100))
	store.RecordFinal(ctx, m.MchID, "4200000001", yesterday().Add(9*time.Hour), tracking.Entry{OutTradeNo: "T1", Amount: 100, State: "SUCCESS", EventID: "e1"})

	// A clean day: 0.
	var out testenv.Buffer
	if err := run(ctx, []string{"bills"}, getenv, &out, io.Discard); err != nil || exitCode(err) != 0 {
		t.Fatalf("clean day: %v\n%s", err, out.String())
	}
	for _, want := range []string{"reconciler bills: bills of " + yesterday().Format("2006-01-02") + ": 2 bill(s), 1 rows, mismatches 0",
		"tradebill ALL: 1 rows, stored as", "fundflowbill BASIC: no bill (an empty day)"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("no %q in\n%s", want, out.String())
		}
	}

	// A payment the ledger does not have: 3.
	srv.Bills().AddTradeRows(billRow(m, "4200000002", "T2", 300))
	out = testenv.Buffer{}
	err := run(ctx, []string{"bills", "--date", yesterday().Format("2006-01-02")}, getenv, &out, io.Discard)
	if exitCode(err) != 3 || !strings.Contains(out.String(), "missing_in_ledger:1") {
		t.Fatalf("mismatch: exit %d %v\n%s", exitCode(err), err, out.String())
	}

	// Not ready yet: 1, saying so.
	srv.Bills().SetOptions(wxpaytest.BillOptions{NoHistory: true, ReadyAfter: 1000 * time.Hour})
	out = testenv.Buffer{}
	err = run(ctx, []string{"bills"}, getenv, &out, io.Discard)
	if exitCode(err) != 1 || !strings.Contains(err.Error(), "not ready yet") {
		t.Fatalf("not ready: exit %d %v\n%s", exitCode(err), err, out.String())
	}
}

func TestRunAllJSONAndPushgateway(t *testing.T) {
	old := backoffBase
	backoffBase = time.Millisecond
	t.Cleanup(func() { backoffBase = old })
	srv, m, env, _, store := setup(t)
	ctx := context.Background()
	srv.Bills().SetOptions(wxpaytest.BillOptions{NoHistory: true})
	env["RECONCILE_BILL_DIR"] = t.TempDir()
	srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: "T1", Total: 5})
	srv.Pay("T1")
	store.AddPending(ctx, tracking.Order, m.MchID, "T1", time.Now().Add(-time.Hour))
	srv.Bills().AddTradeRows(billRow(m, "4200000009", "T9", 100))

	var pushes []string
	var mu sync.Mutex
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		pushes = append(pushes, r.Method+" "+r.URL.Path+"\n"+string(body))
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	defer gw.Close()

	var out, logs testenv.Buffer
	err := run(ctx, []string{"all", "--output", "json", "--pushgateway", gw.URL}, func(k string) string { return env[k] }, &out, &logs)
	if exitCode(err) != 3 {
		t.Fatalf("exit %d (%v), want 3 for the unknown payment\n%s\n%s", exitCode(err), err, out.String(), logs.String())
	}
	var rep Report
	if err := json.Unmarshal([]byte(out.String()), &rep); err != nil {
		t.Fatalf("standard output is not one JSON report: %v\n%s", err, out.String())
	}
	if rep.Command != "all" || rep.ExitCode != 3 || rep.Orders == nil || rep.Orders.Published[wxpay.EventTransactionSuccess] != 1 ||
		rep.Bills == nil || rep.Bills.Mismatches != 1 || rep.Finished.Before(rep.Started) {
		t.Fatalf("report %+v", rep)
	}
	if !strings.Contains(logs.String(), `"message":"starting"`) {
		t.Fatalf("the log did not go to standard error:\n%s", logs.String())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(pushes) != 1 || !strings.HasPrefix(pushes[0], "PUT /metrics/job/wxpay_reconciler/subcommand/all\n") ||
		!strings.Contains(pushes[0], `wxpay_reconciler_last_run_exit_code{command="all"} 3`) ||
		!strings.Contains(pushes[0], `wxpay_reconciler_last_run_items{command="all",kind="bill_mismatches"} 1`) ||
		!strings.Contains(pushes[0], `wxpay_reconciler_last_run_items{command="all",kind="published"} 1`) {
		t.Fatalf("pushes %q", pushes)
	}
}

func TestRunPushgatewayDownFailsTheRun(t *testing.T) {
	_, _, env, _, _ := setup(t)
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) }))
	defer gw.Close()
	var out testenv.Buffer
	err := run(context.Background(), []string{"orders", "--pushgateway", gw.URL}, func(k string) string { return env[k] }, &out, io.Discard)
	if exitCode(err) != 1 || !strings.Contains(err.Error(), "pushing the run's metrics") {
		t.Fatalf("exit %d %v\n%s", exitCode(err), err, out.String())
	}
}

func TestRunTwoConcurrentRuns(t *testing.T) {
	srv, m, env, rdb, store := setup(t)
	ctx := context.Background()
	// Twenty payments to find at 20 queries a second: the first run holds
	// the lock for about a second.
	for i := range 20 {
		no := fmt.Sprintf("T%02d", i)
		srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: no, Total: 5})
		srv.Pay(no)
		store.AddPending(ctx, tracking.Order, m.MchID, no, time.Now().Add(-time.Hour))
	}
	getenv := func(k string) string { return env[k] }
	var first testenv.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"orders", "--rate", "20"}, getenv, &first, io.Discard) }()
	key := reconcile.LockKey(events.DefaultKeyPrefix)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if n, _ := rdb.Exists(ctx, key).Result(); n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first run never took the lock")
		}
	}
	var second testenv.Buffer
	if err := run(ctx, []string{"orders"}, getenv, &second, io.Discard); err != nil {
		t.Fatalf("second run: %v\n%s", err, second.String())
	}
	if !strings.Contains(second.String(), "another run holds the lock") || strings.Contains(second.String(), "queried") {
		t.Fatalf("second run:\n%s", second.String())
	}
	if err := <-done; err != nil {
		t.Fatalf("first run: %v\n%s", err, first.String())
	}
	if !strings.Contains(first.String(), "queried 20, published 20") {
		t.Fatalf("first run:\n%s", first.String())
	}
}

func TestExitCodes(t *testing.T) {
	for err, want := range map[error]int{
		nil: 0, usageErr(errors.New("x")): 2, fmt.Errorf("%w: 2", errDiscrepancies): 3,
		fmt.Errorf("%w: 1", errFailed): 1, errors.New("nats down"): 1,
	} {
		if got := exitCode(err); got != want {
			t.Errorf("exitCode(%v) = %d, want %d", err, got, want)
		}
	}
}

// SIGTERM (the run's context) stops a run between items: what was
// published left the pending set, the rest stays for the next run, and the
// lock is released.
func TestRunStopsBetweenItemsAndReleasesTheLock(t *testing.T) {
	srv, m, env, rdb, store := setup(t)
	ctx := context.Background()
	for i := range 40 {
		no := fmt.Sprintf("T%02d", i)
		srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: no, Total: 5})
		srv.Pay(no)
		store.AddPending(ctx, tracking.Order, m.MchID, no, time.Now().Add(-time.Hour))
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	var out testenv.Buffer
	go func() {
		done <- run(runCtx, []string{"orders", "--rate", "20"}, func(k string) string { return env[k] }, &out, io.Discard)
	}()
	// Stop once a few have been published (20/s: 40 would take 2 s).
	stream := "wxpay:pending:order:" + m.MchID
	for deadline := time.Now().Add(10 * time.Second); rdb.ZCard(ctx, stream).Val() > 35; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("nothing was published")
		}
	}
	stop()
	select {
	case err := <-done:
		if exitCode(err) != 1 || !errors.Is(err, context.Canceled) {
			t.Fatalf("stopped run: exit %d, %v", exitCode(err), err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the run did not stop within 5 s of its context")
	}
	left := rdb.ZCard(ctx, stream).Val()
	if left == 0 || left >= 40 {
		t.Fatalf("%d pending after the stop, want some published and some left", left)
	}
	if n, _ := rdb.Exists(ctx, reconcile.LockKey(events.DefaultKeyPrefix)).Result(); n != 0 {
		t.Fatal("the lock was not released")
	}
	// Every order that left the pending set was published (and no more).
	_, js := testenv.Connect(t, env["NATS_URL"])
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := int64(info.State.Msgs); got != 40-left {
		t.Fatalf("%d events published, %d orders left the pending set", got, 40-left)
	}
	// The next run finishes the rest.
	out = testenv.Buffer{}
	if err := run(ctx, []string{"orders", "--rate", "200"}, func(k string) string { return env[k] }, &out, io.Discard); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if got := rdb.ZCard(ctx, stream).Val(); got != 0 {
		t.Fatalf("%d still pending after the next run", got)
	}
}

// The reconciler ensures the streams with the settings the ingress was
// given: ensuring only raises, so its own defaults would undo a shorter
// duplicate window or max age.
func TestStreamSettingsReachEnsure(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	env := merchantEnv(t, srv, srv.AddMerchant(wxpaytest.MerchantOptions{}))
	env["STREAM_DUPLICATE_WINDOW"], env["STREAM_MAX_AGE"], env["STREAM_REPLICAS"] = "30s", "24h", "3"
	s, err := parse("orders", nil, func(k string) string { return env[k] }, io.Discard, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := events.StreamConfig{Replicas: 3, DuplicateWindow: 30 * time.Second, MaxAge: 24 * time.Hour}
	if s.streams != want {
		t.Fatalf("streams ensured with %+v, want %+v", s.streams, want)
	}
}
