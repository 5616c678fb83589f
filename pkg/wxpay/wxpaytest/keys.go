package wxpaytest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"sync"
	"time"
)

// keyPool hands out RSA-2048 keys. Generating one takes tens of
// milliseconds (much more under -race), so keys are made once per process
// and reused by index: servers in one test binary share them, which is
// harmless because every server issues its own certificates.
var keyPool struct {
	mu   sync.Mutex
	keys []*rsa.PrivateKey
}

func pooledKey(i int) *rsa.PrivateKey {
	keyPool.mu.Lock()
	defer keyPool.mu.Unlock()
	for len(keyPool.keys) <= i {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(fmt.Sprintf("wxpaytest: generating an RSA key: %v", err))
		}
		keyPool.keys = append(keyPool.keys, k)
	}
	return keyPool.keys[i]
}

// serialCounter makes certificate serials unique within the process.
var serialCounter struct {
	mu sync.Mutex
	n  int64
}

func nextSerial() *big.Int {
	serialCounter.mu.Lock()
	defer serialCounter.mu.Unlock()
	serialCounter.n++
	// A 20-byte serial like WeChat's (40 hex digits), unique per process.
	s := new(big.Int).Lsh(big.NewInt(0x5157F09E), 128)
	s.Add(s, big.NewInt(time.Now().UnixNano()))
	s.Add(s, new(big.Int).Lsh(big.NewInt(serialCounter.n), 64))
	return s
}

// ca is the fake Tenpay CA that issues platform and merchant certificates.
type ca struct {
	key  *rsa.PrivateKey
	cert *x509.Certificate
}

func newCA(now time.Time) *ca {
	key := pooledKey(0)
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: "wxpaytest Tenpay.com Root CA", Organization: []string{"wxpaytest"}},
		NotBefore:             now.Add(-24 * time.Hour),
		NotAfter:              now.Add(20 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(fmt.Sprintf("wxpaytest: CA certificate: %v", err))
	}
	cert, _ := x509.ParseCertificate(der)
	return &ca{key: key, cert: cert}
}

func (c *ca) issue(key *rsa.PrivateKey, cn string, notBefore, notAfter time.Time) (*x509.Certificate, []byte) {
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"wxpaytest"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		panic(fmt.Sprintf("wxpaytest: issuing %s: %v", cn, err))
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// PrivateKeyPEM encodes a key as PKCS#8 PEM ("PRIVATE KEY"), the form of
// apiclient_key.pem.
func PrivateKeyPEM(k *rsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// PublicKeyPEM encodes a public key as SPKI PEM ("PUBLIC KEY"), the form the
// merchant console hands out for the WeChat Pay public key.
func PublicKeyPEM(k *rsa.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
