package events

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// typicalEnvelope is what the ingress publishes for a payment.
func typicalEnvelope() Envelope {
	return Envelope{ID: "EV-2018-11-28-0001", DedupeKey: TransactionKey("4200000001201811281234567890"),
		EventType: "TRANSACTION.SUCCESS", MchID: "1230000109", Source: SourceCallback,
		CreateTime: "2018-11-28T13:29:35+08:00", ReceivedAt: time.Date(2024, 3, 1, 2, 0, 0, 123456789, time.UTC),
		Summary: "支付成功", ResourceType: "encrypt-resource", OriginalType: "transaction",
		Resource: json.RawMessage(`{"mchid":"1230000109","appid":"wxd678efh567hg6787","out_trade_no":"1217752501201407033233368018",` +
			`"transaction_id":"4200000001201811281234567890","trade_type":"JSAPI","trade_state":"SUCCESS","trade_state_desc":"支付成功",` +
			`"bank_type":"CMC","attach":"<a&b>","success_time":"2018-06-08T10:34:56+08:00","payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},` +
			`"amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"}}`)}
}

// encodeCases are envelopes on and off encodeEnvelope's direct path.
func encodeCases() map[string]Envelope {
	china := time.FixedZone("CST", 8*3600)
	cases := map[string]Envelope{"typical": typicalEnvelope()}
	add := func(name string, change func(*Envelope)) {
		e := typicalEnvelope()
		change(&e)
		cases[name] = e
	}
	add("v2 fields, sorted", func(e *Envelope) {
		e.Source, e.V2 = SourceCallbackV2, map[string]string{"z": "last", "a": "first", "refund_status": "SUCCESS", "中": "文"}
	})
	add("v2 value with a quote", func(e *Envelope) { e.V2 = map[string]string{"k": `say "hi"`} })
	add("v2 key with a newline", func(e *Envelope) { e.V2 = map[string]string{"k\n": "v"} })
	add("empty v2", func(e *Envelope) { e.V2 = map[string]string{} })
	add("resource with spaces", func(e *Envelope) { e.Resource = json.RawMessage(" {\n \"a\" : [ 1 , 2 ] ,\t\"b\":\"x y\" }\n") })
	add("resource not JSON", func(e *Envelope) { e.Resource = json.RawMessage(`{"a":`) })
	add("nil resource", func(e *Envelope) { e.Resource = nil })
	add("empty resource", func(e *Envelope) { e.Resource = json.RawMessage{} })
	add("summary with HTML", func(e *Envelope) { e.Summary = "<b>&</b>" })
	add("summary with a quote", func(e *Envelope) { e.Summary = `a "b"` })
	add("summary with a backslash", func(e *Envelope) { e.Summary = `a\b` })
	add("summary with a tab", func(e *Envelope) { e.Summary = "a\tb" })
	add("summary with DEL", func(e *Envelope) { e.Summary = "a\x7fb" })
	add("summary with U+2028", func(e *Envelope) { e.Summary = "a\u2028b\u2029" })
	add("summary with bad UTF-8", func(e *Envelope) { e.Summary = "a\xffb\xe4\xb8" })
	add("summary with an emoji", func(e *Envelope) { e.Summary = "支付成功 💳" })
	add("id empty", func(e *Envelope) { e.ID = "" })
	add("received in China time", func(e *Envelope) { e.ReceivedAt = e.ReceivedAt.In(china) })
	add("received at a whole second", func(e *Envelope) { e.ReceivedAt = time.Date(2024, 3, 1, 2, 0, 0, 0, time.UTC) })
	add("received at the zero time", func(e *Envelope) { e.ReceivedAt = time.Time{} })
	add("received in year 10000", func(e *Envelope) { e.ReceivedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) })
	add("received in year -1", func(e *Envelope) { e.ReceivedAt = time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC) })
	add("offset with seconds", func(e *Envelope) { e.ReceivedAt = e.ReceivedAt.In(time.FixedZone("LMT", 8*3600+5*60+43)) })
	add("offset of 25 hours", func(e *Envelope) { e.ReceivedAt = e.ReceivedAt.In(time.FixedZone("X", 25*3600)) })
	add("negative offset", func(e *Envelope) { e.ReceivedAt = e.ReceivedAt.In(time.FixedZone("Y", -(9*3600 + 30*60))) })
	return cases
}

// checkEncodeEnvelope fails unless encodeEnvelope and encoding/json agree
// on env: the same bytes, or both an error.
func checkEncodeEnvelope(t *testing.T, env Envelope) {
	t.Helper()
	want, wantErr := encodeJSON(new(bytes.Buffer), env)
	got, err := encodeEnvelope(new(bytes.Buffer), &env)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("error %v, encoding/json's %v", err, wantErr)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encoded\n%s\nencoding/json:\n%s", got, want)
	}
}

func TestEncodeEnvelopeMatchesEncodingJSON(t *testing.T) {
	for name, env := range encodeCases() {
		t.Run(name, func(t *testing.T) { checkEncodeEnvelope(t, env) })
	}
}

// TestEncodeEnvelopeDirectPath: the envelopes the ingress and the
// reconciler publish take the direct path, which allocates nothing into a
// buffer that has room (encoding/json's path allocates several times).
func TestEncodeEnvelopeDirectPath(t *testing.T) {
	for _, name := range []string{"typical", "v2 fields, sorted", "received in China time", "resource with spaces"} {
		env := encodeCases()[name]
		if !directEnvelope(&env) {
			t.Errorf("%s: not on the direct path", name)
		}
	}
	env := typicalEnvelope()
	var buf bytes.Buffer
	buf.Grow(4 << 10)
	allocs := testing.AllocsPerRun(100, func() {
		buf.Reset()
		if _, err := encodeEnvelope(&buf, &env); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%.0f allocations per envelope, want 0", allocs)
	}
}

func FuzzEncodeEnvelope(f *testing.F) {
	f.Add("EV-1", "支付成功", "2018-11-28T13:29:35+08:00", []byte(`{"a":1}`), "k", "v", int64(1709258400123456789), 8*3600)
	f.Add("", "a\"b", "", []byte(" { } "), "", "", int64(0), 0)
	f.Add("\u2028", "\xff", "\t", []byte(`{"a":`), "\n", "<>", int64(-62135596800), 3600+7)
	f.Fuzz(func(t *testing.T, id, summary, createTime string, resource []byte, k, v string, nanos int64, offset int) {
		env := typicalEnvelope()
		env.ID, env.Summary, env.CreateTime, env.Resource = id, summary, createTime, resource
		if k != "" || v != "" {
			env.V2 = map[string]string{k: v, "refund_status": "SUCCESS"}
		}
		env.ReceivedAt = time.Unix(0, nanos).In(time.FixedZone("Z", offset%(30*3600)))
		checkEncodeEnvelope(t, env)
	})
}

// BenchmarkEncodeEnvelope: go test -run '^$' -bench EncodeEnvelope -benchmem ./pkg/events
func BenchmarkEncodeEnvelope(b *testing.B) {
	env := typicalEnvelope()
	var buf bytes.Buffer
	for _, bc := range []struct {
		name   string
		encode func() ([]byte, error)
	}{
		{"encoding-json", func() ([]byte, error) { return encodeJSON(&buf, env) }},
		{"direct", func() ([]byte, error) { return encodeEnvelope(&buf, &env) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				buf.Reset()
				if _, err := bc.encode(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
