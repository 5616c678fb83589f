package wxpay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
)

// Sentinel errors, one per class of failure a caller must tell apart. Every
// error this package returns for a notification or a response wraps exactly
// one of them, so callers branch with errors.Is. Messages never contain key
// material, body bytes or header dumps.
var (
	// ErrMalformed: the body or a header is not what WeChat Pay sends
	// (bad JSON or XML, bad base64, a timestamp that is not a number).
	ErrMalformed = errors.New("wxpay: malformed input")
	// ErrMissingHeader: a required Wechatpay-* header is absent or empty.
	ErrMissingHeader = errors.New("wxpay: missing header")
	// ErrTimestampSkew: Wechatpay-Timestamp is further from our clock than
	// the allowed window (5 minutes by default). Check the server clock.
	ErrTimestampSkew = errors.New("wxpay: timestamp outside the allowed window (check the server clock)")
	// ErrBadSignature: the signature does not verify with the key that
	// Wechatpay-Serial names.
	ErrBadSignature = errors.New("wxpay: signature verification failed")
	// ErrSignatureProbe: the signature is one of WeChat Pay's deliberate
	// probes (prefix WECHATPAY/SIGNTEST/). It also matches ErrBadSignature:
	// the outcome is the same as for any bad signature, but callers can count
	// probes apart from real failures.
	ErrSignatureProbe = errors.New("wxpay: signature probe (WECHATPAY/SIGNTEST/) rejected")
	// ErrUnknownSerial: Wechatpay-Serial names no configured public key and
	// no known platform certificate (after one certificate refresh, when
	// certificates are in use).
	ErrUnknownSerial = errors.New("wxpay: unknown Wechatpay-Serial")
	// ErrCertificateRefresh: a key was unknown and the certificate refresh
	// that should have found it failed, or the caller's context ended before
	// it did (the error then also matches the context's error), so we cannot
	// tell yet whether the serial is genuine. Retry later.
	ErrCertificateRefresh = errors.New("wxpay: platform certificate refresh failed")
	// ErrNoPlatformCertificate: the certificates endpoint has no certificate
	// for this merchant (merchants onboarded in public-key mode since 2024).
	// Configure the WeChat Pay public key and its PUB_KEY_ID_ instead.
	ErrNoPlatformCertificate = errors.New("wxpay: no platform certificate for this merchant: configure the WeChat Pay public key (PUB_KEY_ID_…) instead")
	// ErrDecrypt: AEAD_AES_256_GCM (or the v2 AES-256-ECB) decryption
	// failed on an authentic message. Almost always a wrong or reset APIv3
	// key (v2: API v2 key): check the key configured for this merchant.
	ErrDecrypt = errors.New("wxpay: decryption failed (check the APIv3 key)")
	// ErrInvalidConfig: a Config field is missing or wrong.
	ErrInvalidConfig = errors.New("wxpay: invalid configuration")
)

// WeChat Pay business error codes. An *APIError matches these with
// errors.Is, old and new spellings alike (ORDERNOTEXIST and ORDER_NOT_EXIST).
var (
	ErrOrderNotExist     = &codeError{"ORDER_NOT_EXIST", []string{"ORDER_NOT_EXIST", "ORDERNOTEXIST"}}
	ErrResourceNotExists = &codeError{"RESOURCE_NOT_EXISTS", []string{"RESOURCE_NOT_EXISTS"}}
	ErrOrderClosed       = &codeError{"ORDER_CLOSED", []string{"ORDER_CLOSED"}}
	ErrOrderPaid         = &codeError{"ORDER_PAID", []string{"ORDER_PAID", "ORDERPAID"}}
	ErrSystemError       = &codeError{"SYSTEM_ERROR", []string{"SYSTEM_ERROR", "SYSTEMERROR"}}
	ErrBankError         = &codeError{"BANK_ERROR", []string{"BANK_ERROR", "BANKERROR"}}
	ErrRateLimited       = &codeError{"FREQUENCY_LIMITED", []string{"FREQUENCY_LIMITED", "RATELIMIT_EXCEEDED", "RATELIMIT_EXCEED", "RATE_LIMITED"}}
	ErrSignError         = &codeError{"SIGN_ERROR", []string{"SIGN_ERROR"}}
	ErrNoAuth            = &codeError{"NO_AUTH", []string{"NO_AUTH", "NOAUTH"}}
	ErrParamError        = &codeError{"PARAM_ERROR", []string{"PARAM_ERROR"}}
	ErrInvalidRequest    = &codeError{"INVALID_REQUEST", []string{"INVALID_REQUEST"}}
	ErrStatementCreating = &codeError{"STATEMENT_CREATING", []string{"STATEMENT_CREATING"}}
	ErrNoStatementExist  = &codeError{"NO_STATEMENT_EXIST", []string{"NO_STATEMENT_EXIST"}}
	ErrNotFound          = &codeError{"NOT_FOUND", []string{"NOT_FOUND"}}
)

// codeError is a WeChat business error code sentinel; *APIError.Is matches it.
type codeError struct {
	name  string
	codes []string
}

func (e *codeError) Error() string { return "wxpay: " + e.name }

// APIError is a non-2xx answer from the WeChat Pay API.
type APIError struct {
	StatusCode int
	Code       string
	Message    string
	// RequestID is WeChat's Request-ID header ("{id}-{numeric code}").
	RequestID string
	Detail    *ErrorDetail
	// Verified is true when the error answer carried WeChat Pay signature
	// headers and they verified. Act on what an error says (an order that
	// does not exist, say) only when it is verified.
	Verified bool
}

// ErrorDetail is the optional "detail" member of a WeChat Pay error body.
type ErrorDetail struct {
	Field    string `json:"field,omitempty"`
	Value    any    `json:"value,omitempty"`
	Issue    string `json:"issue,omitempty"`
	Location string `json:"location,omitempty"`
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "wxpay: API error: HTTP %d", e.StatusCode)
	if e.Code != "" {
		fmt.Fprintf(&b, " %s", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.Detail != nil && e.Detail.Field != "" {
		fmt.Fprintf(&b, " (field %s: %s)", e.Detail.Field, e.Detail.Issue)
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, " [Request-ID %s]", e.RequestID)
	}
	return b.String()
}

// Is reports whether target is the code sentinel for e.Code (either spelling).
func (e *APIError) Is(target error) bool {
	ce, ok := target.(*codeError)
	if !ok {
		return false
	}
	for _, c := range ce.codes {
		if e.Code == c {
			return true
		}
	}
	// HTTP 429 is a rate limit whatever the code says.
	return ce == ErrRateLimited && e.StatusCode == 429
}

// IsRetryable reports whether the same request may succeed if repeated
// later: transport failures, timeouts of the transport (not of the caller's
// context), HTTP 429 and 5xx, and the codes SYSTEM_ERROR, BANK_ERROR and the
// rate-limit family. Verification failures, other 4xx answers and a
// cancelled or expired caller context are not retryable.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		if apiErr.StatusCode == 429 || apiErr.StatusCode >= 500 {
			return true
		}
		return errors.Is(apiErr, ErrSystemError) || errors.Is(apiErr, ErrBankError) || errors.Is(apiErr, ErrRateLimited)
	}
	if errors.Is(err, ErrTransport) {
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr)
}

// ErrTransport wraps failures to reach the API or read its answer.
var ErrTransport = errors.New("wxpay: transport error")
