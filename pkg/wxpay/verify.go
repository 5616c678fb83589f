package wxpay

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Header names of a signed WeChat Pay message (a response or a notification).
const (
	HeaderTimestamp     = "Wechatpay-Timestamp"
	HeaderNonce         = "Wechatpay-Nonce"
	HeaderSignature     = "Wechatpay-Signature"
	HeaderSerial        = "Wechatpay-Serial"
	HeaderSignatureType = "Wechatpay-Signature-Type"
	HeaderRequestID     = "Request-ID"
)

// SignatureTypeRSA is the only signature type this package verifies; a
// message without Wechatpay-Signature-Type is taken to use it.
const SignatureTypeRSA = "WECHATPAY2-SHA256-RSA2048"

// SignatureProbePrefix starts every deliberately wrong signature WeChat Pay
// sends to check that merchants verify.
const SignatureProbePrefix = "WECHATPAY/SIGNTEST/"

// DefaultTimestampWindow is how far Wechatpay-Timestamp may be from our clock,
// either way.
const DefaultTimestampWindow = 5 * time.Minute

// SignedHeaders are the four signature headers of a message, read with
// ReadSignedHeaders.
type SignedHeaders struct {
	Timestamp string
	Nonce     string
	Signature string
	Serial    string
}

// ReadSignedHeaders takes the signature headers from h in any casing (a
// header map built by hand or by a framework may not be canonical). A
// missing or empty header is ErrMissingHeader; an unsupported
// Wechatpay-Signature-Type is ErrMalformed.
func ReadSignedHeaders(h http.Header) (SignedHeaders, error) {
	var s SignedHeaders
	var err error
	if s.Timestamp, err = requireHeader(h, HeaderTimestamp); err != nil {
		return s, err
	}
	if s.Nonce, err = requireHeader(h, HeaderNonce); err != nil {
		return s, err
	}
	if s.Signature, err = requireHeader(h, HeaderSignature); err != nil {
		return s, err
	}
	if s.Serial, err = requireHeader(h, HeaderSerial); err != nil {
		return s, err
	}
	if t := headerValue(h, HeaderSignatureType); t != "" && t != SignatureTypeRSA {
		return s, fmt.Errorf("%w: unsupported %s %s (only %s is supported)", ErrMalformed, HeaderSignatureType, quoted(t), SignatureTypeRSA)
	}
	return s, nil
}

func requireHeader(h http.Header, name string) (string, error) {
	v := headerValue(h, name)
	if v == "" {
		return "", fmt.Errorf("%w: %s", ErrMissingHeader, name)
	}
	return v, nil
}

// maxQuoted bounds what an error quotes of a value the sender chose (a
// header or a field of the body): enough for a whole certificate serial (40
// hex digits) or public key id (PUB_KEY_ID_ and some 34 digits).
const maxQuoted = 48

// quoted returns v quoted for an error message. A value longer than
// maxQuoted bytes, or whose quoted form is longer than maxQuoted+2
// characters (an escaped byte takes four), is cut at a character boundary
// and followed by its length in bytes.
func quoted(v string) string {
	cut := min(len(v), maxQuoted)
	for {
		for cut > 0 && cut < len(v) && !utf8.RuneStart(v[cut]) {
			cut--
		}
		q := strconv.Quote(v[:cut])
		if len(q) <= maxQuoted+2 {
			if cut == len(v) {
				return q
			}
			return fmt.Sprintf("%s… (%d bytes)", q, len(v))
		}
		cut--
	}
}

// headerValue reads a header whatever the casing of the map's keys.
func headerValue(h http.Header, name string) string {
	if v, ok := h[name]; ok && len(v) > 0 {
		return strings.TrimSpace(v[0])
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, name) {
			return strings.TrimSpace(v[0])
		}
	}
	return ""
}

// platformKey is one verification key: a platform certificate (by serial)
// or the WeChat Pay public key (by PUB_KEY_ID_…).
type platformKey struct {
	id        string
	key       *rsa.PublicKey
	cert      *x509.Certificate // nil for the public key
	notBefore time.Time
	notAfter  time.Time // zero: no expiry (public key)
}

func (k *platformKey) validAt(t time.Time) bool {
	if k.cert == nil {
		return true
	}
	return !t.Before(k.notBefore) && !t.After(k.notAfter)
}

// keySet holds the verification keys by normalised serial. It is safe for
// concurrent use; lookups take a read lock only.
type keySet struct {
	mu   sync.RWMutex
	keys map[string]*platformKey
}

func newKeySet() *keySet { return &keySet{keys: make(map[string]*platformKey)} }

func (s *keySet) get(serial string) *platformKey {
	s.mu.RLock()
	k := s.keys[normalizeSerial(serial)]
	s.mu.RUnlock()
	return k
}

func (s *keySet) put(k *platformKey) {
	s.mu.Lock()
	s.keys[normalizeSerial(k.id)] = k
	s.mu.Unlock()
}

// certificates returns the platform certificates, in no order.
func (s *keySet) certificates() []*platformKey {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*platformKey, 0, len(s.keys))
	for _, k := range s.keys {
		if k.cert != nil {
			out = append(out, k)
		}
	}
	return out
}

// dropExpired removes certificates past their expiry; it returns how many.
func (s *keySet) dropExpired(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id, k := range s.keys {
		if k.cert != nil && now.After(k.notAfter) {
			delete(s.keys, id)
			n++
		}
	}
	return n
}

// verifyWithKey checks a PKCS#1 v1.5 SHA-256 signature over
// "timestamp\nnonce\nbody\n". It hashes the pieces without joining them.
func verifyWithKey(key *rsa.PublicKey, h SignedHeaders, body []byte) error {
	if strings.HasPrefix(h.Signature, SignatureProbePrefix) {
		return fmt.Errorf("%w: %w", ErrBadSignature, ErrSignatureProbe)
	}
	var sig [512]byte
	if base64.StdEncoding.DecodedLen(len(h.Signature)) > len(sig) {
		return fmt.Errorf("%w: %s is too long", ErrBadSignature, HeaderSignature)
	}
	n, err := base64.StdEncoding.Decode(sig[:], []byte(h.Signature))
	if err != nil || n == 0 {
		return fmt.Errorf("%w: %s is not valid base64", ErrBadSignature, HeaderSignature)
	}
	digest := messageDigest(h.Timestamp, h.Nonce, body)
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, digest[:], sig[:n]); err != nil {
		return fmt.Errorf("%w: with key %s", ErrBadSignature, quoted(h.Serial))
	}
	return nil
}

func messageDigest(timestamp, nonce string, body []byte) [sha256.Size]byte {
	d := sha256.New()
	d.Write([]byte(timestamp))
	d.Write([]byte{'\n'})
	d.Write([]byte(nonce))
	d.Write([]byte{'\n'})
	d.Write(body)
	d.Write([]byte{'\n'})
	var out [sha256.Size]byte
	d.Sum(out[:0])
	return out
}

// checkTimestamp rejects a timestamp more than window away from now.
func checkTimestamp(ts string, now time.Time, window time.Duration) error {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s is not a decimal number of seconds", ErrMalformed, HeaderTimestamp)
	}
	d := time.Unix(sec, 0).Sub(now) // positive: the timestamp is ahead of our clock
	if d > window || d < -window {
		dir := "ahead of"
		if d < 0 {
			d, dir = now.Sub(time.Unix(sec, 0)), "behind" // saturates: never negative
		}
		return fmt.Errorf("%w: %s is %s %s our clock (allowed %s either way)", ErrTimestampSkew, HeaderTimestamp, d.Round(time.Second), dir, window)
	}
	return nil
}

// Verify checks a signed message (an API response or a notification) given
// its headers and raw body: the headers are present, the timestamp is inside
// the window, the serial names a known key (refreshing the platform
// certificates once, rate-limited, when it does not), and the signature
// verifies. It returns the id of the key that verified: a certificate serial
// or a PUB_KEY_ID_.
func (c *Client) Verify(ctx context.Context, header http.Header, body []byte) (keyID string, err error) {
	h, err := ReadSignedHeaders(header)
	if err != nil {
		return "", err
	}
	return c.verifySigned(ctx, h, body)
}

func (c *Client) verifySigned(ctx context.Context, h SignedHeaders, body []byte) (string, error) {
	if err := checkTimestamp(h.Timestamp, c.now(), c.window); err != nil {
		return "", err
	}
	k, err := c.lookupKey(ctx, h.Serial)
	if err != nil {
		return "", err
	}
	if err := verifyWithKey(k.key, h, body); err != nil {
		return "", err
	}
	return k.id, nil
}

// maxSerialLen bounds Wechatpay-Serial: a certificate serial is at most 40
// hex digits and a public key id PUB_KEY_ID_ and some 30 digits.
const maxSerialLen = 64

// lookupKey finds the key for serial. A certificate serial that is unknown
// (or whose certificate has expired) triggers one rate-limited refresh when
// certificates are downloaded; a PUB_KEY_ID_ never does.
func (c *Client) lookupKey(ctx context.Context, serial string) (*platformKey, error) {
	if len(serial) > maxSerialLen {
		// Never echoed: the header is the sender's, of any length.
		return nil, fmt.Errorf("%w: the header is %d bytes, longer than any certificate serial or public key id", ErrUnknownSerial, len(serial))
	}
	now := c.now()
	if k := c.keys.get(serial); k != nil && k.validAt(now) {
		return k, nil
	}
	if IsPublicKeyID(serial) {
		if c.cfg.PublicKeyID == "" {
			return nil, fmt.Errorf("%w: %s names a WeChat Pay public key but none is configured (set the public key and its id)", ErrUnknownSerial, quoted(serial))
		}
		return nil, fmt.Errorf("%w: %s is not the configured public key id %s", ErrUnknownSerial, quoted(serial), c.cfg.PublicKeyID)
	}
	if c.certs == nil {
		return nil, fmt.Errorf("%w: %s names no configured platform certificate (and certificate download is off)", ErrUnknownSerial, quoted(serial))
	}
	if err := c.certs.refreshForUnknown(ctx); err != nil {
		return nil, fmt.Errorf("%w: serial %s is unknown and %w", ErrCertificateRefresh, quoted(serial), err)
	}
	if k := c.keys.get(serial); k != nil && k.validAt(now) {
		return k, nil
	}
	return nil, fmt.Errorf("%w: %s is not among the platform certificates (after a refresh)", ErrUnknownSerial, quoted(serial))
}
