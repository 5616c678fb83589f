package events

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestStreamConfigDefaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      StreamConfig
		want    StreamConfig
		wantErr bool
	}{
		{
			name: "zero value",
			want: StreamConfig{Replicas: 1, DuplicateWindow: 2 * time.Minute, MaxAge: 7 * 24 * time.Hour, DLQMaxAge: 30 * 24 * time.Hour},
		},
		{
			name: "production",
			in:   StreamConfig{Replicas: 3, DuplicateWindow: 10 * time.Minute, MaxAge: 14 * 24 * time.Hour, DLQMaxAge: 90 * 24 * time.Hour},
			want: StreamConfig{Replicas: 3, DuplicateWindow: 10 * time.Minute, MaxAge: 14 * 24 * time.Hour, DLQMaxAge: 90 * 24 * time.Hour},
		},
		{
			name: "negative ages mean no limit",
			in:   StreamConfig{MaxAge: -1, DLQMaxAge: -1},
			want: StreamConfig{Replicas: 1, DuplicateWindow: 2 * time.Minute},
		},
		{name: "too many replicas", in: StreamConfig{Replicas: 7}, wantErr: true},
		{name: "negative replicas", in: StreamConfig{Replicas: -1}, wantErr: true},
		{name: "negative duplicate window", in: StreamConfig{DuplicateWindow: -time.Second}, wantErr: true},
		{name: "duplicate window over max age", in: StreamConfig{MaxAge: time.Minute}, wantErr: true},
		{name: "duplicate window over DLQ max age", in: StreamConfig{DLQMaxAge: time.Minute}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.in.withDefaults()
			if tt.wantErr {
				if err == nil {
					t.Errorf("got %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want nil", err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRaiseStreamConfig(t *testing.T) {
	t.Parallel()
	want := jetstream.StreamConfig{
		Name: StreamName, Subjects: []string{SubjectAll}, Replicas: 3,
		MaxAge: 7 * 24 * time.Hour, Duplicates: 2 * time.Minute,
	}
	tests := []struct {
		name        string
		cur         jetstream.StreamConfig
		want        jetstream.StreamConfig
		wantChanged bool
	}{
		{
			name: "as asked",
			cur:  want,
			want: want,
		},
		{
			name: "stronger is kept",
			cur: jetstream.StreamConfig{Name: StreamName, Subjects: []string{SubjectAll}, Replicas: 5,
				MaxAge: 0, Duplicates: time.Hour, MaxBytes: 1 << 30, Description: "ops"},
			want: jetstream.StreamConfig{Name: StreamName, Subjects: []string{SubjectAll}, Replicas: 5,
				MaxAge: 0, Duplicates: time.Hour, MaxBytes: 1 << 30, Description: "ops"},
		},
		{
			name: "weaker is raised, the rest kept",
			cur: jetstream.StreamConfig{Name: StreamName, Subjects: []string{SubjectAll}, Replicas: 1,
				MaxAge: time.Hour, Duplicates: time.Minute, Storage: jetstream.MemoryStorage, NoAck: true, Description: "ops"},
			want: jetstream.StreamConfig{Name: StreamName, Subjects: []string{SubjectAll}, Replicas: 3,
				MaxAge: 7 * 24 * time.Hour, Duplicates: 2 * time.Minute, Storage: jetstream.MemoryStorage, Description: "ops"},
			wantChanged: true,
		},
		{
			name: "subjects gain the filter, lose what it covers",
			cur: jetstream.StreamConfig{Name: StreamName, Subjects: []string{"wxpay.1230000109.>", "legacy.>"}, Replicas: 3,
				MaxAge: 7 * 24 * time.Hour, Duplicates: 2 * time.Minute},
			want: jetstream.StreamConfig{Name: StreamName, Subjects: []string{SubjectAll, "legacy.>"}, Replicas: 3,
				MaxAge: 7 * 24 * time.Hour, Duplicates: 2 * time.Minute},
			wantChanged: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, changed := raiseStreamConfig(tt.cur, want)
			if !reflect.DeepEqual(got, tt.want) || changed != tt.wantChanged {
				t.Errorf("got %+v, changed %v; want %+v, changed %v", got, changed, tt.want, tt.wantChanged)
			}
		})
	}
}

func TestStreamWeaknesses(t *testing.T) {
	t.Parallel()
	want := jetstream.StreamConfig{
		Name: StreamName, Subjects: []string{SubjectAll}, Retention: jetstream.LimitsPolicy,
		Storage: jetstream.FileStorage, Replicas: 3, MaxAge: 7 * 24 * time.Hour, Duplicates: 2 * time.Minute,
		MaxMsgs: -1, MaxBytes: -1,
	}
	tests := []struct {
		name string
		edit func(c *jetstream.StreamConfig)
		want []string // substrings, one per warning
	}{
		{"as asked", func(c *jetstream.StreamConfig) {}, nil},
		{"stronger", func(c *jetstream.StreamConfig) { c.MaxAge = 0; c.Replicas = 5; c.Duplicates = time.Hour }, nil},
		{"memory", func(c *jetstream.StreamConfig) { c.Storage = jetstream.MemoryStorage }, []string{"storage is memory, want file"}},
		{"replicas", func(c *jetstream.StreamConfig) { c.Replicas = 1 }, []string{"has 1 replicas, want 3"}},
		{"max age", func(c *jetstream.StreamConfig) { c.MaxAge = time.Hour }, []string{"max age is 1h0m0s, want 168h0m0s"}},
		{"duplicates", func(c *jetstream.StreamConfig) { c.Duplicates = time.Minute }, []string{"duplicate window is 1m0s, want 2m0s"}},
		{"retention", func(c *jetstream.StreamConfig) { c.Retention = jetstream.WorkQueuePolicy }, []string{"retention is workqueue, want limits"}},
		{"limits", func(c *jetstream.StreamConfig) { c.MaxBytes = 1 << 20 }, []string{"max bytes 1048576"}},
		{"sealed", func(c *jetstream.StreamConfig) { c.Sealed = true }, []string{"sealed"}},
		{"no ack", func(c *jetstream.StreamConfig) { c.NoAck = true }, []string{"does not acknowledge"}},
		{"subjects", func(c *jetstream.StreamConfig) { c.Subjects = []string{"wxpay.1.>"} }, []string{"do not include wxpay.>"}},
		{
			"several",
			func(c *jetstream.StreamConfig) { c.Storage = jetstream.MemoryStorage; c.Replicas = 1 },
			[]string{"storage is memory", "has 1 replicas"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := want
			tt.edit(&got)
			w := streamWeaknesses(got, want)
			if len(w) != len(tt.want) {
				t.Fatalf("got warnings %q, want %d containing %q", w, len(tt.want), tt.want)
			}
			for i := range w {
				if !strings.Contains(w[i], tt.want[i]) || !strings.HasPrefix(w[i], "stream WXPAY: ") {
					t.Errorf("warning %q, want it to start with %q and contain %q", w[i], "stream WXPAY: ", tt.want[i])
				}
			}
		})
	}
}

func TestEnsureStreamsIdempotent(t *testing.T) {
	js := newJetStream(t)
	ctx := testContext(t, 30*time.Second)
	for i := range 2 {
		warnings, err := EnsureStreams(ctx, js, StreamConfig{})
		if err != nil {
			t.Fatalf("EnsureStreams #%d: %v", i+1, err)
		}
		if len(warnings) != 0 {
			t.Errorf("EnsureStreams #%d: got warnings %q, want none", i+1, warnings)
		}
	}
	tests := []struct {
		name     string
		subjects []string
		maxAge   time.Duration
	}{
		{StreamName, []string{"wxpay.>"}, 7 * 24 * time.Hour},
		{DLQStreamName, []string{"wxpaydlq.>"}, 30 * 24 * time.Hour},
	}
	for _, tt := range tests {
		cfg := streamConfig(ctx, t, js, tt.name)
		if !reflect.DeepEqual(cfg.Subjects, tt.subjects) || cfg.Retention != jetstream.LimitsPolicy ||
			cfg.Storage != jetstream.FileStorage || cfg.Replicas != 1 || cfg.MaxAge != tt.maxAge ||
			cfg.Duplicates != 2*time.Minute {
			t.Errorf("stream %s: got subjects %v, retention %v, storage %v, replicas %d, max age %v, duplicates %v; "+
				"want %v, limits, file, 1, %v, 2m", tt.name, cfg.Subjects, cfg.Retention, cfg.Storage, cfg.Replicas,
				cfg.MaxAge, cfg.Duplicates, tt.subjects, tt.maxAge)
		}
	}
}

func TestEnsureStreamsRaisesButNeverLowers(t *testing.T) {
	js := newJetStream(t)
	ctx := testContext(t, 30*time.Second)
	steps := []struct {
		name           string
		cfg            StreamConfig
		wantDuplicates time.Duration
		wantMaxAge     time.Duration
	}{
		{"defaults", StreamConfig{}, 2 * time.Minute, 7 * 24 * time.Hour},
		{"raise", StreamConfig{DuplicateWindow: 10 * time.Minute, MaxAge: 14 * 24 * time.Hour}, 10 * time.Minute, 14 * 24 * time.Hour},
		{"defaults again do not lower", StreamConfig{}, 10 * time.Minute, 14 * 24 * time.Hour},
		{"no age limit", StreamConfig{MaxAge: -1}, 10 * time.Minute, 0},
	}
	for _, step := range steps {
		warnings, err := EnsureStreams(ctx, js, step.cfg)
		if err != nil {
			t.Fatalf("%s: EnsureStreams: %v", step.name, err)
		}
		if len(warnings) != 0 {
			t.Errorf("%s: got warnings %q, want none", step.name, warnings)
		}
		cfg := streamConfig(ctx, t, js, StreamName)
		if cfg.Duplicates != step.wantDuplicates || cfg.MaxAge != step.wantMaxAge {
			t.Errorf("%s: got duplicate window %v, max age %v; want %v, %v",
				step.name, cfg.Duplicates, cfg.MaxAge, step.wantDuplicates, step.wantMaxAge)
		}
	}
}

func TestEnsureStreamsWeakerExistingStream(t *testing.T) {
	js := newJetStream(t)
	ctx := testContext(t, 30*time.Second)

	// An operator made WXPAY by hand: memory storage, one hour, a message
	// limit, a narrower subject, a description.
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:        StreamName,
		Description: "made by hand",
		Subjects:    []string{"wxpay.1230000109.>"},
		Storage:     jetstream.MemoryStorage,
		MaxAge:      time.Hour,
		Duplicates:  time.Minute,
		MaxMsgs:     1000,
	})
	if err != nil {
		t.Fatalf("CreateStream: %v", err)
	}
	warnings, err := EnsureStreams(ctx, js, StreamConfig{})
	if err != nil {
		t.Fatalf("EnsureStreams: %v", err)
	}
	// Storage cannot be changed by an update and message limits are the
	// operator's: both are reported. Max age, duplicate window and subjects
	// are raised, so they are not.
	wantWarnings := []string{"stream WXPAY: storage is memory, want file", "stream WXPAY: max messages 1000"}
	if len(warnings) != len(wantWarnings) {
		t.Fatalf("got warnings %q, want %d starting with %q", warnings, len(wantWarnings), wantWarnings)
	}
	for i, w := range warnings {
		if !strings.HasPrefix(w, wantWarnings[i]) {
			t.Errorf("warning %q, want it to start with %q", w, wantWarnings[i])
		}
	}
	cfg := streamConfig(ctx, t, js, StreamName)
	if cfg.MaxAge != 7*24*time.Hour || cfg.Duplicates != 2*time.Minute || !reflect.DeepEqual(cfg.Subjects, []string{SubjectAll}) ||
		cfg.Description != "made by hand" || cfg.MaxMsgs != 1000 || cfg.Storage != jetstream.MemoryStorage {
		t.Errorf("got max age %v, duplicates %v, subjects %v, description %q, max msgs %d, storage %v; "+
			"want 168h, 2m, [wxpay.>], made by hand, 1000, memory",
			cfg.MaxAge, cfg.Duplicates, cfg.Subjects, cfg.Description, cfg.MaxMsgs, cfg.Storage)
	}

	// The same warnings every start, and nothing else changes.
	again, err := EnsureStreams(ctx, js, StreamConfig{})
	if err != nil || !reflect.DeepEqual(again, warnings) {
		t.Errorf("second EnsureStreams: got %q, %v; want %q, nil", again, err, warnings)
	}
}

func TestEnsureStreamsMoreReplicasThanServers(t *testing.T) {
	js := newJetStream(t)
	ctx := testContext(t, 30*time.Second)
	// Both test servers are single servers, which refuse replicas > 1.
	warnings, err := EnsureStreams(ctx, js, StreamConfig{Replicas: 3})
	if err == nil {
		t.Fatalf("got warnings %q and no error, want an error", warnings)
	}
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || !strings.Contains(err.Error(), StreamName) {
		t.Errorf("got error %v, want a JetStream API error naming %s", err, StreamName)
	}
}

func TestEnsureStreamsBadConfig(t *testing.T) {
	t.Parallel()
	// Checked before any request: no server needed.
	if _, err := EnsureStreams(t.Context(), nil, StreamConfig{Replicas: 9}); err == nil {
		t.Error("got nil error for 9 replicas, want an error")
	}
}

func streamConfig(ctx context.Context, t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo().Config
}

func TestEnsureStreamsRetry(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	// A wrong setting fails at once instead of being retried.
	start := time.Now()
	if _, err := EnsureStreamsRetry(ctx, nil, StreamConfig{Replicas: 9}, nil); err == nil || time.Since(start) > time.Second {
		t.Fatalf("bad config: got %v after %s, want an immediate error", err, time.Since(start))
	}
	js := newJetStream(t)
	retries := 0
	if _, err := EnsureStreamsRetry(ctx, js, StreamConfig{}, func(error, time.Duration) { retries++ }); err != nil || retries != 0 {
		t.Fatalf("got %v after %d retries", err, retries)
	}
	// A cancelled context ends the retries.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := EnsureStreamsRetry(cctx, failingStreams{}, StreamConfig{}, nil); err == nil {
		t.Fatal("got nil with a cancelled context and a failing server")
	}
}

// failingStreams is a StreamManager whose every call fails.
type failingStreams struct{ jetstream.StreamManager }

func (failingStreams) Stream(context.Context, string) (jetstream.Stream, error) {
	return nil, errors.New("no server")
}

func (failingStreams) CreateOrUpdateStream(context.Context, jetstream.StreamConfig) (jetstream.Stream, error) {
	return nil, errors.New("no server")
}
