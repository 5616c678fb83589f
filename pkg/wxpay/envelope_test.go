package wxpay

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestFastEnvelopeTakesWeChatBodies(t *testing.T) {
	f := benchSetup(t)
	var n Notification
	if !fastEnvelope(f.body, &n) {
		t.Fatal("a realistic notification body left the fast path")
	}
	var want Notification
	if err := json.Unmarshal(f.body, &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(n, want) {
		t.Fatalf("got %+v, want %+v", n, want)
	}
	if !fastEnvelope([]byte(kat122Body), &n) {
		t.Fatal("the official example body left the fast path")
	}
}

// FuzzDecodeEnvelope: the fast decoder and encoding/json agree on every
// input: same error-or-not, same result.
func FuzzDecodeEnvelope(f *testing.F) {
	f.Add([]byte(kat122Body))
	f.Add([]byte(`{"id":"a","resource":{"nonce":"x"},"extra":"y"}`))
	f.Add([]byte(`{"ID":"a"}`))
	f.Add([]byte(`{"id":"a\u0041","resource":{}}`))
	f.Add([]byte(`{"id":1}`))
	f.Add([]byte(`{"resource":{"nonce":"a"},"resource":{"algorithm":"b"}}`))
	f.Add([]byte(" {\"id\" : \"\xff\" } "))
	f.Add([]byte(`{"id":"a"} x`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var got, want Notification
		gotErr := decodeEnvelope(body, &got)
		wantErr := json.Unmarshal(body, &want)
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("%q: fast %v, encoding/json %v", body, gotErr, wantErr)
		}
		if gotErr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: fast %+v, encoding/json %+v", body, got, want)
		}
	})
}
