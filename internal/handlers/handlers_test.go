package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/pkg/events"
)

var ctx = context.Background()

func envelope(eventType, resource string) events.Envelope {
	return events.Envelope{ID: "EV-1", DedupeKey: "transaction:4200000001:SUCCESS", EventType: eventType, MchID: "1230000109",
		Source: events.SourceCallback, CreateTime: "2024-03-01T01:30:00+08:00", ReceivedAt: time.Now(), Resource: json.RawMessage(resource)}
}

func TestLogWritesIDsNotPersonalData(t *testing.T) {
	var buf bytes.Buffer
	h := Log(zerolog.New(&buf))
	if err := h(ctx, envelope("TRANSACTION.SUCCESS", `{"out_trade_no":"T1","transaction_id":"4200000001","payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}`)); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, `"out_trade_no":"T1"`) || !strings.Contains(out, `"dedupe_key":"transaction:4200000001:SUCCESS"`) {
		t.Fatalf("missing ids: %s", out)
	}
	if strings.Contains(out, "oUpF8u") {
		t.Fatalf("openid logged: %s", out)
	}
}
