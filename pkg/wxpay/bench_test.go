package wxpay

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// benchFixture is a realistic TRANSACTION.SUCCESS notification (about 700
// bytes of body) signed with a platform certificate.
type benchFixture struct {
	client    *Client
	header    http.Header
	body      []byte
	plaintext []byte
	// pre-decoded inputs for the floor
	pub    *rsa.PublicKey
	sig    []byte
	aead   cipher.AEAD
	nonce  []byte
	sealed []byte
	aad    []byte
	ts     string
	hnonce string
}

var (
	benchOnce sync.Once
	bench     *benchFixture
)

const benchAPIv3Key = "0123456789abcdef0123456789abcdef"

func benchSetup(b testing.TB) *benchFixture {
	benchOnce.Do(func() {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x5157F09EFDC096DE), Subject: pkix.Name{CommonName: "bench"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour * 24)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			b.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		c, err := NewClient(Config{MchID: "1230000109", APIv3Key: benchAPIv3Key, PlatformCertificates: []*x509.Certificate{cert}})
		if err != nil {
			b.Fatal(err)
		}
		plain := []byte(`{"mchid":"1230000109","appid":"wxd678efh567hg6787","out_trade_no":"1217752501201407033233368018","transaction_id":"4200000215201811190261405420","trade_type":"JSAPI","trade_state":"SUCCESS","trade_state_desc":"支付成功","bank_type":"CMC","attach":"","success_time":"2018-06-08T10:34:56+08:00","payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"}}`)
		const rnonce = "Kj7QIyUiYx1q"
		ct, err := encryptAESGCM([]byte(benchAPIv3Key), rnonce, "transaction", plain)
		if err != nil {
			b.Fatal(err)
		}
		body := []byte(`{"id":"3119dfba-e649-5eec-ab1e-3412bc4d2e17","create_time":"2018-06-08T10:34:56+08:00","resource_type":"encrypt-resource","event_type":"TRANSACTION.SUCCESS","summary":"支付成功","resource":{"original_type":"transaction","algorithm":"AEAD_AES_256_GCM","ciphertext":"` + ct + `","associated_data":"transaction","nonce":"` + rnonce + `"}}`)
		ts := strconv.FormatInt(now.Unix(), 10)
		const hnonce = "EcZ9Cmy4Xyx1i6RlJQzLcCyEqDa26NBz"
		sig, err := SignMessage(key, []byte(ts+"\n"+hnonce+"\n"+string(body)+"\n"))
		if err != nil {
			b.Fatal(err)
		}
		h := http.Header{}
		h.Set(HeaderTimestamp, ts)
		h.Set(HeaderNonce, hnonce)
		h.Set(HeaderSignature, sig)
		h.Set(HeaderSerial, CertificateSerial(cert))
		h.Set(HeaderSignatureType, SignatureTypeRSA)
		h.Set("Content-Type", "application/json")
		rawSig, _ := base64.StdEncoding.DecodeString(sig)
		sealed, _ := base64.StdEncoding.DecodeString(ct)
		block, _ := aes.NewCipher([]byte(benchAPIv3Key))
		aead, _ := cipher.NewGCM(block)
		bench = &benchFixture{client: c, header: h, body: body, plaintext: plain, pub: &key.PublicKey, sig: rawSig,
			aead: aead, nonce: []byte(rnonce), sealed: sealed, aad: []byte("transaction"), ts: ts, hnonce: hnonce}
	})
	return bench
}

// BenchmarkParseNotification is the whole of ParseNotification on a
// realistic TRANSACTION.SUCCESS notification.
func BenchmarkParseNotification(b *testing.B) {
	f := benchSetup(b)
	b.SetBytes(int64(len(f.body)))
	b.ReportAllocs()
	ctx := context.Background()
	for b.Loop() {
		n, err := f.client.ParseNotification(ctx, f.header, f.body)
		if err != nil || len(n.Plaintext) == 0 {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseNotificationTransaction is ParseNotification and then
// Notification.Transaction: the notification as a handler uses it, with the
// resource decoded into a typed Transaction.
func BenchmarkParseNotificationTransaction(b *testing.B) {
	f := benchSetup(b)
	b.SetBytes(int64(len(f.body)))
	b.ReportAllocs()
	ctx := context.Background()
	for b.Loop() {
		n, err := f.client.ParseNotification(ctx, f.header, f.body)
		if err != nil {
			b.Fatal(err)
		}
		t, err := n.Transaction()
		if err != nil || t.TransactionID == "" {
			b.Fatal(err)
		}
	}
}

// BenchmarkFloor does only the unavoidable work with the standard library:
// one RSA-2048 PKCS#1 v1.5 SHA-256 verify over the signed message, one
// AES-256-GCM open and one json.Unmarshal of the plaintext into a map, on
// inputs decoded in advance.
func BenchmarkFloor(b *testing.B) {
	f := benchSetup(b)
	b.SetBytes(int64(len(f.body)))
	b.ReportAllocs()
	for b.Loop() {
		msg := make([]byte, 0, len(f.ts)+len(f.hnonce)+len(f.body)+3)
		msg = append(msg, f.ts...)
		msg = append(msg, '\n')
		msg = append(msg, f.hnonce...)
		msg = append(msg, '\n')
		msg = append(msg, f.body...)
		msg = append(msg, '\n')
		d := sha256.Sum256(msg)
		if err := rsa.VerifyPKCS1v15(f.pub, crypto.SHA256, d[:], f.sig); err != nil {
			b.Fatal(err)
		}
		plain, err := f.aead.Open(nil, f.nonce, f.sealed, f.aad)
		if err != nil {
			b.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(plain, &m); err != nil {
			b.Fatal(err)
		}
	}
}
