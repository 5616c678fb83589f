package events

import (
	"bytes"
	"context"
	"crypto/rand"
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

// dlqMsgID is the Nats-Msg-Id of consumer's dead letter of the WXPAY
// message stored at streamSeq at time stored. The sequence alone repeats
// once WXPAY is deleted and created again; with the storage time the id
// names one stored message for good. Every delivery of that message gets
// the same id, so dead-lettering it again after a crash or a timed-out
// publish (between the DLQ publish and the Term) is dropped by
// WXPAY_DLQ's duplicate window, while a replayed copy, stored anew, gets
// an id of its own.
func dlqMsgID(consumer string, streamSeq uint64, stored time.Time) string {
	return consumer + ":" + strconv.FormatUint(streamSeq, 10) + ":" + strconv.FormatInt(stored.UnixNano(), 10)
}

// deadLetterMsgID is dlqMsgID of a delivered message.
func deadLetterMsgID(consumer string, msg jetstream.Msg) string {
	var seq uint64
	var stored time.Time
	if meta, err := msg.Metadata(); err == nil {
		seq, stored = meta.Sequence.Stream, meta.Timestamp
	}
	return dlqMsgID(consumer, seq, stored)
}

// replayMsgID is the Nats-Msg-Id of the replay of dead letter dl: new to
// WXPAY's duplicate window (which remembers the dedupe_key, not this),
// and the same when a replay of dl is repeated after a crash between the
// publish and the delete. Like dlqMsgID it holds the dead letter's storage
// time, since WXPAY_DLQ's sequences restart when it is created again.
func replayMsgID(dl DeadLetter) string {
	return "replay:" + strconv.FormatUint(dl.Seq, 10) + ":" + strconv.FormatInt(dl.Time.UnixNano(), 10)
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

// publishDeadLetter publishes the dead letter m under msgID (see
// dlqMsgID) and waits for WXPAY_DLQ's acknowledgement. Only a nil error
// allows the caller to Term the original.
func publishDeadLetter(ctx context.Context, js jetstream.JetStream, m *nats.Msg, msgID string) error {
	if err := publishStored(ctx, js, DLQStreamName, m, msgID); err != nil {
		return fmt.Errorf("events: publishing dead letter on %s: %w", m.Subject, err)
	}
	return nil
}

// publishStored publishes m to stream under msgID and returns nil once
// the stream holds m. JetStream answers Duplicate for any message that
// reuses an id inside the duplicate window, also when the message stored
// under it was another one or has been deleted since (a dead letter
// already replayed). So a Duplicate counts only when the message stored
// under msgID has m's subject and body; otherwise m is published again
// under msgID plus a random suffix. An id reused by accident thus costs
// at worst a second copy, never the message.
func publishStored(ctx context.Context, js jetstream.JetStream, stream string, m *nats.Msg, msgID string) error {
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	ack, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(stream))
	if err != nil {
		return err
	}
	if ack.Stream != stream {
		return fmt.Errorf("stored by stream %q, not %s", ack.Stream, stream)
	}
	if !ack.Duplicate {
		return nil
	}
	same, err := storedAs(ctx, js, stream, ack.Sequence, m, msgID)
	if err != nil {
		return fmt.Errorf("checking the message stored under the duplicate id %s: %w", msgID, err)
	}
	if same {
		return nil
	}
	fresh := msgID + ":" + rand.Text()
	ack, err = js.PublishMsg(ctx, m, jetstream.WithMsgID(fresh), jetstream.WithExpectStream(stream))
	switch {
	case err != nil:
		return fmt.Errorf("publishing again under %s (%s named another message): %w", fresh, msgID, err)
	case ack.Stream != stream:
		return fmt.Errorf("stored by stream %q, not %s", ack.Stream, stream)
	case ack.Duplicate:
		return fmt.Errorf("the fresh id %s was a duplicate too", fresh)
	}
	return nil
}

// storedAs reports whether stream holds m (same subject and body) under
// msgID at seq.
func storedAs(ctx context.Context, js jetstream.StreamManager, stream string, seq uint64, m *nats.Msg, msgID string) (bool, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return false, err
	}
	got, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return got.Subject == m.Subject && got.Header.Get(jetstream.MsgIDHeader) == msgID && bytes.Equal(got.Data, m.Data), nil
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
// with message gets (next by subject) and creates no consumer. Dead
// letters stored after the scan started are left out: a replayed event
// that fails again at once must not be replayed again by the same scan,
// over and over.
func scanDeadLetters(ctx context.Context, js jetstream.StreamManager, f DLQFilter, fn func(DeadLetter) error) error {
	subject, err := f.dlqFilterSubject()
	if err != nil {
		return err
	}
	s, err := js.Stream(ctx, DLQStreamName)
	if err != nil {
		return fmt.Errorf("events: looking up stream %s: %w", DLQStreamName, err)
	}
	last := s.CachedInfo().State.LastSeq
	n := 0
	for seq := uint64(1); f.Limit <= 0 || n < f.Limit; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("events: reading %s from sequence %d: %w", DLQStreamName, seq, err)
		}
		if m.Sequence > last {
			return nil
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
// application headers and the Nats-Msg-Id
// replay:<dead letter seq>:<its storage time in Unix nanoseconds>, so
// WXPAY's duplicate window, which remembers the dedupe_key, does not drop
// it, while a repeated replay of the same dead letter inside the window
// is dropped (a Duplicate answer counts only when WXPAY holds this very
// event under that id). The dead letter is deleted from WXPAY_DLQ only
// after WXPAY acknowledged the publish; a crash in between leaves it
// there to be replayed again, harmlessly.
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
		if err := publishStored(ctx, js, StreamName, m, replayMsgID(dl)); err != nil {
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
