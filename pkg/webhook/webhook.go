// Package webhook signs and verifies the events the worker's forward
// handler POSTs to a team's HTTP receiver, so that a receiver can check
// that a request came from its worker, unchanged and recently.
//
// A forwarded request carries the envelope JSON as its body and three
// headers: HeaderIdempotencyKey (the event's dedupe_key: process each key
// once), HeaderTimestamp (unix seconds when it was sent) and
// HeaderSignature ("v1=" and the hex HMAC-SHA256 with the shared secret
// over "<timestamp>.<body>"; during a secret rotation several
// comma-separated signatures may be sent, and any match counts).
//
// A receiver calls Verify on the raw body before parsing it. The package
// imports only the standard library, so a receiver written in Go does not
// pull in the worker's NATS, Redis or metrics dependencies.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Headers of a forwarded event.
const (
	HeaderIdempotencyKey = "Idempotency-Key"
	HeaderTimestamp      = "Wxpay-Notify-Timestamp"
	HeaderSignature      = "Wxpay-Notify-Signature"
)

// DefaultTolerance is how far a request's timestamp may be from the
// receiver's clock when Verify is given no tolerance.
const DefaultTolerance = 5 * time.Minute

// sigVersion starts every signature of the current scheme.
const sigVersion = "v1="

// Errors of Verify; each is wrapped with detail.
var (
	ErrMissingHeader = errors.New("webhook: forwarded event lacks a signature header")
	ErrSignature     = errors.New("webhook: forwarded event signature does not match")
	ErrTimestamp     = errors.New("webhook: forwarded event timestamp outside the tolerance")
)

// Sign returns the HeaderSignature value for body sent at timestamp (unix
// seconds): "v1=" and the hex HMAC-SHA256 with secret over
// "<timestamp>.<body>".
func Sign(secret []byte, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(strconv.FormatInt(timestamp, 10)))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return sigVersion + hex.EncodeToString(mac.Sum(nil))
}

// Verify checks a forwarded event as a Go receiver gets it: the signature
// over the raw body, compared in constant time, and a timestamp at most
// tolerance away from now (DefaultTolerance when zero). Verify before
// parsing, and use HeaderIdempotencyKey to make processing idempotent.
// The error wraps ErrMissingHeader, ErrTimestamp or ErrSignature.
func Verify(secret []byte, header http.Header, body []byte, tolerance time.Duration, now time.Time) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	ts, sig := header.Get(HeaderTimestamp), header.Get(HeaderSignature)
	if ts == "" || sig == "" {
		return fmt.Errorf("%w: need %s and %s", ErrMissingHeader, HeaderTimestamp, HeaderSignature)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s is not unix seconds", ErrTimestamp, HeaderTimestamp)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: %s off (allowed %s; check the clocks)", ErrTimestamp, d.Round(time.Second), tolerance)
	}
	// Several signatures may be sent during a secret rotation: any v1 match counts.
	want := Sign(secret, sec, body)
	for _, s := range strings.Split(sig, ",") {
		if hmac.Equal([]byte(strings.TrimSpace(s)), []byte(want)) {
			return nil
		}
	}
	return ErrSignature
}
