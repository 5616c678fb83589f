package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// smallRun is a workload that shows every fault in a few seconds.
var smallRun = []string{"--orders", "60", "--dup", "0.3", "--drop", "0.1", "--duration", "20s", "--seed", "7",
	"--stale-after", "1s", "--reconcile-every", "1s"}

func runSandbox(t *testing.T, args []string, h hooks) (*Tally, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	tally, err := run(ctx, args, &out, &errOut, h)
	if errOut.Len() > 0 {
		t.Logf("standard error:\n%s", errOut.String())
	}
	return tally, out.String(), err
}

func TestSandboxAccountsForEverything(t *testing.T) {
	tally, out, err := runSandbox(t, smallRun, hooks{})
	t.Logf("output:\n%s", out)
	if code := exitCode(err); code != 0 {
		t.Fatalf("exit status %d (%v), want 0", code, err)
	}
	if tally.Orders != 60 || tally.Payments != 60 {
		t.Errorf("%d orders, %d payments; want 60 of each", tally.Orders, tally.Payments)
	}
	if tally.Refunds == 0 {
		t.Error("no refunds: the traffic refunds a share of the orders")
	}
	// Every payment and every refund had its business effect exactly once.
	if len(tally.PaymentEffects) != 1 || tally.PaymentEffects[1] != tally.Payments {
		t.Errorf("effects per payment %v, want each of the %d payments once", tally.PaymentEffects, tally.Payments)
	}
	if len(tally.RefundEffects) != 1 || tally.RefundEffects[1] != tally.Refunds {
		t.Errorf("effects per refund %v, want each of the %d refunds once", tally.RefundEffects, tally.Refunds)
	}
	// The faults happened: dropped ones were recovered by the reconciler,
	// duplicates were suppressed, console refunds came as v2 XML.
	n := tally.Notifications
	if n.Dropped == 0 || tally.Dropped != n.Dropped || tally.DroppedRecovered != tally.Dropped {
		t.Errorf("dropped %d notifications (platform %d), %d recovered by the reconciler; want some, all recovered",
			tally.Dropped, n.Dropped, tally.DroppedRecovered)
	}
	if tally.Recovered < tally.Dropped {
		t.Errorf("%d effects recovered by the reconciler, want at least the %d dropped", tally.Recovered, tally.Dropped)
	}
	if n.Duplicated == 0 || tally.IngressDuplicates+tally.WorkerDuplicates == 0 {
		t.Errorf("%d notifications duplicated, %d+%d duplicates suppressed; want some of each",
			n.Duplicated, tally.IngressDuplicates, tally.WorkerDuplicates)
	}
	if n.V2 == 0 || n.Delayed == 0 {
		t.Errorf("%d v2 notifications, %d delayed; want some of each", n.V2, n.Delayed)
	}
	if tally.DeadLetters != 0 {
		t.Errorf("%d dead letters, want none", tally.DeadLetters)
	}
	// The bill of the ledger day was ready and matched the ledger row for row.
	b := tally.Bills
	if b.Errors != 0 || b.NotReady != 0 || b.Mismatches != 0 || tally.BillsMatched != int64(tally.Payments+tally.Refunds) {
		t.Errorf("bill check %s, %d rows matched; want every payment and refund matched", b, tally.BillsMatched)
	}
	if !strings.Contains(out, "OK: every payment and refund was accounted for exactly once") {
		t.Errorf("the tally does not say OK:\n%s", out)
	}
}

func TestSandboxCatchesAnEffectAppliedTwice(t *testing.T) {
	var mu sync.Mutex
	var victim string
	twice := func(id string) bool { // the first business id seen runs twice
		mu.Lock()
		defer mu.Unlock()
		if victim == "" {
			victim = id
		}
		return id == victim
	}
	args := []string{"--orders", "20", "--drop", "0", "--duration", "20s", "--seed", "3", "--stale-after", "1s", "--reconcile-every", "1s"}
	tally, out, err := runSandbox(t, args, hooks{repeatEffect: twice})
	t.Logf("output:\n%s", out)
	if code := exitCode(err); code != 1 {
		t.Fatalf("exit status %d (%v), want 1", code, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if victim == "" || !strings.Contains(err.Error(), victim+" (2 times)") {
		t.Errorf("error %q does not name %s as applied twice", err, victim)
	}
	if tally.PaymentEffects[2]+tally.RefundEffects[2] != 1 {
		t.Errorf("effects per payment %v, per refund %v; want one id with 2", tally.PaymentEffects, tally.RefundEffects)
	}
}

func TestSandboxUsage(t *testing.T) {
	for _, args := range [][]string{{"--dup", "2"}, {"--orders", "0"}, {"--duration", "0s"}, {"extra"}} {
		var out bytes.Buffer
		_, err := run(context.Background(), args, &out, &out, hooks{})
		if code := exitCode(err); code != 2 {
			t.Errorf("%q: exit status %d (%v), want 2", args, code, err)
		}
	}
}

// A kept data directory of an earlier run is refused: the fake platform
// would repeat its transaction ids, which the stream takes for duplicates.
func TestSandboxRefusesAnEarlierRunsData(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "jetstream", "jetstream"), 0o750); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_, err := run(context.Background(), []string{"--data-dir", dir}, &out, &out, hooks{})
	if code := exitCode(err); code != 2 || !strings.Contains(err.Error(), "earlier run") {
		t.Errorf("exit status %d (%v), want 2 naming the earlier run", code, err)
	}
}
