package webhook

import (
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	secret := []byte("s3cret")
	body := []byte(`{"id":"x"}`)
	now := time.Unix(1700000000, 0)
	sig := Sign(secret, now.Unix(), body)
	// Known answer: HMAC-SHA256("s3cret", "1700000000.{\"id\":\"x\"}").
	// (openssl: printf '1700000000.{"id":"x"}' | openssl dgst -sha256 -hmac s3cret)
	if want := "v1=2382c1d0968a5e57238c68de957f44d87e83d3049a5588ec251442ca372b8aec"; sig != want {
		t.Fatalf("got %s, want %s", sig, want)
	}
	hdr := func(ts int64, s string) http.Header {
		h := http.Header{}
		if ts != 0 {
			h.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
		}
		if s != "" {
			h.Set(HeaderSignature, s)
		}
		return h
	}
	tests := []struct {
		name string
		h    http.Header
		body []byte
		want error
	}{
		{"ok", hdr(now.Unix(), sig), body, nil},
		{"ok among several", hdr(now.Unix(), "v1=00,"+sig), body, nil},
		{"body changed", hdr(now.Unix(), sig), []byte(`{"id":"y"}`), ErrSignature},
		{"wrong secret", hdr(now.Unix(), Sign([]byte("other"), now.Unix(), body)), body, ErrSignature},
		{"replayed later", hdr(now.Unix()-301, Sign(secret, now.Unix()-301, body)), body, ErrTimestamp},
		{"no signature", hdr(now.Unix(), ""), body, ErrMissingHeader},
		{"no timestamp", hdr(0, sig), body, ErrMissingHeader},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(secret, tc.h, tc.body, 0, now)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}
