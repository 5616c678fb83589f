package events

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of StreamConfig.
const (
	// DefaultReplicas is the StreamConfig.Replicas default (1; production
	// clusters use 3).
	DefaultReplicas = 1
	// DefaultDuplicateWindow is the StreamConfig.DuplicateWindow default.
	// Redis dedupe in the workers covers longer spans.
	DefaultDuplicateWindow = 2 * time.Minute
	// DefaultMaxAge is the StreamConfig.MaxAge default: the WXPAY stream is
	// a log that can be replayed for a week.
	DefaultMaxAge = 7 * 24 * time.Hour
	// DefaultDLQMaxAge is the StreamConfig.DLQMaxAge default.
	DefaultDLQMaxAge = 30 * 24 * time.Hour
)

// StreamConfig holds what the streams must at least provide; its zero value
// asks for the defaults.
type StreamConfig struct {
	// Replicas is the number of replicas of both streams, 1 to 5. Default
	// DefaultReplicas (1). A server that is not clustered refuses more
	// than 1.
	Replicas int
	// DuplicateWindow is how long WXPAY remembers a Nats-Msg-Id (the
	// dedupe_key) to drop a duplicate publish. Default
	// DefaultDuplicateWindow (2m). It also applies to WXPAY_DLQ.
	DuplicateWindow time.Duration
	// MaxAge is how long WXPAY keeps events. Default DefaultMaxAge (7 days);
	// a negative value keeps them without an age limit.
	MaxAge time.Duration
	// DLQMaxAge is how long WXPAY_DLQ keeps dead letters. Default
	// DefaultDLQMaxAge (30 days); a negative value keeps them without an
	// age limit. Alert on the DLQ's depth: dead letters older than this are
	// removed.
	DLQMaxAge time.Duration
}

// withDefaults returns cfg with defaults filled in, and checks it.
func (cfg StreamConfig) withDefaults() (StreamConfig, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = DefaultReplicas
	}
	if cfg.DuplicateWindow == 0 {
		cfg.DuplicateWindow = DefaultDuplicateWindow
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.DLQMaxAge == 0 {
		cfg.DLQMaxAge = DefaultDLQMaxAge
	}
	if cfg.MaxAge < 0 {
		cfg.MaxAge = 0 // JetStream: no limit
	}
	if cfg.DLQMaxAge < 0 {
		cfg.DLQMaxAge = 0
	}
	switch {
	case cfg.Replicas < 1 || cfg.Replicas > 5:
		return cfg, fmt.Errorf("events: stream replicas %d is not between 1 and 5", cfg.Replicas)
	case cfg.DuplicateWindow < 0:
		return cfg, fmt.Errorf("events: negative duplicate window %v", cfg.DuplicateWindow)
	case cfg.MaxAge != 0 && cfg.DuplicateWindow > cfg.MaxAge:
		return cfg, fmt.Errorf("events: duplicate window %v is longer than the max age %v of %s", cfg.DuplicateWindow, cfg.MaxAge, StreamName)
	case cfg.DLQMaxAge != 0 && cfg.DuplicateWindow > cfg.DLQMaxAge:
		return cfg, fmt.Errorf("events: duplicate window %v is longer than the max age %v of %s", cfg.DuplicateWindow, cfg.DLQMaxAge, DLQStreamName)
	}
	return cfg, nil
}

// streamConfigs returns the wanted WXPAY and WXPAY_DLQ configurations.
func (cfg StreamConfig) streamConfigs() []jetstream.StreamConfig {
	return []jetstream.StreamConfig{
		{
			Name:        StreamName,
			Description: "WeChat Pay events (wxpay-notify)",
			Subjects:    []string{SubjectAll},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
			MaxAge:      cfg.MaxAge,
			Duplicates:  cfg.DuplicateWindow,
			MaxMsgs:     -1,
			MaxBytes:    -1,
		},
		{
			Name:        DLQStreamName,
			Description: "WeChat Pay dead letters (wxpay-notify)",
			Subjects:    []string{DLQSubjectAll},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
			MaxAge:      cfg.DLQMaxAge,
			Duplicates:  cfg.DuplicateWindow,
			MaxMsgs:     -1,
			MaxBytes:    -1,
		},
	}
}

// EnsureStreams creates the WXPAY and WXPAY_DLQ streams, or updates them
// so that they provide at least what cfg asks for. Every command calls it
// at start; it is idempotent and safe to run from several processes at once.
//
// A stream that does not exist is created with cfg: limits retention, file
// storage, cfg.Replicas, cfg.MaxAge (cfg.DLQMaxAge), cfg.DuplicateWindow.
// An existing stream keeps every setting EnsureStreams does not manage
// (limits, placement, sources, description) and is never weakened: its
// subjects gain SubjectAll (DLQSubjectAll) when missing, and its replicas,
// max age and duplicate window are raised to what cfg asks when they are
// lower, but never lowered (lower them by hand with the nats CLI). Storage
// and retention cannot be changed by an update, so they are left alone.
//
// The returned warnings describe every way the streams, as they are after
// the update, are still weaker than asked (memory storage, fewer replicas,
// a shorter max age or duplicate window, a retention other than limits,
// message or byte limits that can drop events before their max age, a
// sealed stream); the command logs them. The configuration sent uses only
// fields NATS 2.9 servers accept.
func EnsureStreams(ctx context.Context, js jetstream.StreamManager, cfg StreamConfig) ([]string, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var warnings []string
	for _, want := range cfg.streamConfigs() {
		w, err := ensureStream(ctx, js, want)
		if err != nil {
			return warnings, err
		}
		warnings = append(warnings, w...)
	}
	return warnings, nil
}

// ensureStream creates or raises one stream and returns its weaknesses.
func ensureStream(ctx context.Context, js jetstream.StreamManager, want jetstream.StreamConfig) ([]string, error) {
	next := want
	changed := true
	s, err := js.Stream(ctx, want.Name)
	switch {
	case err == nil:
		next, changed = raiseStreamConfig(s.CachedInfo().Config, want)
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("events: looking up stream %s: %w", want.Name, err)
	}
	if changed {
		// CreateOrUpdateStream: another command may create the stream
		// between the lookup and here.
		s, err = js.CreateOrUpdateStream(ctx, next)
		if err != nil {
			return nil, fmt.Errorf("events: creating or updating stream %s: %w", want.Name, err)
		}
	}
	return streamWeaknesses(s.CachedInfo().Config, want), nil
}

// raiseStreamConfig returns cur with the settings EnsureStreams manages
// raised to at least want, and whether anything changed.
func raiseStreamConfig(cur, want jetstream.StreamConfig) (jetstream.StreamConfig, bool) {
	next := cur
	changed := false
	if !coversSubject(cur.Subjects, want.Subjects[0]) {
		// Keep the subjects the wanted filter does not cover; drop the ones
		// it does (a stream's subjects must not overlap).
		prefix := strings.TrimSuffix(want.Subjects[0], ">")
		subjects := []string{want.Subjects[0]}
		for _, s := range cur.Subjects {
			if !strings.HasPrefix(s, prefix) {
				subjects = append(subjects, s)
			}
		}
		next.Subjects = subjects
		changed = true
	}
	if cur.Replicas < want.Replicas {
		next.Replicas = want.Replicas
		changed = true
	}
	if longerAge(want.MaxAge, cur.MaxAge) {
		next.MaxAge = want.MaxAge
		changed = true
	}
	if cur.Duplicates < want.Duplicates {
		next.Duplicates = want.Duplicates
		changed = true
	}
	if cur.NoAck {
		// Publishers wait for acknowledgements.
		next.NoAck = false
		changed = true
	}
	return next, changed
}

// coversSubject reports whether subjects holds filter itself.
func coversSubject(subjects []string, filter string) bool {
	for _, s := range subjects {
		if s == filter {
			return true
		}
	}
	return false
}

// longerAge reports whether max age a keeps messages longer than b, where
// 0 means no limit.
func longerAge(a, b time.Duration) bool {
	switch {
	case a == b:
		return false
	case a == 0:
		return true
	case b == 0:
		return false
	}
	return a > b
}

// streamWeaknesses lists how the stream config got is weaker than want.
func streamWeaknesses(got, want jetstream.StreamConfig) []string {
	var w []string
	add := func(format string, args ...any) {
		w = append(w, fmt.Sprintf("stream %s: ", got.Name)+fmt.Sprintf(format, args...))
	}
	if got.Storage != want.Storage {
		add("storage is %s, want %s: acknowledged events are lost if the server restarts (only recreating the stream changes it)",
			strings.ToLower(got.Storage.String()), strings.ToLower(want.Storage.String()))
	}
	if got.Replicas < want.Replicas {
		add("has %d replicas, want %d", got.Replicas, want.Replicas)
	}
	if longerAge(want.MaxAge, got.MaxAge) {
		add("max age is %s, want %s", ageString(got.MaxAge), ageString(want.MaxAge))
	}
	if got.Duplicates < want.Duplicates {
		add("duplicate window is %v, want %v", got.Duplicates, want.Duplicates)
	}
	if got.Retention != want.Retention {
		add("retention is %s, want %s: events leave the stream before their max age and cannot be replayed",
			strings.ToLower(got.Retention.String()), strings.ToLower(want.Retention.String()))
	}
	if got.MaxMsgs > 0 || got.MaxBytes > 0 {
		add("max messages %d / max bytes %d may remove events before their max age", got.MaxMsgs, got.MaxBytes)
	}
	if got.Sealed {
		add("is sealed: publishes fail")
	}
	if got.NoAck {
		add("does not acknowledge publishes")
	}
	if !coversSubject(got.Subjects, want.Subjects[0]) {
		add("subjects %v do not include %s", got.Subjects, want.Subjects[0])
	}
	return w
}

// ageString prints a max age, with 0 as "no limit".
func ageString(d time.Duration) string {
	if d == 0 {
		return "no limit"
	}
	return d.String()
}

// EnsureStreamsRetry calls EnsureStreams until it succeeds or ctx ends
// (NATS may still be starting when a command does), waiting with
// exponential backoff up to 30 s between attempts. onRetry, when not nil,
// hears every failure and the wait before the next attempt. It returns the
// warnings of the successful attempt, or ctx's error.
func EnsureStreamsRetry(ctx context.Context, js jetstream.StreamManager, cfg StreamConfig, onRetry func(err error, wait time.Duration)) ([]string, error) {
	if _, err := cfg.withDefaults(); err != nil {
		return nil, err // a wrong setting does not get better by waiting
	}
	b := backoff.WithContext(backoff.NewExponentialBackOff(backoff.WithMaxElapsedTime(0), backoff.WithMaxInterval(30*time.Second)), ctx)
	var warnings []string
	err := backoff.RetryNotify(func() error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		w, err := EnsureStreams(cctx, js, cfg)
		if err != nil {
			return err
		}
		warnings = w
		return nil
	}, b, func(err error, d time.Duration) {
		if onRetry != nil {
			onRetry(err, d)
		}
	})
	return warnings, err
}
