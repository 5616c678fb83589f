package events

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

// Headers of a forwarded event (the worker's forward handler).
const (
	HeaderIdempotencyKey  = "Idempotency-Key"
	HeaderForwardTime     = "Wxpay-Notify-Timestamp"
	HeaderForwardSig      = "Wxpay-Notify-Signature"
	forwardSigVersion     = "v1="
	DefaultForwardMaxSkew = 5 * time.Minute
)

// Errors of VerifyForward; each is wrapped with detail.
var (
	ErrForwardMissingHeader = errors.New("events: forwarded event lacks a signature header")
	ErrForwardSignature     = errors.New("events: forwarded event signature does not match")
	ErrForwardTimestamp     = errors.New("events: forwarded event timestamp outside the tolerance")
)

// SignForward returns the Wxpay-Notify-Signature value for body sent at
// timestamp (unix seconds): "v1=" and the hex HMAC-SHA256 with secret over
// "<timestamp>.<body>".
func SignForward(secret []byte, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(strconv.FormatInt(timestamp, 10)))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return forwardSigVersion + hex.EncodeToString(mac.Sum(nil))
}

// VerifyForward checks a forwarded event as a Go receiver gets it: the
// signature over the raw body, compared in constant time, and a timestamp
// at most tolerance away from now (DefaultForwardMaxSkew when zero). Verify
// before parsing, and use Idempotency-Key to make processing idempotent.
func VerifyForward(secret []byte, header http.Header, body []byte, tolerance time.Duration, now time.Time) error {
	if tolerance <= 0 {
		tolerance = DefaultForwardMaxSkew
	}
	ts, sig := header.Get(HeaderForwardTime), header.Get(HeaderForwardSig)
	if ts == "" || sig == "" {
		return fmt.Errorf("%w: need %s and %s", ErrForwardMissingHeader, HeaderForwardTime, HeaderForwardSig)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s is not unix seconds", ErrForwardTimestamp, HeaderForwardTime)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: %s off (allowed %s; check the clocks)", ErrForwardTimestamp, d.Round(time.Second), tolerance)
	}
	// Several signatures may be sent during a secret rotation: any v1 match counts.
	want := SignForward(secret, sec, body)
	for _, s := range strings.Split(sig, ",") {
		if hmac.Equal([]byte(strings.TrimSpace(s)), []byte(want)) {
			return nil
		}
	}
	return ErrForwardSignature
}
