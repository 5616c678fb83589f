package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrPublish is wrapped by every error of Publisher.Publish that means the
// event was not made durable: JetStream did not acknowledge it in time, or
// refused it. The cause stays in the chain (errors.Is works on it, e.g.
// context.DeadlineExceeded, nats.ErrConnectionClosed). Ingress answers 503
// so that WeChat retries.
var ErrPublish = errors.New("events: publish not acknowledged by JetStream")

// DefaultPublishTimeout is the PublisherConfig.Timeout default.
const DefaultPublishTimeout = 2 * time.Second

// PublisherConfig holds the optional settings of a Publisher; its zero
// value works.
type PublisherConfig struct {
	// Timeout bounds one Publish call, retries included; the caller's
	// context deadline applies too, whichever comes first. Default
	// DefaultPublishTimeout (2s), which keeps ingress inside WeChat's 3 s.
	Timeout time.Duration
}

// Publisher publishes envelopes to the WXPAY stream and waits for the
// stream's acknowledgement. It is safe for concurrent use.
type Publisher struct {
	js      jetstream.Publisher
	timeout time.Duration
}

// NewPublisher returns a Publisher that publishes through js (a
// jetstream.JetStream satisfies jetstream.Publisher).
func NewPublisher(js jetstream.Publisher, cfg PublisherConfig) *Publisher {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultPublishTimeout
	}
	return &Publisher{js: js, timeout: cfg.Timeout}
}

// Published is the stream's acknowledgement of a publish.
type Published struct {
	// Stream is the stream that stored the event (StreamName).
	Stream string
	// Sequence is the stream sequence of the stored message; for a
	// duplicate, the sequence of the message stored first.
	Sequence uint64
	// Duplicate reports that the stream already held a message with the
	// same dedupe_key inside its duplicate window, so this one was not
	// stored again. The event is durable either way.
	Duplicate bool
}

// Publish validates env, publishes it as JSON on
// Subject(env.MchID, env.EventType) with the Nats-Msg-Id header set to
// env.DedupeKey (so JetStream drops duplicates inside its duplicate window),
// and waits for the stream's acknowledgement. Only a nil error means the
// event is durable: ingress answers WeChat success only then.
//
// The wait is bounded by the caller's ctx and by PublisherConfig.Timeout,
// whichever ends first. Failures that a moment may cure (no stream
// responder during a leader election, a temporarily unavailable JetStream)
// are retried with exponential backoff inside that bound, never past it;
// retries carry the same Nats-Msg-Id, so they cannot store the event twice.
//
// An envelope that fails Validate returns an error wrapping
// ErrMalformedEnvelope and is not sent. Every other failure wraps ErrPublish
// together with its cause; when the connection is not connected to NATS,
// the error says so. An acknowledgement from a stream other than
// StreamName (the subject is captured by a stream it should not be) is an
// ErrPublish error too, since consumers of WXPAY would never see the event.
func (p *Publisher) Publish(ctx context.Context, env Envelope) (Published, error) {
	if err := env.validate(false); err != nil {
		return Published{}, err
	}
	buf := buffers.Get()
	defer buffers.Put(buf)
	data, err := encodeEnvelope(buf, &env)
	if err != nil {
		// The encoder compacts the resource (a json.RawMessage) and so
		// checks its syntax, the one check validate(false) leaves to it.
		if !json.Valid(env.Resource) {
			return Published{}, errResourceNotObject
		}
		return Published{}, fmt.Errorf("%w: encoding: %v", ErrMalformedEnvelope, err)
	}
	subject := Subject(env.MchID, env.EventType)

	// A caller's deadline at least as near as ours is used as it is, which
	// saves a timer per publish on the ingress's path.
	if deadline, ok := ctx.Deadline(); !ok || time.Until(deadline) > p.timeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.timeout)
		defer cancel()
	}

	b := &backoff.ExponentialBackOff{
		InitialInterval:     25 * time.Millisecond,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         400 * time.Millisecond,
		MaxElapsedTime:      p.timeout,
		Stop:                backoff.Stop,
		Clock:               backoff.SystemClock,
	}
	b.Reset()
	// Nats-Msg-Id is set here rather than with jetstream.WithMsgID, and no
	// other option writes headers, so the same message serves every attempt.
	// nats.go copies data into its write buffer before PublishMsg returns,
	// so buf may be reused once Publish is done.
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{jetstream.MsgIDHeader: {env.DedupeKey}}}
	for {
		ack, err := p.js.PublishMsg(ctx, msg, publishOpts...)
		if err == nil {
			if ack.Stream != StreamName {
				return Published{}, fmt.Errorf("%w: %s on %s was stored by stream %q, not %s (check the stream subjects)",
					ErrPublish, env.DedupeKey, subject, ack.Stream, StreamName)
			}
			return Published{Stream: ack.Stream, Sequence: ack.Sequence, Duplicate: ack.Duplicate}, nil
		}
		wait := b.NextBackOff()
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) <= wait {
			wait = backoff.Stop // no time left to wait and try again
		}
		if !retryablePublish(ctx, err) || wait == backoff.Stop || !sleepCtx(ctx, wait) {
			return Published{}, fmt.Errorf("%w: %s on %s: %w", ErrPublish, env.DedupeKey, subject, p.explain(err))
		}
	}
}

// explain returns the error of a failed publish, saying that NATS is not
// connected when that is the cause. A connection that never reached its
// server (nats.RetryOnFailedConnect) knows no server features, so nats.go
// refuses a message with headers as "headers not supported by this
// server", which sends the operator looking at the server version instead
// of at NATS_URL.
func (p *Publisher) explain(err error) error {
	notConnected := errors.Is(err, nats.ErrHeadersNotSupported)
	if c, ok := p.js.(interface{ Conn() *nats.Conn }); ok {
		if nc := c.Conn(); nc != nil && !nc.IsConnected() {
			notConnected = true
		}
	}
	if notConnected {
		return fmt.Errorf("NATS is not connected (check NATS_URL and that the NATS server is up and reachable): %w", err)
	}
	return err
}

// publishOpts leaves the retries to Publish's own loop, bounded by its
// context.
var publishOpts = []jetstream.PublishOpt{jetstream.WithRetryAttempts(0)}

// retryablePublish decides, in one place, whether a failed publish may
// succeed if tried again soon: no responders (no stream leader yet, or the
// stream is being created), a reconnecting connection, and JetStream's
// "temporarily unavailable" answers. Nothing is retryable once ctx is done.
func retryablePublish(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrReconnectBufExceeded):
		return true
	case errors.As(err, &apiErr):
		return apiErr.Code == http.StatusServiceUnavailable
	}
	return false
}
