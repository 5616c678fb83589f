package wxpaytest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// sign returns the Wechatpay-* headers for body signed with key now; bad
// corrupts the signature.
func (s *Server) sign(key *PlatformKey, body []byte, bad bool) http.Header {
	ts := strconv.FormatInt(s.now().Unix(), 10)
	nonce := randomString(32)
	return signHeaders(key, ts, nonce, body, bad)
}

func signHeaders(key *PlatformKey, ts, nonce string, body []byte, bad bool) http.Header {
	msg := make([]byte, 0, len(ts)+len(nonce)+len(body)+3)
	msg = append(msg, ts...)
	msg = append(msg, '\n')
	msg = append(msg, nonce...)
	msg = append(msg, '\n')
	msg = append(msg, body...)
	msg = append(msg, '\n')
	if bad {
		msg = append(msg, 'x')
	}
	sig, err := wxpay.SignMessage(key.PrivateKey, msg)
	if err != nil {
		panic(err)
	}
	h := http.Header{}
	h.Set(wxpay.HeaderTimestamp, ts)
	h.Set(wxpay.HeaderNonce, nonce)
	h.Set(wxpay.HeaderSignature, sig)
	h.Set(wxpay.HeaderSerial, key.ID)
	h.Set(wxpay.HeaderSignatureType, wxpay.SignatureTypeRSA)
	return h
}

func verifyRSA(pub *rsa.PublicKey, msg []byte, sigB64 string) error {
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil {
		return err
	}
	d := sha256.Sum256(msg)
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], sig)
}

const alnum = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = alnum[int(b[i])%len(alnum)]
	}
	return string(b)
}

func readAll(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	return io.ReadAll(io.LimitReader(r.Body, 10<<20))
}

// Notification is a signed notification ready to deliver: the exact body
// bytes and the headers WeChat sends.
type Notification struct {
	Header http.Header
	Body   []byte
	// ID and EventType repeat the envelope's.
	ID        string
	EventType string

	key  *PlatformKey
	opts NotificationOptions
	// v2 marks a legacy API v2 XML body: it is posted unsigned as
	// text/xml, and only an answer with return_code SUCCESS acknowledges it.
	v2 bool
}

// NotificationOptions tunes a notification. Zero fields get realistic
// values.
type NotificationOptions struct {
	// ID defaults to a random UUID-like id.
	ID string
	// CreateTime defaults to the platform clock (RFC 3339, +08:00).
	CreateTime time.Time
	// Summary defaults by event type (支付成功, 退款成功, …).
	Summary string
	// OriginalType defaults to "transaction" for TRANSACTION.* and
	// "refund" for REFUND.*, else the lower-cased first word of the type.
	OriginalType string
	// AssociatedData defaults to OriginalType.
	AssociatedData string
	// KeyID chooses the platform key that signs (a certificate serial or
	// the public key id); default as for answers.
	KeyID string
	// Timestamp overrides the signing time (to test clock skew).
	Timestamp time.Time
	// Signature replaces the real signature (for example a
	// WECHATPAY/SIGNTEST/ probe).
	Signature string
	// APIv3Key encrypts with another key (to test a wrong key).
	APIv3Key string
}

// NewNotification builds a signed notification of eventType for merchant m
// whose decrypted resource is resource (a struct, a map, or raw JSON bytes).
func (s *Server) NewNotification(m *Merchant, eventType string, resource any, o NotificationOptions) (*Notification, error) {
	plain, err := toJSON(resource)
	if err != nil {
		return nil, err
	}
	if o.ID == "" {
		o.ID = uuidLike()
	}
	if o.CreateTime.IsZero() {
		o.CreateTime = s.now()
	}
	if o.OriginalType == "" {
		o.OriginalType = originalType(eventType)
	}
	if o.AssociatedData == "" {
		o.AssociatedData = o.OriginalType
	}
	if o.Summary == "" {
		o.Summary = summary(eventType)
	}
	key3 := m.APIv3Key
	if o.APIv3Key != "" {
		key3 = o.APIv3Key
	}
	nonce := randomString(12)
	ct, err := EncryptResource(key3, nonce, o.AssociatedData, plain)
	if err != nil {
		return nil, err
	}
	env := struct {
		ID           string `json:"id"`
		CreateTime   string `json:"create_time"`
		ResourceType string `json:"resource_type"`
		EventType    string `json:"event_type"`
		Summary      string `json:"summary"`
		Resource     any    `json:"resource"`
	}{o.ID, o.CreateTime.In(wxpay.ChinaTime()).Format(time.RFC3339), wxpay.ResourceTypeEncrypted, eventType, o.Summary,
		wxpay.EncryptedResource{OriginalType: o.OriginalType, Algorithm: wxpay.AlgorithmAEADAES256GCM,
			Ciphertext: ct, AssociatedData: o.AssociatedData, Nonce: nonce}}
	body, err := marshalNoEscape(env)
	if err != nil {
		return nil, err
	}
	key, err := s.signingKey(o.KeyID)
	if err != nil {
		return nil, err
	}
	n := &Notification{Body: body, ID: o.ID, EventType: eventType, key: key, opts: o}
	n.Header = s.notificationHeaders(n)
	return n, nil
}

// notificationHeaders signs n anew, as WeChat does for every attempt. A v2
// body carries its own sign (or none, for a refund), so its headers are
// only the content type and the user agent.
func (s *Server) notificationHeaders(n *Notification) http.Header {
	if n.v2 {
		h := http.Header{}
		h.Set("Content-Type", "text/xml")
		h.Set("User-Agent", "Mozilla/4.0")
		return h
	}
	at := s.now()
	if !n.opts.Timestamp.IsZero() {
		at = n.opts.Timestamp
	}
	return s.notificationHeadersAt(n, at)
}

// notificationHeadersAt signs the v3 notification n with
// Wechatpay-Timestamp at.
func (s *Server) notificationHeadersAt(n *Notification, at time.Time) http.Header {
	h := signHeaders(n.key, strconv.FormatInt(at.Unix(), 10), randomString(32), n.Body, false)
	if n.opts.Signature != "" {
		h.Set(wxpay.HeaderSignature, n.opts.Signature)
	}
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "Mozilla/4.0")
	return h
}

// Request returns an *http.Request that posts n to url.
func (n *Notification) Request(url string) *http.Request {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(n.Body))
	if err != nil {
		panic(err)
	}
	for k, v := range n.Header {
		req.Header[k] = append([]string(nil), v...)
	}
	return req
}

// RetrySchedule is WeChat's re-send schedule after a failed delivery: 15
// re-sends over 24h4m.
var RetrySchedule = []time.Duration{
	15 * time.Second, 15 * time.Second, 30 * time.Second, 3 * time.Minute, 10 * time.Minute,
	20 * time.Minute, 30 * time.Minute, 30 * time.Minute, 30 * time.Minute, 60 * time.Minute,
	3 * time.Hour, 3 * time.Hour, 3 * time.Hour, 6 * time.Hour, 6 * time.Hour,
}

// Attempt is one delivery attempt.
type Attempt struct {
	StatusCode int // 0 when the request failed
	Body       []byte
	Err        error
	Duration   time.Duration
}

// ErrNotDelivered means every attempt of a delivery failed.
var ErrNotDelivered = errors.New("wxpaytest: notification not delivered")

// DeliveryTimeout is how long WeChat waits for an answer (5 s).
const DeliveryTimeout = 5 * time.Second

// Deliver posts n to url and, while the answer is not 2xx (or does not
// arrive within DeliveryTimeout), re-sends it on RetrySchedule scaled by
// Options.TimeScale, signing each attempt anew. It returns the attempts;
// the error is ErrNotDelivered after the last one, or ctx's error.
func (s *Server) Deliver(ctx context.Context, url string, n *Notification) ([]Attempt, error) {
	return s.deliver(ctx, &http.Client{Timeout: DeliveryTimeout}, url, n, s.opts.TimeScale, nil)
}

// deliver is the one delivery loop, shared by Deliver and the platform's
// own notifications (autonotify.go); onAttempt, when set, runs after each
// attempt.
func (s *Server) deliver(ctx context.Context, client *http.Client, url string, n *Notification, scale float64, onAttempt func(Attempt)) ([]Attempt, error) {
	var attempts []Attempt
	for i := 0; ; i++ {
		if i > 0 {
			n.Header = s.notificationHeaders(n)
		}
		a := deliverOnce(ctx, client, url, n)
		attempts = append(attempts, a)
		if onAttempt != nil {
			onAttempt(a)
		}
		if acknowledged(n, a) {
			return attempts, nil
		}
		if ctx.Err() != nil {
			return attempts, ctx.Err()
		}
		if i >= len(RetrySchedule) {
			return attempts, fmt.Errorf("%w after %d attempts", ErrNotDelivered, len(attempts))
		}
		wait := time.Duration(float64(RetrySchedule[i]) * scale)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return attempts, ctx.Err()
		case <-t.C:
		}
	}
}

// acknowledged reports whether an attempt counts as received: a 2xx
// answer, and for a v2 body also an XML answer with return_code SUCCESS,
// since a v2 receiver says FAIL in the body.
func acknowledged(n *Notification, a Attempt) bool {
	if a.Err != nil || a.StatusCode < 200 || a.StatusCode >= 300 {
		return false
	}
	if !n.v2 {
		return true
	}
	f, err := wxpay.ParseV2XML(a.Body)
	return err == nil && f["return_code"] == "SUCCESS"
}

func deliverOnce(ctx context.Context, client *http.Client, url string, n *Notification) Attempt {
	start := time.Now()
	req := n.Request(url).WithContext(ctx)
	resp, err := client.Do(req)
	if err != nil {
		return Attempt{Err: err, Duration: time.Since(start)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return Attempt{StatusCode: resp.StatusCode, Body: body, Duration: time.Since(start)}
}

func toJSON(v any) ([]byte, error) {
	switch r := v.(type) {
	case []byte:
		return r, nil
	case json.RawMessage:
		return r, nil
	case string:
		return []byte(r), nil
	}
	return marshalNoEscape(v)
}

// marshalNoEscape marshals like WeChat: UTF-8 kept, no HTML escaping.
func marshalNoEscape(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

func uuidLike() string {
	var b [16]byte
	io.ReadFull(rand.Reader, b[:])
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func originalType(eventType string) string {
	first, _, _ := strings.Cut(eventType, ".")
	return strings.ToLower(first)
}

func summary(eventType string) string {
	switch eventType {
	case wxpay.EventTransactionSuccess:
		return "支付成功"
	case wxpay.EventRefundSuccess:
		return "退款成功"
	case wxpay.EventRefundAbnormal:
		return "退款异常"
	case wxpay.EventRefundClosed:
		return "退款关闭"
	}
	return "通知"
}

func contextWithCall(r *http.Request, c *Call) context.Context {
	return context.WithValue(r.Context(), callKey{}, c)
}
