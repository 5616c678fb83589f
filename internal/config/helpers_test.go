package config

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Test keys. They are made up for the tests and are not real secrets.
const (
	testAPIv3Key      = "0123456789abcdefghijklmnopqrstuv" // 32 bytes
	testAPIv3KeyOld   = "vutsrqponmlkjihgfedcba9876543210" // 32 bytes
	testAPIv3KeyOlder = "OLDERolderOLDERolderOLDERolder12" // 32 bytes
	testAPIv2Key      = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345" // 32 bytes
	testMchID         = "1230000109"
	testSerial        = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
	testPublicKeyID   = "PUB_KEY_ID_0112300001092025010100000000000000"
	testForwardToken  = "forward-secret-forward-secret"
)

var (
	keyOnce sync.Once
	testKey *rsa.PrivateKey
)

// rsaKey returns one 2048-bit key per test binary (generation is slow).
func rsaKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	keyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		testKey = k
	})
	return testKey
}

// keyFiles writes the private key (PKCS#8) and the public key (SPKI) as PEM
// files in a fresh directory.
type keyFiles struct {
	dir        string
	privateKey string
	publicKey  string
}

func writeKeys(t *testing.T) keyFiles {
	t.Helper()
	k := rsaKey(t)
	dir := t.TempDir()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	kf := keyFiles{
		dir:        dir,
		privateKey: writeFile(t, dir, "apiclient_key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))),
		publicKey:  writeFile(t, dir, "pub_key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))),
	}
	return kf
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// env is a fake environment.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// newFlagSet returns a FlagSet whose output is discarded.
func newFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// helpText returns what --help prints.
func helpText(t *testing.T, fs *flag.FlagSet) string {
	t.Helper()
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	return buf.String()
}

// wantErrContains fails unless err is non-nil and contains every want.
func wantErrContains(t *testing.T, err error, wants ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want one containing %q", wants)
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("got error %q, want it to contain %q", err, w)
		}
	}
}

// noSecrets fails if s contains one of the test secrets.
func noSecrets(t *testing.T, what, s string) {
	t.Helper()
	for _, secret := range []string{testAPIv3Key, testAPIv3KeyOld, testAPIv2Key, testForwardToken, "s3cr3tpass", "natstoken"} {
		if strings.Contains(s, secret) {
			t.Errorf("%s contains secret %q: %s", what, secret, s)
		}
	}
}
