package testenv

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// MerchantEnv returns the merchant settings (WXPAY_*) of m on the fake
// platform srv in public-key mode, as a command reads them from its
// environment; the key files are written to a temporary directory.
func MerchantEnv(t testing.TB, srv *wxpaytest.Server, m *wxpaytest.Merchant) map[string]string {
	t.Helper()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "apiclient_key.pem")
	pubFile := filepath.Join(dir, "pub_key.pem")
	for name, data := range map[string][]byte{
		keyFile: wxpaytest.PrivateKeyPEM(m.PrivateKey),
		pubFile: wxpaytest.PublicKeyPEM(&srv.PublicKey().PrivateKey.PublicKey),
	} {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return map[string]string{
		"WXPAY_MCHID":            m.MchID,
		"WXPAY_APIV3_KEY":        m.APIv3Key,
		"WXPAY_PRIVATE_KEY_FILE": keyFile,
		"WXPAY_CERT_SERIAL_NO":   m.CertSerialNo,
		"WXPAY_PUBLIC_KEY_FILE":  pubFile,
		"WXPAY_PUBLIC_KEY_ID":    srv.PublicKey().ID,
		"WXPAY_APIV2_KEY":        m.APIv2Key,
		"WXPAY_API_BASE":         srv.URL(),
	}
}
