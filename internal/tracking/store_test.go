package tracking

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
)

var ctx = context.Background()

const mchid = "1230000109"

var china = time.FixedZone("", 8*3600)

func newStore(t *testing.T, cfg Config) (*Store, *redis.Client) {
	t.Helper()
	rs := testenv.StartRedis(t)
	opt, err := redis.ParseURL(rs.URL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	return NewStore(rdb, cfg), rdb
}

func TestKeys(t *testing.T) {
	t.Parallel()
	// 00:30 on 1 March in China is still 29 February in UTC: the China date counts.
	day := time.Date(2024, 2, 29, 16, 30, 0, 0, time.UTC)
	for _, tt := range []struct {
		name   string
		prefix string
		got    func(s *Store) string
		want   string
	}{
		{"order, default prefix", "", func(s *Store) string { return s.PendingKey(Order, mchid) }, "wxpay:pending:order:1230000109"},
		{"refund, default prefix", "", func(s *Store) string { return s.PendingKey(Refund, mchid) }, "wxpay:pending:refund:1230000109"},
		{"ledger, default prefix", "", func(s *Store) string { return s.LedgerKey(mchid, day) }, "wxpay:ledger:1230000109:20240301"},
		{"order, own prefix", "staging:", func(s *Store) string { return s.PendingKey(Order, mchid) }, "staging:pending:order:1230000109"},
		{"ledger, own prefix", "staging:", func(s *Store) string { return s.LedgerKey(mchid, day) }, "staging:ledger:1230000109:20240301"},
		{"order sub_mchids, default prefix", "", func(s *Store) string { return s.SubMchIDKey(Order, mchid) }, "wxpay:pending:order:1230000109:sub"},
		{"refund sub_mchids, own prefix", "staging:", func(s *Store) string { return s.SubMchIDKey(Refund, mchid) }, "staging:pending:refund:1230000109:sub"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.got(NewStore(nil, Config{KeyPrefix: tt.prefix})); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPending(t *testing.T) {
	s, rdb := newStore(t, Config{})
	t0 := time.Date(2024, 3, 1, 10, 0, 0, 0, china)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.AddPending(ctx, Order, mchid, "T2", t0.Add(time.Minute)))
	must(s.AddPending(ctx, Order, mchid, "T1", t0))
	must(s.AddPending(ctx, Order, mchid, "T1", t0.Add(time.Hour))) // a repeat keeps the first
	must(s.AddPending(ctx, Order, mchid, "T3", t0.Add(2*time.Minute)))
	must(s.AddPending(ctx, Refund, mchid, "R1", t0))

	if score, err := rdb.ZScore(ctx, "wxpay:pending:order:1230000109", "T1").Result(); err != nil || int64(score) != t0.Unix() {
		t.Fatalf("T1 score: got %v %v, want %d", score, err, t0.Unix())
	}
	got, err := s.Pending(ctx, Order, mchid, t0.Add(time.Minute))
	must(err)
	want := []Item{{ID: "T1", Created: time.Unix(t0.Unix(), 0)}, {ID: "T2", Created: time.Unix(t0.Add(time.Minute).Unix(), 0)}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("pending orders before %s: got %v, want %v", t0.Add(time.Minute), got, want)
	}
	if got, _ := s.Pending(ctx, Order, mchid, t0.Add(-time.Second)); len(got) != 0 {
		t.Fatalf("pending orders before the first: got %v, want none", got)
	}
	if got, _ := s.Pending(ctx, Refund, mchid, t0); len(got) != 1 || got[0].ID != "R1" {
		t.Fatalf("pending refunds: got %v, want R1", got)
	}
	if got, _ := s.Pending(ctx, Order, "other", t0.Add(time.Hour)); len(got) != 0 {
		t.Fatalf("another merchant's pending orders: got %v, want none", got)
	}

	must(s.RemovePending(ctx, Order, mchid, "T1"))
	must(s.RemovePending(ctx, Order, mchid, "T1"))  // absent: no error
	must(s.RemovePending(ctx, Refund, mchid, "T2")) // the other set: no effect
	if got, _ := s.Pending(ctx, Order, mchid, t0.Add(time.Hour)); len(got) != 2 || got[0].ID != "T2" || got[1].ID != "T3" {
		t.Fatalf("after removing T1: got %v, want T2, T3", got)
	}
}

func TestPendingSubMchID(t *testing.T) {
	s, rdb := newStore(t, Config{})
	t0 := time.Date(2024, 3, 1, 10, 0, 0, 0, china)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.AddPendingItem(ctx, Order, mchid, Item{ID: "T1", Created: t0, SubMchID: "1900000109"}))
	must(s.AddPendingItem(ctx, Order, mchid, Item{ID: "T1", Created: t0.Add(time.Hour), SubMchID: "1900000999"})) // a repeat keeps the first
	must(s.AddPendingItem(ctx, Order, mchid, Item{ID: "T2", Created: t0.Add(time.Minute)}))                       // direct mode: none
	must(s.AddPendingItem(ctx, Order, mchid, Item{ID: "T3", Created: t0.Add(2 * time.Minute), SubMchID: "1900000110"}))
	must(s.AddPendingItem(ctx, Refund, mchid, Item{ID: "R1", Created: t0, SubMchID: "1900000109"}))

	// The sets keep their members and scores as before; the sub_mchids are beside them.
	if got := rdb.ZRangeWithScores(ctx, "wxpay:pending:order:1230000109", 0, -1).Val(); !reflect.DeepEqual(got, []redis.Z{
		{Score: float64(t0.Unix()), Member: "T1"}, {Score: float64(t0.Add(time.Minute).Unix()), Member: "T2"},
		{Score: float64(t0.Add(2 * time.Minute).Unix()), Member: "T3"}}) {
		t.Fatalf("order set: %v", got)
	}
	if got := rdb.HGetAll(ctx, "wxpay:pending:order:1230000109:sub").Val(); !reflect.DeepEqual(got, map[string]string{"T1": "1900000109", "T3": "1900000110"}) {
		t.Fatalf("order sub_mchids: %v", got)
	}
	got, err := s.Pending(ctx, Order, mchid, t0.Add(time.Hour))
	must(err)
	want := []Item{
		{ID: "T1", Created: time.Unix(t0.Unix(), 0), SubMchID: "1900000109"},
		{ID: "T2", Created: time.Unix(t0.Add(time.Minute).Unix(), 0)},
		{ID: "T3", Created: time.Unix(t0.Add(2*time.Minute).Unix(), 0), SubMchID: "1900000110"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Pending: got %v, want %v", got, want)
	}
	if got, _ := s.Pending(ctx, Refund, mchid, t0); len(got) != 1 || got[0].SubMchID != "1900000109" {
		t.Fatalf("pending refunds: got %v, want R1 of 1900000109", got)
	}

	// The sub_mchid leaves with its member, whichever way it leaves.
	must(s.RemovePending(ctx, Order, mchid, "T1"))
	must(s.RecordFinal(ctx, mchid, "4200000003", t0, Entry{OutTradeNo: "T3", Amount: 1, State: "SUCCESS"}))
	must(s.RecordFinal(ctx, mchid, "5000001", t0, Entry{OutRefundNo: "R1", Amount: 1, State: "SUCCESS"}))
	if n := rdb.Exists(ctx, "wxpay:pending:order:1230000109:sub", "wxpay:pending:refund:1230000109:sub").Val(); n != 0 {
		t.Fatalf("sub_mchids left behind: %v %v", rdb.HGetAll(ctx, "wxpay:pending:order:1230000109:sub").Val(),
			rdb.HGetAll(ctx, "wxpay:pending:refund:1230000109:sub").Val())
	}
	if got, _ := s.Pending(ctx, Order, mchid, t0.Add(time.Hour)); len(got) != 1 || got[0] != want[1] {
		t.Fatalf("after removing T1 and T3: got %v, want T2", got)
	}
	// Announced again after it left: it comes back with its sub_mchid.
	must(s.AddPendingItem(ctx, Order, mchid, Item{ID: "T1", Created: t0, SubMchID: "1900000111"}))
	if got, _ := s.Pending(ctx, Order, mchid, t0); len(got) != 1 || got[0].SubMchID != "1900000111" {
		t.Fatalf("T1 announced again: got %v", got)
	}
	if err := s.AddPendingItem(ctx, Order, mchid, Item{Created: t0, SubMchID: "1900000109"}); err == nil {
		t.Fatal("AddPendingItem without an id: got nil, want an error")
	}
}

func TestRecordFinal(t *testing.T) {
	s, rdb := newStore(t, Config{})
	paid := time.Date(2024, 3, 1, 0, 30, 0, 0, china) // 29 February in UTC
	refunded := time.Date(2024, 3, 2, 10, 0, 0, 0, china)
	for _, step := range []struct {
		kind  Kind
		id    string
		when  time.Time
		entry Entry
	}{
		{Order, "4200000001", paid, Entry{OutTradeNo: "T1", Amount: 1999, State: "SUCCESS", EventID: "EV-1"}},
		{Refund, "5000001", refunded, Entry{OutRefundNo: "R1", Amount: 500, State: "SUCCESS", EventID: "EV-2"}},
	} {
		member := step.entry.OutTradeNo + step.entry.OutRefundNo
		if err := s.AddPending(ctx, step.kind, mchid, member, step.when.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		for range 2 { // a repeat writes the same state
			if err := s.RecordFinal(ctx, mchid, step.id, step.when, step.entry); err != nil {
				t.Fatal(err)
			}
		}
		if n := rdb.ZCard(ctx, s.PendingKey(step.kind, mchid)).Val(); n != 0 {
			t.Fatalf("%s still pending after RecordFinal", member)
		}
	}
	// The values stay exactly as the contract spells them.
	for key, want := range map[string]map[string]string{
		"wxpay:ledger:1230000109:20240301": {"4200000001": `{"out_trade_no":"T1","amount":1999,"state":"SUCCESS","event_id":"EV-1"}`},
		"wxpay:ledger:1230000109:20240302": {"5000001": `{"out_refund_no":"R1","amount":500,"state":"SUCCESS","event_id":"EV-2"}`},
	} {
		if got := rdb.HGetAll(ctx, key).Val(); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %v, want %v", key, got, want)
		}
		if ttl := rdb.TTL(ctx, key).Val(); ttl <= 99*24*time.Hour || ttl > DefaultLedgerTTL {
			t.Errorf("%s TTL: got %s, want %s", key, ttl, DefaultLedgerTTL)
		}
	}

	got, err := s.Ledger(ctx, mchid, paid)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]Entry{"4200000001": {OutTradeNo: "T1", Amount: 1999, State: "SUCCESS", EventID: "EV-1"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Ledger: got %v, want %v", got, want)
	}
	if got, err := s.Ledger(ctx, mchid, paid.AddDate(0, 0, -1)); err != nil || len(got) != 0 {
		t.Fatalf("Ledger of a day without entries: got %v %v, want empty", got, err)
	}

	if err := s.RecordFinal(ctx, mchid, "4200000009", paid, Entry{Amount: 1}); err == nil {
		t.Fatal("RecordFinal without out_trade_no or out_refund_no: got nil, want an error")
	}
	rdb.HSet(ctx, "wxpay:ledger:1230000109:20240301", "4200000002", "not json")
	if _, err := s.Ledger(ctx, mchid, paid); err == nil {
		t.Fatal("Ledger with a corrupt entry: got nil, want an error")
	}
}

func TestLedgerTTL(t *testing.T) {
	s, rdb := newStore(t, Config{KeyPrefix: "staging:", LedgerTTL: time.Hour})
	when := time.Date(2024, 3, 1, 12, 0, 0, 0, china)
	if err := s.RecordFinal(ctx, mchid, "4200000001", when, Entry{OutTradeNo: "T1", Amount: 1, State: "SUCCESS"}); err != nil {
		t.Fatal(err)
	}
	if ttl := rdb.TTL(ctx, "staging:ledger:1230000109:20240301").Val(); ttl <= 59*time.Minute || ttl > time.Hour {
		t.Fatalf("TTL: got %s, want 1h", ttl)
	}
}

func TestRedisDown(t *testing.T) {
	t.Parallel()
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer down.Close()
	s := NewStore(down, Config{})
	now := time.Now()
	for name, err := range map[string]error{
		"AddPending":     s.AddPending(ctx, Order, mchid, "T1", now),
		"AddPendingItem": s.AddPendingItem(ctx, Order, mchid, Item{ID: "T1", Created: now, SubMchID: "1900000109"}),
		"RemovePending":  s.RemovePending(ctx, Order, mchid, "T1"),
		"RecordFinal":    s.RecordFinal(ctx, mchid, "4200000001", now, Entry{OutTradeNo: "T1"}),
	} {
		if err == nil {
			t.Errorf("%s with Redis down: got nil, want an error", name)
		}
	}
	if _, err := s.Pending(ctx, Order, mchid, now); err == nil {
		t.Error("Pending with Redis down: got nil, want an error")
	}
	if _, err := s.Ledger(ctx, mchid, now); err == nil {
		t.Error("Ledger with Redis down: got nil, want an error")
	}
}
