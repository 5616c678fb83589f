package main

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2/server"
	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/internal/config"
	"github.com/wxpay-notify/wxpay-notify/internal/doctor"
	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// doctorSetup is a healthy setup: a merchant on the fake platform in the
// given mode (certificate download on when the mode has certificates),
// NATS with the streams, and Redis with maxmemory-policy noeviction.
type doctorSetup struct {
	srv *wxpaytest.Server
	m   *wxpaytest.Merchant
	env map[string]string
	// setPolicy changes Redis's maxmemory-policy.
	setPolicy func(policy string)
}

func newDoctorSetup(t *testing.T, opts wxpaytest.Options) *doctorSetup {
	t.Helper()
	if opts.Mode == wxpaytest.ModeCertificate {
		t.Fatal("use ModeBoth and drop the public key settings: MerchantEnv needs a public key")
	}
	srv := wxpaytest.NewServer(t, opts)
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	env := testenv.MerchantEnv(t, srv, m)
	if opts.Mode == wxpaytest.ModeBoth {
		env["WXPAY_PLATFORM_CERT_DIR"] = t.TempDir()
	}
	nt := testenv.StartNATS(t)
	_, js := testenv.Connect(t, nt.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := config.EnsureStreams(ctx, js, events.StreamConfig{}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	rd := testenv.StartRedis(t)
	setPolicy := fakeMaxmemoryPolicy(t, rd)
	env["NATS_URL"] = nt.URL
	env["REDIS_URL"] = rd.URL
	env["WXPAY_NOTIFY_URL"] = "https://pay.example.com/notify/" + m.MchID
	env["DOCTOR_TIMEOUT"] = "3s"
	return &doctorSetup{srv: srv, m: m, env: env, setPolicy: setPolicy}
}

// fakeMaxmemoryPolicy makes miniredis, which has no CONFIG command, answer
// CONFIG GET maxmemory-policy with noeviction, and returns a function that
// changes the answer (it skips the test against a real Redis, which keeps
// its own policy).
func fakeMaxmemoryPolicy(t *testing.T, rd *testenv.Redis) func(policy string) {
	t.Helper()
	if rd.Mini == nil {
		return func(string) { t.Skip("needs miniredis to play a Redis policy") }
	}
	var policy atomic.Value
	policy.Store("noeviction")
	err := rd.Mini.Server().Register("CONFIG", func(c *server.Peer, cmd string, args []string) {
		if len(args) != 2 || !strings.EqualFold(args[0], "GET") || args[1] != "maxmemory-policy" {
			c.WriteError("ERR unsupported CONFIG call in this test")
			return
		}
		if c.Resp3 {
			c.WriteMapLen(1)
		} else {
			c.WriteLen(2)
		}
		c.WriteBulk("maxmemory-policy")
		c.WriteBulk(policy.Load().(string))
	})
	if err != nil {
		t.Fatal(err)
	}
	return func(p string) { policy.Store(p) }
}

// writeFile writes a key file for a fault.
func writeFile(t *testing.T, data []byte, perm os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(p, data, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil { // past the umask
		t.Fatal(err)
	}
	return p
}

// runDoctorJSON runs "ingress doctor --output json" with env and returns
// the report and run's error.
func runDoctorJSON(t *testing.T, env map[string]string, args ...string) (doctor.Report, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), append([]string{"doctor", "--output", "json"}, args...), func(k string) string { return env[k] }, &out, nil)
	var rep doctor.Report
	if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil {
		t.Fatalf("the JSON report does not parse: %v (run: %v)\n%s", jerr, err, out.String())
	}
	return rep, err
}

// check returns the one result named name.
func check(t *testing.T, rep doctor.Report, name string) doctor.Result {
	t.Helper()
	var found []doctor.Result
	for _, c := range rep.Checks {
		if c.Name == name {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one %s check, got %d: %+v", name, len(found), rep.Checks)
	}
	return found[0]
}

// wantCheck asserts a check's status and that its message and fix say the
// given things (case-insensitive).
func wantCheck(t *testing.T, rep doctor.Report, name string, status doctor.Status, msg, fix []string) {
	t.Helper()
	c := check(t, rep, name)
	if c.Status != status {
		t.Fatalf("%s: status %s, want %s: %s (fix: %s)", name, c.Status, status, c.Message, c.Fix)
	}
	for _, s := range msg {
		if !strings.Contains(strings.ToLower(c.Message), strings.ToLower(s)) {
			t.Errorf("%s: message %q does not say %q", name, c.Message, s)
		}
	}
	for _, s := range fix {
		if !strings.Contains(strings.ToLower(c.Fix), strings.ToLower(s)) {
			t.Errorf("%s: fix %q does not say %q", name, c.Fix, s)
		}
	}
}

func wantFailedRun(t *testing.T, rep doctor.Report, err error) {
	t.Helper()
	if !errors.Is(err, errChecksFailed) || errors.Is(err, errUsage) {
		t.Fatalf("run: %v, want the checks-failed error (exit 1)", err)
	}
	if rep.Overall != doctor.Fail {
		t.Fatalf("overall %s, want fail", rep.Overall)
	}
}

// certFile writes the PEM of a merchant API certificate.
func certFile(t *testing.T, m *wxpaytest.Merchant) string {
	t.Helper()
	return writeFile(t, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.Certificate.Raw}), 0o644)
}

func TestDoctorHealthySetupPasses(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModeBoth})
	s.env["WXPAY_CERT_FILE"] = certFile(t, s.m)
	rep, err := runDoctorJSON(t, s.env)
	if err != nil {
		t.Fatalf("run: %v, want nil (exit 0)\n%+v", err, rep)
	}
	if rep.Overall != doctor.OK {
		t.Fatalf("overall %s, want ok: %+v", rep.Overall, rep.Checks)
	}
	want := []string{"notify_url", "private_key_file", "public_key_file", "merchant_certificate", "apiv3_key", "apiv2_key",
		"public_key_id", "platform_certificates", "signed_request", "clock", "nats", "redis"}
	if len(rep.Checks) != len(want) {
		t.Fatalf("got %d checks, want %d: %+v", len(rep.Checks), len(want), rep.Checks)
	}
	for i, c := range rep.Checks {
		if c.Name != want[i] {
			t.Errorf("check #%d is %s, want %s", i+1, c.Name, want[i])
		}
		if c.Status != doctor.OK {
			t.Errorf("%s: %s (%s), want ok", c.Name, c.Status, c.Message)
		}
	}
	wantCheck(t, rep, "signed_request", doctor.OK, []string{"ORDER_NOT_EXIST", "verified"}, nil)
	wantCheck(t, rep, "platform_certificates", doctor.OK, []string{"decrypted with the APIv3 key"}, nil)
	wantCheck(t, rep, "merchant_certificate", doctor.OK, []string{"is the certificate of the private key", s.m.CertSerialNo}, nil)
}

func TestDoctorMerchantCertificateMismatch(t *testing.T) {
	t.Run("another merchant's certificate", func(t *testing.T) {
		s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
		other := s.srv.AddMerchant(wxpaytest.MerchantOptions{})
		s.env["WXPAY_CERT_FILE"] = certFile(t, other)
		rep, err := runDoctorJSON(t, s.env)
		wantFailedRun(t, rep, err)
		wantCheck(t, rep, "merchant_certificate", doctor.Fail, []string{"WXPAY_CERT_FILE", "is not the certificate of the private key in WXPAY_PRIVATE_KEY_FILE"}, []string{"证书工具"})
		// The key and serial still belong together: WeChat Pay accepts them.
		wantCheck(t, rep, "signed_request", doctor.OK, nil, nil)
	})
	t.Run("serial of another certificate", func(t *testing.T) {
		s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
		other := s.srv.AddMerchant(wxpaytest.MerchantOptions{})
		s.env["WXPAY_CERT_FILE"] = certFile(t, s.m)
		s.env["WXPAY_CERT_SERIAL_NO"] = other.CertSerialNo
		rep, err := runDoctorJSON(t, s.env)
		wantFailedRun(t, rep, err)
		wantCheck(t, rep, "merchant_certificate", doctor.Fail, []string{"WXPAY_CERT_SERIAL_NO=" + other.CertSerialNo, "SIGN_ERROR"},
			[]string{"set WXPAY_CERT_SERIAL_NO to " + s.m.CertSerialNo})
		wantCheck(t, rep, "signed_request", doctor.Fail, []string{"SIGN_ERROR"}, nil)
	})
	t.Run("certificate without the private key", func(t *testing.T) {
		s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
		delete(s.env, "WXPAY_PRIVATE_KEY_FILE")
		delete(s.env, "WXPAY_CERT_SERIAL_NO")
		s.env["WXPAY_CERT_FILE"] = certFile(t, s.m)
		rep, err := runDoctorJSON(t, s.env)
		wantFailedRun(t, rep, err)
		c := check(t, rep, "configuration")
		if c.Status != doctor.Fail || !strings.Contains(c.Message, "WXPAY_CERT_FILE is set but WXPAY_PRIVATE_KEY_FILE is not") {
			t.Fatalf("configuration: %s %q, want it to name WXPAY_CERT_FILE without WXPAY_PRIVATE_KEY_FILE", c.Status, c.Message)
		}
	})
}

func TestDoctorHealthyPublicKeyModeAndTextReport(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	var out bytes.Buffer
	err := run(context.Background(), []string{"doctor"}, func(k string) string { return s.env[k] }, &out, nil)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	text := out.String()
	for _, line := range []string{
		"✓ notify_url [" + s.m.MchID + "]: https://pay.example.com/notify/" + s.m.MchID + " is a valid notify_url",
		"✓ signed_request [" + s.m.MchID + "]: WeChat Pay accepted the signed request",
		"- platform_certificates [" + s.m.MchID + "]: not used",
		"✓ nats: connected",
		"\nok: 0 failed, 0 warnings,",
	} {
		if !strings.Contains(text, line) {
			t.Errorf("the report lacks %q:\n%s", line, text)
		}
	}
}

func TestDoctorTextReportShowsFix(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	s.env["WXPAY_NOTIFY_URL"] = "https://127.0.0.1/notify/" + s.m.MchID
	var out bytes.Buffer
	err := run(context.Background(), []string{"doctor"}, func(k string) string { return s.env[k] }, &out, nil)
	if !errors.Is(err, errChecksFailed) {
		t.Fatalf("run: %v, want the checks-failed error", err)
	}
	want := "✗ notify_url [" + s.m.MchID + "]: https://127.0.0.1/notify/" + s.m.MchID + ": its host 127.0.0.1 is an IP address: WeChat Pay wants a domain name\n    fix: use the public DNS name"
	if !strings.Contains(out.String(), want) {
		t.Fatalf("the report lacks %q:\n%s", want, out.String())
	}
}

func TestDoctorNotifyURLFromFlag(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	rep, err := runDoctorJSON(t, s.env, "--notify-url", "http://localhost:8080/notify?mchid="+s.m.MchID)
	wantFailedRun(t, rep, err)
	wantCheck(t, rep, "notify_url", doctor.Fail, []string{"http://", "is this machine", "has a port", "query string"},
		[]string{"https", "public DNS name", "drop the port", "drop the ?"})
}

func TestDoctorPrivateKeyFileHoldsCertificate(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	s.env["WXPAY_PRIVATE_KEY_FILE"] = writeFile(t, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.m.Certificate.Raw}), 0o600)
	rep, err := runDoctorJSON(t, s.env)
	wantFailedRun(t, rep, err)
	wantCheck(t, rep, "private_key_file", doctor.Fail, []string{"WXPAY_PRIVATE_KEY_FILE", "holds a certificate"}, []string{"apiclient_key.pem"})
	// The API checks need the key: they say so instead of failing again.
	wantCheck(t, rep, "signed_request", doctor.Skip, []string{"key file"}, []string{"fix the key files"})
}

func TestDoctorPublicKeyFileHoldsPrivateKey(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	s.env["WXPAY_PUBLIC_KEY_FILE"] = writeFile(t, wxpaytest.PrivateKeyPEM(s.m.PrivateKey), 0o600)
	rep, err := runDoctorJSON(t, s.env)
	wantFailedRun(t, rep, err)
	wantCheck(t, rep, "public_key_file", doctor.Fail, []string{"WXPAY_PUBLIC_KEY_FILE", "holds a private key"}, []string{"pub_key.pem"})
}

func TestDoctorPrivateKeyReadableByOthersWarns(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	s.env["WXPAY_PRIVATE_KEY_FILE"] = writeFile(t, wxpaytest.PrivateKeyPEM(s.m.PrivateKey), 0o644)
	rep, err := runDoctorJSON(t, s.env)
	if err != nil {
		t.Fatalf("run: %v, want nil: a warning alone exits 0", err)
	}
	if rep.Overall != doctor.Warn {
		t.Fatalf("overall %s, want warn", rep.Overall)
	}
	wantCheck(t, rep, "private_key_file", doctor.Warn, []string{"every local user can read it", "0644"}, []string{"chmod 600"})
}

func TestDoctorAPIv3KeyOf31Bytes(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	s.env["WXPAY_APIV3_KEY"] = s.m.APIv3Key[:31]
	rep, err := runDoctorJSON(t, s.env)
	// A configuration problem is a finding of the doctor, not a usage error.
	wantFailedRun(t, rep, err)
	wantCheck(t, rep, "apiv3_key", doctor.Fail, []string{"WXPAY_APIV3_KEY", "32 bytes", "got 31"}, []string{"APIv3密钥", "exactly 32"})
	// NATS and Redis are still checked.
	wantCheck(t, rep, "nats", doctor.OK, nil, nil)
}

func TestDoctorBadPublicKeyID(t *testing.T) {
	t.Run("not digits", func(t *testing.T) {
		s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
		s.env["WXPAY_PUBLIC_KEY_ID"] = "PUB_KEY_ID_01ABC"
		rep, err := runDoctorJSON(t, s.env)
		wantFailedRun(t, rep, err)
		wantCheck(t, rep, "public_key_id", doctor.Fail, []string{"PUB_KEY_ID_01ABC", "followed by digits"}, []string{"微信支付公钥", "not a certificate serial"})
	})
	t.Run("a certificate serial", func(t *testing.T) {
		s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
		s.env["WXPAY_PUBLIC_KEY_ID"] = s.m.CertSerialNo
		rep, err := runDoctorJSON(t, s.env)
		wantFailedRun(t, rep, err)
		wantCheck(t, rep, "public_key_id", doctor.Fail, []string{"WXPAY_PUBLIC_KEY_ID", "PUB_KEY_ID_"}, []string{"微信支付公钥"})
	})
}

func TestDoctorWrongMerchantPrivateKey(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	other := s.srv.AddMerchant(wxpaytest.MerchantOptions{})
	s.env["WXPAY_PRIVATE_KEY_FILE"] = writeFile(t, wxpaytest.PrivateKeyPEM(other.PrivateKey), 0o600)
	rep, err := runDoctorJSON(t, s.env)
	wantFailedRun(t, rep, err)
	wantCheck(t, rep, "signed_request", doctor.Fail, []string{"refused the request's signature", "SIGN_ERROR"},
		[]string{"WXPAY_PRIVATE_KEY_FILE is apiclient_key.pem of merchant " + s.m.MchID, "WXPAY_CERT_SERIAL_NO", "WXPAY_MCHID", "clock"})
	wantCheck(t, rep, "private_key_file", doctor.OK, nil, nil)
}

func TestDoctorWrongPlatformPublicKey(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	other := s.srv.AddMerchant(wxpaytest.MerchantOptions{})
	s.env["WXPAY_PUBLIC_KEY_FILE"] = writeFile(t, wxpaytest.PublicKeyPEM(other.PrivateKey.Public().(*rsa.PublicKey)), 0o644)
	rep, err := runDoctorJSON(t, s.env)
	wantFailedRun(t, rep, err)
	wantCheck(t, rep, "signed_request", doctor.Fail, []string{"does not verify with WXPAY_PUBLIC_KEY_FILE", s.srv.PublicKey().ID},
		[]string{"download the WeChat Pay public key again"})
}

func TestDoctorUnknownPublicKeyID(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	s.env["WXPAY_PUBLIC_KEY_ID"] = "PUB_KEY_ID_0000000000000000000000000000000001"
	rep, err := runDoctorJSON(t, s.env)
	wantFailedRun(t, rep, err)
	wantCheck(t, rep, "signed_request", doctor.Fail, []string{"signed its answer with public key " + s.srv.PublicKey().ID},
		[]string{"set WXPAY_PUBLIC_KEY_ID to " + s.srv.PublicKey().ID})
}

func TestDoctorPlatformClockTenMinutesOff(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, Now: func() time.Time { return time.Now().Add(10 * time.Minute) }})
	rep, err := runDoctorJSON(t, s.env)
	wantFailedRun(t, rep, err)
	wantCheck(t, rep, "clock", doctor.Fail, []string{"10m0s behind WeChat Pay's", "Wechatpay-Timestamp"}, []string{"NTP"})
	wantCheck(t, rep, "signed_request", doctor.Fail, []string{"5 minutes"}, []string{"NTP"})
}

func TestDoctorPlatformClockTwoMinutesOffWarns(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, Now: func() time.Time { return time.Now().Add(-2 * time.Minute) }})
	rep, err := runDoctorJSON(t, s.env)
	if err != nil {
		t.Fatalf("run: %v, want nil: the clock only warns under 5 minutes", err)
	}
	wantCheck(t, rep, "clock", doctor.Warn, []string{"2m0s ahead of WeChat Pay's"}, []string{"NTP"})
	wantCheck(t, rep, "signed_request", doctor.OK, nil, nil)
}

func TestDoctorCertificatesEndpointFailing(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModeBoth})
	s.srv.SetCertificatesAnswer(500, "SYSTEM_ERROR", "系统繁忙，请稍后重试")
	rep, err := runDoctorJSON(t, s.env)
	wantFailedRun(t, rep, err)
	wantCheck(t, rep, "platform_certificates", doctor.Fail, []string{"certificates endpoint answered", "HTTP 500 SYSTEM_ERROR"},
		[]string{"run the doctor again", "WXPAY_PUBLIC_KEY_FILE"})
	// The public key still verifies the test request.
	wantCheck(t, rep, "signed_request", doctor.OK, nil, nil)
}

func TestDoctorWrongAPIv3KeyInCertificateMode(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModeBoth})
	s.env["WXPAY_APIV3_KEY"] = strings.Repeat("k", 32)
	rep, err := runDoctorJSON(t, s.env)
	wantFailedRun(t, rep, err)
	wantCheck(t, rep, "platform_certificates", doctor.Fail, []string{"the APIv3 key is wrong"}, []string{"APIv3密钥"})
}

func TestDoctorCertificateModeOnly(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModeBoth})
	delete(s.env, "WXPAY_PUBLIC_KEY_FILE")
	delete(s.env, "WXPAY_PUBLIC_KEY_ID")
	delete(s.env, "WXPAY_PLATFORM_CERT_DIR")
	rep, err := runDoctorJSON(t, s.env)
	if err != nil {
		t.Fatalf("run: %v\n%+v", err, rep.Checks)
	}
	wantCheck(t, rep, "platform_certificates", doctor.OK, []string{"verified and decrypted"}, nil)
	wantCheck(t, rep, "signed_request", doctor.OK, []string{"ORDER_NOT_EXIST"}, nil)
}

func TestDoctorPlatformCertificateExpiringSoonWarns(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModeBoth})
	old := s.srv.PlatformCertificates()[0].ID
	s.srv.AddPlatformCertificate(time.Now().Add(-time.Hour), time.Now().Add(10*24*time.Hour))
	s.srv.RemovePlatformCertificate(old)
	rep, err := runDoctorJSON(t, s.env)
	if err != nil {
		t.Fatalf("run: %v, want nil: an expiring certificate only warns", err)
	}
	wantCheck(t, rep, "platform_certificates", doctor.Warn, []string{"expires on", "in 9 days"}, []string{"WXPAY_PUBLIC_KEY_FILE"})
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestDoctorNATSDown(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	s.env["NATS_URL"] = "nats://" + closedAddr(t)
	s.env["DOCTOR_TIMEOUT"] = "1s"
	rep, err := runDoctorJSON(t, s.env)
	wantFailedRun(t, rep, err)
	wantCheck(t, rep, "nats", doctor.Fail, []string{"cannot connect to NATS_URL nats://127.0.0.1:"}, []string{"start NATS", "correct NATS_URL"})
	wantCheck(t, rep, "redis", doctor.OK, nil, nil)
}

func TestDoctorNATSStreamsMissingWarns(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	s.env["NATS_URL"] = testenv.StartNATS(t).URL
	rep, err := runDoctorJSON(t, s.env)
	if err != nil {
		t.Fatalf("run: %v, want nil: missing streams only warn", err)
	}
	wantCheck(t, rep, "nats", doctor.Warn, []string{"stream WXPAY and WXPAY_DLQ does not exist"}, []string{"creates WXPAY and WXPAY_DLQ at start"})
}

func TestDoctorRedisDown(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	s.env["REDIS_URL"] = "redis://" + closedAddr(t) + "/0"
	s.env["DOCTOR_TIMEOUT"] = "1s"
	rep, err := runDoctorJSON(t, s.env)
	wantFailedRun(t, rep, err)
	wantCheck(t, rep, "redis", doctor.Fail, []string{"does not answer PING"}, []string{"start Redis", "correct REDIS_URL"})
	wantCheck(t, rep, "nats", doctor.OK, nil, nil)
}

func TestDoctorRedisEvictionPolicyWarns(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	s.setPolicy("allkeys-lru")
	rep, err := runDoctorJSON(t, s.env)
	if err != nil {
		t.Fatalf("run: %v, want nil: the policy only warns", err)
	}
	wantCheck(t, rep, "redis", doctor.Warn, []string{"maxmemory-policy is allkeys-lru"}, []string{"noeviction"})
}

func TestDoctorUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"--output", "xml"}, {"--no-such-flag"}, {"extra"}, {"--timeout", "0s"}} {
		var out bytes.Buffer
		err := run(context.Background(), append([]string{"doctor"}, args...), func(string) string { return "" }, &out, nil)
		if !errors.Is(err, errUsage) {
			t.Errorf("doctor %v: %v, want a usage error (exit 2)", args, err)
		}
	}
}

func TestDoctorHelp(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"doctor", "--help"}, func(string) string { return "" }, &out, nil); err != nil {
		t.Fatalf("--help: %v", err)
	}
	for _, s := range []string{"Usage: ingress doctor", "-notify-url", "WXPAY_NOTIFY_URL", "{mchid}", "-output", "Exit status"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("the help lacks %q:\n%s", s, out.String())
		}
	}
}

func TestDoctorMerchantsFile(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m2 := s.srv.AddMerchant(wxpaytest.MerchantOptions{})
	env2 := testenv.MerchantEnv(t, s.srv, m2)
	entry := func(env map[string]string) string {
		return "- mchid: \"" + env["WXPAY_MCHID"] + "\"\n" +
			"  apiv3_key: \"" + env["WXPAY_APIV3_KEY"] + "\"\n" +
			"  private_key_file: " + env["WXPAY_PRIVATE_KEY_FILE"] + "\n" +
			"  cert_serial_no: " + env["WXPAY_CERT_SERIAL_NO"] + "\n" +
			"  public_key_file: " + env["WXPAY_PUBLIC_KEY_FILE"] + "\n" +
			"  public_key_id: " + env["WXPAY_PUBLIC_KEY_ID"] + "\n" +
			"  api_base: " + env["WXPAY_API_BASE"] + "\n"
	}
	// The second merchant signs with the first one's key.
	env2["WXPAY_PRIVATE_KEY_FILE"] = s.env["WXPAY_PRIVATE_KEY_FILE"]
	file := filepath.Join(t.TempDir(), "merchants.yaml")
	if err := os.WriteFile(file, []byte(entry(s.env)+entry(env2)), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"WXPAY_MERCHANTS_FILE": file,
		"WXPAY_NOTIFY_URL":     "https://pay.example.com/notify/{mchid}",
		"NATS_URL":             s.env["NATS_URL"],
		"REDIS_URL":            s.env["REDIS_URL"],
	}
	rep, err := runDoctorJSON(t, env)
	wantFailedRun(t, rep, err)
	got := map[string]doctor.Status{}
	for _, c := range rep.Checks {
		if c.Name == "notify_url" || c.Name == "signed_request" {
			got[c.Name+" "+c.MchID] = c.Status
		}
		if c.Name == "signed_request" && c.MchID == m2.MchID && !strings.Contains(c.Fix, "private_key_file (in "+file+") is apiclient_key.pem of merchant "+m2.MchID) {
			t.Errorf("the fix does not name the merchants file's setting: %s", c.Fix)
		}
	}
	want := map[string]doctor.Status{
		"notify_url " + s.m.MchID: doctor.OK, "notify_url " + m2.MchID: doctor.OK,
		"signed_request " + s.m.MchID: doctor.OK, "signed_request " + m2.MchID: doctor.Fail,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s, want %s (all: %v)", k, got[k], v, got)
		}
	}
}

// The doctor runs with the ingress's own command line: it accepts every
// flag of the ingress, and a bad ingress setting is one of its findings.
func TestDoctorTakesTheIngressSettings(t *testing.T) {
	s := newDoctorSetup(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	rep, err := runDoctorJSON(t, s.env, "--listen-addr", "127.0.0.1:0", "--max-in-flight", "10", "--max-connections", "20",
		"--publish-timeout", "1s", "--answer-deadline", "3s", "--stream-replicas", "1")
	if err != nil {
		t.Fatalf("run: %v, want nil (exit 0)\n%+v", err, rep.Checks)
	}
	s.env["MAX_IN_FLIGHT"] = "many"
	rep, err = runDoctorJSON(t, s.env)
	wantFailedRun(t, rep, err)
	c := check(t, rep, "configuration")
	if c.Status != doctor.Fail || !strings.Contains(c.Message, "MAX_IN_FLIGHT") {
		t.Fatalf("configuration: %s %q, want it to name MAX_IN_FLIGHT", c.Status, c.Message)
	}
}
