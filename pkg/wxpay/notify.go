package wxpay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// WeChat Pay event types (event_type) this project routes on. Any other
// event type is still verified and decrypted.
const (
	EventTransactionSuccess = "TRANSACTION.SUCCESS"
	EventRefundSuccess      = "REFUND.SUCCESS"
	EventRefundAbnormal     = "REFUND.ABNORMAL"
	EventRefundClosed       = "REFUND.CLOSED"
)

// ResourceTypeEncrypted is the resource_type of notifications.
const ResourceTypeEncrypted = "encrypt-resource"

// Notification is a verified, decrypted v3 notification.
type Notification struct {
	ID           string            `json:"id"`
	CreateTime   string            `json:"create_time"`
	EventType    string            `json:"event_type"`
	ResourceType string            `json:"resource_type"`
	Summary      string            `json:"summary"`
	Resource     EncryptedResource `json:"resource"`

	// Plaintext is the decrypted resource: a JSON object, kept as received
	// (its braces are checked; Transaction, Refund or json.Unmarshal
	// validate the rest).
	Plaintext json.RawMessage `json:"-"`
	// KeyID is the Wechatpay-Serial whose key verified the notification:
	// a platform certificate serial or a PUB_KEY_ID_.
	KeyID string `json:"-"`
}

// EncryptedResource is the resource member of a notification.
type EncryptedResource struct {
	OriginalType   string `json:"original_type"`
	Algorithm      string `json:"algorithm"`
	Ciphertext     string `json:"ciphertext"`
	AssociatedData string `json:"associated_data"`
	Nonce          string `json:"nonce"`
}

// ParseNotification verifies and decrypts a v3 notification from its raw
// body bytes (exactly as received: never re-encoded) and headers (any
// casing). In order: the signature headers must be present
// (ErrMissingHeader), the timestamp inside the window (ErrTimestampSkew), the
// serial known (ErrUnknownSerial, after one rate-limited certificate refresh;
// ErrCertificateRefresh when that refresh failed), the signature valid
// (ErrBadSignature, and ErrSignatureProbe for WeChat's probes), the body a
// notification (ErrMalformed), and the resource must decrypt with the APIv3
// key (ErrDecrypt: a configuration fault on an authentic message).
func (c *Client) ParseNotification(ctx context.Context, header http.Header, body []byte) (*Notification, error) {
	h, err := ReadSignedHeaders(header)
	if err != nil {
		return nil, err
	}
	keyID, err := c.verifySigned(ctx, h, body)
	if err != nil {
		return nil, err
	}
	n := &Notification{KeyID: keyID}
	if err := decodeEnvelope(body, n); err != nil {
		return nil, fmt.Errorf("%w: notification body is not the expected JSON object", ErrMalformed)
	}
	if n.ID == "" || n.EventType == "" {
		return nil, fmt.Errorf("%w: notification has no id or event_type", ErrMalformed)
	}
	r := &n.Resource
	if r.Algorithm != AlgorithmAEADAES256GCM {
		return nil, fmt.Errorf("%w: resource algorithm %s is not %s", ErrMalformed, quoted(r.Algorithm), AlgorithmAEADAES256GCM)
	}
	plain, err := openGCM(c.aeads, r.Nonce, r.AssociatedData, r.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("notification %s: %w", quoted(n.ID), err)
	}
	// The plaintext is authenticated twice over (signature and GCM tag), so
	// only its shape is checked here; the typed decoders (and any
	// json.Marshal of it as a json.RawMessage) validate it fully.
	if !looksLikeObject(plain) {
		return nil, fmt.Errorf("%w: notification %s: decrypted resource is not a JSON object", ErrMalformed, quoted(n.ID))
	}
	n.Plaintext = plain
	return n, nil
}

func looksLikeObject(b []byte) bool {
	b = bytes.TrimSpace(b)
	return len(b) >= 2 && b[0] == '{' && b[len(b)-1] == '}'
}

// Transaction decodes the resource of a payment notification
// (original_type transaction).
func (n *Notification) Transaction() (*Transaction, error) {
	var t Transaction
	if err := json.Unmarshal(n.Plaintext, &t); err != nil {
		return nil, fmt.Errorf("%w: notification %s: resource is not a transaction: %v", ErrMalformed, quoted(n.ID), err)
	}
	return &t, nil
}

// Refund decodes the resource of a refund notification (original_type
// refund).
func (n *Notification) Refund() (*RefundNotice, error) {
	var r RefundNotice
	if err := json.Unmarshal(n.Plaintext, &r); err != nil {
		return nil, fmt.Errorf("%w: notification %s: resource is not a refund: %v", ErrMalformed, quoted(n.ID), err)
	}
	return &r, nil
}

// MaxNotificationBytes is the body size NotifyHandler accepts (64 KiB).
const MaxNotificationBytes = 64 << 10

// NotificationStatus maps an error of ParseNotification (or of reading the
// body under http.MaxBytesReader) to the HTTP status to answer WeChat with:
// 400 malformed or missing headers, 401 bad signature, skewed timestamp or
// unknown serial, 413 body too large, 503 when the certificate refresh
// failed (WeChat retries), 500 on a decryption failure (a configuration
// fault: check the APIv3 key) and anything else.
func NotificationStatus(err error) int {
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrCertificateRefresh):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrMalformed), errors.Is(err, ErrMissingHeader):
		return http.StatusBadRequest
	case errors.Is(err, ErrBadSignature), errors.Is(err, ErrTimestampSkew), errors.Is(err, ErrUnknownSerial):
		return http.StatusUnauthorized
	default:
		return http.StatusInternalServerError
	}
}

// successBody satisfies both the old (200 + SUCCESS body) and the new
// (200/204, no body needed) documentation.
var successBody = []byte(`{"code":"SUCCESS","message":"成功"}`)

// WriteNotificationAnswer writes the answer WeChat expects: 200 with
// {"code":"SUCCESS","message":"成功"} for a nil error, otherwise the status
// of NotificationStatus with {"code":"FAIL","message":...}.
func WriteNotificationAnswer(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if err == nil {
		w.WriteHeader(http.StatusOK)
		w.Write(successBody)
		return
	}
	w.WriteHeader(NotificationStatus(err))
	msg, _ := json.Marshal(struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}{"FAIL", err.Error()})
	w.Write(msg)
}

// NotifyHandler returns a net/http handler that does everything a
// notification endpoint must: it reads the raw body (at most 64 KiB, never
// re-encoded), verifies and decrypts it, calls fn, and answers WeChat. fn
// must make the notification durable (or process it idempotently) before it
// returns nil; an error from fn is answered 500 so that WeChat retries.
// Mount it where no login or session middleware runs.
func NotifyHandler(c *Client, fn func(ctx context.Context, n *Notification) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxNotificationBytes))
		if err != nil {
			var tooBig *http.MaxBytesError
			if !errors.As(err, &tooBig) {
				err = fmt.Errorf("%w: reading body: %v", ErrMalformed, err)
			}
			WriteNotificationAnswer(w, err)
			return
		}
		n, err := c.ParseNotification(r.Context(), r.Header, body)
		if err == nil {
			if ferr := fn(r.Context(), n); ferr != nil {
				err = fmt.Errorf("wxpay: notification %s not accepted by the handler: %w", quoted(n.ID), ferr)
			}
		}
		WriteNotificationAnswer(w, err)
	})
}

// chinaTime is Beijing time (UTC+8, no daylight saving). It is a fixed zone
// so that parsing does not depend on the tzdata of the host.
var chinaTime = time.FixedZone("CST", 8*3600)

// ChinaTime is UTC+8, the zone of WeChat Pay times and bill dates.
func ChinaTime() *time.Location { return chinaTime }
