// Package wxpaytest is an in-process fake of the WeChat Pay API v3
// platform, in the spirit of net/http/httptest: there is no public v3
// sandbox, so every end-to-end test and the sandbox command use it.
//
// A Server holds platform keys (platform certificates, the WeChat Pay
// public key, or both, and a rotation with two valid certificates), serves
// the certificates endpoint, verifies the merchant signature of every
// request (answering a bad one 401 SIGN_ERROR, as WeChat does), signs every
// answer, and builds and delivers signed, encrypted notifications with
// WeChat's retry schedule on a time scale. V2PayNotification and
// V2RefundNotification build legacy API v2 bodies.
//
// Ciphertexts (notification resources, downloaded certificates, v2
// req_info) are built with the standard library, not with package wxpay,
// so that tests check the SDK's decryption instead of running its code both
// ways; EncryptResource is that encryption for bodies built by hand.
//
// Routes are registered with HandleAPI, so later parts of the platform
// (orders, refunds, bills) plug in without touching authentication or
// answer signing.
//
// AutoNotify makes the platform send the notification of each state change
// it makes by itself, with faults on purpose (dropped, delayed, duplicated,
// legacy v2 XML). The trade bills list the platform's own payments and
// refunds, besides rows a test adds.
package wxpaytest

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// TB is the part of testing.TB the server needs; cmd/sandbox passes its own.
type TB interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
}

// Mode says which keys the platform signs with.
type Mode int

const (
	// ModeCertificate: platform certificates only (merchants onboarded
	// before the public key existed).
	ModeCertificate Mode = iota
	// ModePublicKey: the WeChat Pay public key only; the certificates
	// endpoint answers 404 NOT_FOUND (merchants onboarded since 2024).
	ModePublicKey
	// ModeBoth: the migration. Answers are signed with the public key when
	// the request's Wechatpay-Serial names it, otherwise with the newest
	// certificate; notifications choose per NotificationOptions.KeyID.
	ModeBoth
)

// Options configures a Server. The zero value is certificate mode with one
// platform certificate, the real clock and the real retry schedule.
type Options struct {
	Mode Mode
	// Rotation adds a second valid platform certificate, newer than the
	// first (the overlap of a certificate rollover).
	Rotation bool
	// Now is the platform's clock; default time.Now.
	Now func() time.Time
	// TradeNow is the clock of the trades: the create and success times of
	// orders and refunds, the dates in their ids, and so the day of each
	// bill row. Default Now. Dating the trades in the past (two days back,
	// say) lets a test reconcile their bills in a process whose clock it
	// cannot move, while requests, answers and notifications stay signed
	// and checked in the present of Now.
	TradeNow func() time.Time
	// TimeScale multiplies the notification retry schedule (0.001 turns
	// 15 s into 15 ms). Default 1.
	TimeScale float64
	// PublicKeyID defaults to PUB_KEY_ID_0000000000000024101100397200000006.
	PublicKeyID string
}

// PlatformKey is one key the platform signs with.
type PlatformKey struct {
	// ID is the certificate serial or the public key id.
	ID         string
	PrivateKey *rsa.PrivateKey
	// Certificate and CertificatePEM are nil for the public key.
	Certificate    *x509.Certificate
	CertificatePEM []byte
}

// Merchant is a merchant account on the fake platform, with its keys.
type Merchant struct {
	MchID      string
	APIv3Key   string
	APIv2Key   string
	PrivateKey *rsa.PrivateKey
	// CertSerialNo is the serial of Certificate, the merchant API certificate.
	CertSerialNo string
	Certificate  *x509.Certificate
}

// Server is the fake platform. Its methods are safe for concurrent use.
type Server struct {
	ts   *httptest.Server
	opts Options
	now  func() time.Time
	// tradeNow is Options.TradeNow, or now.
	tradeNow func() time.Time
	ca       *ca
	mux      *http.ServeMux
	// orders holds the orders and refunds of the order and refund
	// endpoints (orders.go).
	orders *book
	// bills is the bill desk (bills.go).
	bills *Bills
	// notify sends the platform's own notifications (autonotify.go).
	notify *notifier
	// routes maps each HandleAPI pattern to its current function.
	routes map[string]APIFunc

	mu             sync.Mutex
	certs          []*PlatformKey // newest last
	pub            *PlatformKey
	merchants      map[string]*Merchant
	nextKey        int
	requests       map[string]int
	badSignatures  bool
	certsOverride  *apiAnswer
	certsHold      *hold
	nextMerchantID int
}

// hold is a gate that HoldCertificates closes on release.
type hold struct {
	once sync.Once
	gate chan struct{}
}

func (h *hold) release() { h.once.Do(func() { close(h.gate) }) }

type apiAnswer struct {
	status int
	body   any
}

// Key pool slots: 0 CA, 1-3 platform certificates, 4 public key, 5+ merchants.
const (
	slotFirstCert = 1
	slotPublicKey = 4
	slotMerchant  = 5
)

// NewServer starts a fake platform and closes it at t's cleanup. t may be
// nil, and then the caller must call Close.
func NewServer(t TB, opts Options) *Server {
	if t != nil {
		t.Helper()
	}
	s := &Server{
		opts:      opts,
		now:       opts.Now,
		merchants: make(map[string]*Merchant),
		requests:  make(map[string]int),
		routes:    make(map[string]APIFunc),
		mux:       http.NewServeMux(),
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.tradeNow = opts.TradeNow
	if s.tradeNow == nil {
		s.tradeNow = s.now
	}
	if s.opts.TimeScale <= 0 {
		s.opts.TimeScale = 1
	}
	if s.opts.PublicKeyID == "" {
		s.opts.PublicKeyID = "PUB_KEY_ID_0000000000000024101100397200000006"
	}
	now := s.now()
	s.ca = newCA(now)
	if opts.Mode != ModePublicKey {
		s.nextKey = slotFirstCert
		s.addCertificateLocked(now.Add(-48*time.Hour), now.Add(5*365*24*time.Hour))
		if opts.Rotation {
			s.addCertificateLocked(now.Add(-1*time.Hour), now.Add(5*365*24*time.Hour))
		}
	}
	if opts.Mode != ModeCertificate {
		s.pub = &PlatformKey{ID: s.opts.PublicKeyID, PrivateKey: pooledKey(slotPublicKey)}
	}
	s.HandleAPI("GET /v3/certificates", s.serveCertificates)
	s.orders = newBook()
	s.notify = newNotifier()
	s.registerOrderRoutes()
	s.registerBillRoutes()
	s.ts = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	if t != nil {
		t.Cleanup(s.Close)
	}
	return s
}

// URL is the base URL to give wxpay.Config.BaseURL.
func (s *Server) URL() string { return s.ts.URL }

// Close shuts the server down. It releases held certificate requests
// first, so that it does not wait for them, and stops the notifications
// the platform is sending by itself (AutoNotify), waiting for their
// goroutines to return.
func (s *Server) Close() {
	s.notify.stop()
	s.mu.Lock()
	h := s.certsHold
	s.certsHold = nil
	s.mu.Unlock()
	if h != nil {
		h.release()
	}
	s.ts.Close()
}

// Now reads the platform's clock.
func (s *Server) Now() time.Time { return s.now() }

// AddPlatformCertificate issues a new platform certificate valid from
// notBefore to notAfter and lists it on the certificates endpoint; it
// becomes the newest, so answers are signed with it from now on when it is
// valid. Use it to play a certificate rollover or an expiry.
func (s *Server) AddPlatformCertificate(notBefore, notAfter time.Time) *PlatformKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addCertificateLocked(notBefore, notAfter)
}

func (s *Server) addCertificateLocked(notBefore, notAfter time.Time) *PlatformKey {
	if s.nextKey < slotFirstCert {
		s.nextKey = slotFirstCert
	}
	slot := s.nextKey
	if slot >= slotPublicKey { // reuse certificate slots past three
		slot = slotFirstCert + (slot-slotFirstCert)%3
	}
	s.nextKey++
	key := pooledKey(slot)
	cert, certPEM := s.ca.issue(key, "Tenpay.com platform certificate", notBefore, notAfter)
	k := &PlatformKey{ID: wxpay.CertificateSerial(cert), PrivateKey: key, Certificate: cert, CertificatePEM: certPEM}
	s.certs = append(s.certs, k)
	return k
}

// RemovePlatformCertificate stops listing the certificate with serial id.
func (s *Server) RemovePlatformCertificate(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, k := range s.certs {
		if k.ID == id {
			s.certs = append(s.certs[:i], s.certs[i+1:]...)
			return
		}
	}
}

// PlatformCertificates returns the listed platform certificates, oldest first.
func (s *Server) PlatformCertificates() []*PlatformKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*PlatformKey(nil), s.certs...)
}

// PublicKey returns the WeChat Pay public key, or nil in certificate mode.
func (s *Server) PublicKey() *PlatformKey { return s.pub }

// signingKey picks the key for an answer or a notification: the one named
// by want if the platform has it, else the public key in public-key mode,
// else the newest valid certificate.
func (s *Server) signingKey(want string) (*PlatformKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if want != "" {
		if s.pub != nil && want == s.pub.ID {
			return s.pub, nil
		}
		for _, k := range s.certs {
			if k.ID == want {
				return k, nil
			}
		}
		if wxpay.IsPublicKeyID(want) || s.opts.Mode == ModePublicKey {
			return nil, fmt.Errorf("wxpaytest: the platform has no key %s", want)
		}
	}
	if s.opts.Mode == ModePublicKey {
		return s.pub, nil
	}
	for i := len(s.certs) - 1; i >= 0; i-- {
		c := s.certs[i].Certificate
		if !now.Before(c.NotBefore) && !now.After(c.NotAfter) {
			return s.certs[i], nil
		}
	}
	if s.pub != nil {
		return s.pub, nil
	}
	return nil, fmt.Errorf("wxpaytest: no valid platform key to sign with")
}

// MerchantOptions configures AddMerchant; zero fields get generated values.
type MerchantOptions struct {
	MchID    string
	APIv3Key string
	APIv2Key string
}

// AddMerchant opens a merchant account with its own API key and
// certificate.
func (s *Server) AddMerchant(o MerchantOptions) *Merchant {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nextMerchantID
	s.nextMerchantID++
	if o.MchID == "" {
		o.MchID = strconv.Itoa(1230000109 + n)
	}
	if o.APIv3Key == "" {
		o.APIv3Key = fmt.Sprintf("wxpaytestAPIv3Key%015d", n)
	}
	if o.APIv2Key == "" {
		o.APIv2Key = fmt.Sprintf("wxpaytestAPIv2Key%015d", n)
	}
	key := pooledKey(slotMerchant + n)
	now := s.now()
	cert, _ := s.ca.issue(key, o.MchID, now.Add(-24*time.Hour), now.Add(5*365*24*time.Hour))
	m := &Merchant{MchID: o.MchID, APIv3Key: o.APIv3Key, APIv2Key: o.APIv2Key, PrivateKey: key,
		CertSerialNo: wxpay.CertificateSerial(cert), Certificate: cert}
	s.merchants[m.MchID] = m
	return m
}

// Merchant returns the merchant with mchid, or nil.
func (s *Server) Merchant(mchid string) *Merchant {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.merchants[mchid]
}

// ClientConfig is a wxpay.Config for m against this server: in certificate
// and both modes it downloads the platform certificates, in public-key and
// both modes it carries the public key. The clock is the server's.
func (s *Server) ClientConfig(m *Merchant) wxpay.Config {
	cfg := wxpay.Config{
		MchID:        m.MchID,
		Signer:       m.PrivateKey,
		CertSerialNo: m.CertSerialNo,
		APIv3Key:     m.APIv3Key,
		BaseURL:      s.URL(),
		Now:          s.now,
	}
	if s.opts.Mode != ModeCertificate {
		cfg.PublicKey = &s.pub.PrivateKey.PublicKey
		cfg.PublicKeyID = s.pub.ID
	}
	if s.opts.Mode != ModePublicKey {
		cfg.DownloadCertificates = true
	}
	return cfg
}

// SetBadAnswerSignatures makes every API answer carry a wrong signature
// (to test that clients reject them).
func (s *Server) SetBadAnswerSignatures(on bool) {
	s.mu.Lock()
	s.badSignatures = on
	s.mu.Unlock()
}

// SetCertificatesAnswer makes the certificates endpoint answer status with
// an error code (for example 500 SYSTEM_ERROR); status 0 restores it.
func (s *Server) SetCertificatesAnswer(status int, code, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if status == 0 {
		s.certsOverride = nil
		return
	}
	s.certsOverride = &apiAnswer{status, errorBody{code, message}}
}

// HoldCertificates makes the certificates endpoint hold every request,
// counted in Requests as it arrives, until release is called (or the client
// gives up on the request): a certificate download as slow as a test needs.
// Requests that arrive after release are answered at once. release may be
// called more than once; Close calls it too.
func (s *Server) HoldCertificates() (release func()) {
	h := &hold{gate: make(chan struct{})}
	s.mu.Lock()
	prev := s.certsHold
	s.certsHold = h
	s.mu.Unlock()
	if prev != nil {
		prev.release()
	}
	return func() {
		s.mu.Lock()
		if s.certsHold == h {
			s.certsHold = nil
		}
		s.mu.Unlock()
		h.release()
	}
}

// Requests returns how many authenticated requests reached the route
// pattern (as given to HandleAPI).
func (s *Server) Requests(pattern string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[pattern]
}

// Call is an authenticated API request handed to a route.
type Call struct {
	Request  *http.Request
	Body     []byte
	Merchant *Merchant
	// Serial is the request's Wechatpay-Serial header.
	Serial string
}

// APIFunc answers an authenticated request: a status and a body that is
// marshalled as JSON (nil for no body; []byte is sent as is).
type APIFunc func(c *Call) (status int, body any)

// HandleAPI registers a route (a Go 1.22 ServeMux pattern such as
// "GET /v3/pay/transactions/id/{id}"). The server authenticates the
// merchant before fn runs and signs what fn answers. Registering a
// pattern again replaces its function, so a test can override one of the
// fake's own endpoints (the order and refund routes, say) to answer what
// it needs.
func (s *Server) HandleAPI(pattern string, fn APIFunc) {
	s.mu.Lock()
	_, known := s.routes[pattern]
	s.routes[pattern] = fn
	s.mu.Unlock()
	if known {
		return
	}
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		call := r.Context().Value(callKey{}).(*Call)
		call.Request = r
		s.mu.Lock()
		s.requests[pattern]++
		fn := s.routes[pattern]
		s.mu.Unlock()
		status, body := fn(call)
		s.answer(w, call.Serial, status, body)
	})
}

// HandleRaw registers a route whose answer is not signed and whose
// requests are still authenticated (the bill download).
func (s *Server) HandleRaw(pattern string, h http.HandlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests[pattern]++
		s.mu.Unlock()
		h(w, r)
	})
}

type callKey struct{}

type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ErrorAnswer is a WeChat-style error body for APIFunc results.
func ErrorAnswer(code, message string) any { return errorBody{code, message} }

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := readAll(r)
	if err != nil {
		s.answer(w, "", http.StatusBadRequest, errorBody{"INVALID_REQUEST", "请求体读取失败"})
		return
	}
	if r.Header.Get("User-Agent") == "" || r.Header.Get("Accept") == "" {
		s.answer(w, "", http.StatusBadRequest, errorBody{"INVALID_REQUEST", "Http头缺少Accept或User-Agent"})
		return
	}
	m, err := s.authenticate(r, body)
	if err != nil {
		s.answer(w, r.Header.Get(wxpay.HeaderSerial), http.StatusUnauthorized, errorBody{"SIGN_ERROR", err.Error()})
		return
	}
	call := &Call{Body: body, Merchant: m, Serial: r.Header.Get(wxpay.HeaderSerial)}
	r = r.WithContext(contextWithCall(r, call))
	if _, pattern := s.mux.Handler(r); pattern == "" {
		s.answer(w, call.Serial, http.StatusNotFound, errorBody{"NOT_FOUND", "请求的资源不存在"})
		return
	}
	s.mux.ServeHTTP(w, r)
}

// authenticate checks the Authorization header as WeChat does.
func (s *Server) authenticate(r *http.Request, body []byte) (*Merchant, error) {
	auth := r.Header.Get("Authorization")
	scheme, params, ok := strings.Cut(auth, " ")
	if !ok || scheme != wxpay.AuthorizationScheme {
		return nil, fmt.Errorf("Http头Authorization值格式错误，请参考《微信支付商户REST API签名规则》")
	}
	p := map[string]string{}
	for _, kv := range strings.Split(params, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
			return nil, fmt.Errorf("Http头Authorization值格式错误")
		}
		p[k] = v[1 : len(v)-1]
	}
	for _, k := range []string{"mchid", "nonce_str", "timestamp", "serial_no", "signature"} {
		if p[k] == "" {
			return nil, fmt.Errorf("Http头Authorization缺少%s", k)
		}
	}
	s.mu.Lock()
	m := s.merchants[p["mchid"]]
	s.mu.Unlock()
	if m == nil {
		return nil, fmt.Errorf("商户号%s不存在", p["mchid"])
	}
	if !strings.EqualFold(p["serial_no"], m.CertSerialNo) {
		return nil, fmt.Errorf("商户证书序列号有误。请使用签名私钥匹配的证书序列号")
	}
	ts, err := strconv.ParseInt(p["timestamp"], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("Http头Authorization中的timestamp格式错误")
	}
	if d := s.now().Sub(time.Unix(ts, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return nil, fmt.Errorf("Http头Authorization中的timestamp与发起请求的时间不得超过5分钟")
	}
	msg := wxpay.RequestMessage(r.Method, r.URL.RequestURI(), p["timestamp"], p["nonce_str"], body)
	if err := verifyRSA(&m.PrivateKey.PublicKey, msg, p["signature"]); err != nil {
		return nil, fmt.Errorf("错误的签名，验签失败")
	}
	return m, nil
}

// answer writes a signed answer.
func (s *Server) answer(w http.ResponseWriter, serial string, status int, body any) {
	var raw []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	key, err := s.signingKey(serial)
	if err != nil {
		key, _ = s.signingKey("")
	}
	h := w.Header()
	h.Set(wxpay.HeaderRequestID, fmt.Sprintf("%X-%d", s.now().UnixNano(), 0))
	if key != nil {
		s.mu.Lock()
		bad := s.badSignatures
		s.mu.Unlock()
		for k, v := range s.sign(key, raw, bad) {
			h[k] = v
		}
	}
	if raw != nil {
		h.Set("Content-Type", "application/json; charset=utf-8")
	}
	w.WriteHeader(status)
	w.Write(raw)
}

func (s *Server) serveCertificates(c *Call) (int, any) {
	s.mu.Lock()
	h := s.certsHold
	s.mu.Unlock()
	if h != nil {
		select {
		case <-h.gate:
		case <-c.Request.Context().Done():
			return http.StatusServiceUnavailable, errorBody{"SYSTEM_ERROR", "系统繁忙，请稍后重试"}
		}
	}
	s.mu.Lock()
	override := s.certsOverride
	certs := append([]*PlatformKey(nil), s.certs...)
	s.mu.Unlock()
	if override != nil {
		return override.status, override.body
	}
	if len(certs) == 0 {
		return http.StatusNotFound, errorBody{"NOT_FOUND", "无可用的平台证书，请在商户平台-API安全申请使用微信支付公钥。"}
	}
	type encrypted struct {
		Algorithm      string `json:"algorithm"`
		Nonce          string `json:"nonce"`
		AssociatedData string `json:"associated_data"`
		Ciphertext     string `json:"ciphertext"`
	}
	type item struct {
		SerialNo           string    `json:"serial_no"`
		EffectiveTime      string    `json:"effective_time"`
		ExpireTime         string    `json:"expire_time"`
		EncryptCertificate encrypted `json:"encrypt_certificate"`
	}
	var data []item
	for _, k := range certs {
		nonce := randomString(12)
		ct, err := EncryptResource(c.Merchant.APIv3Key, nonce, "certificate", k.CertificatePEM)
		if err != nil {
			return http.StatusInternalServerError, errorBody{"SYSTEM_ERROR", err.Error()}
		}
		data = append(data, item{
			SerialNo:           k.ID,
			EffectiveTime:      k.Certificate.NotBefore.In(wxpay.ChinaTime()).Format(time.RFC3339),
			ExpireTime:         k.Certificate.NotAfter.In(wxpay.ChinaTime()).Format(time.RFC3339),
			EncryptCertificate: encrypted{wxpay.AlgorithmAEADAES256GCM, nonce, "certificate", ct},
		})
	}
	sort.Slice(data, func(i, j int) bool { return data[i].EffectiveTime < data[j].EffectiveTime })
	return http.StatusOK, map[string]any{"data": data}
}
