// Package webhook_test runs the receivers' verification examples of other
// languages (verify.py, verify.js) against pkg/webhook's signatures, so the
// code README shows is code that works.
package webhook_test

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/webhook"
)

// interpreter returns the path of name, or skips the test when it is not
// installed, unless WXPAY_TEST_REQUIRE_INTERPRETERS is set (CI sets it).
func interpreter(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("WXPAY_TEST_REQUIRE_INTERPRETERS") != "" {
			t.Fatalf("%s is required here (WXPAY_TEST_REQUIRE_INTERPRETERS is set) but not installed", name)
		}
		t.Skipf("%s is not installed", name)
	}
	return p
}

func TestOtherLanguagesVerifyOurSignatures(t *testing.T) {
	secret := []byte("s3cr3t-of-the-team")
	body := []byte(`{"id":"EV-1","dedupe_key":"transaction:4200000001:SUCCESS","summary":"支付成功"}`)
	now := time.Now().Unix()
	good := webhook.Sign(secret, now, body)
	cases := []struct {
		name      string
		secret    string
		timestamp int64
		signature string
		body      []byte
		want      string
	}{
		{"valid", string(secret), now, good, body, "ok"},
		{"body changed", string(secret), now, good, append(bytes.Clone(body), ' '), "bad signature"},
		{"other secret", "another", now, good, body, "bad signature"},
		{"stale", string(secret), now - 400, webhook.Sign(secret, now-400, body), body, "timestamp"},
		{"signature of another time", string(secret), now - 1, good, body, "bad signature"},
	}
	for _, lang := range []struct{ interp, script string }{{"python3", "verify.py"}, {"node", "verify.js"}} {
		t.Run(lang.interp, func(t *testing.T) {
			bin := interpreter(t, lang.interp)
			for _, tc := range cases {
				cmd := exec.Command(bin, lang.script, tc.secret, strconv.FormatInt(tc.timestamp, 10), tc.signature)
				cmd.Stdin = bytes.NewReader(tc.body)
				out, err := cmd.CombinedOutput()
				got := strings.TrimSpace(string(out))
				if (tc.want == "ok") != (err == nil) || !strings.Contains(got, tc.want) {
					t.Errorf("%s: %s said %q (%v), want %q", tc.name, lang.script, got, err, tc.want)
				}
			}
		})
	}
}
