package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// The phases of the platform's fault policy in TestEmptyRedisCutsStormsAndClock.
const (
	phaseNormal = iota
	phaseClock  // timestamps near and past the 5-minute window
	phaseStorm  // concurrent duplicates, delayed and dropped notifications
)

// TestEmptyRedisCutsStormsAndClock runs the faults the crash test leaves
// out, over the same real processes, while orders are announced, paid and
// refunded at 10/s (a tenth of the payments notified twice, a quarter of
// the refunds in the v2 form of a console refund, another quarter twice):
//
//   - the clock: notifications signed 290 s behind and ahead of the
//     ingress's clock are accepted and handled once; 310 s behind and
//     ahead are answered 401 by the ingress and handled once, when the
//     platform's re-send signed with its own clock arrives;
//   - Redis comes back empty (SIGKILL, its AOF deleted, restarted): the
//     done markers are gone. Copies of handled payments that the stream
//     no longer dedupes (republished under a fresh Nats-Msg-Id, as a copy
//     arriving after the duplicate window is) are duplicates before the
//     loss and run again after it; WeChat's re-sends inside the duplicate
//     window do not run again (JetStream drops them). What runs twice must
//     be exactly those late copies plus at most what was delivered and not
//     yet acknowledged when Redis was lost;
//   - worker2 is cut from Redis, while the business holds one of its
//     deliveries unanswered, then from all three NATS servers, for 8 s
//     each, longer than its 3 s lock TTL and ack wait (TCP proxies the
//     test controls; the servers do not advertise other addresses):
//     nothing is lost, and nothing runs twice except a run whose done
//     marker could not be written, which the worker logs and hands back
//     (the at-least-once window README documents);
//   - a storm: every payment notified six times at once, a sixth delayed
//     past the reconciler's query and a sixth dropped, while `reconciler
//     orders` runs as a process every 4 s: each payment handled once, the
//     dropped ones recovered by the reconciler.
//
// At the end every payment and refund of the platform reached the business
// once (the empty-Redis reruns the one exception, bounded and counted),
// nothing is dead-lettered or pending, and every process has exited.
//
// It fails when a guarantee breaks: test/mutations/e2e.txt plants an
// ingress whose timestamp window is 10 minutes (the 310 s notifications
// are then answered 200), a reconciler that publishes a recovered payment
// under a dedupe key of its own (the delayed payments then run twice),
// and a worker that acknowledges an event whose handlers failed while
// Redis was unreachable (the payment held during the Redis cut is then
// lost).
func TestEmptyRedisCutsStormsAndClock(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run of about 2 minutes; not in -short")
	}
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("WXPAY_TEST_REQUIRE_E2E") != "" {
			t.Fatal("redis-server is not on PATH and WXPAY_TEST_REQUIRE_E2E is set: install redis-server")
		}
		t.Skip("redis-server is not on PATH (set WXPAY_TEST_REQUIRE_E2E to make this a failure)")
	}
	goroutinesBefore := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	began := time.Now()
	since := func() time.Duration { return time.Since(began).Round(time.Second) }

	h := newHarness(t)
	bin := filepath.Join(h.dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	buildBinaries(t, bin)

	// NATS: three clustered servers that do not tell clients about each
	// other, so that worker2 reaches them only through its proxies.
	var natsURLs, routes, natsAddrs []string
	type natsPorts struct{ client, cluster, monitor int }
	ports := make([]natsPorts, 3)
	for i := range ports {
		ports[i] = natsPorts{testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)}
		natsAddrs = append(natsAddrs, fmt.Sprintf("127.0.0.1:%d", ports[i].client))
		natsURLs = append(natsURLs, "nats://"+natsAddrs[i])
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[i].cluster))
	}
	var natsProcs []*proc
	for i, p := range ports {
		name := fmt.Sprintf("n%d", i+1)
		args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(p.client), "-m", strconv.Itoa(p.monitor),
			"-js", "-sd", filepath.Join(h.dir, "nats-"+name), "-server_name", name,
			"-cluster_name", "e2e", "-cluster", fmt.Sprintf("nats://127.0.0.1:%d", p.cluster),
			"-routes", strings.Join(routes, ","), "--no_advertise"}
		natsProcs = append(natsProcs, h.add("nats-"+name, filepath.Join(bin, "nats-server"), args, nil,
			httpReady(fmt.Sprintf("http://127.0.0.1:%d/healthz", p.monitor))))
	}
	startAll(t, ctx, natsProcs, 60*time.Second)
	natsURL := strings.Join(natsURLs, ",")

	redisPort := testenv.FreePort(t)
	redisAddr := fmt.Sprintf("127.0.0.1:%d", redisPort)
	redisDir := filepath.Join(h.dir, "redis")
	if err := os.Mkdir(redisDir, 0o755); err != nil {
		t.Fatal(err)
	}
	redisProc := h.add("redis", redisBin, []string{"--port", strconv.Itoa(redisPort), "--bind", "127.0.0.1",
		"--dir", redisDir, "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
		"--maxmemory-policy", "noeviction"}, nil, tcpReady(redisAddr))
	startAll(t, ctx, []*proc{redisProc}, 20*time.Second)
	redisURL := "redis://" + redisAddr + "/0"

	// worker2's network: one proxy to Redis, one to each NATS server.
	redisProxy := newProxy(t, redisAddr)
	var natsProxies []*tcpProxy
	var natsViaProxy []string
	for _, a := range natsAddrs {
		p := newProxy(t, a)
		natsProxies = append(natsProxies, p)
		natsViaProxy = append(natsViaProxy, "nats://"+p.addr())
	}

	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, TimeScale: 0.01})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	merchantEnv := testenv.MerchantEnv(t, srv, m)
	rec := newRecorder([]byte(forwardSecret))
	recSrv := httptest.NewServer(rec)
	t.Cleanup(recSrv.Close)

	sys := stack{h: h, bin: bin, natsURL: natsURL, redisURL: redisURL, merchantEnv: merchantEnv}
	ingresses, backends := sys.startIngresses(t, ctx, 2)

	// A short ack wait (the lock's TTL too) so that the cuts outlast it
	// in seconds.
	const ackWait = 3 * time.Second
	var workers []*proc
	for i := range 2 {
		set := map[string]string{"WORKER_ACK_WAIT": ackWait.String(), "WORKER_RETRY_MAX": "5s", "FORWARD_TIMEOUT": "1s"}
		if i == 1 {
			set["NATS_URL"] = strings.Join(natsViaProxy, ",")
			set["REDIS_URL"] = "redis://" + redisProxy.addr() + "/0"
		}
		workers = append(workers, sys.addWorker(t, i, recSrv.URL, set))
	}
	startAll(t, ctx, workers, 60*time.Second)
	all := append(append([]*proc{}, ingresses...), workers...)
	t.Logf("system up in %v", since())

	// The reconciler, run as a process: its exit statuses are kept.
	recEnv := sys.reconcilerEnv()
	var recRuns, recFailed int
	reconcileOrders := func() {
		rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
		defer rcancel()
		cmd := exec.CommandContext(rctx, filepath.Join(bin, "reconciler"), "orders", "--stale-after", "2s", "--rate", "50")
		cmd.Env = recEnv
		out, err := cmd.CombinedOutput()
		recRuns++
		if err != nil {
			recFailed++
			// A failed run leaves its items pending for the next, as
			// the cron job does; the drain below runs it until every
			// dropped payment is recovered. One failure in the storm
			// is tolerated (a query or publish timing out on two busy
			// cores), more fail the test.
			t.Logf("reconciler orders (run %d): %v\nits errors and warnings:\n%s\nits last lines:\n%s", recRuns, err, problems(out), tail(out, 1500))
		}
		os.WriteFile(filepath.Join(h.dir, fmt.Sprintf("reconciler-%d.log", recRuns)), out, 0o600)
	}

	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	pub := events.NewPublisher(js, events.PublisherConfig{Timeout: 10 * time.Second})

	lb := newBalancer(backends)
	lbSrv := httptest.NewServer(lb)
	t.Cleanup(lbSrv.Close)

	// The platform's fault policy, by phase.
	var phase atomic.Int32
	var mu sync.Mutex
	clockSkews := map[time.Duration]int{}
	dropped, delayed := map[string]bool{}, map[string]bool{}
	srv.AutoNotify(wxpaytest.AutoNotifyConfig{URL: lbSrv.URL + "/notify/" + m.MchID, Fault: func(n wxpaytest.AutoNotification) wxpaytest.NotifyFault {
		if n.Kind == wxpaytest.NotifyRefund {
			switch n.Seq % 4 {
			case 0:
				return wxpaytest.NotifyFault{V2: true}
			case 2:
				return wxpaytest.NotifyFault{Duplicates: 1}
			}
			return wxpaytest.NotifyFault{}
		}
		mu.Lock()
		defer mu.Unlock()
		switch phase.Load() {
		case phaseClock:
			skew := []time.Duration{-290 * time.Second, 290 * time.Second, -310 * time.Second, 310 * time.Second, 0}[n.Seq%5]
			clockSkews[skew]++
			return wxpaytest.NotifyFault{TimestampSkew: skew}
		case phaseStorm:
			f := wxpaytest.NotifyFault{Duplicates: 5, Concurrent: true}
			switch n.Seq % 6 {
			case 0:
				// 10 platform minutes: 6 s here, past the reconciler's
				// next query of the order (stale after 2 s).
				f.Delay = 10 * time.Minute
				delayed[n.OutTradeNo] = true
			case 3:
				f.Drop = true
				dropped[n.OutTradeNo] = true
			}
			return f
		}
		if n.Seq%10 == 0 {
			return wxpaytest.NotifyFault{Duplicates: 1}
		}
		return wxpaytest.NotifyFault{}
	}})

	client, err := wxpay.NewClient(srv.ClientConfig(m))
	if err != nil {
		t.Fatal(err)
	}
	fl := &flow{srv: srv, mchid: m.MchID, client: client, tag: time.Now().Format("150405"),
		beforePay: func(ctx context.Context, no string) error {
			_, err := events.AnnounceOrder(ctx, pub, m.MchID, events.Announcement{OutTradeNo: no})
			return err
		}}
	const rate, flowFor = 10, 75 * time.Second
	flowDone := make(chan struct{})
	go func() {
		defer close(flowDone)
		fl.run(ctx, flowFor, rate)
	}()
	step := func(d time.Duration) {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	readyAgain := func(why string) {
		for _, p := range all {
			if err := p.waitReady(ctx, 60*time.Second); err != nil {
				t.Fatalf("%s: %v", why, err)
			}
		}
	}
	faults := 0

	// 7. The clock.
	step(3 * time.Second)
	phase.Store(phaseClock)
	faults++
	t.Logf("fault %d at %v: notifications signed 290 s and 310 s off the clock, both ways", faults, since())
	step(9 * time.Second)
	phase.Store(phaseNormal)

	// 4b. Redis comes back empty. First, copies of handled payments that
	// the stream no longer dedupes (published under a fresh Nats-Msg-Id,
	// as a copy arriving after the duplicate window would be): the done
	// markers make them duplicates.
	step(3 * time.Second)
	lateIDs := map[string]bool{}
	lateBefore := publishLateCopies(t, ctx, js, rec, 3, lateIDs)
	step(2 * time.Second)
	ackPendingBefore := ackPending(ctx, js)
	redisProc.kill()
	wiped := time.Now()
	ackPendingAfter := ackPending(ctx, js)
	entries, _ := os.ReadDir(redisDir)
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(redisDir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	faults++
	rerunBound := max(ackPendingBefore, ackPendingAfter)
	t.Logf("fault %d at %v: SIGKILL redis-server, its AOF deleted (%d file(s)); %d then %d events delivered and not acknowledged",
		faults, since(), len(entries), ackPendingBefore, ackPendingAfter)
	step(2 * time.Second)
	if err := redisProc.start(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	readyAgain("after Redis came back empty")
	t.Logf("redis-server restarted empty; all ready again at %v", since())
	// Copies past the duplicate window of payments handled before the
	// loss run again: their markers are gone.
	lateAfter := publishLateCopies(t, ctx, js, rec, 5, lateIDs)
	// WeChat sends a few handled payments again (within the stream's
	// duplicate window of their first copy): JetStream drops them,
	// markers or not.
	resent := 0
	for _, o := range srv.Orders() {
		if resent == 5 {
			break
		}
		id := "pay:" + o.TransactionID
		if at := rec.appliedAt(id); o.TransactionID == "" || len(at) != 1 || !at[0].Before(wiped) || lateIDs[id] {
			continue
		}
		n, err := srv.PaymentNotification(o.OutTradeNo, wxpaytest.NotificationOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Deliver(ctx, lbSrv.URL+"/notify/"+m.MchID, n); err != nil {
			t.Errorf("re-sending the payment of %s: %v", o.OutTradeNo, err)
		}
		resent++
	}

	// 5. worker2 cut from Redis, then from NATS, longer than its lock TTL;
	// the Redis cut comes while the business holds one of worker2's
	// deliveries unanswered, so that its handler fails during the cut.
	step(3 * time.Second)
	var heldKey string
	select {
	case heldKey = <-rec.holdNextOf("/events/w2", wxpay.EventTransactionSuccess):
	case <-time.After(20 * time.Second):
		t.Fatal("worker2 forwarded no payment within 20 s")
	}
	redisProxy.cutOff()
	faults++
	t.Logf("fault %d at %v: worker2 cut from Redis for 8 s (lock TTL %v) while it forwarded %s", faults, since(), ackWait, heldKey)
	step(8 * time.Second)
	redisProxy.heal()
	readyAgain("after the Redis cut")
	t.Logf("healed; ready again at %v", since())
	step(3 * time.Second)
	for _, p := range natsProxies {
		p.cutOff()
	}
	faults++
	t.Logf("fault %d at %v: worker2 cut from all three NATS servers for 8 s (ack wait %v)", faults, since(), ackWait)
	step(8 * time.Second)
	for _, p := range natsProxies {
		p.heal()
	}
	readyAgain("after the NATS cut")
	t.Logf("healed; ready again at %v", since())

	// 6. The storm, with the reconciler racing the late notifications.
	step(2 * time.Second)
	phase.Store(phaseStorm)
	faults++
	t.Logf("fault %d at %v: each payment notified 6 times at once, 1/6 delayed 6 s, 1/6 dropped; reconciler every 4 s", faults, since())
	for range 4 {
		step(4 * time.Second)
		reconcileOrders()
	}
	phase.Store(phaseNormal)

	select {
	case <-flowDone:
	case <-ctx.Done():
		t.Fatal("the flow did not end in time")
	}
	t.Logf("flow ended at %v", since())

	// Drain: the platform's notifications, then the reconciler until the
	// dropped payments are recovered, then the consumer.
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	if err := srv.WaitNotifications(wctx); err != nil {
		t.Fatalf("waiting for the platform's notifications: %v (stats %+v)", err, srv.NotifyStats().Total())
	}
	mu.Lock()
	droppedNos := make([]string, 0, len(dropped))
	for no := range dropped {
		droppedNos = append(droppedNos, no)
	}
	mu.Unlock()
	unrecovered := func() (n int) {
		for _, no := range droppedNos {
			if o, ok := srv.Order(no); ok && len(rec.appliedAt("pay:"+o.TransactionID)) == 0 {
				n++
			}
		}
		return n
	}
	for i := 0; unrecovered() > 0 && i < 8; i++ {
		step(2 * time.Second)
		reconcileOrders()
	}
	pending, ackPend := waitConsumerIdle(t, wctx, js)
	dead := streamMsgs(t, wctx, js, events.DLQStreamName)

	// The business's record against the platform's.
	got := rec.counts()
	want, payments, refunds := platformRecord(srv)
	markerFailures := 0
	for _, w := range workers {
		markerFailures += strings.Count(readLog(w), "the done marker was not written")
	}
	once, rerunEmpty, rerunMarker, twice, lost, unexpected := 0, 0, 0, 0, 0, 0
	var lostIDs, twiceIDs []string
	for id := range want {
		switch at := rec.appliedAt(id); {
		case len(at) == 0:
			lost++
			lostIDs = append(lostIDs, id)
		case len(at) == 1:
			once++
		case len(at) == 2 && at[0].Before(wiped) && at[1].After(wiped):
			rerunEmpty++
		case len(at) == 2 && rerunMarker < markerFailures:
			rerunMarker++
		default:
			twice++
			twiceIDs = append(twiceIDs, fmt.Sprintf("%s×%d", id, len(at)))
		}
	}
	for id := range got {
		if !want[id] {
			unexpected++
		}
	}
	st := srv.NotifyStats().Total()
	clock := lb.clockCounts()
	mu.Lock()
	nDelayed := len(delayed)
	skews := fmt.Sprint(clockSkews)
	mu.Unlock()
	wall := time.Since(began)
	row := func(k string, v any) string { return fmt.Sprintf("\n%-44s %v", k, v) }
	t.Logf("%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s",
		row("what", "count"),
		row("flow rate (orders/s) held", fmt.Sprintf("%.1f", float64(payments)/flowFor.Seconds())),
		row("payments", payments), row("refunds", refunds),
		row("notifications", st.Notifications), row("sent (copies)", st.Sent),
		row("attempts", st.Attempts), row("acknowledged", st.Acknowledged),
		row("dropped (reconciler's)", st.Dropped), row("delayed past the reconciler", nDelayed),
		row("clock skews sent", skews), row("answers by clock", clock),
		row("reconciler runs (failed)", fmt.Sprintf("%d (%d)", recRuns, recFailed)),
		row("handled once", once),
		row("late copies before / after the wipe", fmt.Sprintf("%d / %d", lateBefore, lateAfter)),
		row("twice: empty Redis (late copies + in flight)", fmt.Sprintf("%d (%d + at most %d)", rerunEmpty, lateAfter, rerunBound)),
		row("twice: done marker not written (logged)", fmt.Sprintf("%d (%d)", rerunMarker, markerFailures)),
		row("handled twice otherwise", twice), row("lost", lost),
		row("dead letters", dead), row("faults injected", faults),
		row("re-sent after the wipe", resent),
		row("wall time (s)", int(wall.Seconds())))

	for _, err := range fl.errs {
		t.Errorf("flow: %v", err)
	}
	if payments == 0 || refunds == 0 || len(droppedNos) == 0 || nDelayed == 0 {
		t.Errorf("the flow made %d payments, %d refunds, %d dropped and %d delayed notifications: not tested", payments, refunds, len(droppedNos), nDelayed)
	}
	if st.Acknowledged != st.Sent || st.GaveUp != 0 {
		t.Errorf("notifications: %d sent, %d acknowledged, %d given up", st.Sent, st.Acknowledged, st.GaveUp)
	}
	if out := clock["outside 200"]; out != 0 || clock["outside 401"] == 0 {
		t.Errorf("notifications signed more than 5 minutes off: %d accepted, %d answered 401 (%v); want all refused with 401", out, clock["outside 401"], clock)
	}
	if bad := clock["edge 401"]; bad != 0 || clock["edge 200"] == 0 {
		t.Errorf("notifications signed 290 s off: %d refused, %d accepted (%v); want all accepted", bad, clock["edge 200"], clock)
	}
	if recFailed > 1 {
		t.Errorf("%d of %d runs of reconciler orders failed (their errors are logged above); one is tolerated", recFailed, recRuns)
	}
	if pending != 0 || ackPend != 0 {
		t.Errorf("consumer e2e still has %d pending and %d ack-pending events", pending, ackPend)
	}
	if dead != 0 {
		t.Errorf("%d event(s) dead-lettered in %s; the workers' logs say why", dead, events.DLQStreamName)
	}
	if lost != 0 {
		sort.Strings(lostIDs)
		t.Errorf("%d payment(s)/refund(s) never reached the business: %v", lost, first(lostIDs, 10))
	}
	if twice != 0 {
		sort.Strings(twiceIDs)
		t.Errorf("%d payment(s)/refund(s) reached the business more than once, not explained by the empty Redis or a logged marker failure: %v", twice, first(twiceIDs, 10))
	}
	if rerunEmpty < lateAfter || rerunEmpty > lateAfter+rerunBound {
		t.Errorf("%d payment(s)/refund(s) ran again after Redis came back empty; want the %d late copies published after it, and at most the %d delivered and unacknowledged then besides",
			rerunEmpty, lateAfter, rerunBound)
	}
	rec.mu.Lock()
	bad := append([]string(nil), rec.bad...)
	rec.mu.Unlock()
	if unexpected != 0 || len(bad) != 0 {
		t.Errorf("the business got %d event(s) that are not a payment or refund the platform has, and refused %d: %v", unexpected, len(bad), first(bad, 5))
	}

	// Nothing outlives the test: every process exits, the proxies' and the
	// platform's goroutines end.
	h.stopAll(t)
	redisProxy.close()
	for _, p := range natsProxies {
		p.close()
	}
	nc.Close()
	lbSrv.Close()
	recSrv.Close()
	srv.Close()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > goroutinesBefore+5 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutinesBefore+5 {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines left, %d before the test:\n%s", n, goroutinesBefore, buf[:runtime.Stack(buf, true)])
	}
	if t.Failed() {
		for _, p := range append(append([]*proc{redisProc}, all...), natsProcs...) {
			t.Logf("---- %s log tail:\n%s", p.name, p.tail())
		}
	}
}

// publishLateCopies publishes again, under a fresh Nats-Msg-Id, n
// payments of the WXPAY stream the business applied once and that are not
// in used yet (it adds them), as a copy arriving after the stream's
// duplicate window is published; it returns how many it published.
func publishLateCopies(t *testing.T, ctx context.Context, js jetstream.JetStream, rec *recorder, n int, used map[string]bool) int {
	t.Helper()
	done := 0
	for _, raw := range testenv.StreamMsgs(t, js, events.StreamName) {
		if done == n {
			break
		}
		if !strings.HasSuffix(raw.Subject, ".transaction.success") {
			continue
		}
		var env events.Envelope
		var tx struct {
			TransactionID string `json:"transaction_id"`
		}
		if json.Unmarshal(raw.Data, &env) != nil || json.Unmarshal(env.Resource, &tx) != nil || tx.TransactionID == "" {
			continue
		}
		id := "pay:" + tx.TransactionID
		if used[id] || len(rec.appliedAt(id)) != 1 {
			continue
		}
		m := nats.NewMsg(raw.Subject)
		m.Data = raw.Data
		for k, vs := range raw.Header {
			m.Header[k] = append([]string(nil), vs...)
		}
		m.Header.Set(jetstream.MsgIDHeader, "late-copy:"+env.DedupeKey)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatalf("publishing a late copy of %s: %v", id, err)
		}
		used[id] = true
		done++
	}
	if done < n {
		t.Fatalf("found %d payments to publish late copies of, want %d", done, n)
	}
	return done
}

// ackPending is consumer e2e's count of events delivered and not yet
// acknowledged, -1 if it cannot be read.
func ackPending(ctx context.Context, js jetstream.JetStream) int {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := consumerInfo(cctx, js)
	if err != nil {
		return -1
	}
	return info.NumAckPending
}

func readLog(p *proc) string {
	b, _ := os.ReadFile(p.logf)
	return string(b)
}

func tail(b []byte, n int) []byte { return b[max(0, len(b)-n):] }

// problems returns the lines of a JSON log at level warn or error.
func problems(log []byte) string {
	var out strings.Builder
	for line := range strings.Lines(string(log)) {
		if strings.Contains(line, `"level":"error"`) || strings.Contains(line, `"level":"warn"`) {
			out.WriteString(line)
		}
	}
	return out.String()
}
