package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxpay-notify/wxpay-notify/internal/reconcile"
	"github.com/wxpay-notify/wxpay-notify/internal/tracking"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// Tally is what a run came to.
type Tally struct {
	// Orders placed on the platform, Payments among them, Refunds asked
	// for (all finished, SUCCESS or ABNORMAL).
	Orders, Payments, Refunds int
	// Notifications counts the platform's notifications: sent, dropped,
	// duplicated, delayed, in v2 XML.
	Notifications wxpaytest.NotifyCounts
	// IngressDuplicates counts notifications the ingress answered as
	// duplicates (outcome duplicate); WorkerDuplicates events the worker
	// acknowledged without running handlers.
	IngressDuplicates, WorkerDuplicates int
	// Reconciler is the sum of the orders step's runs.
	Reconciler reconcile.Summary
	// Recovered counts business effects first brought by the reconciler;
	// Dropped the dropped notifications, and DroppedRecovered those of
	// them whose effect the reconciler brought.
	Recovered, Dropped, DroppedRecovered int
	// DeadLetters counts the events in WXPAY_DLQ.
	DeadLetters int
	// PaymentEffects and RefundEffects count, by how many times the
	// business applied it, the payments and refunds of the platform.
	PaymentEffects, RefundEffects map[int]int
	// Bills is the bill check of the ledger day; BillsMatched counts the
	// trade-bill rows found in the ledger as they are.
	Bills        reconcile.BillSummary
	BillsMatched int64
	// Problems lists what does not add up, with the ids; empty means
	// every payment and refund was accounted for exactly once.
	Problems []string
	Elapsed  time.Duration
}

// settle waits, until deadline, for the run to come to rest: every
// notification delivered or given up, every payment and refund of the
// platform applied by the business, nothing pending in the tracker and
// nothing left for the worker.
func (sb *sandbox) settle(ctx context.Context, deadline time.Time, gen *traffic) {
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	idle := make(chan struct{})
	go func() {
		defer close(idle)
		sb.platform.WaitNotifications(wctx)
	}()
	for wctx.Err() == nil {
		select {
		case <-idle:
			if sb.atRest(wctx) {
				return
			}
		case <-wctx.Done():
		}
		select {
		case <-wctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	<-idle
}

// atRest reports whether everything is accounted for and nothing is
// still moving.
func (sb *sandbox) atRest(ctx context.Context) bool {
	if len(sb.unaccounted(sb.business.snapshot())) > 0 {
		return false
	}
	store := tracking.NewStore(sb.rdb, tracking.Config{})
	far := sb.clock.Now().Add(365 * 24 * time.Hour)
	for _, kind := range []tracking.Kind{tracking.Order, tracking.Refund} {
		if items, err := store.Pending(ctx, kind, mchid, far); err != nil || len(items) > 0 {
			return false
		}
	}
	c, err := sb.adminJS.Consumer(ctx, events.StreamName, consumer)
	if err != nil {
		return false
	}
	info, err := c.Info(ctx)
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0
}

// platformIDs lists the business ids of the platform's payments and
// finished refunds, as the business records them.
func (sb *sandbox) platformIDs() (payments, refunds []string) {
	for _, o := range sb.platform.Orders() {
		if o.TransactionID != "" {
			payments = append(payments, "pay:"+o.TransactionID)
		}
	}
	for _, r := range sb.platform.Refunds() {
		if r.Status != wxpay.RefundStatusProcessing {
			refunds = append(refunds, "refund:"+r.RefundID)
		}
	}
	return payments, refunds
}

// unaccounted lists the platform's payments and refunds without an effect.
func (sb *sandbox) unaccounted(effects map[string]effect) []string {
	payments, refunds := sb.platformIDs()
	var missing []string
	for _, id := range append(payments, refunds...) {
		if effects[id].count == 0 {
			missing = append(missing, id)
		}
	}
	return missing
}

// finish stops the reconciler, lets the clock catch up, runs the bill
// check of the ledger day and counts everything.
func (sb *sandbox) finish(ctx context.Context, gen *traffic, started time.Time) (*Tally, error) {
	sb.stopReconciler()
	sb.clock.catchUp()
	t := &Tally{PaymentEffects: map[int]int{}, RefundEffects: map[int]int{}}
	err := reconcile.WithLock(ctx, sb.rdb, reconcile.LockKey(events.DefaultKeyPrefix), reconcile.DefaultLockTTL, func(ctx context.Context) error {
		var err error
		t.Bills, err = sb.recon.Bills(ctx, sb.clock.day(), reconcile.BillOptions{Dir: filepath.Join(sb.dir, "bills")})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("the bill check: %w", err)
	}
	for _, b := range t.Bills.Bills {
		t.BillsMatched += b.Matched
	}
	if sb.o.serve {
		sb.runReconciler(sb.ctx)
	}
	sb.reconMu.Lock()
	t.Reconciler = sb.reconSum
	sb.reconMu.Unlock()
	t.Notifications = sb.platform.NotifyStats().Total()
	t.IngressDuplicates = int(counterSum(sb.reg, "wxpay_ingress_requests_total", "outcome", "duplicate"))
	t.WorkerDuplicates = int(counterSum(sb.reg, "wxpay_worker_duplicates_total", "", ""))
	dls, err := events.ListDeadLetters(ctx, sb.adminJS, events.DLQFilter{})
	if err != nil {
		return nil, fmt.Errorf("listing the dead letters: %w", err)
	}
	t.DeadLetters = len(dls)
	t.Orders = len(sb.platform.Orders())
	t.account(sb, gen)
	t.Elapsed = time.Since(started)
	return t, nil
}

// account counts the effects against the platform and lists the problems.
func (t *Tally) account(sb *sandbox, gen *traffic) {
	effects := sb.business.snapshot()
	payments, refunds := sb.platformIDs()
	t.Payments, t.Refunds = len(payments), len(refunds)
	onPlatform := map[string]bool{}
	var wrong []string
	for _, ids := range []struct {
		ids []string
		by  map[int]int
	}{{payments, t.PaymentEffects}, {refunds, t.RefundEffects}} {
		for _, id := range ids.ids {
			onPlatform[id] = true
			n := effects[id].count
			ids.by[n]++
			if n != 1 {
				wrong = append(wrong, fmt.Sprintf("%s (%d times)", id, n))
			}
		}
	}
	for id, e := range effects {
		if e.source == events.SourceReconciler {
			t.Recovered++
		}
		if !onPlatform[id] {
			wrong = append(wrong, fmt.Sprintf("%s (%d times, unknown to the platform)", id, e.count))
		}
	}
	if len(wrong) > 0 {
		sort.Strings(wrong)
		t.Problems = append(t.Problems, "business effects not exactly once: "+strings.Join(wrong, ", "))
	}
	t.checkDropped(sb, gen, effects)
	t.checkBills()
	if t.DeadLetters > 0 {
		t.Problems = append(t.Problems, fmt.Sprintf("%d dead letter(s) in WXPAY_DLQ (see `worker dlq list`)", t.DeadLetters))
	}
	for _, err := range gen.errors() {
		t.Problems = append(t.Problems, "traffic: "+err.Error())
	}
}

// checkDropped checks that the reconciler brought the effect of every
// dropped notification.
func (t *Tally) checkDropped(sb *sandbox, gen *traffic, effects map[string]effect) {
	var lost []string
	for _, n := range gen.droppedNotifications() {
		t.Dropped++
		id := droppedID(sb, n)
		if e, ok := effects[id]; ok && e.source == events.SourceReconciler {
			t.DroppedRecovered++
			continue
		}
		lost = append(lost, id)
	}
	if len(lost) > 0 {
		t.Problems = append(t.Problems, "dropped notifications not recovered by the reconciler: "+strings.Join(lost, ", "))
	}
}

// droppedID is the business id of a dropped notification.
func droppedID(sb *sandbox, n wxpaytest.AutoNotification) string {
	if n.Kind == wxpaytest.NotifyRefund {
		r, _ := sb.platform.Refund(n.OutRefundNo)
		return "refund:" + r.RefundID
	}
	o, _ := sb.platform.Order(n.OutTradeNo)
	return "pay:" + o.TransactionID
}

// checkBills checks that the trade bill of the ledger day matched the
// ledger row for row.
func (t *Tally) checkBills() {
	b := t.Bills
	if b.Errors > 0 || b.NotReady > 0 || b.Mismatches > 0 {
		t.Problems = append(t.Problems, "bill check: "+b.String()+billDetails(b))
		return
	}
	if want := int64(t.Payments + t.Refunds); t.BillsMatched != want {
		t.Problems = append(t.Problems, fmt.Sprintf("bill check: %d bill rows matched the ledger, want %d (every payment and refund)", t.BillsMatched, want))
	}
}

// billDetails names the bills that failed and their discrepancies.
func billDetails(s reconcile.BillSummary) string {
	var out []string
	for _, b := range s.Bills {
		if b.Error != "" {
			out = append(out, fmt.Sprintf("%s %s: %s", b.Bill, b.Type, b.Error))
		}
		if n := b.MismatchCount(); n > 0 {
			out = append(out, fmt.Sprintf("%s %s: %d discrepancies %v (published as bill.mismatch)", b.Bill, b.Type, n, b.Mismatches))
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "; " + strings.Join(out, "; ")
}

// err is nil when the tally adds up, else errUnaccounted with the problems.
func (t *Tally) err() error {
	if len(t.Problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w:\n  %s", errUnaccounted, strings.Join(t.Problems, "\n  "))
}

// print writes the tally.
func (t *Tally) print(w io.Writer) {
	n := t.Notifications
	var published int
	for _, c := range t.Reconciler.Published {
		published += c
	}
	fmt.Fprintf(w, "\nsandbox tally (%s):\n", t.Elapsed.Round(100*time.Millisecond))
	fmt.Fprintf(w, "  orders %d, payments %d, refunds %d\n", t.Orders, t.Payments, t.Refunds)
	fmt.Fprintf(w, "  notifications %d: sent %d (v2 XML %d, delayed %d), dropped %d, duplicated %d, attempts %d, given up %d\n",
		n.Notifications, n.Sent, n.V2, n.Delayed, n.Dropped, n.Duplicated, n.Attempts, n.GaveUp)
	fmt.Fprintf(w, "  duplicates suppressed: %d by the ingress (outcome duplicate), %d by the worker\n", t.IngressDuplicates, t.WorkerDuplicates)
	fmt.Fprintf(w, "  reconciler: %d queried, %d published; %d effects recovered by it (%d of %d dropped notifications)\n",
		t.Reconciler.Queried, published, t.Recovered, t.DroppedRecovered, t.Dropped)
	fmt.Fprintf(w, "  dead letters %d\n", t.DeadLetters)
	fmt.Fprintf(w, "  business effects per payment %s, per refund %s (must be exactly 1 each)\n", perCount(t.PaymentEffects), perCount(t.RefundEffects))
	fmt.Fprintf(w, "  %s; %d rows matched\n", t.Bills, t.BillsMatched)
	if len(t.Problems) == 0 {
		fmt.Fprintln(w, "  OK: every payment and refund was accounted for exactly once, and the bill matched")
	}
}

// perCount writes how many ids had each count of effects: "300×1", or
// "1×0 298×1 1×2" when one had none and one had two.
func perCount(m map[int]int) string {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d×%d", m[k], k)
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// counterSum sums the counter name over the series whose label has value
// (every series when label is empty).
func counterSum(g prometheus.Gatherer, name, label, value string) float64 {
	mfs, err := g.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || hasLabel(m.GetLabel(), label, value) {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func hasLabel[L interface {
	GetName() string
	GetValue() string
}](labels []L, name, value string) bool {
	for _, l := range labels {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}
