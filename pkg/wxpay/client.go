package wxpay

import (
	"bytes"
	"context"
	"crypto"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// DefaultBaseURL is the primary WeChat Pay API host.
const DefaultBaseURL = "https://api.mch.weixin.qq.com"

// DefaultCertificateRefreshInterval is how often platform certificates are
// downloaded again (WeChat asks for less than 12 hours between calls).
const DefaultCertificateRefreshInterval = 12 * time.Hour

// DefaultMinRefreshInterval bounds refreshes triggered by unknown serials.
const DefaultMinRefreshInterval = time.Minute

// maxResponseBytes caps what is read of an API answer (bills excepted).
const maxResponseBytes = 4 << 20

// Config configures a Client for one merchant. The zero value of every
// optional field means its documented default.
type Config struct {
	// MchID is the merchant id; in partner mode the service provider's
	// sp_mchid (WeChat wants it in the Authorization header).
	MchID string

	// Signer signs requests with the merchant API private key. An
	// *rsa.PrivateKey (LoadPrivateKey) works; a key held in an HSM or KMS
	// plugs in through the standard crypto.Signer interface. It must sign
	// RSA PKCS#1 v1.5 over SHA-256 digests. If it also implements
	// crypto.Decrypter, DecryptSensitive can use it.
	Signer crypto.Signer
	// CertSerialNo is the serial of the merchant API certificate that
	// belongs to Signer (upper-case hex).
	CertSerialNo string

	// APIv3Key is the 32-byte APIv3 key set in the merchant console.
	APIv3Key string
	// PreviousAPIv3Keys are older APIv3 keys kept during a key rotation:
	// decryption tries APIv3Key first, then these. Each must be 32 bytes.
	PreviousAPIv3Keys []string

	// PlatformCertificates are platform certificates known in advance.
	PlatformCertificates []*x509.Certificate
	// DownloadCertificates turns on downloading the platform certificates
	// from /v3/certificates: at RefreshCertificates, every
	// CertificateRefreshInterval in RunCertificateRefresh, and once
	// (rate-limited) when an unknown serial arrives.
	DownloadCertificates bool
	// CertificateCacheDir, when set, keeps downloaded certificates as
	// <serial>.pem files (written atomically) and loads the unexpired ones
	// at NewClient.
	CertificateCacheDir string
	// CertificateRefreshInterval defaults to DefaultCertificateRefreshInterval.
	CertificateRefreshInterval time.Duration
	// MinRefreshInterval is the least time between two refreshes caused by
	// unknown serials. Default DefaultMinRefreshInterval.
	MinRefreshInterval time.Duration

	// PublicKey is the WeChat Pay public key (public-key mode) and
	// PublicKeyID its id, "PUB_KEY_ID_…". Both or neither. It may be
	// configured together with platform certificates (the migration).
	PublicKey   *rsa.PublicKey
	PublicKeyID string

	// PartnerMode marks a service provider (服务商) configuration.
	PartnerMode bool

	// BaseURL defaults to DefaultBaseURL; tests point it at wxpaytest.
	BaseURL string
	// HTTPClient defaults to a client with a 10-second timeout.
	HTTPClient *http.Client
	// Now defaults to time.Now.
	Now func() time.Time
	// Rand is the source of nonces and OAEP randomness; default crypto/rand.
	Rand io.Reader
	// TimestampWindow defaults to DefaultTimestampWindow (5 minutes).
	TimestampWindow time.Duration
	// UserAgent is sent with every request (WeChat rejects requests without
	// one); a default naming this package is used when empty.
	UserAgent string
	// OnRequest, when set, is called after every API call with what
	// happened, for debugging and metrics. It never sees bodies or keys.
	OnRequest func(RequestInfo)
}

// RequestInfo describes one API call, for Config.OnRequest.
type RequestInfo struct {
	Method     string
	Path       string // path without query
	StatusCode int    // 0 when no answer arrived
	RequestID  string
	KeyID      string // the key that verified the answer, if any
	Duration   time.Duration
	Err        error
}

// Validate reports every problem with the configuration at once.
func (cfg *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if cfg.MchID == "" {
		bad("MchID is empty")
	}
	if len(cfg.APIv3Key) != 32 {
		bad("APIv3 key must be exactly 32 bytes, got %d (copy it again from the merchant console: API安全 → APIv3密钥)", len(cfg.APIv3Key))
	}
	for i, k := range cfg.PreviousAPIv3Keys {
		if len(k) != 32 {
			bad("previous APIv3 key #%d must be exactly 32 bytes, got %d", i+1, len(k))
		}
	}
	if (cfg.PublicKey == nil) != (cfg.PublicKeyID == "") {
		bad("the WeChat Pay public key and its id go together: set both or neither")
	}
	if cfg.PublicKeyID != "" && !IsPublicKeyID(cfg.PublicKeyID) {
		bad("public key id %q must start with PUB_KEY_ID_", cfg.PublicKeyID)
	}
	if cfg.PublicKey != nil && cfg.PublicKey.N.BitLen() < 2048 {
		bad("the WeChat Pay public key has %d bits, want 2048 or more", cfg.PublicKey.N.BitLen())
	}
	if cfg.PublicKey == nil && len(cfg.PlatformCertificates) == 0 && !cfg.DownloadCertificates {
		bad("no way to verify WeChat Pay signatures: configure the WeChat Pay public key (PUB_KEY_ID_…) or platform certificates (or turn on certificate download)")
	}
	if (cfg.Signer == nil) != (cfg.CertSerialNo == "") {
		bad("the merchant private key and its certificate serial go together: set both or neither")
	}
	if cfg.DownloadCertificates && cfg.Signer == nil {
		bad("downloading platform certificates needs the merchant private key and certificate serial")
	}
	if cfg.Signer != nil {
		if pk, ok := cfg.Signer.Public().(*rsa.PublicKey); !ok || pk.N.BitLen() < 2048 {
			bad("the merchant private key must be RSA with 2048 bits or more")
		}
	}
	for i, c := range cfg.PlatformCertificates {
		if _, ok := c.PublicKey.(*rsa.PublicKey); !ok {
			bad("platform certificate #%d is not RSA", i+1)
		}
	}
	if cfg.BaseURL != "" {
		if u, err := url.Parse(cfg.BaseURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("BaseURL %q is not an http(s) URL", cfg.BaseURL)
		}
	}
	if cfg.TimestampWindow < 0 || cfg.CertificateRefreshInterval < 0 || cfg.MinRefreshInterval < 0 {
		bad("durations must not be negative")
	}
	return errors.Join(errs...)
}

// Client is a WeChat Pay API v3 client for one merchant: it signs requests,
// verifies every answer and every notification, and keeps the platform
// keys. It is safe for concurrent use.
type Client struct {
	cfg     Config
	baseURL string
	http    *http.Client
	now     func() time.Time
	rand    io.Reader
	window  time.Duration
	ua      string
	aeads   []cipher.AEAD
	keys    *keySet
	certs   *certManager // nil unless DownloadCertificates
}

// NewClient validates cfg and builds a Client. It does no network I/O; with
// CertificateCacheDir set it loads the cached certificates.
func NewClient(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{
		cfg:     cfg,
		baseURL: strings.TrimRight(cfg.BaseURL, "/"),
		http:    cfg.HTTPClient,
		now:     cfg.Now,
		rand:    cfg.Rand,
		window:  cfg.TimestampWindow,
		ua:      cfg.UserAgent,
		keys:    newKeySet(),
	}
	if c.baseURL == "" {
		c.baseURL = DefaultBaseURL
	}
	if c.http == nil {
		c.http = &http.Client{Timeout: 10 * time.Second}
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.rand == nil {
		c.rand = rand.Reader
	}
	if c.window == 0 {
		c.window = DefaultTimestampWindow
	}
	if c.ua == "" {
		c.ua = fmt.Sprintf("wxpay-notify/1 (%s) Go/%s", runtime.GOOS, runtime.Version())
	}
	for _, k := range append([]string{cfg.APIv3Key}, cfg.PreviousAPIv3Keys...) {
		aead, err := newGCM([]byte(k))
		if err != nil {
			return nil, err
		}
		c.aeads = append(c.aeads, aead)
	}
	if cfg.PublicKey != nil {
		c.keys.put(&platformKey{id: cfg.PublicKeyID, key: cfg.PublicKey})
	}
	for _, cert := range cfg.PlatformCertificates {
		c.keys.put(certKey(CertificateSerial(cert), cert))
	}
	if cfg.DownloadCertificates {
		c.certs = newCertManager(c)
		if err := c.certs.loadCache(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func certKey(serial string, cert *x509.Certificate) *platformKey {
	return &platformKey{
		id:        serial,
		key:       cert.PublicKey.(*rsa.PublicKey),
		cert:      cert,
		notBefore: cert.NotBefore,
		notAfter:  cert.NotAfter,
	}
}

// MchID returns the merchant id the client was configured with.
func (c *Client) MchID() string { return c.cfg.MchID }

// PartnerMode reports whether the client is configured as a service provider.
func (c *Client) PartnerMode() bool { return c.cfg.PartnerMode }

// KeyIDs returns the ids of the keys that currently verify signatures:
// the public key id and the serials of the unexpired platform certificates.
func (c *Client) KeyIDs() []string {
	now := c.now()
	c.keys.mu.RLock()
	defer c.keys.mu.RUnlock()
	var out []string
	for _, k := range c.keys.keys {
		if k.validAt(now) {
			out = append(out, k.id)
		}
	}
	return out
}

// nonceAlphabet matches the official SDKs' request nonces.
const nonceAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Nonce returns a 32-character random string from [0-9A-Za-z].
func (c *Client) Nonce() (string, error) {
	return randomNonce(c.rand)
}

func randomNonce(r io.Reader) (string, error) {
	var b [32]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("wxpay: nonce: %w", err)
	}
	for i := range b {
		b[i] = nonceAlphabet[int(b[i])%len(nonceAlphabet)]
	}
	return string(b[:]), nil
}

// SignMessage signs message with SHA256withRSA (PKCS#1 v1.5) and returns the
// standard base64 signature WeChat Pay expects.
func SignMessage(signer crypto.Signer, message []byte) (string, error) {
	digest := sha256.Sum256(message)
	sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("wxpay: signing failed: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// RequestMessage is the signed message ("签名串") of a request: method,
// canonical URL (path and raw query), timestamp, nonce and body, each line
// ending with "\n".
func RequestMessage(method, canonicalURL, timestamp, nonce string, body []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(method) + len(canonicalURL) + len(timestamp) + len(nonce) + len(body) + 5)
	b.WriteString(method)
	b.WriteByte('\n')
	b.WriteString(canonicalURL)
	b.WriteByte('\n')
	b.WriteString(timestamp)
	b.WriteByte('\n')
	b.WriteString(nonce)
	b.WriteByte('\n')
	b.Write(body)
	b.WriteByte('\n')
	return b.Bytes()
}

// AuthorizationScheme is the Authorization scheme of API v3 requests.
const AuthorizationScheme = "WECHATPAY2-SHA256-RSA2048"

// Authorization builds the Authorization header value for a request with
// the given timestamp and nonce. Most callers use Do, which calls it.
func Authorization(signer crypto.Signer, mchID, serialNo, method, canonicalURL, timestamp, nonce string, body []byte) (string, error) {
	sig, err := SignMessage(signer, RequestMessage(method, canonicalURL, timestamp, nonce, body))
	if err != nil {
		return "", err
	}
	return fmt.Sprintf(`%s mchid="%s",nonce_str="%s",timestamp="%s",serial_no="%s",signature="%s"`,
		AuthorizationScheme, mchID, nonce, timestamp, serialNo, sig), nil
}

// Request is one API call for Do.
type Request struct {
	Method string
	// Path is the path with the raw query, e.g.
	// "/v3/pay/transactions/out-trade-no/T1?mchid=1230000109", or a full
	// URL on the API host (a bill's download_url).
	Path string
	// Body is sent as is (already JSON); nil for GET.
	Body []byte
	// WechatpaySerial overrides the Wechatpay-Serial request header; set it
	// to the serial EncryptSensitive returned when the body carries
	// encrypted fields.
	WechatpaySerial string
	// Unsigned marks an answer that WeChat does not sign (the bill
	// download) or that the caller verifies itself (the certificate
	// download). Every other answer, error answers included, is verified.
	Unsigned bool
	// MaxResponseBytes overrides the 4 MiB answer limit.
	MaxResponseBytes int64
}

// Response is a verified API answer.
type Response struct {
	StatusCode int
	Header     http.Header
	Body       []byte
	// KeyID is the certificate serial or public key id that verified the
	// answer; empty for an unsigned request.
	KeyID string
}

// Do sends a signed request and verifies the answer. A 2xx answer whose
// signature does not verify is an error, never data. A non-2xx answer is an
// *APIError; when it carries signature headers they are verified too, and
// APIError.Verified says so.
func (c *Client) Do(ctx context.Context, r Request) (resp *Response, err error) {
	if c.cfg.Signer == nil {
		return nil, fmt.Errorf("%w: API calls need the merchant private key and certificate serial", ErrInvalidConfig)
	}
	start := c.now()
	info := RequestInfo{Method: r.Method}
	defer func() {
		if c.cfg.OnRequest != nil {
			info.Duration = c.now().Sub(start)
			info.Err = err
			if resp != nil {
				info.KeyID = resp.KeyID
			}
			c.cfg.OnRequest(info)
		}
	}()
	target, canonical, err := c.resolve(r.Path)
	if err != nil {
		return nil, err
	}
	info.Path = target.Path
	nonce, err := c.Nonce()
	if err != nil {
		return nil, err
	}
	ts := strconv.FormatInt(c.now().Unix(), 10)
	auth, err := Authorization(c.cfg.Signer, c.cfg.MchID, c.cfg.CertSerialNo, r.Method, canonical, ts, nonce, r.Body)
	if err != nil {
		return nil, err
	}
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, target.String(), body)
	if err != nil {
		return nil, fmt.Errorf("%w: building request: %v", ErrInvalidConfig, err)
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.ua)
	if r.Body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if serial := c.requestSerial(r.WechatpaySerial); serial != "" {
		req.Header.Set(HeaderSerial, serial)
	}
	hr, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("wxpay: %s %s: %w", r.Method, target.Path, ctx.Err())
		}
		return nil, fmt.Errorf("%w: %s %s: %v", ErrTransport, r.Method, target.Path, err)
	}
	defer hr.Body.Close()
	info.StatusCode = hr.StatusCode
	info.RequestID = hr.Header.Get(HeaderRequestID)
	limit := r.MaxResponseBytes
	if limit <= 0 {
		limit = maxResponseBytes
	}
	raw, err := io.ReadAll(io.LimitReader(hr.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading answer of %s %s: %v", ErrTransport, r.Method, target.Path, err)
	}
	if int64(len(raw)) > limit {
		return nil, fmt.Errorf("%w: answer of %s %s is over %d bytes", ErrMalformed, r.Method, target.Path, limit)
	}
	resp = &Response{StatusCode: hr.StatusCode, Header: hr.Header, Body: raw}
	ok := hr.StatusCode >= 200 && hr.StatusCode < 300
	if r.Unsigned && ok {
		return resp, nil
	}
	if !ok {
		apiErr := parseAPIError(hr.StatusCode, hr.Header, raw)
		if !r.Unsigned && headerValue(hr.Header, HeaderSignature) != "" {
			if _, verr := c.Verify(ctx, hr.Header, raw); verr != nil {
				return nil, fmt.Errorf("wxpay: %s %s answered HTTP %d with an unverifiable signature: %w", r.Method, target.Path, hr.StatusCode, verr)
			}
			apiErr.Verified = true
		}
		return nil, apiErr
	}
	keyID, err := c.Verify(ctx, hr.Header, raw)
	if err != nil {
		return nil, fmt.Errorf("wxpay: answer of %s %s rejected: %w", r.Method, target.Path, err)
	}
	resp.KeyID = keyID
	return resp, nil
}

// DoJSON marshals in (unless nil), calls Do, and unmarshals the verified
// answer into out (unless nil or the answer is empty).
func (c *Client) DoJSON(ctx context.Context, method, path string, in, out any) (*Response, error) {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return nil, fmt.Errorf("wxpay: encoding request body: %w", err)
		}
	}
	resp, err := c.Do(ctx, Request{Method: method, Path: path, Body: body})
	if err != nil {
		return nil, err
	}
	if out != nil && len(resp.Body) > 0 {
		if err := json.Unmarshal(resp.Body, out); err != nil {
			return resp, fmt.Errorf("%w: answer of %s %s: %v", ErrMalformed, method, path, err)
		}
	}
	return resp, nil
}

// resolve turns a path (or a full URL on the API host) into the target URL
// and the canonical URL that is signed: the path as sent plus "?" and the
// raw query when there is one.
func (c *Client) resolve(p string) (*url.URL, string, error) {
	var u *url.URL
	var err error
	if strings.HasPrefix(p, "/") {
		u, err = url.Parse(c.baseURL + p)
	} else {
		u, err = url.Parse(p)
	}
	if err != nil || u.Host == "" {
		return nil, "", fmt.Errorf("%w: request path %q is not a valid URL path", ErrMalformed, p)
	}
	return u, u.RequestURI(), nil
}

// requestSerial chooses the Wechatpay-Serial request header: an explicit
// one, else the public key id, else the newest platform certificate.
func (c *Client) requestSerial(explicit string) string {
	if explicit != "" {
		return explicit
	}
	if c.cfg.PublicKeyID != "" {
		return c.cfg.PublicKeyID
	}
	if k := c.newestCertificate(); k != nil {
		return k.id
	}
	return ""
}

// newestCertificate is the valid platform certificate with the latest
// NotBefore, the one encryption uses.
func (c *Client) newestCertificate() *platformKey {
	now := c.now()
	var best *platformKey
	for _, k := range c.keys.certificates() {
		if k.validAt(now) && (best == nil || k.notBefore.After(best.notBefore) ||
			(k.notBefore.Equal(best.notBefore) && k.id > best.id)) {
			best = k
		}
	}
	return best
}

func parseAPIError(status int, h http.Header, body []byte) *APIError {
	e := &APIError{StatusCode: status, RequestID: h.Get(HeaderRequestID)}
	var wire struct {
		Code    string       `json:"code"`
		Message string       `json:"message"`
		Detail  *ErrorDetail `json:"detail"`
	}
	if json.Unmarshal(body, &wire) == nil {
		e.Code, e.Message, e.Detail = wire.Code, wire.Message, wire.Detail
	}
	return e
}
