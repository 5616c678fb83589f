package doctor

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

func TestCheckMerchantCertificate(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	other := srv.AddMerchant(wxpaytest.MerchantOptions{})
	now := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	certPEM := func(der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}) }
	// issue makes a certificate of m's key with the given serial and
	// validity, signed by that key itself (the check reads the
	// certificate's own fields, not its issuer).
	issue := func(serial int64, notBefore, notAfter time.Time) []byte {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: m.MchID}, NotBefore: notBefore, NotAfter: notAfter}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &m.PrivateKey.PublicKey, m.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		return certPEM(der)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecTmpl := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour)}
	ecDER, err := x509.CreateCertificate(rand.Reader, ecTmpl, ecTmpl, &ec.PublicKey, ec)
	if err != nil {
		t.Fatal(err)
	}
	year := 365 * 24 * time.Hour

	for _, tc := range []struct {
		name   string
		path   string
		serial string
		status Status
		msg    []string
		fix    string
	}{
		{"the merchant's certificate", writeKey(t, certPEM(m.Certificate.Raw)), m.CertSerialNo, OK,
			[]string{"is the certificate of the private key", "serial " + m.CertSerialNo, "as WXPAY_CERT_SERIAL_NO says"}, ""},
		{"serial in lower case with leading zeros", writeKey(t, issue(0xABC, now.Add(-year), now.Add(year))), "00000abc", OK,
			[]string{"serial ABC"}, ""},
		{"not set", "", m.CertSerialNo, Skip, []string{"WXPAY_CERT_FILE is not set", "the signed request below"}, "optional"},
		{"another merchant's certificate", writeKey(t, certPEM(other.Certificate.Raw)), other.CertSerialNo, Fail,
			[]string{"is not the certificate of the private key in WXPAY_PRIVATE_KEY_FILE"}, "证书工具"},
		{"serial of another certificate", writeKey(t, certPEM(m.Certificate.Raw)), other.CertSerialNo, Fail,
			[]string{"WXPAY_CERT_SERIAL_NO=" + other.CertSerialNo, "the serial of the certificate in WXPAY_CERT_FILE", "is " + m.CertSerialNo, "SIGN_ERROR"},
			"set WXPAY_CERT_SERIAL_NO to " + m.CertSerialNo},
		{"expired", writeKey(t, issue(0xABC, now.Add(-5*year), now.Add(-24*time.Hour))), "ABC", Fail,
			[]string{"expired on 2026-12-01", "refuses requests"}, "renew the merchant API certificate"},
		{"expires in 10 days", writeKey(t, issue(0xABC, now.Add(-year), now.Add(10*24*time.Hour+time.Hour))), "ABC", Warn,
			[]string{"expires on 2026-12-12, in 10 days"}, "renew the merchant API certificate now"},
		{"not valid yet", writeKey(t, issue(0xABC, now.Add(time.Hour), now.Add(year))), "ABC", Fail,
			[]string{"is not valid before 2026-12-02 09:00:00 UTC"}, "clock"},
		{"a private key", writeKey(t, wxpaytest.PrivateKeyPEM(m.PrivateKey)), m.CertSerialNo, Fail,
			[]string{"holds a private key, not the merchant API certificate"}, "the private key belongs in WXPAY_PRIVATE_KEY_FILE"},
		{"a public key", writeKey(t, wxpaytest.PublicKeyPEM(&m.PrivateKey.PublicKey)), m.CertSerialNo, Fail,
			[]string{"holds a public key"}, "-----BEGIN CERTIFICATE-----"},
		{"a broken certificate", writeKey(t, certPEM([]byte("not DER"))), m.CertSerialNo, Fail,
			[]string{"not a readable X.509 certificate"}, "download the certificate again"},
		{"an EC certificate", writeKey(t, certPEM(ecDER)), "7", Fail,
			[]string{"a certificate whose key is ECDSA", "have RSA keys"}, "apiclient_cert.pem"},
		{"missing", filepath.Join(t.TempDir(), "nope.pem"), m.CertSerialNo, Fail,
			[]string{"WXPAY_CERT_FILE", "does not exist"}, "apiclient_cert.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := CheckMerchantCertificate(MerchantCertificate{
				Setting: "WXPAY_CERT_FILE", Path: tc.path,
				KeySetting: "WXPAY_PRIVATE_KEY_FILE", Key: m.PrivateKey,
				SerialSetting: "WXPAY_CERT_SERIAL_NO", Serial: tc.serial,
			}, now)
			if r.Name != "merchant_certificate" || r.Status != tc.status {
				t.Fatalf("%s %s: %q (fix %q), want %s", r.Name, r.Status, r.Message, r.Fix, tc.status)
			}
			for _, s := range tc.msg {
				if !strings.Contains(r.Message, s) {
					t.Errorf("message %q does not say %q", r.Message, s)
				}
			}
			if !strings.Contains(r.Fix, tc.fix) {
				t.Errorf("fix %q does not say %q", r.Fix, tc.fix)
			}
		})
	}

	t.Run("unusable private key", func(t *testing.T) {
		// The key file was already reported; the serial is still checked.
		r := CheckMerchantCertificate(MerchantCertificate{
			Setting: "cert_file (in m.yaml)", Path: writeKey(t, certPEM(m.Certificate.Raw)),
			KeySetting: "private_key_file (in m.yaml)", SerialSetting: "cert_serial_no (in m.yaml)", Serial: other.CertSerialNo,
		}, now)
		if r.Status != Fail || !strings.Contains(r.Message, "cert_serial_no (in m.yaml)="+other.CertSerialNo) {
			t.Fatalf("%s %q, want the serial mismatch", r.Status, r.Message)
		}
	})
}
