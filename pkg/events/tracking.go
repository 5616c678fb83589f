package events

import (
	"time"
)

// DefaultKeyPrefix starts every Redis key of the project.
const DefaultKeyPrefix = "wxpay:"

// PendingOrderKey is the sorted set of orders the reconciler watches for
// mchid: member out_trade_no, score the order's creation (unix seconds).
func PendingOrderKey(prefix, mchid string) string {
	return prefixOrDefault(prefix) + "pending:order:" + mchid
}

// PendingRefundKey is the sorted set of refunds the reconciler watches:
// member out_refund_no, score the refund's creation (unix seconds).
func PendingRefundKey(prefix, mchid string) string {
	return prefixOrDefault(prefix) + "pending:refund:" + mchid
}

// LedgerKey is the hash of final payments and refunds of mchid on day
// (its China date): field transaction_id or refund_id, value a LedgerEntry
// as JSON.
func LedgerKey(prefix, mchid string, day time.Time) string {
	return prefixOrDefault(prefix) + "ledger:" + mchid + ":" + LedgerDay(day)
}

// LedgerDay formats t's China date as YYYYMMDD.
func LedgerDay(t time.Time) string {
	return t.In(chinaZone).Format("20060102")
}

// LedgerEntry is one final payment or refund in the ledger.
type LedgerEntry struct {
	OutTradeNo  string `json:"out_trade_no,omitempty"`
	OutRefundNo string `json:"out_refund_no,omitempty"`
	// Amount in fen: a payment's amount.total, a refund's amount.refund.
	Amount  int64  `json:"amount"`
	State   string `json:"state"`
	EventID string `json:"event_id"`
}

var chinaZone = time.FixedZone("CST", 8*3600)

func prefixOrDefault(p string) string {
	if p == "" {
		return DefaultKeyPrefix
	}
	return p
}
