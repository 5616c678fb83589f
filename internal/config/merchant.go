package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// Merchant is one WeChat Pay merchant as configured, secrets included. Key
// files are read by WxpayConfig. Its String, GoString, MarshalJSON and
// MarshalZerologObject mask the secrets.
type Merchant struct {
	// MchID is WXPAY_MCHID: the merchant id, or the service provider's id
	// in partner mode. Digits only.
	MchID string
	// APIv3Key is WXPAY_APIV3_KEY (or the content of WXPAY_APIV3_KEY_FILE):
	// exactly 32 bytes.
	APIv3Key string
	// PreviousAPIv3Keys is WXPAY_APIV3_KEY_PREVIOUS: older APIv3 keys kept
	// during a key rotation, tried after APIv3Key.
	PreviousAPIv3Keys []string
	// PrivateKeyFile is WXPAY_PRIVATE_KEY_FILE, the merchant API private key
	// (apiclient_key.pem), and CertSerialNo is WXPAY_CERT_SERIAL_NO, the
	// serial of its certificate. Both or neither.
	PrivateKeyFile string
	CertSerialNo   string
	// CertFile is WXPAY_CERT_FILE, the merchant API certificate
	// (apiclient_cert.pem). Optional: the commands do not need it; only
	// "ingress doctor" reads it, to check that the private key and
	// CertSerialNo belong to it. It needs PrivateKeyFile.
	CertFile string
	// PublicKeyFile is WXPAY_PUBLIC_KEY_FILE, the WeChat Pay public key
	// (pub_key.pem), and PublicKeyID is WXPAY_PUBLIC_KEY_ID, its id
	// (PUB_KEY_ID_…). Both or neither.
	PublicKeyFile string
	PublicKeyID   string
	// PlatformCertDir is WXPAY_PLATFORM_CERT_DIR, the cache of downloaded
	// platform certificates; empty keeps them in memory only.
	PlatformCertDir string
	// V2Key is WXPAY_APIV2_KEY (or the content of WXPAY_APIV2_KEY_FILE),
	// the API v2 key that verifies v2 XML notifications; empty when none is
	// configured. Read it with APIv2Key.
	V2Key string
	// PartnerMode is WXPAY_PARTNER_MODE: service provider (服务商) mode.
	PartnerMode bool
	// APIBase is WXPAY_API_BASE; empty means DefaultAPIBase.
	APIBase string

	origin origin
}

// origin says where a Merchant came from, so that its errors name the
// settings the operator wrote.
type origin struct {
	file  string // merchants file; empty for the environment and flags
	index int    // 1-based position in the file
	apiv3 string // how APIv3Key was given, e.g. "WXPAY_APIV3_KEY_FILE /run/…"
	apiv2 string // how V2Key was given

	// apiv3Unread and apiv2Unread mark keys whose file could not be read
	// (already reported), so Validate does not report them again.
	apiv3Unread bool
	apiv2Unread bool
}

// envNames maps the merchants-file keys to the variables.
var envNames = map[string]string{
	"mchid":               "WXPAY_MCHID",
	"apiv3_key":           "WXPAY_APIV3_KEY",
	"apiv3_key_file":      "WXPAY_APIV3_KEY_FILE",
	"previous_apiv3_keys": "WXPAY_APIV3_KEY_PREVIOUS",
	"private_key_file":    "WXPAY_PRIVATE_KEY_FILE",
	"cert_serial_no":      "WXPAY_CERT_SERIAL_NO",
	"cert_file":           "WXPAY_CERT_FILE",
	"public_key_file":     "WXPAY_PUBLIC_KEY_FILE",
	"public_key_id":       "WXPAY_PUBLIC_KEY_ID",
	"platform_cert_dir":   "WXPAY_PLATFORM_CERT_DIR",
	"apiv2_key":           "WXPAY_APIV2_KEY",
	"apiv2_key_file":      "WXPAY_APIV2_KEY_FILE",
	"partner_mode":        "WXPAY_PARTNER_MODE",
	"api_base":            "WXPAY_API_BASE",
}

// setting names a setting of m the way the operator wrote it: the variable
// for the environment, the key for a merchants file.
func (m Merchant) setting(key string) string {
	switch {
	case key == "apiv3_key" && m.origin.apiv3 != "":
		return m.origin.apiv3
	case key == "apiv2_key" && m.origin.apiv2 != "":
		return m.origin.apiv2
	case m.origin.file != "":
		return key
	}
	return envNames[key]
}

// problem prefixes msg with the merchant's place in its merchants file.
func (m Merchant) problem(format string, args ...any) error {
	if m.origin.file != "" {
		prefix := fmt.Sprintf("merchants file %s: merchant #%d (mchid %s): ", m.origin.file, m.origin.index, m.MchID)
		return fmt.Errorf("%s"+format, append([]any{prefix}, args...)...)
	}
	return fmt.Errorf(format, args...)
}

// APIv2Key returns the API v2 key, or "" when v2 notifications are not
// configured.
func (m Merchant) APIv2Key() string { return m.V2Key }

// Validate reports every problem with m at once. Each names the setting
// (the variable, or the key and place in the merchants file) and says what
// to do; none contains a key. It does not read the key files: WxpayConfig
// does.
func (m Merchant) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, m.problem(format, args...)) }
	s := m.setting

	switch {
	case m.MchID == "":
		bad("%s is not set: set the merchant id (商户号)", s("mchid"))
	case !isDigits(m.MchID):
		bad("%s=%q: a merchant id is digits only (商户号)", s("mchid"), m.MchID)
	}

	switch {
	case m.origin.apiv3Unread:
	case m.APIv3Key == "" && m.origin.apiv3 != "":
		bad("%s is empty: it must hold the 32-byte APIv3 key from the merchant console (账户中心 → API安全 → APIv3密钥)", s("apiv3_key"))
	case m.APIv3Key == "":
		bad("%s is not set: set %s or %s to the 32-byte APIv3 key from the merchant console (账户中心 → API安全 → APIv3密钥)", s("apiv3_key"), s("apiv3_key"), s("apiv3_key_file"))
	case len(m.APIv3Key) != 32:
		bad("%s: the APIv3 key must be exactly 32 bytes, got %d: copy it again from the merchant console (账户中心 → API安全 → APIv3密钥)", s("apiv3_key"), len(m.APIv3Key))
	}
	for i, k := range m.PreviousAPIv3Keys {
		if len(k) != 32 {
			bad("%s: previous APIv3 key #%d must be exactly 32 bytes, got %d", s("previous_apiv3_keys"), i+1, len(k))
		}
	}

	hasPrivate := m.PrivateKeyFile != "" || m.CertSerialNo != ""
	switch {
	case m.PrivateKeyFile != "" && m.CertSerialNo == "":
		bad("%s is set but %s is not: set both (the serial of the merchant API certificate, 证书序列号) or neither", s("private_key_file"), s("cert_serial_no"))
	case m.PrivateKeyFile == "" && m.CertSerialNo != "":
		bad("%s is set but %s is not: set both (the merchant API private key, apiclient_key.pem) or neither", s("cert_serial_no"), s("private_key_file"))
	}
	if m.CertFile != "" && m.PrivateKeyFile == "" {
		bad("%s is set but %s is not: the merchant API certificate is only checked against its private key (apiclient_key.pem); set both or unset %s", s("cert_file"), s("private_key_file"), s("cert_file"))
	}
	if m.CertSerialNo != "" && !isHex(m.CertSerialNo) {
		bad("%s=%q: a certificate serial is hexadecimal (copy it from the merchant console: API安全 → API证书)", s("cert_serial_no"), m.CertSerialNo)
	}

	hasPublic := m.PublicKeyFile != "" || m.PublicKeyID != ""
	switch {
	case m.PublicKeyFile != "" && m.PublicKeyID == "":
		bad("%s is set but %s is not: set both (the id PUB_KEY_ID_… shown next to the WeChat Pay public key) or neither", s("public_key_file"), s("public_key_id"))
	case m.PublicKeyFile == "" && m.PublicKeyID != "":
		bad("%s is set but %s is not: set both (the WeChat Pay public key, pub_key.pem) or neither", s("public_key_id"), s("public_key_file"))
	}
	if m.PublicKeyID != "" && !wxpay.IsPublicKeyID(m.PublicKeyID) {
		bad("%s=%q must start with PUB_KEY_ID_ (it is the id of the WeChat Pay public key, not a certificate serial)", s("public_key_id"), m.PublicKeyID)
	}

	if !hasPublic && !hasPrivate {
		bad("no way to verify WeChat Pay signatures: set %s and %s (the WeChat Pay public key), or %s and %s so that platform certificates can be downloaded, or both",
			s("public_key_file"), s("public_key_id"), s("private_key_file"), s("cert_serial_no"))
	}
	if m.PlatformCertDir != "" && !hasPrivate {
		bad("%s is set but platform certificates cannot be downloaded without %s and %s", s("platform_cert_dir"), s("private_key_file"), s("cert_serial_no"))
	}

	if !m.origin.apiv2Unread && m.V2Key != "" && len(m.V2Key) != 32 {
		bad("%s: the API v2 key must be exactly 32 bytes, got %d: copy it again from the merchant console (API安全 → API密钥)", s("apiv2_key"), len(m.V2Key))
	}

	if m.APIBase != "" {
		if u, err := url.Parse(m.APIBase); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("%s=%q is not an http(s) URL (default %s)", s("api_base"), m.APIBase, DefaultAPIBase)
		}
	}
	return errors.Join(errs...)
}

// downloadsCertificates reports whether platform certificates are
// downloaded: with a private key, unless a public key is configured without
// a certificate cache (public-key-only merchants have no certificates).
func (m Merchant) downloadsCertificates() bool {
	hasPrivate := m.PrivateKeyFile != ""
	hasPublic := m.PublicKeyFile != ""
	return hasPrivate && (!hasPublic || m.PlatformCertDir != "")
}

// verification names how m verifies WeChat Pay, for logs.
func (m Merchant) verification() string {
	switch pub, certs := m.PublicKeyFile != "", m.downloadsCertificates(); {
	case pub && certs:
		return "public_key+certificates"
	case pub:
		return "public_key"
	case certs:
		return "certificates"
	}
	return "none"
}

// WxpayConfig validates m, reads its key files and returns the
// wxpay.Config for wxpay.NewClient: Signer and CertSerialNo from the
// private key, the APIv3 keys, PublicKey and PublicKeyID, PartnerMode and
// BaseURL. DownloadCertificates is on when a private key is configured and
// either no public key is or WXPAY_PLATFORM_CERT_DIR is set (then it is
// CertificateCacheDir). HTTPClient, Now and the other hooks are left for the
// caller. File errors name the setting and the path, never the content.
func (m Merchant) WxpayConfig() (wxpay.Config, error) {
	if err := m.Validate(); err != nil {
		return wxpay.Config{}, err
	}
	cfg := wxpay.Config{
		MchID:             m.MchID,
		CertSerialNo:      m.CertSerialNo,
		APIv3Key:          m.APIv3Key,
		PreviousAPIv3Keys: append([]string(nil), m.PreviousAPIv3Keys...),
		PublicKeyID:       m.PublicKeyID,
		PartnerMode:       m.PartnerMode,
		BaseURL:           m.APIBase,
	}
	var errs []error
	if m.PrivateKeyFile != "" {
		b, err := readFile(m.PrivateKeyFile)
		if err == nil {
			cfg.Signer, err = wxpay.LoadPrivateKey(b)
			if err != nil {
				err = fmt.Errorf("%w (use apiclient_key.pem, not apiclient_cert.pem)", err)
			}
		}
		if err != nil {
			errs = append(errs, m.problem("%s %s: %w", m.setting("private_key_file"), m.PrivateKeyFile, err))
		}
	}
	if m.PublicKeyFile != "" {
		b, err := readFile(m.PublicKeyFile)
		if err == nil {
			cfg.PublicKey, err = wxpay.LoadPublicKey(b)
			if err == nil && cfg.PublicKey.N.BitLen() < 2048 {
				err = fmt.Errorf("%w: public key has %d bits, want 2048 or more", wxpay.ErrInvalidConfig, cfg.PublicKey.N.BitLen())
			}
		}
		if err != nil {
			errs = append(errs, m.problem("%s %s: %w", m.setting("public_key_file"), m.PublicKeyFile, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return wxpay.Config{}, err
	}
	if m.downloadsCertificates() {
		cfg.DownloadCertificates = true
		cfg.CertificateCacheDir = m.PlatformCertDir
	}
	return cfg, nil
}

// String describes m with its keys masked.
func (m Merchant) String() string {
	return logfmt(
		"mchid", m.MchID,
		"apiv3_key", mask(m.APIv3Key),
		"previous_apiv3_keys", strconv.Itoa(len(m.PreviousAPIv3Keys)),
		"private_key_file", m.PrivateKeyFile,
		"cert_serial_no", m.CertSerialNo,
		"cert_file", m.CertFile,
		"public_key_file", m.PublicKeyFile,
		"public_key_id", m.PublicKeyID,
		"platform_cert_dir", m.PlatformCertDir,
		"apiv2_key", mask(m.V2Key),
		"partner_mode", strconv.FormatBool(m.PartnerMode),
		"api_base", m.apiBase(),
		"verification", m.verification(),
	)
}

// GoString masks the keys in %#v too.
func (m Merchant) GoString() string { return "config.Merchant{" + m.String() + "}" }

// MarshalJSON writes m with its keys masked, so that a Merchant passed to
// a JSON logger does not leak them. It is not a merchants-file entry.
func (m Merchant) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		MchID             string `json:"mchid"`
		APIv3Key          string `json:"apiv3_key"`
		PreviousAPIv3Keys int    `json:"previous_apiv3_keys"`
		PrivateKeyFile    string `json:"private_key_file,omitempty"`
		CertSerialNo      string `json:"cert_serial_no,omitempty"`
		CertFile          string `json:"cert_file,omitempty"`
		PublicKeyFile     string `json:"public_key_file,omitempty"`
		PublicKeyID       string `json:"public_key_id,omitempty"`
		PlatformCertDir   string `json:"platform_cert_dir,omitempty"`
		APIv2Key          string `json:"apiv2_key,omitempty"`
		PartnerMode       bool   `json:"partner_mode"`
		APIBase           string `json:"api_base"`
		Verification      string `json:"verification"`
	}{m.MchID, mask(m.APIv3Key), len(m.PreviousAPIv3Keys), m.PrivateKeyFile, m.CertSerialNo, m.CertFile, m.PublicKeyFile,
		m.PublicKeyID, m.PlatformCertDir, mask(m.V2Key), m.PartnerMode, m.apiBase(), m.verification()})
}

// MarshalZerologObject logs m with its keys masked.
func (m Merchant) MarshalZerologObject(e *zerolog.Event) {
	e.Str("mchid", m.MchID).
		Str("apiv3_key", mask(m.APIv3Key)).
		Int("previous_apiv3_keys", len(m.PreviousAPIv3Keys)).
		Str("private_key_file", m.PrivateKeyFile).
		Str("cert_serial_no", m.CertSerialNo).
		Str("cert_file", m.CertFile).
		Str("public_key_file", m.PublicKeyFile).
		Str("public_key_id", m.PublicKeyID).
		Str("platform_cert_dir", m.PlatformCertDir).
		Str("apiv2_key", mask(m.V2Key)).
		Bool("partner_mode", m.PartnerMode).
		Str("api_base", m.apiBase()).
		Str("verification", m.verification())
}

func (m Merchant) apiBase() string {
	if m.APIBase == "" {
		return DefaultAPIBase
	}
	return m.APIBase
}

// mask shows that a secret is set, and its length, never its content.
func mask(secret string) string {
	if secret == "" {
		return ""
	}
	return fmt.Sprintf("***(%d)", len(secret))
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

func isHex(s string) bool {
	return s != "" && strings.Trim(s, "0123456789abcdefABCDEF") == ""
}
