package events

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"

	"github.com/rs/zerolog"
)

// Handler handles the events of one subject pattern (see
// (*Router).Handle). A team's business code implements it.
//
// Three things every implementation must respect:
//
//   - Respect ctx cancellation. ctx ends HandlerTimeout after the handler
//     started (also when the worker shuts down: shutdown lets running
//     handlers finish within that time), or earlier if the router lost the
//     event's Redis lock or could not extend it in time (Redis not
//     answering), before another worker can take the event over. Return
//     soon after ctx is done; a handler that ignores it delays shutdown
//     and keeps its event's slot.
//   - It may be called more than once for the same dedupe_key: after a
//     crash or a failed acknowledgement, when Redis lost its keys, when
//     the done marker (RouterConfig.DoneTTL) expired, after a replay, and
//     whenever a later handler of the same event failed (all matching
//     handlers run again on a retry). The Redis dedupe is the fast path,
//     not a proof, so a handler must be idempotent on its own records
//     (for example a unique key on transaction_id or refund_id).
//   - The error it returns decides what happens to the event. nil: done
//     (once every matching handler returned nil). Permanent(err), or an
//     ErrMalformedEnvelope error such as DecodeResource returns: the event
//     goes to the dead letters at once. Any other error: delivered again
//     after an exponential backoff (or after d for RetryAfter(d, err), when
//     d is longer than that backoff), and dead-lettered on the last allowed attempt
//     (RouterConfig.MaxDeliver). A panic counts as an ordinary error.
//
// The context carries a zerolog logger with the event's subject,
// consumer, stream_seq, delivery, event_id, dedupe_key and event_type:
// log with zerolog.Ctx(ctx).
type Handler interface {
	HandleEvent(ctx context.Context, ev Envelope) error
}

// HandlerFunc adapts a function to Handler, like http.HandlerFunc.
type HandlerFunc func(ctx context.Context, ev Envelope) error

// HandleEvent calls f(ctx, ev).
func (f HandlerFunc) HandleEvent(ctx context.Context, ev Envelope) error { return f(ctx, ev) }

// route is one registration: a pattern and its handlers, in order.
type route struct {
	pattern string
	hs      []Handler
}

// runHandlers runs the handlers of routes in order and returns the first
// error.
func (r *Router) runHandlers(ctx context.Context, routes []route, env Envelope) error {
	for _, rt := range routes {
		for _, h := range rt.hs {
			if err := callHandler(ctx, rt.pattern, h, env); err != nil {
				return err
			}
		}
	}
	return nil
}

// callHandler runs one handler of pattern and turns a panic into an error.
func callHandler(ctx context.Context, pattern string, h Handler, env Envelope) (err error) {
	defer func() {
		if p := recover(); p != nil {
			zerolog.Ctx(ctx).Error().Str("pattern", pattern).Bytes("stack", debug.Stack()).
				Msgf("handler panicked: %v", p)
			err = fmt.Errorf("events: handler for %s panicked: %v", pattern, p)
		}
	}()
	return h.HandleEvent(ctx, env)
}

// DecodeResource decodes the event's resource (a JSON object) into a T,
// for example wxpay.Transaction or wxpay.RefundNotice. A resource that
// does not decode returns a Permanent error wrapping ErrMalformedEnvelope,
// so a handler that returns it dead-letters the event at once instead of
// retrying what cannot succeed.
func DecodeResource[T any](ev Envelope) (T, error) {
	var v T
	if len(ev.Resource) == 0 {
		return v, Permanent(fmt.Errorf("%w: event %s has no resource", ErrMalformedEnvelope, ev.DedupeKey))
	}
	if err := json.Unmarshal(ev.Resource, &v); err != nil {
		return v, Permanent(fmt.Errorf("%w: event %s: decoding the resource as %T: %v", ErrMalformedEnvelope, ev.DedupeKey, v, err))
	}
	return v, nil
}
