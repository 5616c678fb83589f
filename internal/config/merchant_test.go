package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// publicKeyMerchant is valid in public-key mode; the files need not exist
// for Validate.
func publicKeyMerchant() Merchant {
	return Merchant{MchID: testMchID, APIv3Key: testAPIv3Key, PublicKeyFile: "/k/pub_key.pem", PublicKeyID: testPublicKeyID}
}

func TestMerchantValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		modify func(*Merchant)
		want   []string // each must appear in the error; nil: valid
	}{
		{"public key mode", func(*Merchant) {}, nil},
		{"certificate mode", func(m *Merchant) {
			m.PublicKeyFile, m.PublicKeyID = "", ""
			m.PrivateKeyFile, m.CertSerialNo = "/k/apiclient_key.pem", testSerial
		}, nil},
		{"both, with v2 key, previous keys and a base URL", func(m *Merchant) {
			m.PrivateKeyFile, m.CertSerialNo, m.PlatformCertDir = "/k/apiclient_key.pem", testSerial, "/cache"
			m.V2Key, m.PreviousAPIv3Keys, m.APIBase = testAPIv2Key, []string{testAPIv3KeyOld}, "http://127.0.0.1:1234"
		}, nil},
		{"no mchid", func(m *Merchant) { m.MchID = "" }, []string{"WXPAY_MCHID is not set"}},
		{"mchid not digits", func(m *Merchant) { m.MchID = "12a" }, []string{"WXPAY_MCHID", "digits"}},
		{"no APIv3 key", func(m *Merchant) { m.APIv3Key = "" }, []string{"WXPAY_APIV3_KEY is not set", "WXPAY_APIV3_KEY_FILE"}},
		{"short APIv3 key", func(m *Merchant) { m.APIv3Key = testAPIv3Key[:31] }, []string{"WXPAY_APIV3_KEY", "exactly 32 bytes, got 31", "copy it again from the merchant console"}},
		{"long APIv3 key", func(m *Merchant) { m.APIv3Key = testAPIv3Key + "\n" }, []string{"WXPAY_APIV3_KEY", "got 33"}},
		{"APIv3 key from a file", func(m *Merchant) { m.APIv3Key, m.origin.apiv3 = "x", "WXPAY_APIV3_KEY_FILE /s/k" }, []string{"WXPAY_APIV3_KEY_FILE /s/k", "got 1"}},
		{"empty APIv3 key file", func(m *Merchant) { m.APIv3Key, m.origin.apiv3 = "", "WXPAY_APIV3_KEY_FILE /s/k" }, []string{"WXPAY_APIV3_KEY_FILE /s/k is empty"}},
		{"bad previous key", func(m *Merchant) { m.PreviousAPIv3Keys = []string{testAPIv3KeyOld, "short"} }, []string{"WXPAY_APIV3_KEY_PREVIOUS", "#2", "got 5"}},
		{"private key without serial", func(m *Merchant) { m.PrivateKeyFile = "/k/apiclient_key.pem" }, []string{"WXPAY_PRIVATE_KEY_FILE is set but WXPAY_CERT_SERIAL_NO is not"}},
		{"serial without private key", func(m *Merchant) { m.CertSerialNo = testSerial }, []string{"WXPAY_CERT_SERIAL_NO is set but WXPAY_PRIVATE_KEY_FILE is not"}},
		{"serial not hex", func(m *Merchant) { m.PrivateKeyFile, m.CertSerialNo = "/k", "XYZ" }, []string{"WXPAY_CERT_SERIAL_NO", "hexadecimal"}},
		{"public key without id", func(m *Merchant) { m.PublicKeyID = "" }, []string{"WXPAY_PUBLIC_KEY_FILE is set but WXPAY_PUBLIC_KEY_ID is not"}},
		{"id without public key", func(m *Merchant) { m.PublicKeyFile = "" }, []string{"WXPAY_PUBLIC_KEY_ID is set but WXPAY_PUBLIC_KEY_FILE is not"}},
		{"id without prefix", func(m *Merchant) { m.PublicKeyID = testSerial }, []string{"WXPAY_PUBLIC_KEY_ID", "PUB_KEY_ID_"}},
		{"no verification method", func(m *Merchant) { m.PublicKeyFile, m.PublicKeyID = "", "" }, []string{
			"no way to verify WeChat Pay signatures", "WXPAY_PUBLIC_KEY_FILE", "WXPAY_PUBLIC_KEY_ID", "WXPAY_PRIVATE_KEY_FILE", "WXPAY_CERT_SERIAL_NO",
		}},
		{"cert dir without private key", func(m *Merchant) { m.PlatformCertDir = "/cache" }, []string{"WXPAY_PLATFORM_CERT_DIR", "WXPAY_PRIVATE_KEY_FILE"}},
		{"short v2 key", func(m *Merchant) { m.V2Key = "abc" }, []string{"WXPAY_APIV2_KEY", "got 3"}},
		{"bad API base", func(m *Merchant) { m.APIBase = "ftp://x" }, []string{"WXPAY_API_BASE", "http(s)"}},
		{"all at once", func(m *Merchant) { *m = Merchant{CertSerialNo: "zz", V2Key: "x", APIBase: "::"} }, []string{
			"WXPAY_MCHID", "WXPAY_APIV3_KEY", "WXPAY_CERT_SERIAL_NO", "WXPAY_APIV2_KEY", "WXPAY_API_BASE",
		}},
		{"file merchant names the file, the entry and the key", func(m *Merchant) {
			m.APIv3Key = "short"
			m.origin = origin{file: "/etc/m.yaml", index: 2}
		}, []string{"merchants file /etc/m.yaml: merchant #2 (mchid 1230000109): apiv3_key: the APIv3 key must be exactly 32 bytes"}},
		{"file merchant pair", func(m *Merchant) {
			m.PublicKeyID = ""
			m.origin = origin{file: "/etc/m.yaml", index: 1}
		}, []string{"merchant #1 (mchid 1230000109): public_key_file is set but public_key_id is not"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := publicKeyMerchant()
			tt.modify(&m)
			err := m.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			wantErrContains(t, err, tt.want...)
			noSecrets(t, "error", err.Error())
		})
	}
}

func TestWxpayConfig(t *testing.T) {
	t.Parallel()
	kf := writeKeys(t)
	cacheDir := filepath.Join(t.TempDir(), "certs")
	tests := []struct {
		name         string
		m            Merchant
		wantDownload bool
		wantCacheDir string
		wantSigner   bool
		wantPublic   bool
	}{
		{
			name:       "public key only",
			m:          Merchant{MchID: testMchID, APIv3Key: testAPIv3Key, PublicKeyFile: kf.publicKey, PublicKeyID: testPublicKeyID},
			wantPublic: true,
		},
		{
			name:       "public key and private key, no cert dir: no download (no platform certificates exist)",
			m:          Merchant{MchID: testMchID, APIv3Key: testAPIv3Key, PublicKeyFile: kf.publicKey, PublicKeyID: testPublicKeyID, PrivateKeyFile: kf.privateKey, CertSerialNo: testSerial},
			wantSigner: true, wantPublic: true,
		},
		{
			name:         "certificate download",
			m:            Merchant{MchID: testMchID, APIv3Key: testAPIv3Key, PrivateKeyFile: kf.privateKey, CertSerialNo: testSerial},
			wantDownload: true, wantSigner: true,
		},
		{
			name:         "certificate download with cache",
			m:            Merchant{MchID: testMchID, APIv3Key: testAPIv3Key, PrivateKeyFile: kf.privateKey, CertSerialNo: testSerial, PlatformCertDir: cacheDir},
			wantDownload: true, wantCacheDir: cacheDir, wantSigner: true,
		},
		{
			name: "both (migration)",
			m: Merchant{MchID: testMchID, APIv3Key: testAPIv3Key, PreviousAPIv3Keys: []string{testAPIv3KeyOld},
				PublicKeyFile: kf.publicKey, PublicKeyID: testPublicKeyID, PrivateKeyFile: kf.privateKey, CertSerialNo: testSerial,
				PlatformCertDir: cacheDir, PartnerMode: true, APIBase: "http://127.0.0.1:1"},
			wantDownload: true, wantCacheDir: cacheDir, wantSigner: true, wantPublic: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := tt.m.WxpayConfig()
			if err != nil {
				t.Fatalf("WxpayConfig: %v", err)
			}
			if cfg.DownloadCertificates != tt.wantDownload {
				t.Errorf("DownloadCertificates: got %v, want %v", cfg.DownloadCertificates, tt.wantDownload)
			}
			if cfg.CertificateCacheDir != tt.wantCacheDir {
				t.Errorf("CertificateCacheDir: got %q, want %q", cfg.CertificateCacheDir, tt.wantCacheDir)
			}
			if (cfg.Signer != nil) != tt.wantSigner {
				t.Errorf("Signer set: got %v, want %v", cfg.Signer != nil, tt.wantSigner)
			}
			if (cfg.PublicKey != nil) != tt.wantPublic {
				t.Errorf("PublicKey set: got %v, want %v", cfg.PublicKey != nil, tt.wantPublic)
			}
			if cfg.MchID != tt.m.MchID || cfg.APIv3Key != tt.m.APIv3Key || cfg.CertSerialNo != tt.m.CertSerialNo ||
				cfg.PublicKeyID != tt.m.PublicKeyID || cfg.PartnerMode != tt.m.PartnerMode || cfg.BaseURL != tt.m.APIBase ||
				len(cfg.PreviousAPIv3Keys) != len(tt.m.PreviousAPIv3Keys) {
				t.Errorf("got %+v, want the fields of %v", cfg, tt.m)
			}
			if tt.wantPublic && !cfg.PublicKey.Equal(&rsaKey(t).PublicKey) {
				t.Error("PublicKey: got a different key, want the one in the file")
			}
			c, err := wxpay.NewClient(cfg)
			if err != nil {
				t.Fatalf("wxpay.NewClient: %v", err)
			}
			if c.MchID() != testMchID {
				t.Errorf("client MchID: got %q, want %q", c.MchID(), testMchID)
			}
		})
	}
}

func TestWxpayConfigFileErrors(t *testing.T) {
	t.Parallel()
	kf := writeKeys(t)
	dir := t.TempDir()
	secretContent := "-----BEGIN GARBAGE-----\n" + testAPIv3Key + "\n-----END GARBAGE-----\n"
	garbage := writeFile(t, dir, "garbage.pem", secretContent)
	missing := filepath.Join(dir, "missing.pem")
	base := Merchant{MchID: testMchID, APIv3Key: testAPIv3Key, CertSerialNo: testSerial, PublicKeyID: testPublicKeyID}
	tests := []struct {
		name    string
		private string
		public  string
		origin  origin
		want    []string
	}{
		{"missing private key", missing, kf.publicKey, origin{}, []string{"WXPAY_PRIVATE_KEY_FILE " + missing + ": cannot read"}},
		{"garbage private key", garbage, kf.publicKey, origin{}, []string{"WXPAY_PRIVATE_KEY_FILE " + garbage, "apiclient_key.pem"}},
		{"public key given as private key", kf.publicKey, kf.publicKey, origin{}, []string{"WXPAY_PRIVATE_KEY_FILE " + kf.publicKey, `"PUBLIC KEY"`}},
		{"private key given as public key", kf.privateKey, kf.privateKey, origin{}, []string{"WXPAY_PUBLIC_KEY_FILE " + kf.privateKey}},
		{"both missing", missing, missing, origin{}, []string{"WXPAY_PRIVATE_KEY_FILE " + missing, "WXPAY_PUBLIC_KEY_FILE " + missing}},
		{"file merchant", missing, kf.publicKey, origin{file: "/etc/m.yaml", index: 3}, []string{"merchants file /etc/m.yaml: merchant #3 (mchid 1230000109): private_key_file " + missing}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := base
			m.PrivateKeyFile, m.PublicKeyFile, m.origin = tt.private, tt.public, tt.origin
			_, err := m.WxpayConfig()
			wantErrContains(t, err, tt.want...)
			noSecrets(t, "error", err.Error())
			if strings.Contains(err.Error(), "BEGIN") { // the PEM type may be named, not the content
				t.Errorf("error shows file content: %v", err)
			}
			if !errors.Is(err, wxpay.ErrInvalidConfig) && !strings.Contains(err.Error(), "cannot read") {
				t.Errorf("got %v, want it to wrap wxpay.ErrInvalidConfig", err)
			}
		})
	}
	// WxpayConfig validates first.
	if _, err := (Merchant{MchID: testMchID}).WxpayConfig(); err == nil || !strings.Contains(err.Error(), "WXPAY_APIV3_KEY") {
		t.Errorf("WxpayConfig of an invalid merchant: got %v, want the validation error", err)
	}
}

func TestMerchantMasksSecrets(t *testing.T) {
	t.Parallel()
	m := Merchant{
		MchID: testMchID, APIv3Key: testAPIv3Key, PreviousAPIv3Keys: []string{testAPIv3KeyOld},
		PrivateKeyFile: "/k/apiclient_key.pem", CertSerialNo: testSerial,
		PublicKeyFile: "/k/pub_key.pem", PublicKeyID: testPublicKeyID, V2Key: testAPIv2Key,
	}
	js, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	logger := zerolog.New(&buf)
	logger.Info().Object("merchant", m).Interface("as_interface", m).Send()
	outputs := map[string]string{
		"String":               m.String(),
		"%v":                   fmt.Sprintf("%v", m),
		"%+v":                  fmt.Sprintf("%+v", m),
		"%#v":                  fmt.Sprintf("%#v", m),
		"%v of a slice":        fmt.Sprintf("%v", []Merchant{m}),
		"MarshalJSON":          string(js),
		"MarshalZerologObject": buf.String(),
	}
	for name, out := range outputs {
		noSecrets(t, name, out)
		for _, want := range []string{testMchID, "***(32)", "/k/apiclient_key.pem", testPublicKeyID} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: got %s, want it to contain %q", name, out, want)
			}
		}
	}
	want := "mchid=1230000109 apiv3_key=***(32) previous_apiv3_keys=1 private_key_file=/k/apiclient_key.pem cert_serial_no=" + testSerial +
		` cert_file="" public_key_file=/k/pub_key.pem public_key_id=` + testPublicKeyID + ` platform_cert_dir="" apiv2_key=***(32) partner_mode=false api_base=https://api.mch.weixin.qq.com verification=public_key`
	if got := m.String(); got != want {
		t.Errorf("String:\ngot  %s\nwant %s", got, want)
	}
	if got := m.APIv2Key(); got != testAPIv2Key {
		t.Errorf("APIv2Key: got %q, want the key", got)
	}
}
