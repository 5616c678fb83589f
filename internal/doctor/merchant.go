package doctor

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wxpay-notify/wxpay-notify/internal/config"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// Clock thresholds: WeChat Pay refuses a request, and the ingress a
// notification, whose timestamp is more than five minutes off; a minute
// is already worth fixing.
const (
	ClockWarnSkew = time.Minute
	ClockFailSkew = wxpay.DefaultTimestampWindow
)

// CertificateWarnBefore: platform certificates that all expire within this
// time are a warning.
const CertificateWarnBefore = 30 * 24 * time.Hour

const clockFix = "synchronise this server's clock with NTP (chrony or systemd-timesyncd)"

// settingNamer names a merchant setting the way the operator wrote it: the
// variable, or the key of the merchants file.
type settingNamer func(key string) string

func namer(merchantsFile string) settingNamer {
	if merchantsFile != "" {
		return func(key string) string { return key + " (in " + merchantsFile + ")" }
	}
	return func(key string) string {
		if key == "previous_apiv3_keys" {
			return "WXPAY_APIV3_KEY_PREVIOUS"
		}
		return "WXPAY_" + strings.ToUpper(key)
	}
}

// answer is what the recorder saw of the last API answer.
type answer struct {
	sent, received time.Time
	status         int
	header         http.Header
}

// recorder is an http.RoundTripper that keeps the status, headers and
// timing of the last answer, for the clock check and for explaining an
// answer the SDK rejected.
type recorder struct {
	base http.RoundTripper
	now  func() time.Time

	mu   sync.Mutex
	last *answer
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	sent := r.now()
	resp, err := r.base.RoundTrip(req)
	if err == nil {
		a := &answer{sent: sent, received: r.now(), status: resp.StatusCode, header: resp.Header.Clone()}
		r.mu.Lock()
		r.last = a
		r.mu.Unlock()
	}
	return resp, err
}

func (r *recorder) lastAnswer() *answer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// checkMerchant runs the checks of one merchant, in order: notify_url, key
// files, merchant certificate, keys, then the checks that call the API.
func checkMerchant(ctx context.Context, cfg Config, m config.Merchant) []Result {
	name := namer(cfg.MerchantsFile)
	var out []Result
	add := func(r Result) { r.MchID = m.MchID; out = append(out, r) }

	add(CheckNotifyURL(cfg.NotifyURL, m.MchID, len(cfg.Merchants) == 1))
	keysOK := true
	var privateKey *rsa.PrivateKey
	if m.PrivateKeyFile != "" {
		var r Result
		r, privateKey = CheckPrivateKeyFile(name("private_key_file"), m.PrivateKeyFile)
		add(r)
		keysOK = keysOK && privateKey != nil
	} else {
		add(Result{Name: "private_key_file", Status: Skip, Message: name("private_key_file") + " is not set: this merchant makes no API calls (notifications are verified with the WeChat Pay public key alone)"})
	}
	if m.PublicKeyFile != "" {
		r, key := CheckPublicKeyFile(name("public_key_file"), m.PublicKeyFile)
		add(r)
		keysOK = keysOK && key != nil
	} else {
		add(Result{Name: "public_key_file", Status: Skip, Message: name("public_key_file") + " is not set: this merchant verifies WeChat Pay with platform certificates"})
	}
	if m.PrivateKeyFile != "" {
		add(CheckMerchantCertificate(MerchantCertificate{
			Setting: name("cert_file"), Path: m.CertFile,
			KeySetting: name("private_key_file"), Key: privateKey,
			SerialSetting: name("cert_serial_no"), Serial: m.CertSerialNo,
		}, cfg.Now()))
	} else {
		add(Result{Name: "merchant_certificate", Status: Skip, Message: "not used: " + name("private_key_file") + " is not set, so this merchant has no merchant API certificate to check"})
	}
	add(CheckAPIv3Key(name("apiv3_key"), m.APIv3Key))
	add(CheckAPIv2Key(name("apiv2_key"), m.V2Key))
	add(CheckPublicKeyID(name("public_key_id"), m.PublicKeyID))

	network := []string{"platform_certificates", "signed_request", "clock"}
	skipAll := func(msg, fix string) {
		for _, n := range network {
			add(Result{Name: n, Status: Skip, Message: msg, Fix: fix})
		}
	}
	if !keysOK {
		skipAll("not run: a key file above is unusable", "fix the key files above, then run the doctor again")
		return out
	}
	wcfg, err := m.WxpayConfig()
	if err != nil {
		add(Result{Name: "configuration", Status: Fail, Message: err.Error(), Fix: "correct the setting named above"})
		skipAll("not run: the merchant's configuration is invalid", "fix the configuration above, then run the doctor again")
		return out
	}
	rec := &recorder{base: http.DefaultTransport.(*http.Transport).Clone(), now: cfg.Now}
	httpClient := &http.Client{Transport: rec, Timeout: cfg.Timeout}
	wcfg.HTTPClient = httpClient
	wcfg.Now = cfg.Now
	client, err := wxpay.NewClient(wcfg)
	if err != nil {
		add(Result{Name: "configuration", Status: Fail, Message: err.Error(), Fix: "correct the setting named above"})
		skipAll("not run: the merchant's configuration is invalid", "fix the configuration above, then run the doctor again")
		return out
	}
	x := &explainer{m: m, name: name, base: wcfg.BaseURL, timeout: cfg.Timeout}
	if x.base == "" {
		x.base = config.DefaultAPIBase
	}

	if wcfg.DownloadCertificates {
		cctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		add(checkCertificates(cctx, client, rec, x, cfg.Now))
		cancel()
	} else {
		add(Result{Name: "platform_certificates", Status: Skip, Message: "not used: this merchant verifies WeChat Pay with the public key " + m.PublicKeyID})
	}

	var signed Result
	if wcfg.Signer != nil {
		sctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		err := signedRequest(sctx, client, m)
		cancel()
		x.setSkew(rec.lastAnswer())
		signed = x.signedResult(err, rec.lastAnswer())
	} else {
		signed = Result{Name: "signed_request", Status: Skip, Message: "not run: " + name("private_key_file") + " is not set, so this merchant cannot sign API requests (the ingress does not need to)"}
		pctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		probeClock(pctx, httpClient, x.base)
		cancel()
	}
	add(signed)
	add(clockResult(rec.lastAnswer()))
	return out
}

// signedRequest queries an order that does not exist, with a random
// out_trade_no: the cheapest signed call whose answer is signed too. In
// partner mode the service provider stands in for the sub-merchant; the
// answer is an error either way, which is all the check needs.
func signedRequest(ctx context.Context, c *wxpay.Client, m config.Merchant) error {
	var b [10]byte
	rand.Read(b[:])
	sub := ""
	if m.PartnerMode {
		sub = m.MchID
	}
	_, err := c.QueryOrderByOutTradeNo(ctx, sub, "doctor"+hex.EncodeToString(b[:]))
	return err
}

// probeClock makes one unsigned request to the API host, only to read the
// time in its answer.
func probeClock(ctx context.Context, hc *http.Client, base string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+wxpay.CertificatesPath, nil)
	if err != nil {
		return
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "wxpay-notify-doctor/1")
	if resp, err := hc.Do(req); err == nil {
		resp.Body.Close()
	}
}

// skewOf returns how far WeChat Pay's clock is ahead of ours (negative:
// behind), measured at the middle of the request, from the answer's
// Wechatpay-Timestamp (the clock WeChat Pay signs with) or else its Date
// header; ok is false when the answer has neither.
func skewOf(a *answer) (skew time.Duration, source string, ok bool) {
	if a == nil {
		return 0, "", false
	}
	var platform time.Time
	if ts := a.header.Get(wxpay.HeaderTimestamp); ts != "" {
		if sec, err := strconv.ParseInt(ts, 10, 64); err == nil {
			platform, source = time.Unix(sec, 0), "the Wechatpay-Timestamp of its answer"
		}
	}
	if platform.IsZero() {
		if d, err := http.ParseTime(a.header.Get("Date")); err == nil {
			platform, source = d, "the Date header of its answer"
		}
	}
	if platform.IsZero() {
		return 0, "", false
	}
	// The platform's time is whole seconds: compare it with ours cut to
	// whole seconds too.
	local := a.sent.Add(a.received.Sub(a.sent) / 2).Truncate(time.Second)
	return platform.Sub(local), source, true
}

// clockResult compares this server's clock with WeChat Pay's.
func clockResult(a *answer) Result {
	r := Result{Name: "clock"}
	skew, source, ok := skewOf(a)
	if !ok {
		r.Status = Warn
		r.Message = "not checked: no answer from the WeChat Pay API carried its time (see the checks above)"
		r.Fix = "make sure this server's clock is synchronised with NTP: WeChat Pay refuses requests, and the ingress refuses notifications, more than 5 minutes off"
		return r
	}
	abs, dir := skew, "behind"
	if skew < 0 {
		abs, dir = -skew, "ahead of"
	}
	switch {
	case abs > ClockFailSkew:
		r.Status = Fail
		r.Message = fmt.Sprintf("this server's clock is %s %s WeChat Pay's (from %s): more than the 5 minutes WeChat Pay and the ingress allow, so requests and notifications are refused", abs, dir, source)
		r.Fix = clockFix
	case abs > ClockWarnSkew:
		r.Status = Warn
		r.Message = fmt.Sprintf("this server's clock is %s %s WeChat Pay's (from %s); past 5 minutes requests and notifications are refused", abs, dir, source)
		r.Fix = clockFix
	default:
		r.Status = OK
		r.Message = fmt.Sprintf("this server's clock is within %s of WeChat Pay's (from %s)", max(abs, time.Second), source)
	}
	return r
}

// explainer turns the errors of API calls into plain words for one
// merchant.
type explainer struct {
	m       config.Merchant
	name    settingNamer
	base    string
	timeout time.Duration
	// skew is WeChat Pay's clock minus ours, when known.
	skew    time.Duration
	skewSrc string
	skewOK  bool
}

func (x *explainer) setSkew(a *answer) {
	x.skew, x.skewSrc, x.skewOK = skewOf(a)
}

// signError explains a 401 or SIGN_ERROR answer: WeChat Pay did not accept
// the request's signature.
func (x *explainer) signError(apiErr *wxpay.APIError) (string, string) {
	said := "HTTP 401"
	if apiErr != nil {
		said = fmt.Sprintf("HTTP %d", apiErr.StatusCode)
		if apiErr.Code != "" {
			said += " " + apiErr.Code
		}
		if apiErr.Message != "" {
			said += ": " + apiErr.Message
		}
	}
	msg := "WeChat Pay refused the request's signature (" + said + ")"
	fix := fmt.Sprintf("check that %s is apiclient_key.pem of merchant %s (not another merchant's, not an old one), that %s is the serial of the certificate issued with that key (商户平台 → 账户中心 → API安全 → API证书 → 管理证书), that %s %s is the merchant that owns them, and that this server's clock is right",
		x.name("private_key_file"), x.m.MchID, x.name("cert_serial_no"), x.name("mchid"), x.m.MchID)
	if x.skewOK && (x.skew > ClockFailSkew || -x.skew > ClockFailSkew) {
		msg += "; this server's clock is more than 5 minutes off WeChat Pay's, which alone makes WeChat refuse every request"
		fix = clockFix + "; then " + fix
	}
	return msg, fix
}

// explain puts an error of an API call into plain words: what happened and
// what to do. a is the last answer seen, if any.
func (x *explainer) explain(err error, a *answer) (msg, fix string) {
	serial := ""
	status := 0
	if a != nil {
		serial = a.header.Get(wxpay.HeaderSerial)
		status = a.status
	}
	var apiErr *wxpay.APIError
	errors.As(err, &apiErr)
	reach := "check that this server can reach " + x.base + " over HTTPS (firewall, outbound proxy, DNS) and that " + x.name("api_base") + " is right"
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("no answer from the WeChat Pay API at %s within %s", x.base, x.timeout), reach
	case errors.Is(err, wxpay.ErrTransport):
		return fmt.Sprintf("cannot reach the WeChat Pay API at %s: %v", x.base, err), reach
	case errors.Is(err, wxpay.ErrTimestampSkew):
		return "the time in WeChat Pay's answer is more than 5 minutes from this server's clock, so the answer cannot be trusted (see the clock check)", clockFix
	case status == http.StatusUnauthorized || errors.Is(err, wxpay.ErrSignError):
		msg, fix := x.signError(apiErr)
		if apiErr == nil {
			msg += "; its answer could not be verified either (" + err.Error() + ")"
		}
		return msg, fix
	case errors.Is(err, wxpay.ErrBadSignature):
		if wxpay.IsPublicKeyID(serial) {
			return fmt.Sprintf("WeChat Pay's answer, signed with public key %s, does not verify with %s %s: that file is not WeChat Pay's public key %s", serial, x.name("public_key_file"), x.m.PublicKeyFile, serial),
				"download the WeChat Pay public key again (商户平台 → 账户中心 → API安全 → 微信支付公钥) and set " + x.name("public_key_file") + " to it; if it is right, check that no proxy between here and " + x.base + " alters the answers"
		}
		return fmt.Sprintf("WeChat Pay's answer does not verify with platform certificate %s", serial),
			"delete the cached certificates in " + x.name("platform_cert_dir") + " (if set) and run the doctor again; check that no proxy between here and " + x.base + " alters the answers"
	case errors.Is(err, wxpay.ErrUnknownSerial):
		if wxpay.IsPublicKeyID(serial) {
			return fmt.Sprintf("WeChat Pay signed its answer with public key %s, but this merchant is configured with %q", serial, x.m.PublicKeyID),
				fmt.Sprintf("set %s to %s and %s to that key's pub_key.pem (商户平台 → 账户中心 → API安全 → 微信支付公钥)", x.name("public_key_id"), serial, x.name("public_key_file"))
		}
		return fmt.Sprintf("WeChat Pay signed its answer with platform certificate %s, which this merchant does not have", serial),
			"configure the WeChat Pay public key (" + x.name("public_key_file") + " and " + x.name("public_key_id") + "), or the merchant private key and serial so that platform certificates are downloaded"
	case errors.Is(err, wxpay.ErrCertificateRefresh):
		return "the answer is signed with a platform certificate that could not be downloaded: " + err.Error(), "see the platform_certificates check above"
	case errors.Is(err, wxpay.ErrMissingHeader):
		return fmt.Sprintf("the answer (HTTP %d) carries no WeChat Pay signature", status),
			"check that " + x.name("api_base") + " " + x.base + " is the WeChat Pay API (default " + config.DefaultAPIBase + ") and that no proxy strips the Wechatpay-* headers"
	}
	return err.Error(), "check " + x.name("api_base") + " and the merchant settings"
}

// signedResult turns the outcome of the signed test request into a Result.
func (x *explainer) signedResult(err error, a *answer) Result {
	r := Result{Name: "signed_request"}
	serial := ""
	if a != nil {
		serial = a.header.Get(wxpay.HeaderSerial)
	}
	var apiErr *wxpay.APIError
	switch {
	case err == nil:
		r.Status, r.Message = OK, "WeChat Pay accepted the signed request and its answer verified with key "+serial
	case errors.As(err, &apiErr) && apiErr.Verified && errors.Is(apiErr, wxpay.ErrOrderNotExist):
		r.Status = OK
		r.Message = "WeChat Pay accepted the signed request (a query of an order that does not exist answered ORDER_NOT_EXIST) and its answer verified with key " + serial
	case errors.As(err, &apiErr) && apiErr.Verified && (apiErr.StatusCode == http.StatusUnauthorized || errors.Is(apiErr, wxpay.ErrSignError)):
		r.Status = Fail
		r.Message, r.Fix = x.signError(apiErr)
	case errors.As(err, &apiErr) && apiErr.Verified && (apiErr.StatusCode == http.StatusTooManyRequests || apiErr.StatusCode >= 500):
		r.Status = Warn
		r.Message = "could not confirm: WeChat Pay answered " + apiErr.Error()
		r.Fix = "run the doctor again in a minute"
	case errors.As(err, &apiErr) && apiErr.Verified:
		r.Status = OK
		r.Message = fmt.Sprintf("WeChat Pay accepted the signed request and its answer verified with key %s (it answered %s %s, as expected for a test query)", serial, apiErr.Code, apiErr.Message)
	default:
		r.Status = Fail
		r.Message, r.Fix = x.explain(err, a)
	}
	return r
}

// certificatesAnswer is the body of /v3/certificates.
type certificatesAnswer struct {
	Data []struct {
		SerialNo           string `json:"serial_no"`
		EncryptCertificate struct {
			Nonce          string `json:"nonce"`
			AssociatedData string `json:"associated_data"`
			Ciphertext     string `json:"ciphertext"`
		} `json:"encrypt_certificate"`
	} `json:"data"`
}

// checkCertificates downloads the platform certificates, decrypts them with
// the APIv3 key, checks their expiry, then has the SDK load them (which
// verifies the download's signature).
func checkCertificates(ctx context.Context, c *wxpay.Client, rec *recorder, x *explainer, now func() time.Time) Result {
	r := Result{Name: "platform_certificates", Status: Fail}
	resp, err := c.Do(ctx, wxpay.Request{Method: http.MethodGet, Path: wxpay.CertificatesPath, Unsigned: true})
	x.setSkew(rec.lastAnswer())
	var apiErr *wxpay.APIError
	switch {
	case errors.As(err, &apiErr) && (apiErr.StatusCode == http.StatusUnauthorized || errors.Is(apiErr, wxpay.ErrSignError)):
		r.Message, r.Fix = x.signError(apiErr)
		return r
	case errors.As(err, &apiErr) && (apiErr.StatusCode == http.StatusNotFound || errors.Is(apiErr, wxpay.ErrNotFound)):
		r.Message = "WeChat Pay has no platform certificates for this merchant (" + apiErr.Error() + "): merchants onboarded since 2024 use the WeChat Pay public key instead"
		if x.m.PublicKeyFile != "" {
			r.Status = Warn
			r.Fix = "unset " + x.name("platform_cert_dir") + ": this merchant verifies with the public key " + x.m.PublicKeyID + " alone"
		} else {
			r.Fix = "configure the WeChat Pay public key: " + x.name("public_key_file") + " (pub_key.pem) and " + x.name("public_key_id") + " (PUB_KEY_ID_…), from 商户平台 → 账户中心 → API安全 → 微信支付公钥"
		}
		return r
	case errors.As(err, &apiErr):
		r.Message = "the certificates endpoint answered " + apiErr.Error()
		r.Fix = "WeChat Pay may be having trouble: run the doctor again in a few minutes; if it persists, configure the WeChat Pay public key (" + x.name("public_key_file") + ", " + x.name("public_key_id") + ") so that notifications verify without certificates"
		return r
	case err != nil:
		r.Message, r.Fix = x.explain(err, rec.lastAnswer())
		r.Message = "downloading the platform certificates: " + r.Message
		return r
	}

	var ans certificatesAnswer
	if err := json.Unmarshal(resp.Body, &ans); err != nil || len(ans.Data) == 0 {
		r.Message = "the certificates endpoint answered no certificates"
		r.Fix = "configure the WeChat Pay public key (" + x.name("public_key_file") + ", " + x.name("public_key_id") + ")"
		return r
	}
	var (
		newest     time.Time
		newestID   string
		byPrevious bool
	)
	for _, d := range ans.Data {
		ec := d.EncryptCertificate
		plain, err := wxpay.DecryptAESGCM([]byte(x.m.APIv3Key), ec.Nonce, ec.AssociatedData, ec.Ciphertext)
		if err != nil {
			for _, k := range x.m.PreviousAPIv3Keys {
				if plain, err = wxpay.DecryptAESGCM([]byte(k), ec.Nonce, ec.AssociatedData, ec.Ciphertext); err == nil {
					byPrevious = true
					break
				}
			}
		}
		if errors.Is(err, wxpay.ErrDecrypt) {
			r.Message = "the downloaded platform certificates do not decrypt with " + x.name("apiv3_key") + ": the APIv3 key is wrong (notifications will not decrypt either)"
			r.Fix = apiv3Fix + "; if nobody knows it, set a new one in the console and update every system that uses it"
			return r
		}
		if err != nil {
			r.Message = fmt.Sprintf("platform certificate %s: %v", d.SerialNo, err)
			r.Fix = "run the doctor again; if it persists, configure the WeChat Pay public key instead"
			return r
		}
		cert, err := wxpay.LoadCertificate(plain)
		if err != nil {
			r.Message = fmt.Sprintf("platform certificate %s does not parse: %v", d.SerialNo, err)
			r.Fix = "run the doctor again; if it persists, configure the WeChat Pay public key instead"
			return r
		}
		if cert.NotAfter.After(newest) {
			newest, newestID = cert.NotAfter, wxpay.CertificateSerial(cert)
		}
	}
	t := now()
	if t.After(newest) {
		r.Message = fmt.Sprintf("every platform certificate has expired (the newest, %s, on %s)", newestID, newest.Format(time.DateOnly))
		r.Fix = "configure the WeChat Pay public key (" + x.name("public_key_file") + ", " + x.name("public_key_id") + "): WeChat Pay no longer issues platform certificates to every merchant"
		return r
	}
	if err := c.RefreshCertificates(ctx); err != nil {
		r.Message, r.Fix = x.explain(err, rec.lastAnswer())
		r.Message = "the certificates download was refused: " + r.Message
		return r
	}
	left := newest.Sub(t)
	switch {
	case byPrevious:
		r.Status = Warn
		r.Message = "the platform certificates decrypt only with a key of " + x.name("previous_apiv3_keys") + ", not with " + x.name("apiv3_key")
		r.Fix = "put the APIv3 key the console has now in " + x.name("apiv3_key") + "; older ones go in " + x.name("previous_apiv3_keys")
	case left < CertificateWarnBefore:
		r.Status = Warn
		r.Message = fmt.Sprintf("the newest platform certificate, %s, expires on %s (in %d days)", newestID, newest.Format(time.DateOnly), int(left.Hours()/24))
		r.Fix = "configure the WeChat Pay public key (" + x.name("public_key_file") + ", " + x.name("public_key_id") + ") before then: if WeChat Pay issues no new certificate, notifications stop verifying when it expires"
	default:
		r.Status = OK
		r.Message = fmt.Sprintf("%d platform certificate(s) downloaded, verified and decrypted with the APIv3 key; the newest, %s, expires on %s", len(ans.Data), newestID, newest.Format(time.DateOnly))
	}
	return r
}
