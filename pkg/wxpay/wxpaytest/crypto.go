package wxpaytest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
)

// The platform's ciphertexts are built here with the standard library
// alone, so that tests check package wxpay's decryption instead of running
// its code both ways.

// EncryptResource encrypts plaintext as the platform encrypts a
// notification resource or a downloaded certificate: AEAD_AES_256_GCM under
// apiV3Key (32 bytes) with a 12-byte nonce, associatedData as the
// additional data, returned as standard base64 of ciphertext and tag.
func EncryptResource(apiV3Key, nonce, associatedData string, plaintext []byte) (string, error) {
	block, err := aes.NewCipher([]byte(apiV3Key))
	if err != nil {
		return "", fmt.Errorf("wxpaytest: APIv3 key of %d bytes: %w", len(apiV3Key), err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return "", err
	}
	if len(nonce) != aead.NonceSize() {
		return "", fmt.Errorf("wxpaytest: nonce must be %d bytes, got %d", aead.NonceSize(), len(nonce))
	}
	sealed := aead.Seal(nil, []byte(nonce), plaintext, []byte(associatedData))
	return base64.StdEncoding.EncodeToString(sealed), nil
}

// encryptReqInfo encrypts the req_info of a v2 refund notification:
// PKCS#7 padding, AES-256-ECB under the lower-case hex of MD5(apiV2Key)
// used as 32 ASCII bytes, standard base64.
func encryptReqInfo(plaintext []byte, apiV2Key string) (string, error) {
	if apiV2Key == "" {
		return "", errors.New("API v2 key is empty")
	}
	sum := md5.Sum([]byte(apiV2Key))
	block, err := aes.NewCipher([]byte(hex.EncodeToString(sum[:])))
	if err != nil {
		return "", err
	}
	n := aes.BlockSize
	pad := n - len(plaintext)%n
	buf := make([]byte, len(plaintext)+pad)
	copy(buf, plaintext)
	for i := len(plaintext); i < len(buf); i++ {
		buf[i] = byte(pad)
	}
	// ECB: each block on its own (the standard library has no ECB mode).
	for i := 0; i < len(buf); i += n {
		block.Encrypt(buf[i:i+n], buf[i:i+n])
	}
	return base64.StdEncoding.EncodeToString(buf), nil
}
