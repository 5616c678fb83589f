package doctor

import (
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"math/big"
	"strings"
	"time"
)

const (
	merchantCertWhat = "apiclient_cert.pem, the merchant API certificate"
	merchantCertFix  = "use the apiclient_cert.pem and apiclient_key.pem that the certificate tool (证书工具) made together for this merchant (商户平台 → 账户中心 → API安全 → API证书); a renewed certificate comes with a new key and a new serial"
)

// MerchantCertificate names the settings CheckMerchantCertificate reports
// on, and what it checks against.
type MerchantCertificate struct {
	// Setting and Path: the certificate file (WXPAY_CERT_FILE).
	Setting, Path string
	// KeySetting names the private key file; Key is that key, nil when it is
	// unusable (already reported).
	KeySetting string
	Key        *rsa.PrivateKey
	// SerialSetting names the configured serial, Serial.
	SerialSetting, Serial string
}

// CheckMerchantCertificate checks the merchant API certificate, when one is
// configured: a PEM X.509 certificate with an RSA key, issued for the
// configured private key, whose serial is the configured one, valid now and
// for CertificateWarnBefore more (a warning otherwise). WeChat Pay refuses
// requests signed by a key whose serial does not match (SIGN_ERROR), and
// this names the cause before any request is made.
func CheckMerchantCertificate(c MerchantCertificate, now time.Time) Result {
	const name = "merchant_certificate"
	if c.Path == "" {
		return Result{Name: name, Status: Skip,
			Message: c.Setting + " is not set, so the certificate is not checked; the signed request below shows whether " + c.SerialSetting + " belongs to the private key",
			Fix:     "optional: set " + c.Setting + " to " + merchantCertWhat + ", to have the serial and the key checked against it"}
	}
	b, _, failed := readKeyFile(name, c.Setting, c.Path, merchantCertWhat)
	if failed != nil {
		return *failed
	}
	r := Result{Name: name, Status: Fail}
	kind, block := pemKind(b)
	if block == nil || block.Type != "CERTIFICATE" {
		r.Message = fmt.Sprintf("%s %s holds %s, not the merchant API certificate", c.Setting, c.Path, kind)
		r.Fix = "set " + c.Setting + " to " + merchantCertWhat + " (it starts with -----BEGIN CERTIFICATE-----)"
		if strings.Contains(kind, "private key") {
			r.Fix += "; the private key belongs in " + c.KeySetting
		}
		return r
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		r.Message = fmt.Sprintf("%s %s: not a readable X.509 certificate: %v", c.Setting, c.Path, err)
		r.Fix = "download the certificate again from the merchant console, or take the apiclient_cert.pem the certificate tool wrote"
		return r
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		r.Message = fmt.Sprintf("%s %s is a certificate whose key is %s; WeChat Pay merchant API certificates have RSA keys", c.Setting, c.Path, cert.PublicKeyAlgorithm)
		r.Fix = "set " + c.Setting + " to " + merchantCertWhat
		return r
	}
	if c.Key != nil && !pub.Equal(&c.Key.PublicKey) {
		r.Message = fmt.Sprintf("%s %s is not the certificate of the private key in %s: the two files belong to different certificates", c.Setting, c.Path, c.KeySetting)
		r.Fix = merchantCertFix
		return r
	}
	serial := fmt.Sprintf("%X", cert.SerialNumber)
	if c.Serial != "" {
		configured, ok := new(big.Int).SetString(c.Serial, 16)
		if !ok || configured.Cmp(cert.SerialNumber) != 0 {
			r.Message = fmt.Sprintf("%s=%s, but the serial of the certificate in %s is %s: WeChat Pay answers SIGN_ERROR (商户证书序列号有误) to every request", c.SerialSetting, c.Serial, c.Setting, serial)
			r.Fix = "set " + c.SerialSetting + " to " + serial
			return r
		}
	}
	switch {
	case now.Before(cert.NotBefore):
		r.Message = fmt.Sprintf("%s %s is not valid before %s UTC", c.Setting, c.Path, cert.NotBefore.UTC().Format(time.DateTime))
		r.Fix = "check this server's clock; if it is right, the certificate was issued for a later date: " + merchantCertFix
		return r
	case !now.Before(cert.NotAfter):
		r.Message = fmt.Sprintf("%s %s expired on %s: WeChat Pay refuses requests signed with its key", c.Setting, c.Path, cert.NotAfter.UTC().Format(time.DateOnly))
		r.Fix = "renew the merchant API certificate (商户平台 → 账户中心 → API安全 → API证书 → 管理证书), then update " + c.KeySetting + ", " + c.Setting + " and " + c.SerialSetting + " together"
		return r
	case cert.NotAfter.Sub(now) < CertificateWarnBefore:
		r.Status = Warn
		r.Message = fmt.Sprintf("%s %s (serial %s) expires on %s, in %d days", c.Setting, c.Path, serial, cert.NotAfter.UTC().Format(time.DateOnly), int(cert.NotAfter.Sub(now).Hours()/24))
		r.Fix = "renew the merchant API certificate now (商户平台 → 账户中心 → API安全 → API证书 → 管理证书), then update " + c.KeySetting + ", " + c.Setting + " and " + c.SerialSetting + " together"
		return r
	}
	r.Status = OK
	r.Message = fmt.Sprintf("%s %s is the certificate of the private key, serial %s as %s says, valid until %s", c.Setting, c.Path, serial, c.SerialSetting, cert.NotAfter.UTC().Format(time.DateOnly))
	return r
}
