package wxpaytest_test

import (
	"testing"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// TestEncryptResource checks the platform's encryption against the
// published AES-GCM example, and that the SDK decrypts it.
func TestEncryptResource(t *testing.T) {
	t.Parallel()
	const (
		key   = "0123456789abcdef0123456789abcdef"
		nonce = "0123456789ab"
		plain = `{"out_trade_no":"T1","trade_state":"SUCCESS","amount":{"total":1}}`
		want  = "4ouITzeV7GmUYUbi3WteHWDS5e076h4ZReuqRrqM+N1PXV1boadmhiW9LEPnqwqz0Rny3IArAgYHsIYpYFsuqB3bgaZ9ZQgW2SItEebQp0c2/w=="
	)
	got, err := wxpaytest.EncryptResource(key, nonce, "transaction", []byte(plain))
	if err != nil || got != want {
		t.Fatalf("EncryptResource = %q, %v; want %q", got, err, want)
	}
	back, err := wxpay.DecryptAESGCM([]byte(key), nonce, "transaction", got)
	if err != nil || string(back) != plain {
		t.Errorf("DecryptAESGCM = %q, %v; want %q", back, err, plain)
	}
	if _, err := wxpaytest.EncryptResource(key, "short", "transaction", []byte(plain)); err == nil {
		t.Error("EncryptResource with a 5-byte nonce succeeded, want an error")
	}
	if _, err := wxpaytest.EncryptResource("short key", nonce, "transaction", []byte(plain)); err == nil {
		t.Error("EncryptResource with a 9-byte key succeeded, want an error")
	}
}
