package wxpay

import (
	"crypto/aes"
	"encoding/base64"
	"fmt"
)

// The package only decrypts; these are the inverses its tests build
// ciphertexts with. Package wxpaytest has its own, written against the
// standard library, so that it checks the decryption rather than reusing it.

// encryptAESGCM is the inverse of DecryptAESGCM: it returns standard base64
// of ciphertext and tag; nonce must be 12 bytes.
func encryptAESGCM(key []byte, nonce, associatedData string, plaintext []byte) (string, error) {
	aead, err := newGCM(key)
	if err != nil {
		return "", err
	}
	if len(nonce) != aead.NonceSize() {
		return "", fmt.Errorf("%w: nonce must be %d bytes, got %d", ErrMalformed, aead.NonceSize(), len(nonce))
	}
	sealed := aead.Seal(nil, []byte(nonce), plaintext, []byte(associatedData))
	return base64.StdEncoding.EncodeToString(sealed), nil
}

// encryptV2ReqInfo is the inverse of DecryptV2ReqInfo: it pads plaintext
// with PKCS#7, encrypts it with AES-256-ECB under lower-case
// hex(MD5(apiV2Key)) and returns standard base64.
func encryptV2ReqInfo(plaintext []byte, apiV2Key string) (string, error) {
	if apiV2Key == "" {
		return "", fmt.Errorf("%w: API v2 key not configured", ErrInvalidConfig)
	}
	ciphertext, err := aesECBEncrypt(v2AESKey(apiV2Key), plaintext)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(ciphertext), nil
}

// aesECBEncrypt pads plaintext with PKCS#7 and encrypts it block by block
// (ECB: the standard library has no ECB mode).
func aesECBEncrypt(key, plaintext []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: AES key of %d bytes is not usable", ErrInvalidConfig, len(key))
	}
	pad := aes.BlockSize - len(plaintext)%aes.BlockSize
	buf := make([]byte, len(plaintext)+pad)
	copy(buf, plaintext)
	for i := len(plaintext); i < len(buf); i++ {
		buf[i] = byte(pad)
	}
	for i := 0; i < len(buf); i += aes.BlockSize {
		block.Encrypt(buf[i:i+aes.BlockSize], buf[i:i+aes.BlockSize])
	}
	return buf, nil
}
