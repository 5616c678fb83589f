package config

import (
	"context"
	"flag"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/pkg/events"
)

// RegisterStreams registers the stream settings every command that
// ensures the streams takes: STREAM_REPLICAS, STREAM_DUPLICATE_WINDOW and
// STREAM_MAX_AGE. All of them read the same three, because ensuring only
// ever raises a stream's settings: a command that ensured with its own
// defaults would undo a shorter duplicate window or max age the others
// were given. The returned function gives the parsed values.
func RegisterStreams(fs *flag.FlagSet, getenv func(string) string) func() events.StreamConfig {
	replicas := Int(fs, getenv, "stream-replicas", "STREAM_REPLICAS", events.DefaultReplicas, "replicas of the WXPAY streams (3 in production)")
	window := Duration(fs, getenv, "stream-duplicate-window", "STREAM_DUPLICATE_WINDOW", events.DefaultDuplicateWindow, "JetStream duplicate window of WXPAY")
	maxAge := Duration(fs, getenv, "stream-max-age", "STREAM_MAX_AGE", events.DefaultMaxAge, "how long WXPAY keeps events")
	return func() events.StreamConfig {
		return events.StreamConfig{Replicas: *replicas, DuplicateWindow: *window, MaxAge: *maxAge}
	}
}

// EnsureStreams creates or updates the streams WXPAY and WXPAY_DLQ the way
// every command does: it retries while NATS cannot answer (it may still be
// starting), logging each failed try as an error naming NATS_URL, until it
// works or ctx ends; it logs each way an existing stream is weaker than cfg
// as a warning, and success at info. A configuration the server refuses is
// logged naming the STREAM_* settings and returned; the end of ctx is
// returned without a log line.
func EnsureStreams(ctx context.Context, js jetstream.StreamManager, cfg events.StreamConfig, log zerolog.Logger) error {
	warnings, err := events.EnsureStreamsRetry(ctx, js, cfg, func(err error, d time.Duration) {
		log.Error().Err(err).Dur("retry_in", d).Str("check", "NATS_URL and that JetStream is enabled").Msg("cannot ensure streams")
	})
	for _, w := range warnings {
		log.Warn().Str("stream_warning", w).Msg("stream is weaker than configured")
	}
	if err != nil {
		if ctx.Err() == nil {
			log.Error().Err(err).Str("check", "STREAM_REPLICAS, STREAM_DUPLICATE_WINDOW, STREAM_MAX_AGE").Msg("streams not ensured")
		}
		return err
	}
	log.Info().Msg("streams " + events.StreamName + " and " + events.DLQStreamName + " ready")
	return nil
}
