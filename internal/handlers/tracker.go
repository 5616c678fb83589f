package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// DefaultLedgerTTL keeps a day's ledger past the 3 months bills can be
// downloaded for.
const DefaultLedgerTTL = 100 * 24 * time.Hour

// TrackerConfig configures a Tracker; the zero value works.
type TrackerConfig struct {
	// KeyPrefix defaults to events.DefaultKeyPrefix ("wxpay:").
	KeyPrefix string
	// LedgerTTL defaults to DefaultLedgerTTL.
	LedgerTTL time.Duration
}

// Tracker keeps the reconciler's state: order.created and refund.created
// announcements join the pending sets, final states leave them, and every
// final payment and refund is recorded in the day's ledger.
type Tracker struct {
	rdb redis.UniversalClient
	cfg TrackerConfig
}

// NewTracker returns the tracker handler.
func NewTracker(rdb redis.UniversalClient, cfg TrackerConfig) *Tracker {
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = events.DefaultKeyPrefix
	}
	if cfg.LedgerTTL <= 0 {
		cfg.LedgerTTL = DefaultLedgerTTL
	}
	return &Tracker{rdb: rdb, cfg: cfg}
}

// Announcement is the resource of order.created and refund.created, which
// business systems publish when they create an order or a refund.
type Announcement struct {
	OutTradeNo  string `json:"out_trade_no"`
	OutRefundNo string `json:"out_refund_no,omitempty"`
	// CreateTime (RFC 3339) defaults to the envelope's create_time.
	CreateTime string `json:"create_time,omitempty"`
}

// HandleEvent applies ev to the pending sets and the ledger. It is
// idempotent: a repeat leaves the same state.
func (t *Tracker) HandleEvent(ctx context.Context, ev events.Envelope) error {
	p := t.cfg.KeyPrefix
	switch strings.ToUpper(ev.EventType) {
	case events.EventOrderCreated, events.EventRefundCreated:
		var a Announcement
		if err := json.Unmarshal(ev.Resource, &a); err != nil {
			return events.Permanent(fmt.Errorf("tracker: %s resource: %w", ev.EventType, err))
		}
		created, err := eventTime(a.CreateTime, ev)
		if err != nil {
			return events.Permanent(fmt.Errorf("tracker: %s: %w", ev.EventType, err))
		}
		key, member := events.PendingOrderKey(p, ev.MchID), a.OutTradeNo
		if strings.EqualFold(ev.EventType, events.EventRefundCreated) {
			key, member = events.PendingRefundKey(p, ev.MchID), a.OutRefundNo
		}
		if member == "" {
			return events.Permanent(fmt.Errorf("tracker: %s without %s", ev.EventType, map[bool]string{true: "out_refund_no", false: "out_trade_no"}[key == events.PendingRefundKey(p, ev.MchID)]))
		}
		// NX keeps the first creation time when an announcement repeats.
		return wrapRedis(t.rdb.ZAddNX(ctx, key, redis.Z{Score: float64(created.Unix()), Member: member}).Err())

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
		entry := events.LedgerEntry{OutTradeNo: tx.OutTradeNo, Amount: tx.Amount.Total, State: wxpay.TradeStateSuccess, EventID: ev.ID}
		return t.final(ctx, ev.MchID, when, tx.TransactionID, entry, events.PendingOrderKey(p, ev.MchID), tx.OutTradeNo)

	case events.EventTransactionClosed, events.EventTransactionRevoked, events.EventTransactionPayError:
		var tx struct {
			OutTradeNo string `json:"out_trade_no"`
		}
		if err := json.Unmarshal(ev.Resource, &tx); err != nil || tx.OutTradeNo == "" {
			return events.Permanent(fmt.Errorf("tracker: %s without out_trade_no", ev.EventType))
		}
		return wrapRedis(t.rdb.ZRem(ctx, events.PendingOrderKey(p, ev.MchID), tx.OutTradeNo).Err())

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
		entry := events.LedgerEntry{OutRefundNo: r.OutRefundNo, Amount: r.Amount.Refund, State: state, EventID: ev.ID}
		return t.final(ctx, ev.MchID, when, r.RefundID, entry, events.PendingRefundKey(p, ev.MchID), r.OutRefundNo)
	}
	return nil // other events are not tracked
}

// final records a final state in the ledger and leaves the pending set, in
// one transaction.
func (t *Tracker) final(ctx context.Context, mchid string, when time.Time, field string, entry events.LedgerEntry, pendingKey, member string) error {
	value, err := json.Marshal(entry)
	if err != nil {
		return events.Permanent(err)
	}
	ledger := events.LedgerKey(t.cfg.KeyPrefix, mchid, when)
	_, err = t.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, ledger, field, value)
		p.Expire(ctx, ledger, t.cfg.LedgerTTL)
		p.ZRem(ctx, pendingKey, member)
		return nil
	})
	return wrapRedis(err)
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
		return fmt.Errorf("tracker: redis: %w (will retry)", err)
	}
	return nil
}
