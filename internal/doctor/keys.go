package doctor

import (
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strings"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// Fixes shared by the checks here and the configuration problems that
// package config reports for the same settings.
const (
	apiv3Fix       = "copy the APIv3 key again from the merchant console (商户平台 → 账户中心 → API安全 → APIv3密钥): it is exactly 32 characters; a key file must hold only the key (one trailing newline is ignored)"
	apiv2Fix       = "copy the API v2 key again from the merchant console (商户平台 → 账户中心 → API安全 → API密钥): it is exactly 32 characters; or unset it if no v2 XML notifications come"
	publicKeyIDFix = "copy the id shown next to the WeChat Pay public key (商户平台 → 账户中心 → API安全 → 微信支付公钥): PUB_KEY_ID_ followed by digits; it is not a certificate serial"
)

// maxKeyFileBytes bounds what is read of a key file: a PEM key is a few KB.
const maxKeyFileBytes = 1 << 20

// readKeyFile reads a PEM file for the checks below; a failed Result
// explains a file that cannot be read.
func readKeyFile(name, setting, path, what string) ([]byte, os.FileInfo, *Result) {
	fail := func(msg, fix string) *Result {
		return &Result{Name: name, Status: Fail, Message: msg, Fix: fix}
	}
	info, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil, fail(fmt.Sprintf("%s %s does not exist", setting, path), "set "+setting+" to the path of "+what)
	case errors.Is(err, fs.ErrPermission):
		return nil, nil, fail(fmt.Sprintf("%s %s cannot be read by this user", setting, path), "let the user running the ingress read it (chown or chmod), and no one else")
	case err != nil:
		return nil, nil, fail(fmt.Sprintf("%s %s: %v", setting, path, err), "set "+setting+" to the path of "+what)
	case info.IsDir():
		return nil, nil, fail(fmt.Sprintf("%s %s is a directory", setting, path), "set "+setting+" to the file itself: "+what)
	case info.Size() > maxKeyFileBytes:
		return nil, nil, fail(fmt.Sprintf("%s %s is %d bytes, far too large for a key", setting, path, info.Size()), "set "+setting+" to "+what)
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrPermission) {
		return nil, nil, fail(fmt.Sprintf("%s %s cannot be read by this user", setting, path), "let the user running the ingress read it (chown or chmod), and no one else")
	}
	if err != nil {
		return nil, nil, fail(fmt.Sprintf("%s %s: %v", setting, path, err), "set "+setting+" to the path of "+what)
	}
	return b, info, nil
}

// pemKind describes what a PEM block holds, for messages about the wrong
// file.
func pemKind(b []byte) (string, *pem.Block) {
	block, _ := pem.Decode(b)
	if block == nil {
		return "no PEM block (it should start with -----BEGIN …-----)", nil
	}
	switch block.Type {
	case "CERTIFICATE":
		return "a certificate", block
	case "PUBLIC KEY", "RSA PUBLIC KEY":
		return "a public key", block
	case "PRIVATE KEY", "RSA PRIVATE KEY":
		return "a private key", block
	case "EC PRIVATE KEY":
		return "an EC private key (WeChat Pay keys are RSA)", block
	}
	return "a PEM block of type " + block.Type, block
}

// CheckPrivateKeyFile checks the merchant API private key file named by
// setting: readable, an RSA private key of 2048 bits or more in PKCS#1 or
// PKCS#8 PEM, and not readable by other local users (a warning). It
// returns the key when it is usable.
func CheckPrivateKeyFile(setting, path string) (Result, *rsa.PrivateKey) {
	const name, what = "private_key_file", "apiclient_key.pem, the merchant API private key"
	b, info, failed := readKeyFile(name, setting, path, what)
	if failed != nil {
		return *failed, nil
	}
	r := Result{Name: name}
	kind, block := pemKind(b)
	if block == nil || (block.Type != "PRIVATE KEY" && block.Type != "RSA PRIVATE KEY") {
		r.Status = Fail
		r.Message = fmt.Sprintf("%s %s holds %s, not the merchant API private key", setting, path, kind)
		r.Fix = "set " + setting + " to " + what + " (it starts with -----BEGIN PRIVATE KEY-----; apiclient_cert.pem next to it is the certificate)"
		return r, nil
	}
	key, err := wxpay.LoadPrivateKey(b)
	if err != nil {
		r.Status = Fail
		r.Message = fmt.Sprintf("%s %s: %v", setting, path, err)
		r.Fix = "set " + setting + " to " + what + ": an RSA key, as the merchant API certificate tool (证书工具) makes it"
		return r, nil
	}
	if bits := key.N.BitLen(); bits < 2048 {
		r.Status = Fail
		r.Message = fmt.Sprintf("%s %s is an RSA key of %d bits; WeChat Pay keys have 2048", setting, path, bits)
		r.Fix = "set " + setting + " to " + what
		return r, nil
	}
	if perm := info.Mode().Perm(); perm&0o004 != 0 {
		r.Status = Warn
		r.Message = fmt.Sprintf("%s %s is an RSA private key, but every local user can read it (mode %04o)", setting, path, perm)
		r.Fix = "chmod 600 " + path + " (in Kubernetes, defaultMode: 0400 on the secret volume): whoever reads it can call the WeChat Pay API as this merchant"
		return r, key
	}
	r.Status = OK
	r.Message = fmt.Sprintf("%s %s is an RSA private key (%d bits)", setting, path, key.N.BitLen())
	return r, key
}

// CheckPublicKeyFile checks the WeChat Pay public key file named by
// setting: readable, and an RSA public key of 2048 bits or more (SPKI or
// PKCS#1 PEM). It returns the key when it is usable.
func CheckPublicKeyFile(setting, path string) (Result, *rsa.PublicKey) {
	const name, what = "public_key_file", "pub_key.pem, the WeChat Pay public key (商户平台 → 账户中心 → API安全 → 微信支付公钥)"
	b, _, failed := readKeyFile(name, setting, path, what)
	if failed != nil {
		return *failed, nil
	}
	r := Result{Name: name}
	kind, block := pemKind(b)
	if block == nil || (block.Type != "PUBLIC KEY" && block.Type != "RSA PUBLIC KEY") {
		r.Status = Fail
		r.Message = fmt.Sprintf("%s %s holds %s, not the WeChat Pay public key", setting, path, kind)
		r.Fix = "set " + setting + " to " + what + " (it starts with -----BEGIN PUBLIC KEY-----)"
		if strings.Contains(kind, "private key") {
			r.Fix += "; a private key does not belong in this setting: keep it out of the ingress's public key file"
		}
		return r, nil
	}
	key, err := wxpay.LoadPublicKey(b)
	if err != nil {
		r.Status = Fail
		r.Message = fmt.Sprintf("%s %s: %v", setting, path, err)
		r.Fix = "set " + setting + " to " + what
		return r, nil
	}
	if bits := key.N.BitLen(); bits < 2048 {
		r.Status = Fail
		r.Message = fmt.Sprintf("%s %s is an RSA key of %d bits; the WeChat Pay public key has 2048", setting, path, bits)
		r.Fix = "set " + setting + " to " + what
		return r, nil
	}
	r.Status = OK
	r.Message = fmt.Sprintf("%s %s is an RSA public key (%d bits)", setting, path, key.N.BitLen())
	return r, key
}

// CheckAPIv3Key checks that the APIv3 key is exactly 32 bytes.
func CheckAPIv3Key(setting, key string) Result {
	r := Result{Name: "apiv3_key", Status: OK, Message: setting + " is 32 bytes long, as an APIv3 key must be"}
	if len(key) != 32 {
		r.Status = Fail
		r.Message = fmt.Sprintf("%s is %d bytes long; an APIv3 key is exactly 32", setting, len(key))
		r.Fix = apiv3Fix
	}
	return r
}

// CheckAPIv2Key checks that the API v2 key, when set, is exactly 32 bytes.
func CheckAPIv2Key(setting, key string) Result {
	r := Result{Name: "apiv2_key", Status: OK, Message: setting + " is 32 bytes long, as an API v2 key must be"}
	switch {
	case key == "":
		r.Status = Skip
		r.Message = setting + " is not set: v2 XML notifications would be refused (only needed for merchants that still receive them)"
	case len(key) != 32:
		r.Status = Fail
		r.Message = fmt.Sprintf("%s is %d bytes long; an API v2 key is exactly 32", setting, len(key))
		r.Fix = apiv2Fix
	}
	return r
}

var publicKeyIDPattern = regexp.MustCompile(`^PUB_KEY_ID_[0-9]+$`)

// CheckPublicKeyID checks that the public key id, when set, is PUB_KEY_ID_
// followed by digits.
func CheckPublicKeyID(setting, id string) Result {
	r := Result{Name: "public_key_id", Status: OK, Message: setting + " " + id + " has the form of a WeChat Pay public key id"}
	switch {
	case id == "":
		r.Status = Skip
		r.Message = setting + " is not set: this merchant verifies WeChat Pay with platform certificates only"
	case !publicKeyIDPattern.MatchString(id):
		r.Status = Fail
		r.Message = fmt.Sprintf("%s=%q is not PUB_KEY_ID_ followed by digits", setting, id)
		r.Fix = publicKeyIDFix
	}
	return r
}
