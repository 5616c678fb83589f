package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers of a dead letter on WXPAY_DLQ. Its body is the original
// message body, byte for byte.
const (
	// HeaderDLQReason is the error text that sent the event to the dead
	// letters ("no handler", a handler's error, "events: malformed
	// envelope: ...", ...), on one line and at most maxReasonLen bytes.
	HeaderDLQReason = "Wxpay-Dlq-Reason"
	// HeaderDLQDeliveries is how often the consumer had received the event
	// (NumDelivered), in decimal.
	HeaderDLQDeliveries = "Wxpay-Dlq-Deliveries"
	// HeaderDLQConsumer is the consumer (team) that gave up on the event.
	HeaderDLQConsumer = "Wxpay-Dlq-Consumer"
	// HeaderDLQSubject is the event's original subject on WXPAY, where a
	// replay publishes it again.
	HeaderDLQSubject = "Wxpay-Dlq-Subject"
	// HeaderDLQStreamSeq is the event's sequence in the WXPAY stream, in
	// decimal.
	HeaderDLQStreamSeq = "Wxpay-Dlq-Stream-Seq"
)

// maxReasonLen bounds the Wxpay-Dlq-Reason header and the Term reason.
const maxReasonLen = 1024

// dlqMsgID is the Nats-Msg-Id of the dead letter of stream sequence seq
// for consumer: dead-lettering the same delivery again after a crash
// (between the DLQ publish and the Term) is dropped by WXPAY_DLQ's
// duplicate window.
func dlqMsgID(consumer string, seq uint64) string {
	return consumer + ":" + strconv.FormatUint(seq, 10)
}

// replayMsgID is the Nats-Msg-Id of the replay of dead letter dlqSeq: new
// to WXPAY's duplicate window (which remembers the dedupe_key, not this),
// and the same when a replay is repeated after a crash between the
// publish and the delete.
func replayMsgID(dlqSeq uint64) string {
	return "replay:" + strconv.FormatUint(dlqSeq, 10)
}

// dlqSubjectFor returns the dead-letter subject of an event of subject
// (wxpay.<mchid>.<event type>) given up by consumer:
// wxpaydlq.<consumer>.<mchid>.<event type>. The parts come from the subject
// rather than from the envelope, so that a malformed envelope gets a
// subject too; for a well-formed one they are the same.
func dlqSubjectFor(consumer, subject string) string {
	rest := strings.TrimPrefix(subject, subjectPrefix)
	mchid, eventType, _ := strings.Cut(rest, ".")
	if !validToken(mchid) {
		mchid = "unknown"
	}
	if eventType == "" {
		eventType = "unknown"
	}
	return DLQSubject(consumer, mchid, eventType)
}

// headerValue makes s a safe header value: one line (control characters
// become spaces), valid UTF-8, at most maxReasonLen bytes.
func headerValue(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > maxReasonLen {
		cut := maxReasonLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}

// copyAppHeaders copies h without NATS's own headers (Nats-*) and without
// earlier dead-letter headers.
func copyAppHeaders(h nats.Header) nats.Header {
	out := nats.Header{}
	for k, v := range h {
		ck := strings.ToLower(k)
		if strings.HasPrefix(ck, "nats-") || strings.HasPrefix(ck, "wxpay-dlq-") {
			continue
		}
		out[k] = append([]string(nil), v...)
	}
	return out
}

// deadLetterMsg builds the dead letter of one delivery: the original body
// on dlqSubjectFor(consumer, subject), the application headers of the
// original, and the Wxpay-Dlq-* headers.
func deadLetterMsg(consumer, subject string, header nats.Header, data []byte, streamSeq, deliveries uint64, reason string) *nats.Msg {
	h := copyAppHeaders(header)
	h.Set(HeaderDLQReason, headerValue(reason))
	h.Set(HeaderDLQDeliveries, strconv.FormatUint(deliveries, 10))
	h.Set(HeaderDLQConsumer, consumer)
	h.Set(HeaderDLQSubject, subject)
	h.Set(HeaderDLQStreamSeq, strconv.FormatUint(streamSeq, 10))
	return &nats.Msg{Subject: dlqSubjectFor(consumer, subject), Header: h, Data: data}
}

// publishDeadLetter publishes the dead letter and waits for WXPAY_DLQ's
// acknowledgement. Only a nil error allows the caller to Term the
// original.
func publishDeadLetter(ctx context.Context, js jetstream.Publisher, m *nats.Msg, consumer string, streamSeq uint64) error {
	ack, err := js.PublishMsg(ctx, m,
		jetstream.WithMsgID(dlqMsgID(consumer, streamSeq)),
		jetstream.WithExpectStream(DLQStreamName))
	if err != nil {
		return fmt.Errorf("events: publishing dead letter on %s: %w", m.Subject, err)
	}
	if ack.Stream != DLQStreamName {
		return fmt.Errorf("events: dead letter on %s was stored by stream %q, not %s", m.Subject, ack.Stream, DLQStreamName)
	}
	return nil
}

// DLQFilter selects dead letters for ListDeadLetters and
// ReplayDeadLetters. Its zero value selects all of them.
type DLQFilter struct {
	// Consumer keeps the dead letters of one consumer (team); empty means
	// every consumer.
	Consumer string
	// MchID keeps the dead letters of one merchant; empty means every
	// merchant.
	MchID string
	// Subject keeps the dead letters whose original subject matches this
	// NATS pattern, for example wxpay.*.refund.> (see Pattern); empty
	// means any.
	Subject string
	// Limit stops after this many dead letters (oldest first); 0 or less
	// means no limit.
	Limit int
}

// dlqFilterSubject returns the WXPAY_DLQ subject filter for f, after
// checking its fields.
func (f DLQFilter) dlqFilterSubject() (string, error) {
	consumer, mchid := "*", "*"
	if f.Consumer != "" {
		if !validToken(f.Consumer) {
			return "", fmt.Errorf("events: dead-letter filter: consumer %q is not a subject token", f.Consumer)
		}
		consumer = f.Consumer
	}
	if f.MchID != "" {
		if !ValidMchID(f.MchID) {
			return "", fmt.Errorf("events: dead-letter filter: merchant id %q is not a subject token", f.MchID)
		}
		mchid = f.MchID
	}
	if f.Subject != "" {
		if err := checkPattern(f.Subject); err != nil {
			return "", fmt.Errorf("events: dead-letter filter: %w", err)
		}
	}
	return dlqSubjectPrefix + consumer + "." + mchid + ".>", nil
}

// DeadLetter is one message of the WXPAY_DLQ stream.
type DeadLetter struct {
	// Seq is the dead letter's sequence in WXPAY_DLQ.
	Seq uint64
	// Subject is its subject, wxpaydlq.<consumer>.<mchid>.<event type>.
	Subject string
	// OriginalSubject is the event's subject on WXPAY (Wxpay-Dlq-Subject).
	OriginalSubject string
	// StreamSeq is the event's sequence on WXPAY (Wxpay-Dlq-Stream-Seq).
	StreamSeq uint64
	// Reason is why it was dead-lettered (Wxpay-Dlq-Reason).
	Reason string
	// Deliveries is how often the consumer had received it
	// (Wxpay-Dlq-Deliveries).
	Deliveries int
	// Consumer is the consumer that gave up on it (Wxpay-Dlq-Consumer).
	Consumer string
	// Time is when it was dead-lettered.
	Time time.Time
	// Header holds all the dead letter's headers.
	Header nats.Header
	// Data is the original message body, byte for byte.
	Data []byte
	// Envelope is Data decoded; it is the zero Envelope when Data is not a
	// JSON envelope (a dead letter for a malformed envelope), and it is not
	// validated.
	Envelope Envelope
}

// parseDeadLetter reads a stored dead letter.
func parseDeadLetter(m *jetstream.RawStreamMsg) DeadLetter {
	dl := DeadLetter{
		Seq:             m.Sequence,
		Subject:         m.Subject,
		OriginalSubject: m.Header.Get(HeaderDLQSubject),
		Reason:          m.Header.Get(HeaderDLQReason),
		Consumer:        m.Header.Get(HeaderDLQConsumer),
		Time:            m.Time,
		Header:          m.Header,
		Data:            m.Data,
	}
	dl.Deliveries, _ = strconv.Atoi(m.Header.Get(HeaderDLQDeliveries))
	dl.StreamSeq, _ = strconv.ParseUint(m.Header.Get(HeaderDLQStreamSeq), 10, 64)
	if err := json.Unmarshal(m.Data, &dl.Envelope); err != nil {
		dl.Envelope = Envelope{}
	}
	return dl
}

// scanDeadLetters calls fn on every dead letter that f selects, oldest
// first, until fn returns an error or the limit is reached. It reads
// with direct message gets (next by subject) and creates no consumer.
func scanDeadLetters(ctx context.Context, js jetstream.StreamManager, f DLQFilter, fn func(DeadLetter) error) error {
	subject, err := f.dlqFilterSubject()
	if err != nil {
		return err
	}
	s, err := js.Stream(ctx, DLQStreamName)
	if err != nil {
		return fmt.Errorf("events: looking up stream %s: %w", DLQStreamName, err)
	}
	n := 0
	for seq := uint64(1); f.Limit <= 0 || n < f.Limit; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("events: reading %s from sequence %d: %w", DLQStreamName, seq, err)
		}
		seq = m.Sequence + 1
		dl := parseDeadLetter(m)
		if f.Subject != "" && !matchSubject(f.Subject, dl.OriginalSubject) {
			continue
		}
		n++
		if err := fn(dl); err != nil {
			return err
		}
	}
	return nil
}

// ListDeadLetters returns the dead letters that filter selects, oldest
// first (at most filter.Limit of them). It changes nothing.
func ListDeadLetters(ctx context.Context, js jetstream.JetStream, filter DLQFilter) ([]DeadLetter, error) {
	var out []DeadLetter
	err := scanDeadLetters(ctx, js, filter, func(dl DeadLetter) error {
		out = append(out, dl)
		return nil
	})
	return out, err
}

// ReplayDeadLetters moves the dead letters that filter selects back to
// WXPAY, oldest first, and returns how many it moved. Each is published on
// its original subject (Wxpay-Dlq-Subject) with its original body and
// application headers and the Nats-Msg-Id replay:<dead letter seq>, so
// WXPAY's duplicate window, which remembers the dedupe_key, does not drop
// it, while a repeated replay of the same dead letter inside the window
// is dropped. The dead letter is deleted from WXPAY_DLQ only after WXPAY
// acknowledged the publish; a crash in between leaves it there to be
// replayed again, harmlessly.
//
// A replayed event reaches every consumer whose filter matches its
// subject, not only the one that dead-lettered it. Consumers that had
// processed it find their done marker (if it is younger than
// RouterConfig.DoneTTL) and acknowledge it without running their
// handlers; filter by consumer to replay one team's failures, and keep
// handlers idempotent on their own records.
//
// A dead letter whose original subject is missing or not a WXPAY subject
// is skipped and reported in the returned error; replay stops at the
// first publish or delete that fails.
func ReplayDeadLetters(ctx context.Context, js jetstream.JetStream, filter DLQFilter) (int, error) {
	s, err := js.Stream(ctx, DLQStreamName)
	if err != nil {
		return 0, fmt.Errorf("events: looking up stream %s: %w", DLQStreamName, err)
	}
	replayed := 0
	var skipped []error
	err = scanDeadLetters(ctx, js, filter, func(dl DeadLetter) error {
		if !literalWXPAYSubject(dl.OriginalSubject) {
			skipped = append(skipped, fmt.Errorf("events: dead letter %d has no replayable %s header (%q)", dl.Seq, HeaderDLQSubject, dl.OriginalSubject))
			return nil
		}
		m := &nats.Msg{Subject: dl.OriginalSubject, Header: copyAppHeaders(dl.Header), Data: dl.Data}
		if _, err := js.PublishMsg(ctx, m,
			jetstream.WithMsgID(replayMsgID(dl.Seq)),
			jetstream.WithExpectStream(StreamName)); err != nil {
			return fmt.Errorf("events: replaying dead letter %d to %s: %w", dl.Seq, dl.OriginalSubject, err)
		}
		if err := s.DeleteMsg(ctx, dl.Seq); err != nil {
			// Deleted meanwhile by a concurrent replay: it is back on
			// WXPAY either way.
			if _, gerr := s.GetMsg(ctx, dl.Seq); !errors.Is(gerr, jetstream.ErrMsgNotFound) {
				return fmt.Errorf("events: deleting replayed dead letter %d: %w", dl.Seq, err)
			}
		}
		replayed++
		return nil
	})
	return replayed, errors.Join(append([]error{err}, skipped...)...)
}

// literalWXPAYSubject reports whether s is a wildcard-free subject of the
// WXPAY stream: wxpay.<mchid>.<event type tokens>.
func literalWXPAYSubject(s string) bool {
	if checkPattern(s) != nil || strings.Count(s, ".") < 2 {
		return false
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "*" || tok == ">" {
			return false
		}
	}
	return true
}
