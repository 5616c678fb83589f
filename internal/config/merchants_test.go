package config

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// resolve registers the merchant flags, parses args and resolves.
func resolve(t *testing.T, vars map[string]string, args ...string) ([]Merchant, error) {
	t.Helper()
	fs := newFlagSet()
	mf := RegisterMerchants(fs, env(vars))
	if err := fs.Parse(args); err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return mf.Resolve()
}

func TestResolveSingleMerchant(t *testing.T) {
	t.Parallel()
	kf := writeKeys(t)
	apiv3File := writeFile(t, kf.dir, "apiv3_key", testAPIv3Key+"\n")
	apiv2File := writeFile(t, kf.dir, "apiv2_key", testAPIv2Key+"\n")
	previousFile := writeFile(t, kf.dir, "apiv3_key_previous", testAPIv3KeyOld+","+testAPIv3KeyOlder+"\n")
	publicMode := map[string]string{
		"WXPAY_MCHID":           testMchID,
		"WXPAY_APIV3_KEY":       testAPIv3Key,
		"WXPAY_PUBLIC_KEY_FILE": kf.publicKey,
		"WXPAY_PUBLIC_KEY_ID":   testPublicKeyID,
	}
	with := func(extra map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range publicMode {
			out[k] = v
		}
		for k, v := range extra {
			if v == "" {
				delete(out, k)
			} else {
				out[k] = v
			}
		}
		return out
	}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want Merchant // compared without origin
	}{
		{
			name: "public key mode from the environment, defaults",
			env:  publicMode,
			want: Merchant{MchID: testMchID, APIv3Key: testAPIv3Key, PublicKeyFile: kf.publicKey, PublicKeyID: testPublicKeyID, APIBase: DefaultAPIBase},
		},
		{
			name: "every variable, keys from files",
			env: with(map[string]string{
				"WXPAY_APIV3_KEY": "", "WXPAY_APIV3_KEY_FILE": apiv3File, "WXPAY_APIV3_KEY_PREVIOUS": testAPIv3KeyOld + " , ",
				"WXPAY_PRIVATE_KEY_FILE": kf.privateKey, "WXPAY_CERT_SERIAL_NO": testSerial, "WXPAY_PLATFORM_CERT_DIR": "/cache",
				"WXPAY_APIV2_KEY_FILE": apiv2File, "WXPAY_PARTNER_MODE": "true", "WXPAY_API_BASE": "http://127.0.0.1:1",
			}),
			want: Merchant{
				MchID: testMchID, APIv3Key: testAPIv3Key, PreviousAPIv3Keys: []string{testAPIv3KeyOld},
				PrivateKeyFile: kf.privateKey, CertSerialNo: testSerial, PublicKeyFile: kf.publicKey, PublicKeyID: testPublicKeyID,
				PlatformCertDir: "/cache", V2Key: testAPIv2Key, PartnerMode: true, APIBase: "http://127.0.0.1:1",
			},
		},
		{
			name: "flags win over the environment",
			env:  with(map[string]string{"WXPAY_APIV2_KEY": "env-v2-key-env-v2-key-env-v2-key", "WXPAY_PARTNER_MODE": "true"}),
			args: []string{
				"--mchid=1900000001", "--apiv3-key", testAPIv3KeyOld, "--apiv2-key-file", apiv2File,
				"--partner-mode=false", "--api-base=http://fake:1", "--public-key-id=PUB_KEY_ID_X",
			},
			want: Merchant{MchID: "1900000001", APIv3Key: testAPIv3KeyOld, PublicKeyFile: kf.publicKey, PublicKeyID: "PUB_KEY_ID_X", V2Key: testAPIv2Key, APIBase: "http://fake:1"},
		},
		{
			name: "previous APIv3 keys from a file",
			env:  with(map[string]string{"WXPAY_APIV3_KEY_PREVIOUS_FILE": previousFile}),
			want: Merchant{MchID: testMchID, APIv3Key: testAPIv3Key, PreviousAPIv3Keys: []string{testAPIv3KeyOld, testAPIv3KeyOlder}, PublicKeyFile: kf.publicKey, PublicKeyID: testPublicKeyID, APIBase: DefaultAPIBase},
		},
		{
			name: "previous APIv3 key flag wins over the variable",
			env:  with(map[string]string{"WXPAY_APIV3_KEY_PREVIOUS": "ignored"}),
			args: []string{"--apiv3-key-previous", testAPIv3KeyOlder},
			want: Merchant{MchID: testMchID, APIv3Key: testAPIv3Key, PreviousAPIv3Keys: []string{testAPIv3KeyOlder}, PublicKeyFile: kf.publicKey, PublicKeyID: testPublicKeyID, APIBase: DefaultAPIBase},
		},
		{
			name: "flags alone",
			args: []string{"--mchid", testMchID, "--apiv3-key-file", apiv3File, "--private-key-file", kf.privateKey, "--cert-serial-no", testSerial, "--partner-mode"},
			want: Merchant{MchID: testMchID, APIv3Key: testAPIv3Key, PrivateKeyFile: kf.privateKey, CertSerialNo: testSerial, PartnerMode: true, APIBase: DefaultAPIBase},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ms, err := resolve(t, tt.env, tt.args...)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if len(ms) != 1 {
				t.Fatalf("got %d merchants, want 1", len(ms))
			}
			got := ms[0]
			got.origin = origin{}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %#v\nwant %#v", got, tt.want)
				if got.APIv3Key != tt.want.APIv3Key || got.V2Key != tt.want.V2Key {
					t.Error("the keys differ")
				}
			}
			if _, err := ms[0].WxpayConfig(); err != nil {
				t.Errorf("WxpayConfig: %v", err)
			}
		})
	}
}

func TestResolveErrors(t *testing.T) {
	t.Parallel()
	kf := writeKeys(t)
	short := writeFile(t, kf.dir, "short_key", "short\n")
	missing := filepath.Join(kf.dir, "missing")
	merchantsFile := writeFile(t, kf.dir, "m.yaml", "- mchid: \"1\"\n")
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"nothing configured", nil, nil, []string{"no merchant configured", "WXPAY_MCHID", "WXPAY_MERCHANTS_FILE"}},
		{
			"merchants file and single settings",
			map[string]string{"WXPAY_MERCHANTS_FILE": merchantsFile, "WXPAY_MCHID": testMchID, "WXPAY_APIV3_KEY": testAPIv3Key},
			nil,
			[]string{"WXPAY_MERCHANTS_FILE and single-merchant settings (WXPAY_MCHID, WXPAY_APIV3_KEY) are both set"},
		},
		{
			"merchants file and a single-merchant flag",
			map[string]string{"WXPAY_MERCHANTS_FILE": merchantsFile},
			[]string{"--cert-serial-no", testSerial},
			[]string{"WXPAY_MERCHANTS_FILE and single-merchant settings (WXPAY_CERT_SERIAL_NO)"},
		},
		{
			"key from a file of the wrong length names the file",
			map[string]string{"WXPAY_MCHID": testMchID, "WXPAY_APIV3_KEY_FILE": short, "WXPAY_PUBLIC_KEY_FILE": kf.publicKey, "WXPAY_PUBLIC_KEY_ID": testPublicKeyID},
			nil,
			[]string{"WXPAY_APIV3_KEY_FILE " + short + ": the APIv3 key must be exactly 32 bytes, got 5"},
		},
		{
			"key given on the command line names the flag",
			map[string]string{"WXPAY_MCHID": testMchID, "WXPAY_PUBLIC_KEY_FILE": kf.publicKey, "WXPAY_PUBLIC_KEY_ID": testPublicKeyID},
			[]string{"--apiv3-key=short"},
			[]string{"--apiv3-key: the APIv3 key must be exactly 32 bytes, got 5"},
		},
		{
			"missing key file, and other problems too",
			map[string]string{"WXPAY_MCHID": "abc", "WXPAY_APIV3_KEY_FILE": missing, "WXPAY_APIV2_KEY_FILE": missing},
			nil,
			[]string{"WXPAY_APIV3_KEY_FILE " + missing + ": cannot read", "WXPAY_APIV2_KEY_FILE " + missing + ": cannot read", "WXPAY_MCHID", "no way to verify"},
		},
		{
			"key and key file both set",
			map[string]string{"WXPAY_MCHID": testMchID, "WXPAY_APIV3_KEY": testAPIv3Key, "WXPAY_APIV3_KEY_FILE": short, "WXPAY_PUBLIC_KEY_FILE": kf.publicKey, "WXPAY_PUBLIC_KEY_ID": testPublicKeyID},
			nil,
			[]string{"WXPAY_APIV3_KEY and WXPAY_APIV3_KEY_FILE are both set"},
		},
		{
			"bad WXPAY_PARTNER_MODE",
			map[string]string{"WXPAY_MCHID": testMchID, "WXPAY_APIV3_KEY": testAPIv3Key, "WXPAY_PUBLIC_KEY_FILE": kf.publicKey, "WXPAY_PUBLIC_KEY_ID": testPublicKeyID, "WXPAY_PARTNER_MODE": "yes please"},
			nil,
			[]string{`WXPAY_PARTNER_MODE="yes please" is not true or false`},
		},
		{
			"bad previous key",
			map[string]string{"WXPAY_MCHID": testMchID, "WXPAY_APIV3_KEY": testAPIv3Key, "WXPAY_APIV3_KEY_PREVIOUS": "short", "WXPAY_PUBLIC_KEY_FILE": kf.publicKey, "WXPAY_PUBLIC_KEY_ID": testPublicKeyID},
			nil,
			[]string{"WXPAY_APIV3_KEY_PREVIOUS: previous APIv3 key #1 must be exactly 32 bytes"},
		},
		{
			"certificate without its private key",
			map[string]string{"WXPAY_MCHID": testMchID, "WXPAY_APIV3_KEY": testAPIv3Key, "WXPAY_PUBLIC_KEY_FILE": kf.publicKey, "WXPAY_PUBLIC_KEY_ID": testPublicKeyID},
			[]string{"--cert-file", "/k/apiclient_cert.pem"},
			[]string{"WXPAY_CERT_FILE is set but WXPAY_PRIVATE_KEY_FILE is not"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ms, err := resolve(t, tt.env, tt.args...)
			if ms != nil {
				t.Errorf("got %v, want no merchants", ms)
			}
			wantErrContains(t, err, tt.want...)
			noSecrets(t, "error", err.Error())
		})
	}
}

func TestPartnerModeEnvReportedOnce(t *testing.T) {
	t.Parallel()
	fs := newFlagSet()
	RegisterMerchants(fs, env(map[string]string{"WXPAY_PARTNER_MODE": "x"}))
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := Err(fs); err != nil {
		t.Errorf("Err: got %v, want nil (Resolve reports WXPAY_PARTNER_MODE)", err)
	}
}

func TestMerchantsFile(t *testing.T) {
	t.Parallel()
	kf := writeKeys(t)
	dir := kf.dir
	writeFile(t, dir, "secrets/apiv3_key", testAPIv3Key+"\n")
	writeFile(t, dir, "secrets/apiv2_key", testAPIv2Key)
	yamlFile := writeFile(t, dir, "merchants.yaml", `# two merchants
- mchid: 1230000109          # unquoted: read as its digits
  apiv3_key_file: secrets/apiv3_key
  previous_apiv3_keys: ["`+testAPIv3KeyOld+`"]
  private_key_file: apiclient_key.pem
  cert_serial_no: `+testSerial+`
  cert_file: apiclient_cert.pem
  public_key_file: `+kf.publicKey+`
  public_key_id: `+testPublicKeyID+`
  platform_cert_dir: certs
  apiv2_key_file: secrets/apiv2_key
  partner_mode: true
  api_base: http://127.0.0.1:1
- mchid: "1900000001"
  apiv3_key: "`+testAPIv3Key+`"
  public_key_file: pub_key.pem
  public_key_id: `+testPublicKeyID+`
`)
	jsonFile := writeFile(t, dir, "merchants.json", `
[
	{
		"mchid": "1230000109", "apiv3_key_file": "secrets/apiv3_key", "previous_apiv3_keys": ["`+testAPIv3KeyOld+`"],
		"private_key_file": "apiclient_key.pem", "cert_serial_no": "`+testSerial+`", "cert_file": "apiclient_cert.pem",
		"public_key_file": "`+kf.publicKey+`", "public_key_id": "`+testPublicKeyID+`",
		"platform_cert_dir": "certs", "apiv2_key_file": "secrets/apiv2_key", "partner_mode": true, "api_base": "http://127.0.0.1:1"
	},
	{"mchid": 1900000001, "apiv3_key": "`+testAPIv3Key+`", "public_key_file": "pub_key.pem", "public_key_id": "`+testPublicKeyID+`"}
]`)
	want := []Merchant{
		{
			MchID: testMchID, APIv3Key: testAPIv3Key, PreviousAPIv3Keys: []string{testAPIv3KeyOld},
			PrivateKeyFile: kf.privateKey, CertSerialNo: testSerial, CertFile: filepath.Join(dir, "apiclient_cert.pem"),
			PublicKeyFile: kf.publicKey, PublicKeyID: testPublicKeyID, PlatformCertDir: filepath.Join(dir, "certs"), V2Key: testAPIv2Key, PartnerMode: true, APIBase: "http://127.0.0.1:1",
		},
		{MchID: "1900000001", APIv3Key: testAPIv3Key, PublicKeyFile: kf.publicKey, PublicKeyID: testPublicKeyID},
	}
	for _, tt := range []struct{ name, path string }{{"YAML", yamlFile}, {"JSON", jsonFile}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Through the flags, as a command does; WXPAY_* defaults unset.
			ms, err := resolve(t, map[string]string{"WXPAY_MERCHANTS_FILE": tt.path})
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if len(ms) != len(want) {
				t.Fatalf("got %d merchants, want %d", len(ms), len(want))
			}
			for i := range ms {
				got := ms[i]
				got.origin = origin{}
				if !reflect.DeepEqual(got, want[i]) {
					t.Errorf("merchant #%d:\ngot  %#v\nwant %#v", i+1, got, want[i])
				}
				cfg, err := ms[i].WxpayConfig()
				if err != nil {
					t.Fatalf("merchant #%d: WxpayConfig: %v", i+1, err)
				}
				if _, err := wxpay.NewClient(cfg); err != nil {
					t.Errorf("merchant #%d: NewClient: %v", i+1, err)
				}
			}
			if !ms[0].downloadsCertificates() || ms[1].downloadsCertificates() {
				t.Errorf("downloads: got %v, %v, want true, false", ms[0].downloadsCertificates(), ms[1].downloadsCertificates())
			}
		})
	}
}

func TestMerchantsFileErrors(t *testing.T) {
	t.Parallel()
	kf := writeKeys(t)
	dir := kf.dir
	okEntry := `- mchid: "1230000109"
  apiv3_key: "` + testAPIv3Key + `"
  public_key_file: pub_key.pem
  public_key_id: ` + testPublicKeyID + "\n"
	tests := []struct {
		name    string
		content string
		want    []string
	}{
		{"empty list", "[]", []string{"no merchants listed"}},
		{"empty file", "", []string{"no merchants listed"}},
		{"not a list", "mchid: 1", []string{"YAML", "must be a list of merchants"}},
		{"JSON object", `{"mchid": "1"}`, []string{"JSON", "must be a list of merchants"}},
		{"unknown key", okEntry + "  apiv3key: x\n", []string{`unknown field "apiv3key"`}},
		{"unknown JSON key", `[{"mchid": "1", "apiv3_kye": "x"}]`, []string{"JSON", `unknown field "apiv3_kye"`}},
		{"bad JSON", `[{"mchid": }]`, []string{"JSON"}},
		{"duplicate mchid", okEntry + okEntry, []string{"merchant #2 (mchid 1230000109): mchid 1230000109 is listed twice: also merchant #1"}},
		{
			"every problem of every merchant",
			okEntry + `- mchid: "12x"
  apiv3_key: short
  cert_serial_no: ` + testSerial + `
- mchid: "1900000001"
  apiv3_key_file: missing_key
  apiv3_key: "` + testAPIv3Key + `"
  private_key_file: k.pem
`,
			[]string{
				"merchant #2 (mchid 12x): mchid=\"12x\"",
				"merchant #2 (mchid 12x): apiv3_key: the APIv3 key must be exactly 32 bytes, got 5",
				"merchant #2 (mchid 12x): cert_serial_no is set but private_key_file is not",
				"merchant #3 (mchid 1900000001): apiv3_key and apiv3_key_file are both set",
				"merchant #3 (mchid 1900000001): private_key_file is set but cert_serial_no is not",
			},
		},
		{
			"unreadable key file names the key and the path",
			`- mchid: "1"
  apiv3_key_file: missing_key
  public_key_file: pub_key.pem
  public_key_id: ` + testPublicKeyID + "\n",
			[]string{"merchant #1 (mchid 1): apiv3_key_file " + filepath.Join(dir, "missing_key") + ": cannot read"},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, dir, "bad"+string(rune('a'+i))+".yaml", tt.content)
			ms, err := ReadMerchantsFile(path)
			if ms != nil {
				t.Errorf("got %v, want no merchants", ms)
			}
			wantErrContains(t, err, append([]string{"merchants file " + path + ": "}, tt.want...)...)
			noSecrets(t, "error", err.Error())
		})
	}
	if _, err := ReadMerchantsFile(filepath.Join(dir, "nope.yaml")); err == nil || !strings.Contains(err.Error(), "nope.yaml: cannot read") {
		t.Errorf("missing file: got %v, want it named", err)
	}
}
