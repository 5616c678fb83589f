package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/wxpay-notify/wxpay-notify/internal/runreport"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// Shares of the traffic's random choices.
const (
	// refundShare of the orders are refunded (in part) a few orders later.
	refundShare = 0.3
	// v2Share of the refunds notify in v2 XML, as console refunds do.
	v2Share = 0.3
	// failShare of the refunds end ABNORMAL (the payer's account cannot
	// take them) instead of SUCCESS.
	failShare = 0.1
	// delayShare of the notifications are held back up to maxDelay.
	delayShare = 0.2
	// maxDelay is in platform time (timeScale makes it 2 s).
	maxDelay = 200 * time.Second
	// refundLag is how many orders later an order is refunded.
	refundLag = 3
	// logEvery is how often a progress line is logged off a terminal.
	logEvery = 2 * time.Second
)

// refundJob is a refund the generator will make.
type refundJob struct {
	due           int // the order index after which it is made
	outTradeNo    string
	outRefundNo   string
	total, amount int64
	v2, fail      bool
}

// traffic generates the merchant's day: it announces orders, has the
// platform create and pay them, and refunds some, while the platform's
// fault policy drops, delays and duplicates their notifications.
type traffic struct {
	o        options
	sb       *sandbox
	tag      string // makes this run's order numbers unique
	business *events.Publisher
	client   *wxpay.Client

	mu      sync.Mutex
	rng     *rand.Rand
	v2      map[string]bool // out_refund_no notified in v2 XML
	dropped []wxpaytest.AutoNotification
	errs    []error
}

func newTraffic(o options, sb *sandbox) *traffic {
	return &traffic{o: o, sb: sb, tag: time.Now().Format("150405"),
		rng: rand.New(rand.NewPCG(o.seed, o.seed^0x5bd1e995)), v2: map[string]bool{}}
}

// float draws from the traffic's random source.
func (t *traffic) float() float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.rng.Float64()
}

// intN draws from the traffic's random source.
func (t *traffic) intN(n int64) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.rng.Int64N(n)
}

// fault is the platform's fault policy: it runs in the generator's
// goroutine, so a seed repeats the same choices.
func (t *traffic) fault(n wxpaytest.AutoNotification) wxpaytest.NotifyFault {
	var f wxpaytest.NotifyFault
	if t.float() < t.o.drop {
		t.mu.Lock()
		t.dropped = append(t.dropped, n)
		t.mu.Unlock()
		f.Drop = true
		return f
	}
	if t.float() < t.o.dup {
		f.Duplicates = 1
		f.Concurrent = t.float() < 0.5
	}
	if t.float() < delayShare {
		f.Delay = time.Duration(t.intN(int64(maxDelay)))
	}
	t.mu.Lock()
	f.V2 = t.v2[n.OutRefundNo] && n.Kind == wxpaytest.NotifyRefund
	t.mu.Unlock()
	return f
}

// interval is the time between two orders: 1/--rate, shortened so that
// --orders fit in half of --duration.
func (t *traffic) interval() time.Duration {
	iv := time.Duration(float64(time.Second) / t.o.rate)
	if budget := t.o.duration / 2; time.Duration(t.o.orders)*iv > budget {
		iv = budget / time.Duration(t.o.orders)
	}
	return iv
}

// run places the orders at the pace of interval, stopping at half of the
// duration, then makes the refunds still due.
func (t *traffic) run(ctx context.Context, deadline time.Time, stdout, stderr io.Writer) {
	sb := t.sb
	_, js, err := sb.connect("wxpay-business")
	if err == nil {
		t.client, err = sb.client()
	}
	if err != nil {
		t.fail(err)
		return
	}
	t.business = events.NewPublisher(js, events.PublisherConfig{})
	sb.platform.AutoNotify(wxpaytest.AutoNotifyConfig{URL: sb.notifyURL, Fault: t.fault, TimeScale: timeScale})

	progress := runreport.NewProgress(stderr, runreport.ProgressOptions{})
	task := progress.Task("orders", int64(t.o.orders), runreport.Items)
	defer task.Done()
	stop := time.Now().Add(time.Until(deadline) / 2)
	iv, begin, lastLog := t.interval(), time.Now(), time.Now()
	var due []*refundJob
	for i := 0; i < t.o.orders && ctx.Err() == nil && time.Now().Before(stop); i++ {
		if wait := time.Until(begin.Add(time.Duration(i) * iv)); wait > 0 {
			time.Sleep(wait)
		}
		if job := t.order(ctx, i); job != nil {
			due = append(due, job)
		}
		due = t.refundsDue(ctx, due, i)
		task.Add(1)
		if !progress.Draws() && time.Since(lastLog) >= logEvery {
			lastLog = time.Now()
			fmt.Fprintf(stdout, "sandbox: %d/%d orders placed, %d effects so far\n", i+1, t.o.orders, len(sb.business.snapshot()))
		}
	}
	t.refundsDue(ctx, due, t.o.orders+refundLag)
}

// refundsDue makes the refunds due by order i and returns the others.
func (t *traffic) refundsDue(ctx context.Context, due []*refundJob, i int) []*refundJob {
	keep := due[:0]
	for _, job := range due {
		if job.due > i {
			keep = append(keep, job)
			continue
		}
		t.refund(ctx, job)
	}
	return keep
}

// order announces order i, creates and pays it on the platform, and
// returns its refund when it gets one.
func (t *traffic) order(ctx context.Context, i int) *refundJob {
	no := fmt.Sprintf("SBX%s%06d", t.tag, i)
	total := 1 + t.intN(50000)
	now := t.sb.clock.Now().In(wxpay.ChinaTime()).Format(time.RFC3339)
	if _, err := events.AnnounceOrder(ctx, t.business, mchid, events.Announcement{OutTradeNo: no, CreateTime: now}); err != nil {
		t.fail(fmt.Errorf("announcing order %s: %w", no, err))
		return nil
	}
	if _, err := t.sb.platform.CreateOrder(wxpaytest.NewOrder{MchID: mchid, OutTradeNo: no, Total: total, Description: "sandbox order"}); err != nil {
		t.fail(err)
		return nil
	}
	if _, err := t.sb.platform.Pay(no); err != nil {
		t.fail(err)
		return nil
	}
	if t.float() >= refundShare {
		return nil
	}
	job := &refundJob{due: i + refundLag, outTradeNo: no, outRefundNo: no + "R1", total: total,
		amount: 1 + t.intN(total), v2: t.float() < v2Share, fail: t.float() < failShare}
	return job
}

// refund announces the refund, asks for it through the refund API, and
// has the platform finish it.
func (t *traffic) refund(ctx context.Context, job *refundJob) {
	now := t.sb.clock.Now().In(wxpay.ChinaTime()).Format(time.RFC3339)
	a := events.Announcement{OutTradeNo: job.outTradeNo, OutRefundNo: job.outRefundNo, CreateTime: now}
	if _, err := events.AnnounceRefund(ctx, t.business, mchid, a); err != nil {
		t.fail(fmt.Errorf("announcing refund %s: %w", job.outRefundNo, err))
		return
	}
	_, err := t.client.CreateRefund(ctx, &wxpay.RefundRequest{OutTradeNo: job.outTradeNo, OutRefundNo: job.outRefundNo,
		Reason: "sandbox refund", Refund: job.amount, Total: job.total})
	if err != nil {
		t.fail(fmt.Errorf("refund %s: %w", job.outRefundNo, err))
		return
	}
	t.mu.Lock()
	t.v2[job.outRefundNo] = job.v2
	t.mu.Unlock()
	if job.fail {
		_, err = t.sb.platform.FailRefund(job.outRefundNo)
	} else {
		_, err = t.sb.platform.CompleteRefund(job.outRefundNo)
	}
	if err != nil {
		t.fail(err)
	}
}

// fail records an error of the generator; the tally reports it.
func (t *traffic) fail(err error) {
	t.mu.Lock()
	t.errs = append(t.errs, err)
	t.mu.Unlock()
	t.sb.log.Error().Err(err).Msg("traffic")
}

// droppedNotifications returns the notifications the platform dropped.
func (t *traffic) droppedNotifications() []wxpaytest.AutoNotification {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]wxpaytest.AutoNotification(nil), t.dropped...)
}

// errors returns the generator's errors.
func (t *traffic) errors() []error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]error(nil), t.errs...)
}
