package ingress

import (
	"errors"
	"net/http"

	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// outcome is what one notification came to: the label of the metric
// wxpay_ingress_requests_total and of the log line, the HTTP status WeChat
// is answered, the level of the log line and what the operator should
// check (logged as "check" when not empty).
//
// The answer's message is the error's own text when the status is 4xx
// (what was wrong with the request), and a fixed text naming the class
// when it is 5xx (a failure here): WeChat, or whoever posts, never learns
// internal addresses or a dependency's error, which the log line keeps.
type outcome struct {
	// err is the class of errors the outcome answers (matched with
	// errors.Is, in the order of classes); nil for outcomes the handler
	// picks itself.
	err   error
	label string
	// status is the answer; 0 takes wxpay.NotificationStatus of the error,
	// the SDK's answer for its own error classes, so the two never differ.
	status int
	level  zerolog.Level
	check  string
	// answer is the fixed message of a 5xx answer; empty means
	// internalAnswer.
	answer string
}

// internalAnswer is the message of a 5xx answer of an outcome without its
// own.
const internalAnswer = "internal error, retry later"

// messageOf is the message WeChat is answered for err with status.
func (o *outcome) messageOf(status int, err error) string {
	switch {
	case status < http.StatusInternalServerError:
		return err.Error()
	case o.answer != "":
		return o.answer
	}
	return internalAnswer
}

// statusOf is the HTTP status of o for err.
func (o *outcome) statusOf(err error) int {
	if o.status != 0 {
		return o.status
	}
	return wxpay.NotificationStatus(err)
}

// The outcomes the handler picks itself, before or after verification.
var (
	outOK            = &outcome{label: "ok", status: http.StatusOK, level: zerolog.InfoLevel}
	outDuplicate     = &outcome{label: "duplicate", status: http.StatusOK, level: zerolog.InfoLevel}
	outBusy          = &outcome{label: "busy", status: http.StatusServiceUnavailable, level: zerolog.WarnLevel, answer: "too many notifications in flight (MAX_IN_FLIGHT), retry later"}
	outTooLarge      = &outcome{label: "too_large", status: http.StatusRequestEntityTooLarge, level: zerolog.WarnLevel}
	outSlowUpload    = &outcome{label: "slow_upload", status: http.StatusRequestTimeout, level: zerolog.WarnLevel}
	outPublishFailed = &outcome{label: "publish_failed", status: http.StatusServiceUnavailable, level: zerolog.ErrorLevel, answer: "event not stored, retry later"}
	// outInternal answers an error of no class below.
	outInternal = &outcome{label: "internal_error", level: zerolog.ErrorLevel}
)

// classes maps each class of error to its outcome; the first match wins,
// so a narrower class comes before the class it wraps (a signature probe
// is also a bad signature; a missing v2 key is also a configuration error).
var classes = []*outcome{
	{err: errUnknownMerchant, label: "unknown_merchant", status: http.StatusNotFound, level: zerolog.WarnLevel},
	// Authentic, refused, and lost after WeChat's retries unless the
	// notify_url is fixed.
	{err: errMerchantMismatch, label: "merchant_mismatch", status: http.StatusBadRequest, level: zerolog.ErrorLevel,
		check: "the notify_url registered for the merchant the notification names: it posts to another merchant's endpoint"},
	// Anyone can post <xml> here; a real v2 notification is retried by
	// WeChat and shows in the metric.
	{err: errV2NotConfigured, label: "v2_not_configured", status: http.StatusInternalServerError, level: zerolog.WarnLevel,
		check: "WXPAY_APIV2_KEY of this merchant, if it still receives v2 notifications", answer: "v2 notifications are not configured for this merchant (WXPAY_APIV2_KEY)"},
	{err: wxpay.ErrInvalidConfig, label: "config_error", status: http.StatusInternalServerError, level: zerolog.ErrorLevel,
		answer: "configuration error, retry later"},
	{err: wxpay.ErrSignatureProbe, label: "signature_probe", level: zerolog.WarnLevel},
	{err: wxpay.ErrBadSignature, label: "bad_signature", level: zerolog.WarnLevel},
	{err: wxpay.ErrTimestampSkew, label: "stale_timestamp", level: zerolog.WarnLevel,
		check: "this server's clock (NTP)"},
	{err: wxpay.ErrCertificateRefresh, label: "cert_refresh_failed", level: zerolog.ErrorLevel,
		check: "outbound HTTPS to the WeChat Pay API and the merchant key/serial", answer: "certificate refresh failed, retry later"},
	{err: wxpay.ErrUnknownSerial, label: "unknown_serial", level: zerolog.WarnLevel},
	{err: wxpay.ErrDecrypt, label: "decrypt_failed", level: zerolog.ErrorLevel,
		check:  "the APIv3 key configured for this merchant: the notification is authentic but does not decrypt",
		answer: "notification does not decrypt (check the APIv3 key)"},
	{err: wxpay.ErrMissingHeader, label: "missing_header", level: zerolog.WarnLevel},
	{err: wxpay.ErrMalformed, label: "malformed", level: zerolog.WarnLevel},
	{err: events.ErrMalformedEnvelope, label: "malformed", status: http.StatusBadRequest, level: zerolog.WarnLevel},
}

// classify returns the outcome of err: that of its class, else outInternal.
func classify(err error) *outcome {
	for _, o := range classes {
		if errors.Is(err, o.err) {
			return o
		}
	}
	return outInternal
}
