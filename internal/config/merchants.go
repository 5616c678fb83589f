package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// MerchantFlags are the merchant settings registered on a flag.FlagSet by
// RegisterMerchants. Call Resolve after parsing.
type MerchantFlags struct {
	fs     *flag.FlagSet
	getenv func(string) string

	mchID           *string
	apiv3           *SecretFlag
	apiv3Previous   *SecretFlag
	privateKeyFile  *string
	certSerialNo    *string
	certFile        *string
	publicKeyFile   *string
	publicKeyID     *string
	platformCertDir *string
	apiv2           *SecretFlag
	partnerMode     *envValue[bool]
	apiBase         *string
	merchantsFile   *string
}

// single lists the single-merchant settings as (flag, variable) pairs, in
// the order errors name them.
var single = [][2]string{
	{"mchid", "WXPAY_MCHID"},
	{"apiv3-key", "WXPAY_APIV3_KEY"},
	{"apiv3-key-file", "WXPAY_APIV3_KEY_FILE"},
	{"apiv3-key-previous", "WXPAY_APIV3_KEY_PREVIOUS"},
	{"apiv3-key-previous-file", "WXPAY_APIV3_KEY_PREVIOUS_FILE"},
	{"private-key-file", "WXPAY_PRIVATE_KEY_FILE"},
	{"cert-serial-no", "WXPAY_CERT_SERIAL_NO"},
	{"cert-file", "WXPAY_CERT_FILE"},
	{"public-key-file", "WXPAY_PUBLIC_KEY_FILE"},
	{"public-key-id", "WXPAY_PUBLIC_KEY_ID"},
	{"platform-cert-dir", "WXPAY_PLATFORM_CERT_DIR"},
	{"apiv2-key", "WXPAY_APIV2_KEY"},
	{"apiv2-key-file", "WXPAY_APIV2_KEY_FILE"},
	{"partner-mode", "WXPAY_PARTNER_MODE"},
	{"api-base", "WXPAY_API_BASE"},
}

// RegisterMerchants registers the merchant flags on fs with defaults from
// the WXPAY_* variables: --mchid, --apiv3-key, --apiv3-key-file,
// --apiv3-key-previous, --apiv3-key-previous-file,
// --private-key-file, --cert-serial-no, --cert-file, --public-key-file, --public-key-id,
// --platform-cert-dir, --apiv2-key, --apiv2-key-file, --partner-mode,
// --api-base and --merchants-file. The secrets --apiv3-key and --apiv2-key
// have no default; Resolve reads them (see Secret).
func RegisterMerchants(fs *flag.FlagSet, getenv func(string) string) *MerchantFlags {
	f := &MerchantFlags{fs: fs, getenv: getenv}
	f.mchID = String(fs, getenv, "mchid", "WXPAY_MCHID", "", "merchant `id` (商户号; the service provider's id in partner mode)")
	f.apiv3 = Secret(fs, getenv, "apiv3-key", "WXPAY_APIV3_KEY", "apiv3-key-file", "WXPAY_APIV3_KEY_FILE", "the 32-byte APIv3 `key`")
	f.apiv3Previous = Secret(fs, getenv, "apiv3-key-previous", "WXPAY_APIV3_KEY_PREVIOUS", "apiv3-key-previous-file", "WXPAY_APIV3_KEY_PREVIOUS_FILE", "older APIv3 `keys`, comma separated, tried after the current one while a key change reaches every notification")
	f.privateKeyFile = String(fs, getenv, "private-key-file", "WXPAY_PRIVATE_KEY_FILE", "", "merchant API private key `file`, PEM (apiclient_key.pem)")
	f.certSerialNo = String(fs, getenv, "cert-serial-no", "WXPAY_CERT_SERIAL_NO", "", "`serial` of the merchant API certificate (证书序列号)")
	f.certFile = String(fs, getenv, "cert-file", "WXPAY_CERT_FILE", "", "merchant API certificate `file`, PEM (apiclient_cert.pem; optional, only \"ingress doctor\" reads it)")
	f.publicKeyFile = String(fs, getenv, "public-key-file", "WXPAY_PUBLIC_KEY_FILE", "", "WeChat Pay public key `file`, PEM (pub_key.pem; public-key mode)")
	f.publicKeyID = String(fs, getenv, "public-key-id", "WXPAY_PUBLIC_KEY_ID", "", "`id` of the WeChat Pay public key (PUB_KEY_ID_…)")
	f.platformCertDir = String(fs, getenv, "platform-cert-dir", "WXPAY_PLATFORM_CERT_DIR", "", "`directory` caching downloaded platform certificates (default: memory only)")
	f.apiv2 = Secret(fs, getenv, "apiv2-key", "WXPAY_APIV2_KEY", "apiv2-key-file", "WXPAY_APIV2_KEY_FILE", "the API v2 `key` (for v2 XML notifications)")
	f.partnerMode = bindValue(fs, getenv, "partner-mode", "WXPAY_PARTNER_MODE", false, "service provider (服务商) mode", "true or false", strconv.ParseBool, true)
	f.partnerMode.elsewhere = true // Resolve reports it
	f.apiBase = String(fs, getenv, "api-base", "WXPAY_API_BASE", DefaultAPIBase, "WeChat Pay API base `url` (the fake platform in tests)")
	f.merchantsFile = String(fs, getenv, "merchants-file", "WXPAY_MERCHANTS_FILE", "", "YAML or JSON `file` listing several merchants, instead of the single-merchant settings")
	return f
}

// Resolve returns the configured merchants: those of the merchants file, or
// the one merchant of the WXPAY_* settings. It reads the APIv3 and v2 key
// files (not the PEM files: WxpayConfig does) and validates every merchant.
// All problems come back at once; each names its setting. No merchant at
// all is an error, and so is a merchants file together with
// single-merchant settings.
func (f *MerchantFlags) Resolve() ([]Merchant, error) {
	set := setFlags(f.fs)
	var errs []error
	if err := f.partnerMode.envError; err != nil && !set["partner-mode"] {
		errs = append(errs, err)
	}

	var given []string
	for _, s := range single {
		if (s[0] != "" && set[s[0]]) || isSetEnv(f.getenv, s[1]) {
			given = append(given, s[1])
		}
	}
	if path := *f.merchantsFile; path != "" {
		if len(given) > 0 {
			errs = append(errs, fmt.Errorf("WXPAY_MERCHANTS_FILE and single-merchant settings (%s) are both set: list every merchant in the file, or unset WXPAY_MERCHANTS_FILE", strings.Join(given, ", ")))
			return nil, errors.Join(errs...)
		}
		ms, err := ReadMerchantsFile(path)
		if err != nil {
			return nil, errors.Join(append(errs, err)...)
		}
		return ms, errors.Join(errs...)
	}
	if len(given) == 0 {
		return nil, errors.New("no merchant configured: set WXPAY_MCHID, WXPAY_APIV3_KEY (or WXPAY_APIV3_KEY_FILE) and WXPAY_PUBLIC_KEY_FILE with WXPAY_PUBLIC_KEY_ID or WXPAY_PRIVATE_KEY_FILE with WXPAY_CERT_SERIAL_NO; or list several merchants in WXPAY_MERCHANTS_FILE")
	}

	m := Merchant{
		MchID:           *f.mchID,
		PrivateKeyFile:  *f.privateKeyFile,
		CertSerialNo:    *f.certSerialNo,
		CertFile:        *f.certFile,
		PublicKeyFile:   *f.publicKeyFile,
		PublicKeyID:     *f.publicKeyID,
		PlatformCertDir: *f.platformCertDir,
		PartnerMode:     *f.partnerMode.p,
		APIBase:         *f.apiBase,
	}
	var err error
	if m.APIv3Key, m.origin.apiv3, err = f.apiv3.Resolve(); err != nil {
		errs = append(errs, err)
		m.origin.apiv3Unread = true
	}
	previous, _, err := f.apiv3Previous.Resolve()
	if err != nil {
		errs = append(errs, err)
	}
	m.PreviousAPIv3Keys = SplitList(previous)
	if m.V2Key, m.origin.apiv2, err = f.apiv2.Resolve(); err != nil {
		errs = append(errs, err)
		m.origin.apiv2Unread = true
	}
	errs = append(errs, m.Validate())
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return []Merchant{m}, nil
}

// fileMerchant is one entry of a merchants file.
type fileMerchant struct {
	MchID             flexString `json:"mchid"`
	APIv3Key          string     `json:"apiv3_key"`
	APIv3KeyFile      string     `json:"apiv3_key_file"`
	PreviousAPIv3Keys []string   `json:"previous_apiv3_keys"`
	PrivateKeyFile    string     `json:"private_key_file"`
	CertSerialNo      string     `json:"cert_serial_no"`
	CertFile          string     `json:"cert_file"`
	PublicKeyFile     string     `json:"public_key_file"`
	PublicKeyID       string     `json:"public_key_id"`
	PlatformCertDir   string     `json:"platform_cert_dir"`
	APIv2Key          string     `json:"apiv2_key"`
	APIv2KeyFile      string     `json:"apiv2_key_file"`
	PartnerMode       bool       `json:"partner_mode"`
	APIBase           string     `json:"api_base"`
}

// flexString accepts a JSON string or number, so that an unquoted mchid in
// YAML still reads as its digits.
type flexString string

func (s *flexString) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err == nil {
		*s = flexString(str)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return errors.New("mchid must be a string of digits")
	}
	*s = flexString(n.String())
	return nil
}

// ReadMerchantsFile reads a merchants file (see the package documentation
// for the format), reads the APIv3 and v2 key files it names, and validates
// every merchant. Relative paths in it are relative to its directory. All
// problems come back at once, each as "merchants file PATH: merchant #N
// (mchid M): SETTING: …".
func ReadMerchantsFile(path string) ([]Merchant, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("merchants file %s: %w", path, err)
	}
	entries, err := parseMerchants(data)
	if err != nil {
		return nil, fmt.Errorf("merchants file %s: %w", path, err)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("merchants file %s: no merchants listed", path)
	}
	dir := filepath.Dir(path)
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	var (
		errs  []error
		ms    []Merchant
		first = make(map[string]int)
	)
	for i, e := range entries {
		m := Merchant{
			MchID:             strings.TrimSpace(string(e.MchID)),
			APIv3Key:          e.APIv3Key,
			PreviousAPIv3Keys: e.PreviousAPIv3Keys,
			PrivateKeyFile:    rel(e.PrivateKeyFile),
			CertSerialNo:      e.CertSerialNo,
			CertFile:          rel(e.CertFile),
			PublicKeyFile:     rel(e.PublicKeyFile),
			PublicKeyID:       e.PublicKeyID,
			PlatformCertDir:   rel(e.PlatformCertDir),
			V2Key:             e.APIv2Key,
			PartnerMode:       e.PartnerMode,
			APIBase:           e.APIBase,
			origin:            origin{file: path, index: i + 1},
		}
		var problems []error
		m.APIv3Key, m.origin.apiv3, err = fileSecret(e.APIv3Key, "apiv3_key", rel(e.APIv3KeyFile), "apiv3_key_file")
		if err != nil {
			problems = append(problems, m.problem("%w", err))
			m.origin.apiv3Unread = true
		}
		m.V2Key, m.origin.apiv2, err = fileSecret(e.APIv2Key, "apiv2_key", rel(e.APIv2KeyFile), "apiv2_key_file")
		if err != nil {
			problems = append(problems, m.problem("%w", err))
			m.origin.apiv2Unread = true
		}
		problems = append(problems, m.Validate())
		if j, dup := first[m.MchID]; dup && m.MchID != "" {
			problems = append(problems, m.problem("mchid %s is listed twice: also merchant #%d", m.MchID, j))
		} else {
			first[m.MchID] = i + 1
		}
		errs = append(errs, problems...)
		ms = append(ms, m)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return ms, nil
}

// fileSecret resolves an inline secret or its file in a merchants file.
func fileSecret(value, key, file, fileKey string) (string, string, error) {
	switch {
	case value != "" && file != "":
		return "", "", fmt.Errorf("%s and %s are both set: use one", key, fileKey)
	case file != "":
		source := fileKey + " " + file
		v, err := readSecretFile(file)
		if err != nil {
			return "", source, fmt.Errorf("%s: %w", source, err)
		}
		return v, source, nil
	}
	return value, "", nil
}

// parseMerchants reads a JSON list when the data starts with '[' or '{',
// YAML otherwise; unknown keys are errors.
func parseMerchants(data []byte) ([]fileMerchant, error) {
	var entries []fileMerchant
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && (trimmed[0] == '[' || trimmed[0] == '{') {
		d := json.NewDecoder(bytes.NewReader(trimmed))
		d.DisallowUnknownFields()
		if err := d.Decode(&entries); err != nil {
			return nil, fmt.Errorf("JSON: %w%s", err, listHint(err))
		}
		if d.More() {
			return nil, errors.New("JSON: data after the list of merchants")
		}
		return entries, nil
	}
	if err := yaml.UnmarshalStrict(data, &entries); err != nil {
		return nil, fmt.Errorf("YAML: %w%s", err, listHint(err))
	}
	return entries, nil
}

// listHint explains an error about the top level of a merchants file.
func listHint(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field == "" {
		return ` (the file must be a list of merchants: in YAML each starts with "- mchid: …", in JSON it is [{"mchid": …}, …])`
	}
	return ""
}
