// Package handlers holds the worker's built-in handlers: log, forward (to
// an HTTP endpoint, signed) and tracker (the reconciler's pending sets and
// ledger in Redis).
//
// Chain builds the handlers a worker runs from their names (Names lists
// them) and a Deps: the logger, the Redis client and key prefix, the
// forward settings. Adding a handler is its file plus one line in the
// registry (registry.go).
package handlers

import (
	"context"
	"encoding/json"

	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/pkg/events"
)

// businessIDs are the identifiers worth logging; payer data never is.
type businessIDs struct {
	OutTradeNo    string `json:"out_trade_no"`
	TransactionID string `json:"transaction_id"`
	OutRefundNo   string `json:"out_refund_no"`
	RefundID      string `json:"refund_id"`
}

// Log returns a handler that writes one line per event: its identity and
// business ids, never the resource itself (it holds personal data).
func Log(log zerolog.Logger) func(ctx context.Context, ev events.Envelope) error {
	return func(ctx context.Context, ev events.Envelope) error {
		var ids businessIDs
		_ = json.Unmarshal(ev.Resource, &ids) // best effort: logging never fails an event
		e := log.Info().
			Str("event_id", ev.ID).
			Str("dedupe_key", ev.DedupeKey).
			Str("event_type", ev.EventType).
			Str("mchid", ev.MchID).
			Str("source", ev.Source)
		for k, v := range map[string]string{"out_trade_no": ids.OutTradeNo, "transaction_id": ids.TransactionID,
			"out_refund_no": ids.OutRefundNo, "refund_id": ids.RefundID} {
			if v != "" {
				e.Str(k, v)
			}
		}
		e.Msg("event")
		return nil
	}
}
