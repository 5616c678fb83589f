package wxpay_test

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"strings"
)

func verifyWith(pub *rsa.PublicKey, msg, sigB64 string) error {
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil {
		return err
	}
	d := sha256.Sum256([]byte(msg))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], sig)
}

func httptestBody(s string) io.ReadCloser { return io.NopCloser(strings.NewReader(s)) }
