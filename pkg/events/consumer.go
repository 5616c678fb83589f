package events

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// minServerMajor and minServerMinor are the oldest NATS server version the
// router supports: consumers with several filter subjects came in 2.10.
const (
	minServerMajor = 2
	minServerMinor = 10
)

// checkServerVersion returns an ErrServerTooOld error if version (as the
// server reports it, "2.9.10") is older than 2.10. An empty or
// unparseable version passes; the consumer's creation catches the rest.
func checkServerVersion(version string) error {
	v := strings.TrimPrefix(version, "v")
	majorS, rest, _ := strings.Cut(v, ".")
	minorS, _, _ := strings.Cut(rest, ".")
	major, err1 := strconv.Atoi(majorS)
	minor, err2 := strconv.Atoi(minorS)
	if err1 != nil || err2 != nil {
		return nil
	}
	if major < minServerMajor || (major == minServerMajor && minor < minServerMinor) {
		return fmt.Errorf("%w: the server runs NATS %s; the router needs %d.%d or later (consumers with several filter subjects)",
			ErrServerTooOld, version, minServerMajor, minServerMinor)
	}
	return nil
}

// consumerConfig is the durable consumer Run creates or updates.
func (r *Router) consumerConfig(filters []string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        r.cfg.Consumer,
		Description:    "wxpay-notify worker " + r.cfg.Consumer,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        r.cfg.AckWait,
		MaxDeliver:     -1, // the router enforces MaxDeliver: see RouterConfig
		MaxAckPending:  r.cfg.MaxAckPending,
		FilterSubjects: filters,
	}
}

// ensureConsumer creates or updates the durable consumer.
func (r *Router) ensureConsumer(ctx context.Context, filters []string) (jetstream.Consumer, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cons, err := r.js.CreateOrUpdateConsumer(ctx, StreamName, r.consumerConfig(filters))
	if errors.Is(err, jetstream.ErrConsumerMultipleFilterSubjectsNotSupported) {
		version := "(unknown version)"
		if nc := r.js.Conn(); nc != nil {
			version = nc.ConnectedServerVersion()
		}
		return nil, fmt.Errorf("%w: the server runs NATS %s and ignored the consumer's filter subjects; the router needs %d.%d or later",
			ErrServerTooOld, version, minServerMajor, minServerMinor)
	}
	if err != nil {
		return nil, fmt.Errorf("events: creating or updating consumer %s on stream %s: %w", r.cfg.Consumer, StreamName, err)
	}
	return cons, nil
}

// recreate creates the consumer again after a fetch failure that says it
// is gone; otherwise it returns cons.
func (r *Router) recreate(ctx context.Context, cons jetstream.Consumer, filters []string, err error) jetstream.Consumer {
	if !errors.Is(err, jetstream.ErrConsumerDeleted) && !errors.Is(err, jetstream.ErrConsumerNotFound) &&
		!errors.Is(err, jetstream.ErrNoHeartbeat) {
		return cons
	}
	c, cerr := r.ensureConsumer(ctx, filters)
	if cerr != nil {
		r.setConsumerErr(cerr)
		return cons
	}
	r.log.Warn().Err(err).Msg("consumer created again")
	return c
}
