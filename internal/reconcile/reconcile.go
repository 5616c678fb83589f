// Package reconcile is the reconciler's work: it queries WeChat Pay for the
// orders and refunds the tracker still holds as pending, publishes what the
// notifications missed (same subject and dedupe_key as the notification,
// source "reconciler"), closes expired unpaid orders and drops what is too
// old to matter.
package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/internal/tracking"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// Defaults of Config.
const (
	DefaultStaleAfter  = 5 * time.Minute
	DefaultExpireAfter = 2 * time.Hour
	DefaultMaxAge      = 192 * time.Hour
	DefaultRate        = 20
	DefaultBackoffBase = time.Second
	DefaultBackoffMax  = 30 * time.Second
	DefaultMaxAttempts = 5
	DefaultWorkers     = 4
	// itemGrace is how long the items under way may take to finish once
	// a run is stopped.
	itemGrace = 10 * time.Second
)

// Merchant is one configured merchant and its client.
type Merchant struct {
	MchID  string
	Client *wxpay.Client
}

// Publisher publishes an envelope and returns once JetStream acknowledged
// it (*events.Publisher).
type Publisher interface {
	Publish(ctx context.Context, env events.Envelope) (events.Published, error)
}

// Config configures a Reconciler; zero fields take the defaults.
type Config struct {
	// StaleAfter: pending entries younger than this are left alone.
	StaleAfter time.Duration
	// ExpireAfter: an unpaid order older than this is closed; an order
	// WeChat does not know older than this is removed.
	ExpireAfter time.Duration
	// MaxAge: entries older than this are queried one last time, then
	// dropped.
	MaxAge time.Duration
	// Rate is the most API calls per second, over all merchants.
	Rate float64
	// BackoffBase and BackoffMax bound the exponential backoff after a
	// rate-limit or other retryable answer; MaxAttempts is the most API
	// calls one item may make in a run.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	MaxAttempts int
	// Workers is how many items are queried at once (default
	// DefaultWorkers), all within Rate: one call takes several
	// milliseconds of signing, round trip and verification, so a single
	// worker could not keep up with a rate of a few hundred a second.
	Workers int
	// Progress, when set, shows the querying on a terminal.
	Progress Progress
	// Now is the clock; default time.Now.
	Now    func() time.Time
	Logger zerolog.Logger
}

func (c *Config) defaults() {
	if c.StaleAfter <= 0 {
		c.StaleAfter = DefaultStaleAfter
	}
	if c.ExpireAfter <= 0 {
		c.ExpireAfter = DefaultExpireAfter
	}
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.Rate <= 0 {
		c.Rate = DefaultRate
	}
	if c.BackoffBase <= 0 {
		c.BackoffBase = DefaultBackoffBase
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.Workers <= 0 {
		c.Workers = DefaultWorkers
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Summary counts what a run did.
type Summary struct {
	// Queried counts items queried (an item counts once, whatever its
	// retries).
	Queried int `json:"queried"`
	// Published counts acknowledged events by event type.
	Published map[string]int `json:"published"`
	// Closed counts orders this run closed.
	Closed int `json:"closed"`
	// Dropped counts items taken out of the pending sets without an event
	// (max age, or unknown to WeChat after expire-after).
	Dropped int `json:"dropped"`
	// StillPending counts queried items left pending.
	StillPending int `json:"still_pending"`
	// Skipped counts pending items not queried: a partner-mode merchant's
	// items announced without the sub_mchid a partner query needs, and a
	// direct-mode merchant's items announced with one. They stay pending.
	Skipped int `json:"skipped"`
	// Errors counts items (or merchants) that failed: an answer that did
	// not verify, rate limiting past MaxAttempts, Redis or NATS failures.
	Errors int `json:"errors"`
}

// Clean reports whether the run had no errors (exit status 0).
func (s Summary) Clean() bool { return s.Errors == 0 }

// String is the one-line summary.
func (s Summary) String() string {
	kinds := make([]string, 0, len(s.Published))
	total := 0
	for k, n := range s.Published {
		kinds = append(kinds, fmt.Sprintf("%s=%d", strings.ToLower(k), n))
		total += n
	}
	sort.Strings(kinds)
	by := ""
	if len(kinds) > 0 {
		by = " (" + strings.Join(kinds, " ") + ")"
	}
	return fmt.Sprintf("queried %d, published %d%s, closed %d, dropped %d, still pending %d, skipped %d, errors %d",
		s.Queried, total, by, s.Closed, s.Dropped, s.StillPending, s.Skipped, s.Errors)
}

// Reconciler runs the orders step. Build it with New; Orders may be called
// again (every run is safe to repeat).
type Reconciler struct {
	merchants []Merchant
	store     *tracking.Store
	pub       Publisher
	cfg       Config
	log       zerolog.Logger
	limit     *limiter
}

// New returns a Reconciler over the merchants' pending sets in store,
// publishing through pub.
func New(merchants []Merchant, store *tracking.Store, pub Publisher, cfg Config) *Reconciler {
	cfg.defaults()
	return &Reconciler{merchants: merchants, store: store, pub: pub, cfg: cfg, log: cfg.Logger,
		limit: newLimiter(cfg.Rate)}
}

// Orders queries every pending order and refund older than StaleAfter of
// every merchant and acts on the answer (README, "The reconciler"). A
// partner-mode merchant's items are queried and closed with the sub_mchid
// they were announced with, and their events carry the partner
// notification's resource (sp_mchid, sub_mchid) under the service
// provider's mchid and subject, as the ingress publishes partner
// notifications; items the merchant's mode cannot query are skipped (see
// Summary.Skipped).
// Item failures are counted in the Summary and the run goes on; the
// returned error is only ctx's, when the run was stopped between items.
func (r *Reconciler) Orders(ctx context.Context) (Summary, error) {
	s := Summary{Published: map[string]int{}}
	for _, m := range r.merchants {
		mlog := r.log.With().Str("mchid", m.MchID).Logger()
		for _, kind := range []tracking.Kind{tracking.Order, tracking.Refund} {
			if ctx.Err() != nil {
				return s, context.Cause(ctx)
			}
			now := r.cfg.Now()
			items, err := r.store.Pending(ctx, kind, m.MchID, now.Add(-r.cfg.StaleAfter))
			if err != nil {
				mlog.Error().Err(err).Str("kind", string(kind)).Msg("reading the pending set")
				s.Errors++
				continue
			}
			if len(items) == 0 {
				continue
			}
			items = r.skip(m, kind, items, &s, mlog)
			if len(items) == 0 {
				continue
			}
			mlog.Info().Str("kind", string(kind)).Int("items", len(items)).Msg("querying pending items")
			r.query(ctx, m, kind, items, now, mlog, &s)
		}
	}
	if ctx.Err() != nil {
		return s, context.Cause(ctx)
	}
	return s, nil
}

// query works through items with up to Workers goroutines, all sharing
// the rate limit. Each worker counts into its own Summary, added to s at
// the end. Once ctx is done no further item is started.
func (r *Reconciler) query(ctx context.Context, m Merchant, kind tracking.Kind, items []tracking.Item, now time.Time, mlog zerolog.Logger, s *Summary) {
	var task ProgressTask
	if r.cfg.Progress != nil {
		task = r.cfg.Progress.Start(fmt.Sprintf("querying %s's pending %ss", m.MchID, kind), int64(len(items)), false)
		defer task.Done()
	}
	workers := min(r.cfg.Workers, len(items))
	parts := make([]Summary, workers)
	next := make(chan tracking.Item)
	// An item under way finishes when the run is stopped (SIGTERM, the
	// lock lost): its event published and its entry removed, not one
	// without the other. It gets itemGrace to do so.
	itemCtx, cancelItems := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelItems()
	stopGrace := context.AfterFunc(ctx, func() { time.AfterFunc(itemGrace, cancelItems) })
	defer stopGrace()
	var wg sync.WaitGroup
	for i := range parts {
		parts[i].Published = map[string]int{}
		wg.Go(func() {
			for it := range next {
				lc := mlog.With().Str(string(kind), it.ID)
				if it.SubMchID != "" {
					lc = lc.Str("sub_mchid", it.SubMchID)
				}
				w := &work{r: r, m: m, kind: kind, item: it, age: now.Sub(it.Created), s: &parts[i],
					log: lc.Stringer("age", now.Sub(it.Created).Round(time.Second)).Logger()}
				if kind == tracking.Order {
					w.order(itemCtx)
				} else {
					w.refund(itemCtx)
				}
				if task != nil {
					task.Add(1)
				}
			}
		})
	}
feed:
	for _, it := range items {
		if ctx.Err() != nil {
			break
		}
		select {
		case next <- it:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	for _, p := range parts {
		s.Add(p)
	}
}

// Add counts o's items into s (several runs, or several workers of one).
func (s *Summary) Add(o Summary) {
	if s.Published == nil {
		s.Published = map[string]int{}
	}
	s.Queried += o.Queried
	s.Closed += o.Closed
	s.Dropped += o.Dropped
	s.StillPending += o.StillPending
	s.Skipped += o.Skipped
	s.Errors += o.Errors
	for k, n := range o.Published {
		s.Published[k] += n
	}
}

// skip returns the items m's client can query, and counts and logs the
// others, which stay pending: in partner mode WeChat answers only for a
// sub-merchant, so an item announced without its sub_mchid cannot be
// queried; in direct mode an item announced with a sub_mchid belongs to a
// partner configuration this merchant is not. Both need the announcement
// or the merchant settings fixed, not a retry.
func (r *Reconciler) skip(m Merchant, kind tracking.Kind, items []tracking.Item, s *Summary, log zerolog.Logger) []tracking.Item {
	partner := m.Client.PartnerMode()
	var keep []tracking.Item
	var skipped []string
	for _, it := range items {
		if (it.SubMchID != "") == partner {
			keep = append(keep, it)
		} else {
			skipped = append(skipped, it.ID)
		}
	}
	if len(skipped) == 0 {
		return items
	}
	s.Skipped += len(skipped)
	ev := log.Warn().Str("kind", string(kind)).Int("items", len(skipped)).Strs("skipped", firstN(skipped, 20))
	if partner {
		ev.Msg("partner mode: these items were announced without the sub_mchid a partner query needs (announce them with sub_mchid); not reconciled")
	} else {
		ev.Msg("these items were announced with a sub_mchid, but the merchant is not in partner mode (check WXPAY_PARTNER_MODE); not reconciled")
	}
	return keep
}

// firstN returns at most n of ids, so that a log line stays short.
func firstN(ids []string, n int) []string {
	return ids[:min(len(ids), n)]
}

// work is one pending item in one run.
type work struct {
	r        *Reconciler
	m        Merchant
	kind     tracking.Kind
	item     tracking.Item
	age      time.Duration
	attempts int
	s        *Summary
	log      zerolog.Logger
}

// call makes one API call of the item through the rate limiter (see
// Reconciler.call).
func (w *work) call(ctx context.Context, fn func(context.Context) error) error {
	return w.r.call(ctx, &w.attempts, w.log, fn)
}

// call makes one API call through the rate limiter, retrying a retryable
// failure (rate limit, 5xx, transport) with exponential backoff from
// BackoffBase capped at BackoffMax, while *attempts (the calls already
// made for the same item in this run) stays under MaxAttempts.
func (r *Reconciler) call(ctx context.Context, attempts *int, log zerolog.Logger, fn func(context.Context) error) error {
	delay := r.cfg.BackoffBase
	for {
		if err := r.limit.wait(ctx); err != nil {
			return err
		}
		*attempts++
		err := fn(ctx)
		if err == nil || !wxpay.IsRetryable(err) {
			return err
		}
		if *attempts >= r.cfg.MaxAttempts {
			return fmt.Errorf("gave up after %d attempts: %w", *attempts, err)
		}
		log.Debug().Err(err).Dur("backoff", delay).Msg("retrying")
		if err := sleep(ctx, delay); err != nil {
			return err
		}
		delay = min(delay*2, r.cfg.BackoffMax)
	}
}

// fail counts an item that stays pending because of an error.
func (w *work) fail(err error, msg string) {
	w.s.Errors++
	w.log.Error().Err(err).Msg(msg + "; it stays pending")
}

// stays counts an item left pending on purpose; past MaxAge it is dropped.
func (w *work) stays(ctx context.Context, state string) {
	if w.age > w.r.cfg.MaxAge {
		w.drop(ctx, fmt.Sprintf("older than the max age %v and still %s: dropped", w.r.cfg.MaxAge, state))
		return
	}
	w.s.StillPending++
}

// drop takes the item out of its pending set with a warning.
func (w *work) drop(ctx context.Context, why string) {
	if err := w.r.store.RemovePending(ctx, w.kind, w.m.MchID, w.item.ID); err != nil {
		w.fail(err, "removing from the pending set")
		return
	}
	w.s.Dropped++
	w.log.Warn().Msg(why)
}

// publish publishes env and, once acknowledged, takes the item out of its
// pending set.
func (w *work) publish(ctx context.Context, env events.Envelope) {
	if _, err := w.r.pub.Publish(ctx, env); err != nil {
		w.fail(err, "publishing "+env.EventType)
		return
	}
	w.s.Published[env.EventType]++
	w.log.Info().Str("event_type", env.EventType).Str("dedupe_key", env.DedupeKey).Msg("published")
	if err := w.r.store.RemovePending(ctx, w.kind, w.m.MchID, w.item.ID); err != nil {
		w.fail(err, "removing from the pending set (published; the next run publishes a duplicate)")
	}
}

// verifiedIs reports whether err is WeChat's verified answer matching code.
func verifiedIs(err, code error) bool {
	var apiErr *wxpay.APIError
	return errors.As(err, &apiErr) && apiErr.Verified && errors.Is(err, code)
}

// query asks WeChat about the item with q and reports whether its answer
// is there to act on. When WeChat verifiably does not know the item
// (notExist), an item older than the expire-after is dropped with a reason
// naming code, and a younger one stays pending; any other error is a
// failure of what.
func (w *work) query(ctx context.Context, q func(context.Context) error, notExist error, code, what string) bool {
	w.s.Queried++
	err := w.call(ctx, q)
	switch {
	case verifiedIs(err, notExist):
		if w.age > w.r.cfg.ExpireAfter {
			w.drop(ctx, fmt.Sprintf("WeChat does not know this %s (%s) and it is older than the expire-after: removed", w.kind, code))
			return false
		}
		w.s.StillPending++
		return false
	case err != nil:
		w.fail(err, what)
		return false
	}
	return true
}

func (w *work) order(ctx context.Context) {
	var tx *wxpay.Transaction
	if !w.query(ctx, func(ctx context.Context) (err error) {
		tx, err = w.m.Client.QueryOrderByOutTradeNo(ctx, w.item.SubMchID, w.item.ID)
		return err
	}, wxpay.ErrOrderNotExist, "ORDER_NOT_EXIST", "querying the order") {
		return
	}
	switch tx.TradeState {
	case wxpay.TradeStateSuccess, wxpay.TradeStateRefund:
		if tx.TransactionID == "" {
			w.fail(fmt.Errorf("trade_state %s without transaction_id", tx.TradeState), "querying the order")
			return
		}
		// The payment happened: the notification's shape says SUCCESS.
		tx.TradeState = wxpay.TradeStateSuccess
		w.publishTx(ctx, tx, wxpay.EventTransactionSuccess, events.TransactionKey(tx.TransactionID), "支付成功")
	case wxpay.TradeStateClosed:
		w.publishTx(ctx, tx, events.EventTransactionClosed, events.OrderKey(w.m.MchID, w.item.ID, tx.TradeState), "订单已关闭")
	case wxpay.TradeStateRevoked:
		w.publishTx(ctx, tx, events.EventTransactionRevoked, events.OrderKey(w.m.MchID, w.item.ID, tx.TradeState), "订单已撤销")
	case wxpay.TradeStatePayError:
		w.publishTx(ctx, tx, events.EventTransactionPayError, events.OrderKey(w.m.MchID, w.item.ID, tx.TradeState), "支付失败")
	case wxpay.TradeStateNotPay, wxpay.TradeStateUserPaying:
		if w.age <= w.r.cfg.ExpireAfter {
			w.stays(ctx, tx.TradeState)
			return
		}
		err := w.call(ctx, func(ctx context.Context) error { return w.m.Client.CloseOrder(ctx, w.item.SubMchID, w.item.ID) })
		if err != nil {
			// ORDER_PAID: paid meanwhile; the next run publishes it.
			w.fail(err, "closing the expired order")
			return
		}
		w.s.Closed++
		w.log.Info().Str("was", tx.TradeState).Msg("closed the expired order")
		tx.TradeState, tx.TradeStateDesc = wxpay.TradeStateClosed, "已关闭"
		w.publishTx(ctx, tx, events.EventTransactionClosed, events.OrderKey(w.m.MchID, w.item.ID, wxpay.TradeStateClosed), "订单已关闭")
	default:
		w.fail(fmt.Errorf("unknown trade_state %q", tx.TradeState), "querying the order")
	}
}

// publishTx publishes tx as the query answered it: in partner mode that
// is the partner notification's shape already (sp_mchid, sub_mchid,
// sp_appid, sub_appid, payer.sp_openid / sub_openid).
func (w *work) publishTx(ctx context.Context, tx *wxpay.Transaction, eventType, key, summary string) {
	res, err := json.Marshal(tx)
	if err != nil {
		w.fail(err, "encoding the transaction")
		return
	}
	w.publish(ctx, w.envelope(eventType, key, summary, events.OriginalTypeTransaction, tx.SuccessTime, res))
}

func (w *work) refund(ctx context.Context) {
	var rf *wxpay.Refund
	if !w.query(ctx, func(ctx context.Context) (err error) {
		rf, err = w.m.Client.QueryRefund(ctx, w.item.SubMchID, w.item.ID)
		return err
	}, wxpay.ErrResourceNotExists, "RESOURCE_NOT_EXISTS", "querying the refund") {
		return
	}
	var eventType, summary string
	switch rf.Status {
	case wxpay.RefundStatusSuccess:
		eventType, summary = wxpay.EventRefundSuccess, "退款成功"
	case wxpay.RefundStatusClosed:
		eventType, summary = wxpay.EventRefundClosed, "退款关闭"
	case wxpay.RefundStatusAbnormal:
		eventType, summary = wxpay.EventRefundAbnormal, "退款异常"
	case wxpay.RefundStatusProcessing:
		w.stays(ctx, rf.Status)
		return
	default:
		w.fail(fmt.Errorf("unknown refund status %q", rf.Status), "querying the refund")
		return
	}
	if rf.RefundID == "" {
		w.fail(fmt.Errorf("refund status %s without refund_id", rf.Status), "querying the refund")
		return
	}
	notice := RefundNotice(w.m.MchID, rf)
	if w.item.SubMchID != "" {
		notice = PartnerRefundNotice(w.m.MchID, w.item.SubMchID, rf)
	}
	res, err := json.Marshal(notice)
	if err != nil {
		w.fail(err, "encoding the refund")
		return
	}
	w.publish(ctx, w.envelope(eventType, events.RefundKey(rf.RefundID, rf.Status), summary, events.OriginalTypeRefund, rf.SuccessTime, res))
}

// RefundNotice maps a query-refund answer of merchant mchid (direct mode)
// onto the REFUND.* notification's resource: the state is refund_status.
func RefundNotice(mchid string, rf *wxpay.Refund) wxpay.RefundNotice {
	return wxpay.RefundNotice{MchID: mchid, OutTradeNo: rf.OutTradeNo, TransactionID: rf.TransactionID,
		OutRefundNo: rf.OutRefundNo, RefundID: rf.RefundID, RefundStatus: rf.Status, SuccessTime: rf.SuccessTime,
		UserReceivedAccount: rf.UserReceivedAccount, Amount: rf.Amount}
}

// PartnerRefundNotice maps a partner-mode query-refund answer onto the
// partner REFUND.* notification's resource, which names the merchants
// sp_mchid and sub_mchid instead of mchid. The answer names neither, so
// they are the service provider spMchID that asked and the subMchID it
// asked for (WeChat answers only for that sub-merchant).
func PartnerRefundNotice(spMchID, subMchID string, rf *wxpay.Refund) wxpay.RefundNotice {
	n := RefundNotice("", rf)
	n.SpMchID, n.SubMchID = spMchID, subMchID
	return n
}

// envelope builds the reconciler's event: id rc-<dedupe key>, so a repeat
// run publishes the very same event.
func (w *work) envelope(eventType, key, summary, originalType, when string, resource []byte) events.Envelope {
	now := w.r.cfg.Now()
	if when == "" {
		when = now.In(wxpay.ChinaTime()).Format(time.RFC3339)
	}
	return events.Envelope{
		ID:           "rc-" + strings.ReplaceAll(key, ":", "-"),
		DedupeKey:    key,
		EventType:    eventType,
		MchID:        w.m.MchID,
		Source:       events.SourceReconciler,
		CreateTime:   when,
		ReceivedAt:   now,
		Summary:      summary,
		OriginalType: originalType,
		Resource:     resource,
	}
}

// limiter spaces calls 1/rate apart (a token bucket holding one token).
type limiter struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time
}

func newLimiter(rate float64) *limiter {
	return &limiter{interval: time.Duration(float64(time.Second) / rate)}
}

func (l *limiter) wait(ctx context.Context) error {
	l.mu.Lock()
	now := time.Now()
	at := l.next
	if at.Before(now) {
		at = now
	}
	l.next = at.Add(l.interval)
	l.mu.Unlock()
	return sleep(ctx, time.Until(at))
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
