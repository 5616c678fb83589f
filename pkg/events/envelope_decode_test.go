package events

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"
)

// envelopeBodies are message bodies the worker may receive: what Publish
// writes, and what other writers or a broken one might.
func envelopeBodies(t testing.TB) [][]byte {
	published, err := marshalJSON(Envelope{ID: "EV-1", DedupeKey: TransactionKey("4200000001"), EventType: "TRANSACTION.SUCCESS",
		MchID: "1230000109", Source: SourceCallback, CreateTime: "2024-03-01T10:00:00+08:00",
		ReceivedAt: time.Date(2024, 3, 1, 2, 0, 0, 123456789, time.UTC), Summary: "支付成功",
		ResourceType: "encrypt-resource", OriginalType: "transaction",
		Resource: json.RawMessage(`{"transaction_id":"4200000001","trade_state":"SUCCESS","amount":{"total":100},"attach":"a \"quoted\" {brace}","list":[1,2,{"x":null}]}`)})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := marshalJSON(Envelope{DedupeKey: "refund:1:SUCCESS", EventType: "REFUND.SUCCESS", MchID: "1230000109",
		Source: SourceCallbackV2, Resource: json.RawMessage(`{}`), V2: map[string]string{"a": "b"}})
	if err != nil {
		t.Fatal(err)
	}
	return [][]byte{
		published,
		v2,
		[]byte(`{}`),
		[]byte(` { "id" : "x" , "resource" : { } } `),
		[]byte(`{"id":"a","id":"b","resource":{"a":1},"resource":[2]}`),
		[]byte(`{"ID":"upper","Dedupe_Key":"k"}`),
		[]byte(`{"id":"esc\u00e9\"","summary":"tab\t"}`),
		[]byte(`{"id":"esc\u00e9 \\ \/ \n","mchid":"1230000109"}`),
		[]byte("{\"id\":\"bad utf8 \xff\"}"),
		[]byte(`{"id":null,"resource":null,"received_at":null}`),
		[]byte(`{"id":12}`),
		[]byte(`{"received_at":"not a time"}`),
		[]byte(`{"received_at":"2024-03-01T10:00:00+08:00","resource":"a string"}`),
		[]byte(`{"resource":12.5e3,"unknown":{"nested":[true,false]}}`),
		[]byte(`{"resource":true}`),
		[]byte(`{"resource":{"s":"\\"}}`),
		[]byte(`[]`),
		[]byte(`"id"`),
		[]byte(`{"id":"x"`),
		[]byte(`{"id":"x"} trailing`),
		[]byte(``),
		[]byte(`{"v2":{"a":"b"},"source":"callback-v2"}`),
	}
}

// The worker's decoding gives exactly what json.Unmarshal gives, for
// every body: same fields, and an error exactly when json has one.
func TestUnmarshalEnvelopeMatchesJSON(t *testing.T) {
	for _, body := range envelopeBodies(t) {
		checkUnmarshalEnvelope(t, body)
	}
}

// Published envelopes take the direct path (the fallback would hide a
// regression of it behind json.Unmarshal).
func TestUnmarshalEnvelopeDirectPath(t *testing.T) {
	body := envelopeBodies(t)[0]
	var env Envelope
	if !decodeEnvelopeFast(body, &env) {
		t.Fatalf("a published envelope is not decoded directly: %s", body)
	}
	var want Envelope
	if err := json.Unmarshal(body, &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(env, want) {
		t.Fatalf("direct decoding:\n got %+v\nwant %+v", env, want)
	}
	if err := decodeEnvelope(body, &Envelope{}); err != nil {
		t.Fatalf("a published envelope is refused: %v", err)
	}
}

func TestDecodeEnvelopeRefusesBadResource(t *testing.T) {
	for _, body := range []string{
		`{"id":"1","dedupe_key":"k","event_type":"TRANSACTION.SUCCESS","mchid":"1230000109","source":"callback","resource":[1]}`,
		`{"id":"1","dedupe_key":"k","event_type":"TRANSACTION.SUCCESS","mchid":"1230000109","source":"callback","resource":{"a":}}`,
		`{"id":"1","dedupe_key":"k","event_type":"TRANSACTION.SUCCESS","mchid":"1230000109","source":"callback"}`,
	} {
		if err := decodeEnvelope([]byte(body), &Envelope{}); !errors.Is(err, ErrMalformedEnvelope) {
			t.Errorf("%s: got %v, want ErrMalformedEnvelope", body, err)
		}
	}
}

func FuzzUnmarshalEnvelope(f *testing.F) {
	for _, body := range envelopeBodies(f) {
		f.Add(body)
	}
	f.Fuzz(checkUnmarshalEnvelope)
}

func checkUnmarshalEnvelope(t *testing.T, body []byte) {
	var got, want Envelope
	gotErr := unmarshalEnvelope(body, &got)
	wantErr := json.Unmarshal(body, &want)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("%q: error %v, json.Unmarshal's %v", body, gotErr, wantErr)
	}
	if wantErr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\n got %+v\nwant %+v", body, got, want)
	}
}
