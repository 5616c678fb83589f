package events

import (
	"strings"
	"unicode"
)

// Stream names and the subjects they capture.
const (
	// StreamName is the JetStream stream that holds every event.
	StreamName = "WXPAY"
	// DLQStreamName is the JetStream stream that holds dead letters.
	DLQStreamName = "WXPAY_DLQ"
	// SubjectAll is the subject filter of StreamName: every event subject
	// wxpay.<mchid>.<event type>.
	SubjectAll = "wxpay.>"
	// DLQSubjectAll is the subject filter of DLQStreamName: every dead-letter
	// subject wxpaydlq.<consumer>.<mchid>.<event type>.
	DLQSubjectAll = "wxpaydlq.>"
)

// Wildcards for Pattern.
const (
	// AnyMerchant matches every merchant in Pattern (a NATS "*" token).
	AnyMerchant = "*"
	// AnyEventType matches every event type in Pattern (a NATS ">" tail).
	AnyEventType = ">"
)

// The project's own event types. WeChat's event types
// (wxpay.EventTransactionSuccess, wxpay.EventRefundSuccess, ...) live in
// pkg/wxpay; these are the ones this project adds. Like WeChat's, they are
// upper case in the envelope and lower case in subjects, so
// EventTransactionClosed is published on wxpay.<mchid>.transaction.closed.
const (
	// EventTransactionClosed: an unpaid order was closed (by us or by
	// WeChat); the reconciler publishes it.
	EventTransactionClosed = "TRANSACTION.CLOSED"
	// EventTransactionRevoked: a payment was revoked (trade_state REVOKED).
	EventTransactionRevoked = "TRANSACTION.REVOKED"
	// EventTransactionPayError: a payment failed (trade_state PAYERROR).
	EventTransactionPayError = "TRANSACTION.PAYERROR"
	// EventBillReady: a daily bill was downloaded, verified and stored.
	EventBillReady = "BILL.READY"
	// EventBillMismatch: one discrepancy between a bill and the ledger.
	EventBillMismatch = "BILL.MISMATCH"
	// EventOrderCreated: a business system announces an order to track.
	EventOrderCreated = "ORDER.CREATED"
	// EventRefundCreated: a business system announces a refund to track.
	EventRefundCreated = "REFUND.CREATED"
)

const (
	subjectPrefix    = "wxpay."
	dlqSubjectPrefix = "wxpaydlq."
)

// Subject returns the subject an event is published on:
// wxpay.<mchid>.<eventType in lower case>, for example
// wxpay.1230000109.transaction.success. It is the only place an event
// subject is built.
//
// Subject does not check its arguments, so that it can be used in
// expressions; a merchant id that is not a single NATS token (see
// ValidMchID) yields a subject that names the wrong merchant or none.
// Callers that take a merchant id from outside check it with ValidMchID
// first; Publisher.Publish and Envelope.Validate do.
func Subject(mchid, eventType string) string {
	return subjectPrefix + mchid + "." + strings.ToLower(eventType)
}

// Pattern returns a subject filter for registrations and consumers. It is
// Subject with wildcards allowed: mchid may be AnyMerchant and eventType
// may be AnyEventType or contain "*" tokens, for example
// Pattern(AnyMerchant, wxpay.EventRefundSuccess) is wxpay.*.refund.success
// and Pattern("1230000109", AnyEventType) is wxpay.1230000109.>.
func Pattern(mchid, eventType string) string {
	return Subject(mchid, eventType)
}

// DLQSubject returns the subject a dead letter is published on:
// wxpaydlq.<consumer>.<mchid>.<eventType in lower case>, so that dead
// letters can be replayed per team and per merchant. Like Subject it does
// not check its arguments.
func DLQSubject(consumer, mchid, eventType string) string {
	return dlqSubjectPrefix + consumer + "." + mchid + "." + strings.ToLower(eventType)
}

// ValidMchID reports whether mchid can be used in a subject: it must be a
// single NATS subject token, that is non-empty, with no ".", "*" or ">",
// and no white space or control characters. WeChat merchant ids are digits,
// so every real one is valid.
func ValidMchID(mchid string) bool {
	return validToken(mchid)
}

// validToken reports whether s is one literal NATS subject token.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		switch {
		case r == '.', r == '*', r == '>':
			return false
		case unicode.IsSpace(r), unicode.IsControl(r), r == unicode.ReplacementChar:
			return false
		}
	}
	return true
}

// validEventType reports whether eventType makes valid literal subject
// tokens: one or more dot-separated tokens, each a validToken
// (TRANSACTION.SUCCESS, BILL.READY).
func validEventType(eventType string) bool {
	if eventType == "" {
		return false
	}
	for tok := range strings.SplitSeq(eventType, ".") {
		if !validToken(tok) {
			return false
		}
	}
	return true
}
