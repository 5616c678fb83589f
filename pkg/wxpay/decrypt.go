package wxpay

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"fmt"
)

// AlgorithmAEADAES256GCM is the only resource algorithm this package decrypts.
const AlgorithmAEADAES256GCM = "AEAD_AES_256_GCM"

// DecryptAESGCM is the low-level AEAD_AES_256_GCM decryption WeChat Pay uses
// for notification resources and downloaded certificates: key is the APIv3
// key as raw bytes, nonce and associatedData are used as their raw bytes, and
// ciphertext is standard base64 of the encrypted data followed by the 16-byte
// tag. It accepts any AES key length (the official SDK's test vectors use
// 16-byte keys); Config insists on 32 bytes.
func DecryptAESGCM(key []byte, nonce, associatedData, ciphertext string) ([]byte, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	return openGCM([]cipher.AEAD{aead}, nonce, associatedData, ciphertext)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: AES key of %d bytes is not usable (the APIv3 key must be 32 bytes)", ErrInvalidConfig, len(key))
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	return aead, nil
}

// openGCM decrypts with each key in turn (the current APIv3 key first, then
// the previous ones during a rotation).
func openGCM(aeads []cipher.AEAD, nonce, associatedData, ciphertext string) ([]byte, error) {
	if len(aeads) == 0 {
		return nil, fmt.Errorf("%w: no APIv3 key configured", ErrInvalidConfig)
	}
	if len(nonce) != aeads[0].NonceSize() {
		return nil, fmt.Errorf("%w: resource nonce must be %d bytes, got %d", ErrMalformed, aeads[0].NonceSize(), len(nonce))
	}
	buf := make([]byte, base64.StdEncoding.DecodedLen(len(ciphertext)))
	n, err := base64.StdEncoding.Decode(buf, []byte(ciphertext))
	if err != nil {
		return nil, fmt.Errorf("%w: resource ciphertext is not valid base64", ErrMalformed)
	}
	sealed := buf[:n]
	if len(sealed) < aeads[0].Overhead() {
		return nil, fmt.Errorf("%w: resource ciphertext shorter than the GCM tag", ErrMalformed)
	}
	for i, aead := range aeads {
		// A failed Open may clobber dst, so only the last key decrypts in
		// place; the ones before it open into a fresh buffer.
		var dst []byte
		if i == len(aeads)-1 {
			dst = sealed[:0]
		}
		plain, err := aead.Open(dst, []byte(nonce), sealed, []byte(associatedData))
		if err == nil {
			return plain, nil
		}
	}
	return nil, fmt.Errorf("%w: AEAD_AES_256_GCM authentication failed with every configured key", ErrDecrypt)
}
