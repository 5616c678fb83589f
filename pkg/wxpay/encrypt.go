package wxpay

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
)

// maxOAEPPlaintext is the most RSA-2048 OAEP with SHA-1 can carry.
const maxOAEPPlaintext = 214

// EncryptSensitive encrypts a sensitive request field (a name, an id
// number, a phone number) with RSA-OAEP (SHA-1, MGF1-SHA-1) under the WeChat
// Pay public key when one is configured, else under the valid platform
// certificate with the latest NotBefore. It returns the base64 ciphertext
// and the key id; send the request with Request.WechatpaySerial set to that
// id (one request must not mix keys).
func (c *Client) EncryptSensitive(plaintext string) (ciphertext, keyID string, err error) {
	var key *rsa.PublicKey
	switch {
	case c.cfg.PublicKey != nil:
		key, keyID = c.cfg.PublicKey, c.cfg.PublicKeyID
	default:
		k := c.newestCertificate()
		if k == nil {
			return "", "", errorf(ErrInvalidConfig, "no WeChat Pay public key or valid platform certificate to encrypt with (refresh the certificates first)")
		}
		key, keyID = k.key, k.id
	}
	if len(plaintext) > maxOAEPPlaintext {
		return "", "", errorf(ErrMalformed, "sensitive field of %d bytes is over the %d-byte limit of RSA-OAEP", len(plaintext), maxOAEPPlaintext)
	}
	out, err := rsa.EncryptOAEP(sha1.New(), c.rand, key, []byte(plaintext), nil)
	if err != nil {
		return "", "", fmt.Errorf("wxpay: encrypting a sensitive field: %w", err)
	}
	return base64.StdEncoding.EncodeToString(out), keyID, nil
}

// DecryptSensitive decrypts a field WeChat Pay encrypted for the merchant
// (RSA-OAEP SHA-1 under the merchant API certificate). The configured Signer
// must also implement crypto.Decrypter (an *rsa.PrivateKey does).
func (c *Client) DecryptSensitive(ciphertext string) (string, error) {
	dec, ok := c.cfg.Signer.(crypto.Decrypter)
	if !ok {
		return "", errorf(ErrInvalidConfig, "the merchant key does not implement crypto.Decrypter")
	}
	raw, err := base64.StdEncoding.DecodeString(ciphertext)
	if err != nil {
		return "", errorf(ErrMalformed, "sensitive field is not valid base64")
	}
	plain, err := dec.Decrypt(c.rand, raw, &rsa.OAEPOptions{Hash: crypto.SHA1})
	if err != nil {
		return "", errorf(ErrDecrypt, "RSA-OAEP decryption with the merchant private key failed (was it encrypted for this merchant certificate?)")
	}
	return string(plain), nil
}

// errorf wraps a sentinel with a formatted explanation.
func errorf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}
