package handlers

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
	"github.com/wxpay-notify/wxpay-notify/internal/tracking"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
)

func TestTracker(t *testing.T) {
	rs := testenv.StartRedis(t)
	opt, _ := redis.ParseURL(rs.URL)
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	tr := NewTracker(rdb, TrackerConfig{})
	must := func(ev events.Envelope) {
		t.Helper()
		if err := tr.HandleEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	// Announced, then paid: pending, then in the ledger of its China date.
	must(envelope("ORDER.CREATED", `{"out_trade_no":"T1","create_time":"2024-02-29T23:00:00+08:00"}`))
	must(envelope("ORDER.CREATED", `{"out_trade_no":"T1","create_time":"2024-02-29T23:59:00+08:00"}`)) // repeat keeps the first
	score, err := rdb.ZScore(ctx, "wxpay:pending:order:1230000109", "T1").Result()
	if err != nil || int64(score) != time.Date(2024, 2, 29, 23, 0, 0, 0, time.FixedZone("", 8*3600)).Unix() {
		t.Fatalf("pending score %v %v", score, err)
	}
	paid := envelope("TRANSACTION.SUCCESS", `{"out_trade_no":"T1","transaction_id":"4200000001","trade_state":"SUCCESS","success_time":"2024-03-01T00:30:00+08:00","amount":{"total":1999}}`)
	must(paid)
	must(paid) // idempotent
	if n, _ := rdb.ZCard(ctx, "wxpay:pending:order:1230000109").Result(); n != 0 {
		t.Fatalf("still pending: %d", n)
	}
	// 00:30 China time on 1 March is still 29 February in UTC: the China date counts.
	v, err := rdb.HGet(ctx, "wxpay:ledger:1230000109:20240301", "4200000001").Result()
	if err != nil {
		t.Fatalf("ledger: %v", err)
	}
	var entry tracking.Entry
	json.Unmarshal([]byte(v), &entry)
	if entry != (tracking.Entry{OutTradeNo: "T1", Amount: 1999, State: "SUCCESS", EventID: "EV-1"}) {
		t.Fatalf("ledger entry %+v", entry)
	}
	if ttl, _ := rdb.TTL(ctx, "wxpay:ledger:1230000109:20240301").Result(); ttl <= 90*24*time.Hour {
		t.Fatalf("ledger TTL %s", ttl)
	}

	// Refund: announced, closed by CLOSE spelling, recorded with its amount.refund.
	must(envelope("REFUND.CREATED", `{"out_trade_no":"T1","out_refund_no":"R1"}`))
	if n, _ := rdb.ZCard(ctx, "wxpay:pending:refund:1230000109").Result(); n != 1 {
		t.Fatal("refund not pending")
	}
	must(envelope("REFUND.SUCCESS", `{"out_trade_no":"T1","transaction_id":"4200000001","out_refund_no":"R1","refund_id":"5000001","refund_status":"SUCCESS","success_time":"2024-03-02T10:00:00+08:00","amount":{"total":1999,"refund":500,"payer_total":1999,"payer_refund":500}}`))
	v, _ = rdb.HGet(ctx, "wxpay:ledger:1230000109:20240302", "5000001").Result()
	entry = tracking.Entry{}
	json.Unmarshal([]byte(v), &entry)
	if entry != (tracking.Entry{OutRefundNo: "R1", Amount: 500, State: "SUCCESS", EventID: "EV-1"}) {
		t.Fatalf("refund ledger entry %+v", entry)
	}
	if n, _ := rdb.ZCard(ctx, "wxpay:pending:refund:1230000109").Result(); n != 0 {
		t.Fatal("refund still pending")
	}

	// Closed by us: leaves the pending set, no ledger entry.
	must(envelope("ORDER.CREATED", `{"out_trade_no":"T2"}`))
	must(envelope("TRANSACTION.CLOSED", `{"out_trade_no":"T2","trade_state":"CLOSED"}`))
	if _, err := rdb.ZScore(ctx, "wxpay:pending:order:1230000109", "T2").Result(); !errors.Is(err, redis.Nil) {
		t.Fatalf("T2 still pending: %v", err)
	}

	// Bad resources are permanent; others are ignored.
	for _, ev := range []events.Envelope{
		envelope("ORDER.CREATED", `{}`),
		envelope("TRANSACTION.SUCCESS", `{"out_trade_no":"T3"}`),
		envelope("REFUND.SUCCESS", `not json`),
		envelope("TRANSACTION.SUCCESS", `{"out_trade_no":"T3","transaction_id":"1","amount":{"total":1},"success_time":"yesterday"}`),
	} {
		if err := tr.HandleEvent(ctx, ev); !events.IsPermanent(err) {
			t.Fatalf("%s %s: got %v, want permanent", ev.EventType, ev.Resource, err)
		}
	}
	if err := tr.HandleEvent(ctx, envelope("COUPON.USE", `{}`)); err != nil {
		t.Fatal(err)
	}

	// Redis gone: a retryable error, not a dead letter.
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer down.Close()
	if err := NewTracker(down, TrackerConfig{}).HandleEvent(ctx, paid); err == nil || events.IsPermanent(err) {
		t.Fatalf("redis down: got %v, want a retryable error", err)
	}
}

// A partner-mode announcement keeps its sub_mchid next to the pending set,
// where the reconciler reads it, until the item leaves the set.
func TestTrackerKeepsTheSubMchID(t *testing.T) {
	rs := testenv.StartRedis(t)
	opt, _ := redis.ParseURL(rs.URL)
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	tr := NewTracker(rdb, TrackerConfig{})
	store := tracking.NewStore(rdb, tracking.Config{})
	must := func(ev events.Envelope) {
		t.Helper()
		if err := tr.HandleEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	subs := func(kind tracking.Kind) map[string]string {
		t.Helper()
		return rdb.HGetAll(ctx, "wxpay:pending:"+string(kind)+":1230000109:sub").Val()
	}
	pending := func(kind tracking.Kind) []tracking.Item {
		t.Helper()
		items, err := store.Pending(ctx, kind, "1230000109", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return items
	}
	// The resources as events.AnnounceOrder and AnnounceRefund write them.
	must(envelope("ORDER.CREATED", `{"out_trade_no":"P1","sub_mchid":"1900000109","create_time":"2024-03-01T10:00:00+08:00"}`))
	must(envelope("ORDER.CREATED", `{"out_trade_no":"P2","sub_mchid":"1900000110","create_time":"2024-03-01T10:01:00+08:00"}`))
	must(envelope("ORDER.CREATED", `{"out_trade_no":"D1","create_time":"2024-03-01T10:02:00+08:00"}`))
	must(envelope("REFUND.CREATED", `{"out_trade_no":"P1","out_refund_no":"PR1","sub_mchid":"1900000109"}`))
	if got := subs(tracking.Order); !reflect.DeepEqual(got, map[string]string{"P1": "1900000109", "P2": "1900000110"}) {
		t.Fatalf("order sub_mchids %v", got)
	}
	if got := subs(tracking.Refund); !reflect.DeepEqual(got, map[string]string{"PR1": "1900000109"}) {
		t.Fatalf("refund sub_mchids %v", got)
	}
	if got := pending(tracking.Order); len(got) != 3 || got[0].SubMchID != "1900000109" || got[1].SubMchID != "1900000110" || got[2].SubMchID != "" {
		t.Fatalf("pending orders %+v", got)
	}
	if got := pending(tracking.Refund); len(got) != 1 || got[0] != (tracking.Item{ID: "PR1", Created: time.Unix(got[0].Created.Unix(), 0), SubMchID: "1900000109"}) {
		t.Fatalf("pending refunds %+v", got)
	}

	// Paid (the partner notification's shape), closed, refunded: each leaves with its sub_mchid.
	must(envelope("TRANSACTION.SUCCESS", `{"sp_mchid":"1230000109","sub_mchid":"1900000109","out_trade_no":"P1","transaction_id":"4200000009","trade_state":"SUCCESS","success_time":"2024-03-01T10:05:00+08:00","amount":{"total":100}}`))
	must(envelope("TRANSACTION.CLOSED", `{"sp_mchid":"1230000109","sub_mchid":"1900000110","out_trade_no":"P2","trade_state":"CLOSED"}`))
	must(envelope("REFUND.SUCCESS", `{"sp_mchid":"1230000109","sub_mchid":"1900000109","out_trade_no":"P1","transaction_id":"4200000009","out_refund_no":"PR1","refund_id":"5000009","refund_status":"SUCCESS","success_time":"2024-03-02T10:00:00+08:00","amount":{"total":100,"refund":40,"payer_total":100,"payer_refund":40}}`))
	if got := subs(tracking.Order); len(got) != 0 {
		t.Fatalf("order sub_mchids left behind: %v", got)
	}
	if got := subs(tracking.Refund); len(got) != 0 {
		t.Fatalf("refund sub_mchids left behind: %v", got)
	}
	if got := pending(tracking.Order); len(got) != 1 || got[0].ID != "D1" {
		t.Fatalf("pending orders %+v, want D1", got)
	}
}
