package e2e

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// forwardSecret keys the forward handler's signatures; the recorder
// verifies them.
const forwardSecret = "e2e-forward-secret-0123456789"

// TestCrashesWhilePaymentsFlow proves, over the real commands as separate
// processes, that every payment and every refund WeChat Pay notifies
// reaches the business exactly once while processes crash under load: an
// ingress is SIGKILLed (the load balancer's other ingress keeps serving,
// WeChat's retries cover the 502s), a worker is SIGKILLed while it runs
// handlers and restarted (its unacknowledged events go to the other worker
// or come back to it, and Redis's done markers keep them from running
// twice), a NATS node is SIGKILLed and restarted on its store (the
// replicated streams keep every acknowledged event), the whole NATS
// cluster is SIGKILLed at once and restarted on its stores (ingresses and
// workers reconnect by themselves; the notifications answered 503 or 502
// meanwhile are retried by WeChat), and redis-server is SIGKILLed and
// restarted on its append-only file (the done markers written before the
// crash survive it, so no event that was handled runs again). At the end every
// notification is acknowledged, the consumer has nothing pending, no event
// is dead-lettered, and the recorder behind FORWARD_URL counted each
// transaction_id and refund_id once: none lost, none twice. Then the day's
// trade and refund bills match the ledger the workers' tracker kept in
// Redis row for row: `reconciler bills --date` runs as a process for each
// day of the run's trades, which the platform dates two days back (see
// tradeLag: the command refuses a day its own clock says is today), and
// no process the test started outlives it.
//
// It fails when a guarantee breaks: run against a worker that acknowledges
// each event before running its handlers, it reported the delivery worker1
// was killed in as lost; against a tracker that files a payment under the
// day it was received instead of its success_time, `reconciler bills`
// reported the run's payments missing from the ledger
// (test/mutations/e2e.txt keeps both runs in the mutation check).
func TestCrashesWhilePaymentsFlow(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run of about 90 seconds; not in -short")
	}
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("WXPAY_TEST_REQUIRE_E2E") != "" {
			t.Fatal("redis-server is not on PATH and WXPAY_TEST_REQUIRE_E2E is set: install redis-server")
		}
		t.Skip("redis-server is not on PATH (set WXPAY_TEST_REQUIRE_E2E to make this a failure)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	began := time.Now()

	h := newHarness(t)
	bin := filepath.Join(h.dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	buildBinaries(t, bin)

	// NATS: three clustered JetStream servers, each on its own store.
	var natsURLs, routes []string
	type natsPorts struct{ client, cluster, monitor int }
	ports := make([]natsPorts, 3)
	for i := range ports {
		ports[i] = natsPorts{testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)}
		natsURLs = append(natsURLs, fmt.Sprintf("nats://127.0.0.1:%d", ports[i].client))
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[i].cluster))
	}
	var natsProcs []*proc
	for i, p := range ports {
		name := fmt.Sprintf("n%d", i+1)
		args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(p.client), "-m", strconv.Itoa(p.monitor),
			"-js", "-sd", filepath.Join(h.dir, "nats-"+name), "-server_name", name,
			"-cluster_name", "e2e", "-cluster", fmt.Sprintf("nats://127.0.0.1:%d", p.cluster),
			"-routes", strings.Join(routes, ",")}
		natsProcs = append(natsProcs, h.add("nats-"+name, filepath.Join(bin, "nats-server"), args, nil,
			httpReady(fmt.Sprintf("http://127.0.0.1:%d/healthz", p.monitor))))
	}
	startAll(t, ctx, natsProcs, 60*time.Second)
	natsURL := strings.Join(natsURLs, ",")

	// Redis, persistent as recommended.
	redisPort := testenv.FreePort(t)
	redisDir := filepath.Join(h.dir, "redis")
	if err := os.Mkdir(redisDir, 0o755); err != nil {
		t.Fatal(err)
	}
	redisProc := h.add("redis", redisBin, []string{"--port", strconv.Itoa(redisPort), "--bind", "127.0.0.1",
		"--dir", redisDir, "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
		"--maxmemory-policy", "noeviction"}, nil, tcpReady(fmt.Sprintf("127.0.0.1:%d", redisPort)))
	startAll(t, ctx, []*proc{redisProc}, 20*time.Second)
	redisURL := fmt.Sprintf("redis://127.0.0.1:%d/0", redisPort)

	// The fake platform, the business's recorder, the load balancer.
	// Its trades are dated two days back (tradeLag), so that the run's
	// bills can be reconciled by the reconciler command at the end.
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, TimeScale: 0.01, TradeNow: tradeNow})
	firstDay := chinaDay(tradeNow())
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	merchantEnv := testenv.MerchantEnv(t, srv, m)
	rec := newRecorder([]byte(forwardSecret))
	recSrv := httptest.NewServer(rec)
	t.Cleanup(recSrv.Close)

	sys := stack{h: h, bin: bin, natsURL: natsURL, redisURL: redisURL, merchantEnv: merchantEnv}
	ingresses, backends := sys.startIngresses(t, ctx, 2)
	var workers []*proc
	for i := range 2 {
		workers = append(workers, sys.addWorker(t, i, recSrv.URL, map[string]string{"WORKER_ACK_WAIT": "10s", "FORWARD_TIMEOUT": "5s"}))
	}
	startAll(t, ctx, workers, 60*time.Second)
	t.Logf("system up in %v", time.Since(began).Round(time.Millisecond))

	lb := newBalancer(backends)
	lbSrv := httptest.NewServer(lb)
	t.Cleanup(lbSrv.Close)
	srv.AutoNotify(wxpaytest.AutoNotifyConfig{URL: lbSrv.URL + "/notify/" + m.MchID})

	client, err := wxpay.NewClient(srv.ClientConfig(m))
	if err != nil {
		t.Fatal(err)
	}
	fl := &flow{srv: srv, mchid: m.MchID, client: client, tag: time.Now().Format("150405")}
	flowDone := make(chan struct{})
	go func() {
		defer close(flowDone)
		fl.run(ctx, 85*time.Second, 20)
	}()

	// The faults, one after the other while the flow runs.
	faults := 0
	step := func(d time.Duration) {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	restart := func(p *proc) {
		if err := p.start(ctx, 60*time.Second); err != nil {
			t.Fatalf("restarting %s: %v", p.name, err)
		}
	}
	step(8 * time.Second)
	ingresses[0].kill()
	faults++
	t.Logf("fault %d at %v: SIGKILL ingress1", faults, time.Since(began).Round(time.Second))
	step(8 * time.Second)
	restart(ingresses[0])
	t.Logf("ingress1 restarted at %v", time.Since(began).Round(time.Second))

	step(5 * time.Second)
	// Worker 1 is killed while its forward handler is in the middle of
	// a delivery the business has not yet applied.
	var heldKey string
	select {
	case heldKey = <-rec.holdNext("/events/w1"):
	case <-time.After(20 * time.Second):
		t.Fatal("worker1 forwarded nothing within 20 s")
	}
	workers[0].kill()
	faults++
	t.Logf("fault %d at %v: SIGKILL worker1 while it forwarded %s before the business applied it", faults, time.Since(began).Round(time.Second), heldKey)
	step(3 * time.Second)
	restart(workers[0])
	t.Logf("worker1 restarted at %v", time.Since(began).Round(time.Second))

	step(5 * time.Second)
	natsProcs[1].kill()
	faults++
	t.Logf("fault %d at %v: SIGKILL nats n2", faults, time.Since(began).Round(time.Second))
	step(8 * time.Second)
	restart(natsProcs[1])
	t.Logf("nats n2 restarted on its store at %v", time.Since(began).Round(time.Second))

	step(5 * time.Second)
	// The whole cluster goes down at once, as in a power cut of its
	// hosts or a botched rolling upgrade, and comes back on its stores.
	for _, p := range natsProcs {
		p.kill()
	}
	faults++
	t.Logf("fault %d at %v: SIGKILL all three nats-servers", faults, time.Since(began).Round(time.Second))
	// Down for longer than a client with a small reconnect budget keeps
	// trying, so giving up on the cluster shows here.
	step(5 * time.Second)
	startAll(t, ctx, natsProcs, 60*time.Second)
	t.Logf("nats cluster restarted on its stores at %v", time.Since(began).Round(time.Second))
	// Nobody restarts the ingresses and workers: they must reconnect.
	for _, p := range append(append([]*proc{}, ingresses...), workers...) {
		if err := p.waitReady(ctx, 60*time.Second); err != nil {
			t.Fatalf("after the NATS cluster restart: %v", err)
		}
	}
	t.Logf("ingresses and workers ready again at %v", time.Since(began).Round(time.Second))

	step(5 * time.Second)
	redisProc.kill()
	faults++
	t.Logf("fault %d at %v: SIGKILL redis-server", faults, time.Since(began).Round(time.Second))
	step(2 * time.Second)
	restart(redisProc)
	t.Logf("redis-server restarted on its append-only file at %v", time.Since(began).Round(time.Second))
	for _, p := range append(append([]*proc{}, ingresses...), workers...) {
		if err := p.waitReady(ctx, 60*time.Second); err != nil {
			t.Fatalf("after the Redis restart: %v", err)
		}
	}
	t.Logf("ingresses and workers ready again at %v", time.Since(began).Round(time.Second))

	select {
	case <-flowDone:
	case <-ctx.Done():
		t.Fatal("the flow did not end within the test's 6 minutes")
	}
	t.Logf("flow ended at %v", time.Since(began).Round(time.Second))

	// Drain: every notification acknowledged, the consumer caught up.
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	if err := srv.WaitNotifications(wctx); err != nil {
		t.Fatalf("waiting for the platform's notifications: %v (stats %+v)", err, srv.NotifyStats().Total())
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
	pending, ackPending := waitConsumerIdle(t, wctx, js)
	dead := streamMsgs(t, wctx, js, events.DLQStreamName)

	// The business side's record against the platform's.
	got := rec.counts()
	want, payments, refunds := platformRecord(srv)
	once, twice, lost, unexpected := 0, 0, 0, 0
	var lostIDs, twiceIDs []string
	for id := range want {
		switch n := got[id]; {
		case n == 0:
			lost++
			lostIDs = append(lostIDs, id)
		case n == 1:
			once++
		default:
			twice++
			twiceIDs = append(twiceIDs, fmt.Sprintf("%s×%d", id, n))
		}
	}
	for id := range got {
		if !want[id] {
			unexpected++
		}
	}
	st := srv.NotifyStats().Total()
	t.Logf("\n%-28s %8s\n%-28s %8d\n%-28s %8d\n%-28s %8d\n%-28s %8d\n%-28s %8d\n%-28s %8d\n%-28s %8d\n%-28s %8d\n%-28s %8d\n%-28s %8d\n%-28s %8d\n%-28s %8d",
		"what", "count",
		"payments", payments, "refunds", refunds,
		"notifications sent", st.Sent, "notification attempts", st.Attempts, "acknowledged", st.Acknowledged,
		"LB 502s (ingress down)", lb.failed.Load(),
		"handled once", once, "handled twice or more", twice, "lost", lost,
		"dead letters", dead, "faults injected", faults, "wall time (s)", int(time.Since(began).Seconds()))

	for _, err := range fl.errs {
		t.Errorf("flow: %v", err)
	}
	if payments == 0 || refunds == 0 {
		t.Errorf("the flow made %d payments and %d refunds: nothing was tested", payments, refunds)
	}
	if st.Acknowledged != st.Sent || st.GaveUp != 0 {
		t.Errorf("notifications: %d sent, %d acknowledged, %d given up: WeChat would still be retrying or gave up", st.Sent, st.Acknowledged, st.GaveUp)
	}
	if pending != 0 || ackPending != 0 {
		t.Errorf("consumer e2e still has %d pending and %d ack-pending events", pending, ackPending)
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
		t.Errorf("%d payment(s)/refund(s) reached the business more than once: %v", twice, first(twiceIDs, 10))
	}
	rec.mu.Lock()
	bad := append([]string(nil), rec.bad...)
	unexpected += rec.other // the flow makes only payments and refunds
	rec.mu.Unlock()
	if unexpected != 0 || len(bad) != 0 {
		t.Errorf("the business got %d event(s) that are not a payment or refund the platform has, and refused %d: %v", unexpected, len(bad), first(bad, 5))
	}
	// The day's bills against the ledger the workers' tracker kept in
	// Redis, through the kills of both and of NATS. Last: the check
	// publishes bill.ready, which the business then receives too.
	checkBills(t, ctx, filepath.Join(bin, "reconciler"), sys.reconcilerEnv(), firstDay, chinaDay(tradeNow()), payments, refunds)
	if t.Failed() {
		for _, p := range append(append(append([]*proc{redisProc}, ingresses...), workers...), natsProcs...) {
			t.Logf("---- %s log tail:\n%s", p.name, p.tail())
		}
	}
	// Nothing outlives the test.
	h.stopAll(t)
}

// startAll starts ps at the same time (a cluster's nodes wait for each
// other) and fails the test if one is not ready in time.
func startAll(t *testing.T, ctx context.Context, ps []*proc, timeout time.Duration) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(ps))
	for i, p := range ps {
		wg.Go(func() { errs[i] = p.start(ctx, timeout) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// waitConsumerIdle waits until consumer e2e has neither undelivered nor
// unacknowledged events, and returns the last counts seen.
func waitConsumerIdle(t *testing.T, ctx context.Context, js jetstream.JetStream) (pending uint64, ackPending int) {
	t.Helper()
	for {
		info, err := consumerInfo(ctx, js)
		if err == nil {
			pending, ackPending = info.NumPending, info.NumAckPending
			if pending == 0 && ackPending == 0 {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Logf("consumer e2e not idle in time (last error: %v)", err)
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func consumerInfo(ctx context.Context, js jetstream.JetStream) (*jetstream.ConsumerInfo, error) {
	s, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return nil, err
	}
	c, err := s.Consumer(ctx, "e2e")
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}

// streamMsgs returns the number of messages in a stream.
func streamMsgs(t *testing.T, ctx context.Context, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", name, err)
	}
	return info.State.Msgs
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }
