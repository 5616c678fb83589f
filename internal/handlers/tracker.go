package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxpay-notify/wxpay-notify/internal/tracking"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// TrackerConfig configures a Tracker's store (key prefix, ledger TTL); the
// zero value works.
type TrackerConfig = tracking.Config

// Tracker keeps the reconciler's state (package tracking): order.created
// and refund.created announcements (events.Announcement, with their
// sub_mchid in partner mode) join the pending sets, final states leave
// them, and every final payment and refund is recorded in the day's
// ledger.
type Tracker struct {
	store *tracking.Store
}

// NewTracker returns the tracker handler, writing to rdb.
func NewTracker(rdb redis.UniversalClient, cfg TrackerConfig) *Tracker {
	return &Tracker{store: tracking.NewStore(rdb, cfg)}
}

// HandleEvent applies ev to the pending sets and the ledger. It is
// idempotent: a repeat leaves the same state.
func (t *Tracker) HandleEvent(ctx context.Context, ev events.Envelope) error {
	switch strings.ToUpper(ev.EventType) {
	case events.EventOrderCreated, events.EventRefundCreated:
		var a events.Announcement // what events.AnnounceOrder and AnnounceRefund publish
		if err := json.Unmarshal(ev.Resource, &a); err != nil {
			return events.Permanent(fmt.Errorf("tracker: %s resource: %w", ev.EventType, err))
		}
		created, err := eventTime(a.CreateTime, ev)
		if err != nil {
			return events.Permanent(fmt.Errorf("tracker: %s: %w", ev.EventType, err))
		}
		kind, member, field := tracking.Order, a.OutTradeNo, "out_trade_no"
		if strings.EqualFold(ev.EventType, events.EventRefundCreated) {
			kind, member, field = tracking.Refund, a.OutRefundNo, "out_refund_no"
		}
		if member == "" {
			return events.Permanent(fmt.Errorf("tracker: %s without %s", ev.EventType, field))
		}
		// The sub_mchid of a partner-mode order or refund goes with it: the
		// reconciler cannot query it without.
		it := tracking.Item{ID: member, Created: created, SubMchID: a.SubMchID}
		return wrapRedis(t.store.AddPendingItem(ctx, kind, ev.MchID, it))

	case wxpay.EventTransactionSuccess:
		var tx wxpay.Transaction
		if err := json.Unmarshal(ev.Resource, &tx); err != nil {
			return events.Permanent(fmt.Errorf("tracker: transaction resource: %w", err))
		}
		if tx.TransactionID == "" || tx.OutTradeNo == "" || tx.Amount == nil {
			return events.Permanent(fmt.Errorf("tracker: payment without transaction_id, out_trade_no or amount"))
		}
		when, err := eventTime(tx.SuccessTime, ev)
		if err != nil {
			return events.Permanent(fmt.Errorf("tracker: payment %s: %w", tx.TransactionID, err))
		}
		entry := tracking.Entry{OutTradeNo: tx.OutTradeNo, Amount: tx.Amount.Total, State: wxpay.TradeStateSuccess, EventID: ev.ID}
		return wrapRedis(t.store.RecordFinal(ctx, ev.MchID, tx.TransactionID, when, entry))

	case events.EventTransactionClosed, events.EventTransactionRevoked, events.EventTransactionPayError:
		var tx struct {
			OutTradeNo string `json:"out_trade_no"`
		}
		if err := json.Unmarshal(ev.Resource, &tx); err != nil || tx.OutTradeNo == "" {
			return events.Permanent(fmt.Errorf("tracker: %s without out_trade_no", ev.EventType))
		}
		return wrapRedis(t.store.RemovePending(ctx, tracking.Order, ev.MchID, tx.OutTradeNo))

	case wxpay.EventRefundSuccess, wxpay.EventRefundClosed, wxpay.EventRefundAbnormal:
		var r wxpay.RefundNotice
		if err := json.Unmarshal(ev.Resource, &r); err != nil {
			return events.Permanent(fmt.Errorf("tracker: refund resource: %w", err))
		}
		if r.RefundID == "" || r.OutRefundNo == "" {
			return events.Permanent(fmt.Errorf("tracker: refund without refund_id or out_refund_no"))
		}
		when, err := eventTime(r.SuccessTime, ev)
		if err != nil {
			return events.Permanent(fmt.Errorf("tracker: refund %s: %w", r.RefundID, err))
		}
		state := wxpay.NormalizeRefundStatus(r.RefundStatus)
		if state == "" {
			state = strings.TrimPrefix(strings.ToUpper(ev.EventType), "REFUND.")
		}
		entry := tracking.Entry{OutRefundNo: r.OutRefundNo, Amount: r.Amount.Refund, State: state, EventID: ev.ID}
		return wrapRedis(t.store.RecordFinal(ctx, ev.MchID, r.RefundID, when, entry))
	}
	return nil // other events are not tracked
}

// eventTime parses an RFC 3339 time, falling back to the envelope's
// create_time and then its received_at.
func eventTime(s string, ev events.Envelope) (time.Time, error) {
	for _, v := range []string{s, ev.CreateTime} {
		if v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return time.Time{}, fmt.Errorf("time %q is not RFC 3339", v)
		}
		return t, nil
	}
	if !ev.ReceivedAt.IsZero() {
		return ev.ReceivedAt, nil
	}
	return time.Time{}, fmt.Errorf("no time in the event")
}

func wrapRedis(err error) error {
	if err != nil {
		return fmt.Errorf("tracker: redis: %w", err)
	}
	return nil
}
