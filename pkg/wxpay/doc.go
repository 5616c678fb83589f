// Package wxpay is a WeChat Pay API v3 SDK: request signing, verification
// of every answer and every notification, platform certificates and the
// WeChat Pay public key, notification decryption, sensitive-field
// encryption, client pay signing, and the legacy API v2 XML notifications.
// It uses only the standard library and never logs.
//
// # Verification
//
// Client.ParseNotification takes the raw body bytes, exactly as received,
// and the headers (an http.Header in any casing). It checks, in order, that
// the four Wechatpay-* headers are present, that Wechatpay-Timestamp is
// within 5 minutes of the clock either way (Config.TimestampWindow), that
// Wechatpay-Serial names a known key, and that the SHA256withRSA signature
// over "timestamp\nnonce\nbody\n" verifies. Only then is the body parsed
// and the resource decrypted. NotifyHandler wraps all of it, and the answer,
// into one net/http handler; NotificationStatus maps errors to the status
// to answer WeChat with. Notification.Transaction and Notification.Refund
// decode the resource into Transaction and RefundNotice.
//
// Client.Do signs requests (the WECHATPAY2-SHA256-RSA2048 Authorization
// header over method, path with query, timestamp, nonce and body) and
// verifies every answer. A 2xx answer that does not verify is an error,
// never data; error answers are verified too when signed (APIError.Verified).
//
// # Decryption
//
// Resources are AEAD_AES_256_GCM under the APIv3 key, which must be exactly
// 32 bytes. During a key rotation Config.PreviousAPIv3Keys are tried after
// the current key. A verified notification that does not decrypt is
// ErrDecrypt: a configuration fault (the APIv3 key was reset), never the
// sender's. DecryptAESGCM is the low-level function.
//
// # Keys and rotation
//
// The merchant key is a crypto.Signer (an *rsa.PrivateKey from
// LoadPrivateKey, PKCS#8 or PKCS#1, or a key in an HSM or KMS). WeChat's
// keys are platform certificates (by serial) and the WeChat Pay public key
// (by its PUB_KEY_ID_…); both may be configured during the migration, and
// Wechatpay-Serial picks. With Config.DownloadCertificates the client
// downloads /v3/certificates (RefreshCertificates, RunCertificateRefresh
// every 12 hours), verifies the download with the certificates it carries,
// keeps them in Config.CertificateCacheDir when set, refreshes once
// (single-flight, at most once a minute) when an unknown serial arrives,
// and drops expired certificates. Encryption of sensitive fields uses the
// public key, or else the valid certificate with the latest NotBefore.
//
// # Errors
//
// Every error wraps one sentinel: ErrMalformed, ErrMissingHeader,
// ErrTimestampSkew, ErrBadSignature (ErrSignatureProbe also matches for
// WeChat's WECHATPAY/SIGNTEST/ probes), ErrUnknownSerial,
// ErrCertificateRefresh, ErrNoPlatformCertificate, ErrDecrypt,
// ErrInvalidConfig or ErrTransport; API answers are *APIError, which
// matches code sentinels such as ErrOrderNotExist in old and new spellings.
// IsRetryable decides retries in one place. Messages never carry key
// material or body bytes.
//
// # Legacy v2 notifications
//
// Refunds made by hand in the merchant console may still arrive as v2 XML.
// ParseV2Notification verifies MD5 and HMAC-SHA256 signs in constant time,
// decrypts refund req_info, and V2Answer writes the XML answers.
// V2Notification.Authenticated returns only the fields the sign (or, for a
// refund, req_info) covers: the outer fields of a refund are not
// authenticated. V2Notification.Transaction and V2Notification.Refund map a
// v2 notification onto the v3 resource of the same event, from those fields
// and the merchant whose key verified it, so v3 handlers serve both.
//
// # Testing with wxpaytest
//
// Package wxpaytest is an in-process fake of the platform: it issues keys,
// verifies merchant signatures, signs answers and builds and delivers
// notifications, so everything above can be tested without WeChat. It
// encrypts with the standard library, not with this package, so its
// notifications check the decryption here rather than mirror it.
package wxpay
