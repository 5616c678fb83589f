package wxpay

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"testing"
	"time"
)

// Known-answer tests from WeChat Pay's published examples.

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestKATDecryptGoSDK(t *testing.T) {
	// A 16-byte key, so AES-128-GCM; only the low-level function takes it.
	got, err := DecryptAESGCM([]byte("testAPIv3Key0000"), "wCq51qZv4Yfg", "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8", "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "Hello World" {
		t.Fatalf("got %q, want %q", got, "Hello World")
	}
	bad := []struct {
		name, key, ct string
		want          error
	}{
		{"bad base64", "testAPIv3Key0000", "invalid cipher", ErrMalformed},
		{"shorter than the tag", "testAPIv3Key0000", "SGVsbG8gV29ybGQK", ErrMalformed},
		{"bad key length", "not a aes key", "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC", ErrInvalidConfig},
		{"wrong key", "testAPIv3Key1111", "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC", ErrDecrypt},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecryptAESGCM([]byte(tc.key), "wCq51qZv4Yfg", "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8", tc.ct)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestKATDecrypt32ByteKey(t *testing.T) {
	// The published AES-GCM example.
	const ct = "4ouITzeV7GmUYUbi3WteHWDS5e076h4ZReuqRrqM+N1PXV1boadmhiW9LEPnqwqz0Rny3IArAgYHsIYpYFsuqB3bgaZ9ZQgW2SItEebQp0c2/w=="
	got, err := DecryptAESGCM([]byte("0123456789abcdef0123456789abcdef"), "0123456789ab", "transaction", ct)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"out_trade_no":"T1","trade_state":"SUCCESS","amount":{"total":1}}`
	if string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	enc, err := encryptAESGCM([]byte("0123456789abcdef0123456789abcdef"), "0123456789ab", "transaction", []byte(want))
	if err != nil || enc != ct {
		t.Fatalf("encryptAESGCM: got %q, %v; want %q", enc, err, ct)
	}
}

const (
	kat122Body = `{"id":"3119dfba-e649-5eec-ab1e-3412bc4d2e17","create_time":"2021-06-24T16:37:26+08:00","resource_type":"encrypt-resource","event_type":"PAYSCORE.USER_OPEN_SERVICE","summary":"签约成功","resource":{"original_type":"payscore","algorithm":"AEAD_AES_256_GCM","ciphertext":"YDS3lKPaC4Y52Gf3uhft5qUBlIa8b428AWTtTauHQfQrRw+X1WpiuHIDy0vo1Vd6VEq67aVyqPdDYMkRVSDaZL3iZttevRMOoPKMifozg6XPWjIZumks/GpT48lI4NizyeaqLBokNebthah3o1H76qSlO9NkDjp9bzmKLEYYH9TEklFUpsvPqOTOcgSLgh21YJXYR7dEBXFgRLiNIKRgO5JdXh1hccRUAlyVWxE54PXpnQ==","associated_data":"payscore","nonce":"Kj7QIyUiYx1q"}}`
	kat122Sig  = "tJHIiIS9eB2hAYstmAmbbD3ZE5LiIm/Ug5tuL4fC0YOFRWIHV39UFIZXC0e9Wl6lBu6sKvkqDkzpqzBsVHyXFlbYZTOQrVdG4b6LfTnK4mikv9++ixJMd3vTf2yCqvBkh98zs3Ds5zsYQakzbcwhmw4fMJs4nPLws28H0UW9FjDR//rxELLwXvV1VEA1IBLX70xptjL8hrfUjEE8kkry6yNJTHZRU8CAc7qHli2Ng1V1qb9ARbK8A3ThmFmPQvRGrapI/jS2laKKgYUmfdEdkNO6B2Cke5e8VTxY406ArAmQ90GAihDwIcb16TQMnzCMBoutnwZKNiKRACrFmtxw2Q=="
)

func kat122Header() http.Header {
	h := http.Header{}
	h.Set(HeaderNonce, "EcZ9Cmy4Xyx1i6RlJQzLcCyEqDa26NBz")
	h.Set(HeaderTimestamp, "1624523846")
	h.Set(HeaderSerial, "D7CE59D1F522D701")
	h.Set(HeaderSignature, kat122Sig)
	return h
}

func TestKATGoSDKCallback(t *testing.T) {
	// Verify with the published certificate at the published time,
	// then decrypt the resource with the published 16-byte key.
	cert, err := LoadCertificate(mustRead(t, "testdata/kat_gosdk_platform_cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if got := CertificateSerial(cert); got != "D7CE59D1F522D701" {
		t.Fatalf("serial: got %s, want D7CE59D1F522D701", got)
	}
	c, err := NewClient(Config{
		MchID: "1234567890", APIv3Key: "0123456789abcdef0123456789abcdef",
		PlatformCertificates: []*x509.Certificate{cert},
		Now:                  func() time.Time { return time.Unix(1624523846, 0) },
	})
	if err != nil {
		t.Fatal(err)
	}
	keyID, err := c.Verify(context.Background(), kat122Header(), []byte(kat122Body))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if keyID != "D7CE59D1F522D701" {
		t.Fatalf("key id: got %s", keyID)
	}
	plain, err := DecryptAESGCM([]byte("testMchAPIv3Key0"), "Kj7QIyUiYx1q", "payscore", "YDS3lKPaC4Y52Gf3uhft5qUBlIa8b428AWTtTauHQfQrRw+X1WpiuHIDy0vo1Vd6VEq67aVyqPdDYMkRVSDaZL3iZttevRMOoPKMifozg6XPWjIZumks/GpT48lI4NizyeaqLBokNebthah3o1H76qSlO9NkDjp9bzmKLEYYH9TEklFUpsvPqOTOcgSLgh21YJXYR7dEBXFgRLiNIKRgO5JdXh1hccRUAlyVWxE54PXpnQ==")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"mchid":"1234567890","appid":"054aa7d7a2a54ab5898df65bd96f001c","create_time":"2020-06-30T12:12:00+08:00","out_contract_code":"21640bdbd08e473e828f3206a2741c6e"}`
	if string(plain) != want {
		t.Fatalf("got %s, want %s", plain, want)
	}

	// The same message with one byte changed, or at another time, fails.
	if _, err := c.Verify(context.Background(), kat122Header(), []byte(kat122Body+" ")); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered body: got %v, want ErrBadSignature", err)
	}
	late, _ := NewClient(Config{MchID: "1", APIv3Key: "0123456789abcdef0123456789abcdef", PlatformCertificates: []*x509.Certificate{cert},
		Now: func() time.Time { return time.Unix(1624523846+301, 0) }})
	if _, err := late.Verify(context.Background(), kat122Header(), []byte(kat122Body)); !errors.Is(err, ErrTimestampSkew) {
		t.Fatalf("301 s late: got %v, want ErrTimestampSkew", err)
	}

	// The published private key signs "source" to the published value.
	key, err := LoadPrivateKey(mustRead(t, "testdata/kat_gosdk_private_key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	sig, err := SignMessage(key, []byte("source"))
	if err != nil {
		t.Fatal(err)
	}
	const wantSig = "BKyAfU4iMCuvXMXS0Wzam3V/cnxZ+JaqigPM5OhljS2iOT95OO6Fsuml2JkFANJU9K6q9bLlDhPXuoVz+pp4hAm6pHU4ld815U4jsKu1RkyaII+1CYBUYC8TK0XtJ8FwUXXz8vZHh58rrAVN1XwNyvD1vfpxrMT4SL536GLwvpUHlCqIMzoZUguLli/K8V29QiOhuH6IEqLNJn8e9b3nwNcQ7be3CzYGpDAKBfDGPCqCv8Rw5zndhlffk2FEA70G4hvMwe51qMN/RAJbknXG23bSlObuTCN7Ndj1aJGH6/L+hdwfLpUtJm4QYVazzW7DFD27EpSQEqA8bX9+8m1rLg=="
	if sig != wantSig {
		t.Fatalf("signature of \"source\": got %s", sig)
	}
}

func officialKey(t testing.TB) *rsa.PrivateKey {
	k, err := LoadPrivateKey(mustRead(t, "testdata/kat_official_private_key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKATRequestSignature(t *testing.T) {
	// Published answers verified with platform certificates.
	key := officialKey(t)
	const (
		ts    = "1554208460"
		nonce = "593BEC0C930BF1AFEB40B4A08C8FB242"
	)
	tests := []struct {
		name, method, url, body, want string
	}{
		{"jsapi order", "POST", "/v3/pay/transactions/jsapi",
			`{"appid":"wxd678efh567hg6787","mchid":"1900007291","description":"Image形象店-深圳腾大-QQ公仔","out_trade_no":"1217752501201407033233368018","notify_url":"https://www.weixin.qq.com/wxpay/pay.php","amount":{"total":100,"currency":"CNY"},"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}`,
			"jnks4dlrPw3ZX+ozVvSK39oa0t7OMBsg83BHAwd8BRdUFiVaQNTLTvci+wURgP1OQBbKYhFGvt7iqYpDSTQkp7Uq1sltaQKyncCyrA1g88m5bsKERQfPyT0ahSwKTYJ1CAn9QiJuSJRq1QsQs07eehbU/k9BCS51jTyc1Jpsi2H77HF9f/BnjXAOP3/sPObg6V5Ee4EzwLox684hhuMuIwHo7D8KFk3LIHOKDcNI4It1aCXydFWNpNK+SG86VUDe5kwoDpw4Ulqfu9z8OFDGbDs9TCxEv8iqQzbpxOlEVoOe2kalSYM5kApQb3nZcxdUtoE0liJGW3RGUNE0t4v01A=="},
		{"certificates", "GET", "/v3/certificates", "",
			"JNEITrKv8DWEtBJGZtxG9ARa+eIZDIn1Ht3MQM5j9jP77TtHdfCqLjpwevfWftBuaGMfEdiu2sWYtLvnZIoLW3FH10OVCBzKncid5xClTwav8JX+uDeGBBX8w64iHvFyuQj8ukZT+F1AFJii8hmXLD8Os90thnL0bfJYLo/4K237TH4dEd44NTH9ElFb/ykrvv9RBs+mCNpy5IUe2Qxhba3d3RiMqhWK2sSr3tsVzQihJ0TPMnjWqoU2W5Y/v3rBFDmLhqe0ZW6A4vyvjmiR0v/8XEI25Py4PNyZXszsdl4j0zLqelUJxGEMUBhYg1LIoDPjYMlA9HV1yKD6+JYZJA=="},
		{"bill download with query", "GET", "/v3/billdownload/file?token=xxx", "",
			"f+Scjqv4aTKyiFNZUMs/ZD8hiE8LbwfqOltfOQlyq0lBl5WPFVPyEvxxpvXCtpILSZ2Zrdx9GZ047f/d8Pizp1PCpFoWvmE3Gvug5YKSOt8TpoZvvNHUDRj+4suYghy056F+Ftc2vHPrAaRJ7wr7juWsQnv7Yq9U5O1F4eOW0/foZmvv/TxT6KNk/hYkbzdWsYjZQ9lZIHhC+q/MxU+4LYpyDpjKo11bw0vc5SFoaSkHa2Kbfq/SIqj5uDQqmP5OjY5FhGIFQ3i7V8/u72emPwVjkWywGeyYRxHbqkZcf9CLNaHKBaXTgK4MGtF5o7qp2cd8Akvr2m3cmooVJiEjgQ=="},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SignMessage(key, RequestMessage(tc.method, tc.url, ts, nonce, []byte(tc.body)))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
			auth, err := Authorization(key, "1900007291", "SERIAL", tc.method, tc.url, ts, nonce, []byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			wantAuth := `WECHATPAY2-SHA256-RSA2048 mchid="1900007291",nonce_str="` + nonce + `",timestamp="` + ts + `",serial_no="SERIAL",signature="` + tc.want + `"`
			if auth != wantAuth {
				t.Fatalf("Authorization: got %s, want %s", auth, wantAuth)
			}
		})
	}
}

func TestKATPublicKeyResponse(t *testing.T) {
	// An official answer verified with the WeChat Pay public key.
	pub, err := LoadPublicKey(mustRead(t, "testdata/kat_official_public_key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(Config{
		MchID: "1900007291", APIv3Key: "0123456789abcdef0123456789abcdef",
		PublicKey: pub, PublicKeyID: "PUB_KEY_ID_0000000000000024101100397200000006",
		Now: func() time.Time { return time.Unix(1722850421, 0) },
	})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set(HeaderSerial, "PUB_KEY_ID_0000000000000024101100397200000006")
	h.Set(HeaderTimestamp, "1722850421")
	h.Set(HeaderNonce, "d824f2e086d3c1df967785d13fcd22ef")
	h.Set(HeaderSignatureType, "WECHATPAY2-SHA256-RSA2048")
	h.Set(HeaderSignature, "mfI1CPqvBrgcXfgXMFjdNIhBf27ACE2YyeWsWV9ZI7T7RU0vHvbQpu9Z32ogzc+k8ZC5n3kz7h70eWKjgqNdKQF0eRp8mVKlmfzMLBVHbssB9jEZEDXThOX1XFqX7s7ymia1hoHQxQagPGzkdWxtlZPZ4ZPvr1RiqkgAu6Is8MZgXXrRoBKqjmSdrP1N7uxzJ/cjfSiis9FiLjuADoqmQ1P7p2N876YPAol7Rn0+GswwAwxldbdLrmVSjfytfSBJFqTMHn4itojgxSWWN1byuckQt8hSTEv/Lg97QoeGniYP17T80pJeQyL3b+295FPHSO2AtvCgyIbKMZ0BALilAA==")
	body := []byte(`{"code_url":"weixin://wxpay/bizpayurl?pr=JyC91EIz1"}`)
	id, err := c.Verify(context.Background(), h, body)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if id != "PUB_KEY_ID_0000000000000024101100397200000006" {
		t.Fatalf("key id: got %s", id)
	}
	if _, err := c.Verify(context.Background(), h, body[:len(body)-1]); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered: got %v, want ErrBadSignature", err)
	}
}

func TestKATPaySign(t *testing.T) {
	// The published pay-signing examples.
	key := officialKey(t)
	tests := []struct{ name, line4, want string }{
		{"jsapi", "prepay_id=wx201410272009395522657a690389285100", "mI35pfNEQV6777ke/1T+LJLQDNTm7yeoUJH+j/adPGhmCCi0PbgkvYQTRcXH0uibcLVtvFLdGLpmoYO9FV6lBBsTAjuhh5YOvQi0e2g3e0yytitiNET9FEuqM0pjnKfRW4K6LIZDdbWJv9KhZUx3DrJa5TL7OJ7VdADVivxVySIlPVKjGwuCXzuXSJes0UcILgWQUMyha5/3nYofuHtS7r+KYyMuxD+oJ9VM1Qdxk4UIG59CP5Y3wtYIFybyF3bdu1caHTRRX+DLyMXyYA/IrTmiW01c4RPjpHBX5Dk1sZyY1zVsWNsvMHr2e1NTWtBxKJ+qk5N61J7caYoepHFaxw=="},
		{"app", "wx201410272009395522657a690389285100", "gXx9KhTP6IooKV1SuG3OCGlBIgZbKtubCZvnau6khw1iffvNT28IzLbKmztq2xA/RCNbZa1XOsoiuVmAEeTZQicWfhv4P+O4oBRIrx0X9f3cnWFkMBU9alTWs0nyQ1N9fcILOTe0f4kxOhVh+/Xhn5hOiUK7Sz3XA1mcpa3R2NCWf/e+0ow/RDf15iTymOHgDrEkT/gedg/3E0iXfDX3mFicSZhrHESZDOTXcl9RzELREBUFznd/o2NQM99WcL86m23HY0cTy+QGWU4QDmNrbQ9ihmLW71qPb0Cx/d7EQvw/Kyx0A6s64ZQp3hHdcmiRcLnjVXrKCk7LShaCK+lS3Q=="},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PaySign(key, "wx2421b1c4370ec43b", "1554208460", "593BEC0C930BF1AFEB40B4A08C8FB242", tc.line4)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}
