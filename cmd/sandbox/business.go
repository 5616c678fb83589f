package main

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// effect is what the business did for one payment or refund.
type effect struct {
	// count is how many times the effect was applied; exactly once is
	// right.
	count int
	// source is the source of the event that first brought it (notify or
	// reconciler).
	source string
	amount int64
}

// business is a team's handler after the built-in ones: it ships an
// order on TRANSACTION.SUCCESS and books a refund on its final REFUND.*
// event, and records each effect by business id: "pay:<transaction_id>"
// or "refund:<refund_id>". It relies on the router's deduplication alone,
// as a team's handler may.
type business struct {
	repeat func(id string) bool

	mu      sync.Mutex
	effects map[string]*effect
}

func newBusiness(repeat func(id string) bool) *business {
	return &business{repeat: repeat, effects: map[string]*effect{}}
}

// businessResource is the part of a payment or refund resource the
// business reads; the ingress turns v2 XML into the same shape.
type businessResource struct {
	TransactionID string `json:"transaction_id"`
	RefundID      string `json:"refund_id"`
	Amount        struct {
		Total  int64 `json:"total"`
		Refund int64 `json:"refund"`
	} `json:"amount"`
}

// HandleEvent applies the effect of a payment or a finished refund.
func (b *business) HandleEvent(ctx context.Context, ev events.Envelope) error {
	var key, id string
	var res businessResource
	switch ev.EventType {
	case wxpay.EventTransactionSuccess, wxpay.EventRefundSuccess, wxpay.EventRefundAbnormal, wxpay.EventRefundClosed:
		if err := json.Unmarshal(ev.Resource, &res); err != nil {
			return events.Permanent(err)
		}
	default:
		return nil // announcements and bill events are not the business's
	}
	amount := res.Amount.Total
	if ev.EventType == wxpay.EventTransactionSuccess {
		key, id = "pay:", res.TransactionID
	} else {
		key, id, amount = "refund:", res.RefundID, res.Amount.Refund
	}
	times := 1
	if b.repeat != nil && b.repeat(id) {
		times = 2
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.effects[key+id]
	if e == nil {
		e = &effect{source: ev.Source, amount: amount}
		b.effects[key+id] = e
	}
	e.count += times
	return nil
}

// snapshot copies the effects.
func (b *business) snapshot() map[string]effect {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]effect, len(b.effects))
	for k, e := range b.effects {
		out[k] = *e
	}
	return out
}
