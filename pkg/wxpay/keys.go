package wxpay

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
)

// LoadPrivateKey parses a merchant API private key in PEM form, PKCS#8
// ("PRIVATE KEY", as apiclient_key.pem ships) or PKCS#1 ("RSA PRIVATE KEY").
// The key must be RSA.
func LoadPrivateKey(pemBytes []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, fmt.Errorf("%w: private key: no PEM block found", ErrInvalidConfig)
	}
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: private key: PKCS#8: %v", ErrInvalidConfig, err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%w: private key: %T is not an RSA key", ErrInvalidConfig, k)
		}
		return rk, nil
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: private key: PKCS#1: %v", ErrInvalidConfig, err)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("%w: private key: PEM type %q, want PRIVATE KEY or RSA PRIVATE KEY", ErrInvalidConfig, block.Type)
	}
}

// LoadPublicKey parses the WeChat Pay public key ("PUBLIC KEY", SPKI, as the
// merchant console hands it out; "RSA PUBLIC KEY" PKCS#1 is accepted too).
func LoadPublicKey(pemBytes []byte) (*rsa.PublicKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, fmt.Errorf("%w: public key: no PEM block found", ErrInvalidConfig)
	}
	switch block.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: public key: %v", ErrInvalidConfig, err)
		}
		rk, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%w: public key: %T is not an RSA key", ErrInvalidConfig, k)
		}
		return rk, nil
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: public key: %v", ErrInvalidConfig, err)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("%w: public key: PEM type %q, want PUBLIC KEY", ErrInvalidConfig, block.Type)
	}
}

// LoadCertificate parses a PEM certificate (a platform certificate or the
// merchant API certificate). The key inside must be RSA.
func LoadCertificate(pemBytes []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%w: certificate: no CERTIFICATE PEM block found", ErrInvalidConfig)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate: %v", ErrInvalidConfig, err)
	}
	if _, ok := cert.PublicKey.(*rsa.PublicKey); !ok {
		return nil, fmt.Errorf("%w: certificate %s: key %T is not RSA", ErrInvalidConfig, CertificateSerial(cert), cert.PublicKey)
	}
	return cert, nil
}

// CertificateSerial returns the serial number as WeChat Pay writes it:
// upper-case hex of the serial's bytes.
func CertificateSerial(cert *x509.Certificate) string {
	return fmt.Sprintf("%X", cert.SerialNumber.Bytes())
}

// IsPublicKeyID reports whether s is a WeChat Pay public key id
// (PUB_KEY_ID_…) rather than a platform certificate serial.
func IsPublicKeyID(s string) bool { return strings.HasPrefix(s, "PUB_KEY_ID_") }

// normalizeSerial makes certificate serials comparable: upper case, no
// leading zeros. Public key ids are kept as they are.
func normalizeSerial(s string) string {
	if IsPublicKeyID(s) {
		return s
	}
	s = strings.ToUpper(s)
	t := strings.TrimLeft(s, "0")
	if t == "" && s != "" {
		return "0"
	}
	return t
}
