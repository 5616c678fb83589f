package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ensureStreams creates the streams with the defaults.
func ensureStreams(ctx context.Context, t *testing.T, js jetstream.JetStream) {
	t.Helper()
	if _, err := EnsureStreams(ctx, js, StreamConfig{}); err != nil {
		t.Fatalf("EnsureStreams: %v", err)
	}
}

func streamMsgs(ctx context.Context, t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(ctx, StreamName)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	return info.State.Msgs
}

func TestPublishStoresEnvelope(t *testing.T) {
	js := newJetStream(t)
	ctx := testContext(t, 30*time.Second)
	ensureStreams(ctx, t, js)

	env := validEnvelope()
	p := NewPublisher(js, PublisherConfig{})
	got, err := p.Publish(ctx, env)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if got.Stream != StreamName || got.Sequence == 0 || got.Duplicate {
		t.Errorf("got %+v, want stream %s, a sequence, not a duplicate", got, StreamName)
	}

	s, err := js.Stream(ctx, StreamName)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	msg, err := s.GetMsg(ctx, got.Sequence)
	if err != nil {
		t.Fatalf("GetMsg(%d): %v", got.Sequence, err)
	}
	if want := "wxpay.1230000109.transaction.success"; msg.Subject != want {
		t.Errorf("subject %q, want %q", msg.Subject, want)
	}
	if id, want := msg.Header.Get(jetstream.MsgIDHeader), env.DedupeKey; id != want {
		t.Errorf("header %s = %q, want %q", jetstream.MsgIDHeader, id, want)
	}
	var body Envelope
	if err := json.Unmarshal(msg.Data, &body); err != nil {
		t.Fatalf("body %s: %v", msg.Data, err)
	}
	if !body.ReceivedAt.Equal(env.ReceivedAt) {
		t.Errorf("received_at %v, want %v", body.ReceivedAt, env.ReceivedAt)
	}
	body.ReceivedAt = env.ReceivedAt
	if !reflect.DeepEqual(body, env) {
		t.Errorf("body\ngot  %+v\nwant %+v", body, env)
	}
	if err := body.Validate(); err != nil {
		t.Errorf("stored envelope does not validate: %v", err)
	}
}

func TestPublishDuplicate(t *testing.T) {
	js := newJetStream(t)
	ctx := testContext(t, 30*time.Second)
	ensureStreams(ctx, t, js)
	p := NewPublisher(js, PublisherConfig{})

	first, err := p.Publish(ctx, validEnvelope())
	if err != nil {
		t.Fatalf("first Publish: %v", err)
	}
	// WeChat's retry of the same notification, received later.
	retry := validEnvelope()
	retry.ReceivedAt = retry.ReceivedAt.Add(15 * time.Second)
	second, err := p.Publish(ctx, retry)
	if err != nil {
		t.Fatalf("second Publish: %v", err)
	}
	if want := (Published{Stream: StreamName, Sequence: first.Sequence, Duplicate: true}); second != want {
		t.Errorf("second Publish got %+v, want %+v", second, want)
	}
	if n := streamMsgs(ctx, t, js); n != 1 {
		t.Errorf("stream holds %d messages, want 1", n)
	}

	// Another state of the same business object is another event.
	other := validEnvelope()
	other.DedupeKey = RefundKey("50000000382019052709732678859", "SUCCESS")
	if got, err := p.Publish(ctx, other); err != nil || got.Duplicate {
		t.Errorf("Publish of another key: got %+v, %v; want a new message", got, err)
	}
	if n := streamMsgs(ctx, t, js); n != 2 {
		t.Errorf("stream holds %d messages, want 2", n)
	}
}

func TestPublishDuplicateStorm(t *testing.T) {
	js := newJetStream(t)
	ctx := testContext(t, 30*time.Second)
	ensureStreams(ctx, t, js)
	p := NewPublisher(js, PublisherConfig{})

	const n = 50
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		results = make([]Published, n)
		errs    = make([]error, n)
	)
	for i := range n {
		wg.Go(func() {
			<-start
			env := validEnvelope()
			env.ReceivedAt = env.ReceivedAt.Add(time.Duration(i) * time.Millisecond)
			results[i], errs[i] = p.Publish(ctx, env)
		})
	}
	close(start)
	wg.Wait()

	stored := 0
	for i := range n {
		if errs[i] != nil {
			t.Errorf("publisher %d: %v", i, errs[i])
			continue
		}
		if !results[i].Duplicate {
			stored++
		}
		if results[i].Sequence != results[0].Sequence {
			t.Errorf("publisher %d: sequence %d, want %d like publisher 0", i, results[i].Sequence, results[0].Sequence)
		}
	}
	if stored != 1 {
		t.Errorf("%d publishes were not duplicates, want 1", stored)
	}
	if got := streamMsgs(ctx, t, js); got != 1 {
		t.Errorf("stream holds %d messages, want 1", got)
	}
}

// TestPublishServerDown runs on an embedded server of its own whatever
// WXPAY_TEST_NATS_URL says, because it stops the server.
func TestPublishServerDown(t *testing.T) {
	t.Parallel()
	// Longer than DefaultPublishTimeout, so that a publisher that ignored
	// its Timeout would give up too early, and far shorter than the
	// caller's deadline, so that one that ignored both would be late.
	const timeout = DefaultPublishTimeout + time.Second
	tests := []struct {
		name      string
		breakIt   func(s interface{ Shutdown() }, nc *nats.Conn)
		wantCause error
		waits     bool // the publisher keeps trying until its Timeout
	}{
		{
			name:      "server shut down",
			breakIt:   func(s interface{ Shutdown() }, nc *nats.Conn) { s.Shutdown() },
			wantCause: context.DeadlineExceeded,
			waits:     true,
		},
		{
			name:      "connection closed",
			breakIt:   func(s interface{ Shutdown() }, nc *nats.Conn) { nc.Close() },
			wantCause: nats.ErrConnectionClosed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := startEmbeddedNATS(t)
			nc := connectNATS(t, s.ClientURL())
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			ctx := testContext(t, time.Minute)
			ensureStreams(ctx, t, js)
			p := NewPublisher(js, PublisherConfig{Timeout: timeout})
			if _, err := p.Publish(ctx, validEnvelope()); err != nil {
				t.Fatalf("Publish before the failure: %v", err)
			}

			tt.breakIt(s, nc)
			start := time.Now()
			got, err := p.Publish(ctx, validEnvelope())
			elapsed := time.Since(start)
			if !errors.Is(err, ErrPublish) || !errors.Is(err, tt.wantCause) {
				t.Errorf("got %+v, error %v; want an error wrapping %v and %v", got, err, ErrPublish, tt.wantCause)
			}
			if err != nil && !strings.Contains(err.Error(), notConnectedText) {
				t.Errorf("error %q does not say %q", err, notConnectedText)
			}
			if errors.Is(err, ErrMalformedEnvelope) {
				t.Errorf("error %v wraps %v, want it not to", err, ErrMalformedEnvelope)
			}
			if tt.waits && elapsed < DefaultPublishTimeout+timeout/6 {
				t.Errorf("Publish gave up after %v, want it to keep trying for its Timeout %v", elapsed, timeout)
			}
			if limit := 10 * timeout; elapsed > limit {
				t.Errorf("Publish took %v, want it to end at its Timeout %v (at most %v)", elapsed, timeout, limit)
			}
			if ctx.Err() != nil {
				t.Errorf("the caller's deadline ended Publish, want its Timeout %v to", timeout)
			}
		})
	}
}

// notConnectedText is what a publish error says when NATS is not connected.
const notConnectedText = "NATS is not connected (check NATS_URL"

// TestPublishNATSNeverReached: a connection that never reached its server
// (NATS_URL points at nothing; the commands connect with
// RetryOnFailedConnect) fails the publish with an error that says NATS is
// not connected, not that the server lacks header support.
func TestPublishNATSNeverReached(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://" + ln.Addr().String()
	ln.Close() // nothing listens there any more
	nc, err := nats.Connect(url, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(time.Second))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	p := NewPublisher(js, PublisherConfig{Timeout: 500 * time.Millisecond})
	_, err = p.Publish(testContext(t, time.Minute), validEnvelope())
	if !errors.Is(err, ErrPublish) || !errors.Is(err, nats.ErrHeadersNotSupported) {
		t.Fatalf("got error %v, want one wrapping %v and the original %v", err, ErrPublish, nats.ErrHeadersNotSupported)
	}
	if !strings.Contains(err.Error(), notConnectedText) {
		t.Errorf("error %q does not say %q", err, notConnectedText)
	}
}

func TestPublishCallerDeadline(t *testing.T) {
	t.Parallel()
	// The caller's deadline wins over a longer Timeout: publish to a
	// server that has no stream, so the publisher retries until it ends.
	s := startEmbeddedNATS(t)
	js, err := jetstream.New(connectNATS(t, s.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	const publishTimeout = time.Minute
	p := NewPublisher(js, PublisherConfig{Timeout: publishTimeout})
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = p.Publish(ctx, validEnvelope())
	elapsed := time.Since(start)
	if !errors.Is(err, ErrPublish) || !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Errorf("got error %v, want one wrapping %v and %v", err, ErrPublish, jetstream.ErrNoStreamResponse)
	}
	if elapsed > publishTimeout/4 {
		t.Errorf("Publish took %v, want it to end at the caller's 300ms deadline, far from its Timeout %v", elapsed, publishTimeout)
	}
}

func TestPublishRetriesUntilStreamExists(t *testing.T) {
	js := newJetStream(t)
	ctx := testContext(t, 30*time.Second)
	p := NewPublisher(js, PublisherConfig{Timeout: 5 * time.Second})

	// No stream yet: no responders. The stream appears while Publish waits.
	done := make(chan error, 1)
	go func() {
		_, err := p.Publish(ctx, validEnvelope())
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	ensureStreams(ctx, t, js)
	if err := <-done; err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if n := streamMsgs(ctx, t, js); n != 1 {
		t.Errorf("stream holds %d messages, want 1", n)
	}
}

func TestPublishWrongStream(t *testing.T) {
	js := newJetStream(t)
	ctx := testContext(t, 30*time.Second)
	// Someone else's stream captures the subjects; WXPAY does not exist.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: otherStreamName, Subjects: []string{"wxpay.*.*.*"}}); err != nil {
		t.Fatalf("CreateStream: %v", err)
	}
	p := NewPublisher(js, PublisherConfig{})
	_, err := p.Publish(ctx, validEnvelope())
	if !errors.Is(err, ErrPublish) {
		t.Errorf("got error %v, want %v", err, ErrPublish)
	}
}

// failingPublisher fails the test if it is asked to publish.
type failingPublisher struct {
	jetstream.Publisher // nil: any other method panics
	t                   *testing.T
}

func (f failingPublisher) PublishMsg(context.Context, *nats.Msg, ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	f.t.Error("PublishMsg called for an envelope that should have been rejected")
	return nil, errors.New("unexpected publish")
}

func TestPublishRejectsMalformedEnvelope(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(e *Envelope)
	}{
		{"no dedupe key", func(e *Envelope) { e.DedupeKey = "" }},
		{"mchid with a dot", func(e *Envelope) { e.MchID = "1230000109.refund" }},
		{"mchid wildcard", func(e *Envelope) { e.MchID = ">" }},
		{"no event type", func(e *Envelope) { e.EventType = "" }},
		{"unknown source", func(e *Envelope) { e.Source = "test" }},
		{"resource not an object", func(e *Envelope) { e.Resource = json.RawMessage(`[]`) }},
		// Publish leaves these to the encoder's compaction: still refused.
		{"resource invalid after its brace", func(e *Envelope) { e.Resource = json.RawMessage(`{"a":}`) }},
		{"resource with trailing bytes", func(e *Envelope) { e.Resource = json.RawMessage(`{"a":1}x`) }},
		{"resource two objects", func(e *Envelope) { e.Resource = json.RawMessage(`{"a":1}{"b":2}`) }},
		{"resource empty", func(e *Envelope) { e.Resource = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := NewPublisher(failingPublisher{t: t}, PublisherConfig{})
			env := validEnvelope()
			tt.edit(&env)
			_, err := p.Publish(t.Context(), env)
			if !errors.Is(err, ErrMalformedEnvelope) || errors.Is(err, ErrPublish) {
				t.Errorf("got error %v, want %v and not %v", err, ErrMalformedEnvelope, ErrPublish)
			}
		})
	}
}

// flakyPublisher answers with errs in turn, then acknowledges.
type flakyPublisher struct {
	jetstream.Publisher
	mu    sync.Mutex
	errs  []error
	calls int
}

func (f *flakyPublisher) PublishMsg(context.Context, *nats.Msg, ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		return nil, err
	}
	return &jetstream.PubAck{Stream: StreamName, Sequence: 7}, nil
}

func TestPublishRetryClassification(t *testing.T) {
	t.Parallel()
	unavailable := fmt.Errorf("nats: %w", &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"})
	tests := []struct {
		name      string
		errs      []error
		wantCalls int
		wantErr   error
	}{
		{"no responders, then ack", []error{jetstream.ErrNoStreamResponse, jetstream.ErrNoStreamResponse}, 3, nil},
		{"temporarily unavailable, then ack", []error{unavailable}, 2, nil},
		{"reconnecting, then ack", []error{nats.ErrConnectionReconnecting}, 2, nil},
		{"closed connection is final", []error{nats.ErrConnectionClosed}, 1, nats.ErrConnectionClosed},
		{"message too large is final", []error{nats.ErrMaxPayload}, 1, nats.ErrMaxPayload},
		{"other API error is final", []error{fmt.Errorf("nats: %w", &jetstream.APIError{Code: 400, ErrorCode: 10060, Description: "expected stream does not match"})}, 1, ErrPublish},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &flakyPublisher{errs: tt.errs}
			p := NewPublisher(f, PublisherConfig{Timeout: 2 * time.Second})
			got, err := p.Publish(t.Context(), validEnvelope())
			if tt.wantErr == nil {
				if err != nil || got != (Published{Stream: StreamName, Sequence: 7}) {
					t.Errorf("got %+v, %v; want sequence 7, nil", got, err)
				}
			} else if !errors.Is(err, tt.wantErr) || !errors.Is(err, ErrPublish) {
				t.Errorf("got error %v, want %v wrapped in %v", err, tt.wantErr, ErrPublish)
			}
			if f.calls != tt.wantCalls {
				t.Errorf("got %d attempts, want %d", f.calls, tt.wantCalls)
			}
		})
	}
}
