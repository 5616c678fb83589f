package doctor

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/wxpay-notify/wxpay-notify/internal/config"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

func TestCheckNotifyURL(t *testing.T) {
	const id = "1230000109"
	long := "https://pay.example.com/" + strings.Repeat("a", 240) + "/notify/" + id
	for _, tc := range []struct {
		url    string
		single bool
		status Status
		msg    string // what the message must say
		fix    string // what the fix must say
	}{
		{"https://pay.example.com/notify/" + id, false, OK, "is a valid notify_url", ""},
		{"https://pay.example.com/wx/notify/{mchid}", false, OK, "https://pay.example.com/wx/notify/" + id + " is a valid", ""},
		{"http://pay.example.com/notify/" + id, false, Warn, "uses http://", "use https://"},
		{"ftp://pay.example.com/notify/" + id, false, Fail, `scheme "ftp"`, "https://"},
		{"https://203.0.113.7/notify/" + id, false, Fail, "is an IP address", "public DNS name"},
		{"https://[2001:db8::1]/notify/" + id, false, Fail, "is an IP address", "public DNS name"},
		{"https://localhost/notify/" + id, false, Fail, "is this machine", "public DNS name"},
		{"https://pay.corp.local/notify/" + id, false, Fail, "private name", "public DNS name"},
		{"https://pay.svc.internal/notify/" + id, false, Fail, "private name", "public DNS name"},
		{"https://ingress/notify/" + id, false, Fail, "has no dot", "public DNS name"},
		{"https://pay.example.com:8443/notify/" + id, false, Fail, "has a port (8443)", "drop the port"},
		{"https://pay.example.com/notify/" + id + "?x=1", false, Fail, "query string", "drop the ?"},
		{"https://pay.example.com/notify/" + id + "?", false, Fail, "query string", "drop the ?"},
		{"https://pay.example.com/notify/" + id + "#top", false, Fail, "fragment", "drop the #"},
		{"https://pay.example.com//notify/" + id, false, Fail, "doubled slash", "single slashes"},
		{"https://user:secret@pay.example.com/notify/" + id, false, Fail, "user name or password", "remove the credentials"},
		{long, false, Fail, "more than the 256", "shorter"},
		{"https://pay.example.com/notify", true, Warn, "only while it serves a single merchant", "end it in /notify/" + id},
		{"https://pay.example.com/notify", false, Warn, "does not end in /notify/" + id, "end the path in /notify/" + id},
		{"https://pay.example.com/notify/1900000001", false, Warn, "does not end in /notify/" + id, "end the path"},
		{"https://pay.example.com/notify/" + id + "/", false, Warn, "does not end in /notify/" + id, "end the path"},
		{"", false, Warn, "not checked", "--notify-url"},
	} {
		r := CheckNotifyURL(tc.url, id, tc.single)
		if r.Status != tc.status || !strings.Contains(r.Message, tc.msg) || !strings.Contains(r.Fix, tc.fix) {
			t.Errorf("%q: %s %q (fix %q), want %s saying %q (fix %q)", tc.url, r.Status, r.Message, r.Fix, tc.status, tc.msg, tc.fix)
		}
		if r.Status != OK && r.Fix == "" {
			t.Errorf("%q: %s without a fix", tc.url, r.Status)
		}
		if strings.Contains(r.Message, "secret") {
			t.Errorf("%q: the message shows the password: %s", tc.url, r.Message)
		}
	}
}

func writeKey(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckPrivateKeyFile(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	for _, tc := range []struct {
		name   string
		path   string
		status Status
		msg    string
	}{
		{"PKCS#8", writeKey(t, wxpaytest.PrivateKeyPEM(m.PrivateKey)), OK, "is an RSA private key (2048 bits)"},
		{"PKCS#1", writeKey(t, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(m.PrivateKey)})), OK, "is an RSA private key"},
		{"certificate", writeKey(t, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.Certificate.Raw})), Fail, "holds a certificate, not the merchant API private key"},
		{"public key", writeKey(t, wxpaytest.PublicKeyPEM(&m.PrivateKey.PublicKey)), Fail, "holds a public key"},
		{"EC in PKCS#8", writeKey(t, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})), Fail, "not an RSA key"},
		{"not PEM", writeKey(t, []byte("hello")), Fail, "no PEM block"},
		{"missing", filepath.Join(t.TempDir(), "nope.pem"), Fail, "does not exist"},
		{"directory", t.TempDir(), Fail, "is a directory"},
	} {
		r, key := CheckPrivateKeyFile("WXPAY_PRIVATE_KEY_FILE", tc.path)
		if r.Status != tc.status || !strings.Contains(r.Message, tc.msg) || !strings.Contains(r.Message, "WXPAY_PRIVATE_KEY_FILE") {
			t.Errorf("%s: %s %q, want %s saying %q", tc.name, r.Status, r.Message, tc.status, tc.msg)
		}
		if (key != nil) != (tc.status == OK) {
			t.Errorf("%s: key returned %v with status %s", tc.name, key != nil, r.Status)
		}
		if r.Status == Fail && !strings.Contains(r.Fix, "apiclient_key.pem") {
			t.Errorf("%s: fix %q does not name apiclient_key.pem", tc.name, r.Fix)
		}
	}
}

func TestCheckPublicKeyFile(t *testing.T) {
	srv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	for _, tc := range []struct {
		name   string
		data   []byte
		status Status
		msg    string
	}{
		{"SPKI", wxpaytest.PublicKeyPEM(&srv.PublicKey().PrivateKey.PublicKey), OK, "is an RSA public key (2048 bits)"},
		{"PKCS#1", pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&srv.PublicKey().PrivateKey.PublicKey)}), OK, "is an RSA public key"},
		{"certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.Certificate.Raw}), Fail, "holds a certificate, not the WeChat Pay public key"},
		{"private key", wxpaytest.PrivateKeyPEM(m.PrivateKey), Fail, "holds a private key"},
		{"1024 bits", wxpaytest.PublicKeyPEM(&small.PublicKey), Fail, "1024 bits"},
	} {
		r, key := CheckPublicKeyFile("WXPAY_PUBLIC_KEY_FILE", writeKey(t, tc.data))
		if r.Status != tc.status || !strings.Contains(r.Message, tc.msg) {
			t.Errorf("%s: %s %q, want %s saying %q", tc.name, r.Status, r.Message, tc.status, tc.msg)
		}
		if (key != nil) != (tc.status == OK) {
			t.Errorf("%s: key returned %v with status %s", tc.name, key != nil, r.Status)
		}
		if r.Status == Fail && !strings.Contains(r.Fix, "pub_key.pem") {
			t.Errorf("%s: fix %q does not name pub_key.pem", tc.name, r.Fix)
		}
	}
}

func TestCheckKeys(t *testing.T) {
	if r := CheckAPIv3Key("WXPAY_APIV3_KEY", strings.Repeat("k", 32)); r.Status != OK {
		t.Errorf("32 bytes: %+v", r)
	}
	if r := CheckAPIv3Key("WXPAY_APIV3_KEY", strings.Repeat("k", 31)); r.Status != Fail || !strings.Contains(r.Message, "31 bytes") || !strings.Contains(r.Fix, "APIv3密钥") {
		t.Errorf("31 bytes: %+v", r)
	}
	if r := CheckAPIv2Key("WXPAY_APIV2_KEY", ""); r.Status != Skip {
		t.Errorf("unset v2 key: %+v", r)
	}
	if r := CheckAPIv2Key("WXPAY_APIV2_KEY", strings.Repeat("k", 33)); r.Status != Fail || !strings.Contains(r.Message, "33 bytes") || !strings.Contains(r.Fix, "API密钥") {
		t.Errorf("33-byte v2 key: %+v", r)
	}
	for id, want := range map[string]Status{
		"PUB_KEY_ID_0112300001092025010100000000000000": OK,
		"":                 Skip,
		"PUB_KEY_ID_":      Fail,
		"PUB_KEY_ID_12AB":  Fail,
		"pub_key_id_0123":  Fail,
		"5157F09EFDC096DE": Fail,
	} {
		if r := CheckPublicKeyID("WXPAY_PUBLIC_KEY_ID", id); r.Status != want || (want == Fail && !strings.Contains(r.Fix, "PUB_KEY_ID_")) {
			t.Errorf("%q: %+v, want %s", id, r, want)
		}
	}
}

func TestConfigProblemsBecomeChecks(t *testing.T) {
	err := errors.Join(
		errors.New("WXPAY_APIV3_KEY: the APIv3 key must be exactly 32 bytes, got 31: copy it again"),
		errors.Join(errors.New(`merchants file m.yaml: merchant #2 (mchid 1): public_key_id="5157" must start with PUB_KEY_ID_ (it is …)`)),
		errors.New("WXPAY_APIV2_KEY: the API v2 key must be exactly 32 bytes, got 3"),
		errors.New(`NATS_URL is not a URL`),
	)
	rep := Run(t.Context(), Config{ConfigError: err, Timeout: time.Second})
	want := []string{"apiv3_key", "public_key_id", "apiv2_key", "configuration", "nats", "redis"}
	if len(rep.Checks) != len(want) {
		t.Fatalf("got %+v, want checks %v", rep.Checks, want)
	}
	for i, c := range rep.Checks {
		wantStatus := Fail
		if c.Name == "nats" || c.Name == "redis" {
			wantStatus = Skip // no valid shared settings
		}
		if c.Name != want[i] || c.Status != wantStatus || c.Fix == "" {
			t.Errorf("check #%d: %+v, want %s %s with a fix", i+1, c, want[i], wantStatus)
		}
	}
	if !rep.Failed() {
		t.Error("the report does not fail")
	}
}

func TestSkewFromAnswer(t *testing.T) {
	sent := time.Unix(1_800_000_000, 300_000_000)
	a := &answer{sent: sent, received: sent.Add(200 * time.Millisecond), header: http.Header{}}
	a.header.Set("Wechatpay-Timestamp", strconv.FormatInt(sent.Unix()+600, 10))
	a.header.Set("Date", sent.UTC().Format(http.TimeFormat))
	if r := clockResult(a); r.Status != Fail || !strings.Contains(r.Message, "10m0s behind") || !strings.Contains(r.Message, "Wechatpay-Timestamp") {
		t.Errorf("10 minutes ahead: %+v", r)
	}
	a.header.Del("Wechatpay-Timestamp")
	a.header.Set("Date", sent.Add(-90*time.Second).UTC().Format(http.TimeFormat))
	if r := clockResult(a); r.Status != Warn || !strings.Contains(r.Message, "1m30s ahead of") || !strings.Contains(r.Message, "Date header") {
		t.Errorf("90 s behind by Date: %+v", r)
	}
	a.header.Set("Date", sent.Add(-300*time.Second).UTC().Format(http.TimeFormat))
	if r := clockResult(a); r.Status != Warn {
		t.Errorf("exactly 5 minutes: %+v, want warn (the window includes it)", r)
	}
	a.header.Set("Date", sent.Add(59*time.Second).UTC().Format(http.TimeFormat))
	if r := clockResult(a); r.Status != OK {
		t.Errorf("59 s: %+v, want ok", r)
	}
	if r := clockResult(nil); r.Status != Warn || !strings.Contains(r.Fix, "NTP") {
		t.Errorf("no answer: %+v", r)
	}
}

func TestReportJSON(t *testing.T) {
	rep := NewReport([]Result{
		{Name: "apiv3_key", MchID: "1", Status: OK, Message: "fine"},
		{Name: "redis", Status: Warn, Message: "policy", Fix: "set noeviction"},
	})
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Checks  []map[string]any `json:"checks"`
		Overall string           `json:"overall"`
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Overall != "warn" || len(got.Checks) != 2 || got.Checks[1]["fix"] != "set noeviction" || got.Checks[0]["mchid"] != "1" || got.Checks[1]["status"] != "warn" {
		t.Fatalf("JSON report: %s", b.String())
	}
	if rep.Failed() {
		t.Fatal("a warning is not a failure")
	}
}

func TestCheckNATSWithoutJetStream(t *testing.T) {
	s, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(s.Shutdown)
	r := CheckNATS(t.Context(), config.Common{NATSURL: s.ClientURL()}, 3*time.Second)
	if r.Status != Fail || !strings.Contains(r.Message, "JetStream is not enabled") || !strings.Contains(r.Fix, "-js") {
		t.Fatalf("NATS without JetStream: %+v", r)
	}
}
