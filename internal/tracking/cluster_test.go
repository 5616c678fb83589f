package tracking

import (
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
)

// Every call of the Store works on a Redis Cluster, whose keys of one
// merchant live in different hash slots (no command or transaction may span
// them): the pending set, its sub_mchid hash and the day's ledger.
func TestStoreOnRedisCluster(t *testing.T) {
	cl := testenv.StartRedisCluster(t)
	rc := cl.Client(t)
	s := NewStore(rc, Config{})
	day := time.Date(2026, 11, 30, 10, 0, 0, 0, china)
	keys := []string{s.PendingKey(Order, mchid), s.SubMchIDKey(Order, mchid), s.LedgerKey(mchid, day)}
	slots := map[int64]bool{}
	for _, k := range keys {
		slot, err := rc.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		slots[slot] = true
	}
	if len(slots) < 2 {
		t.Fatalf("the keys %v share one slot: the test would not show cross-slot use", keys)
	}

	created := day.Add(-time.Hour)
	if err := s.AddPendingItem(ctx, Order, mchid, Item{ID: "T1", Created: created, SubMchID: "1900000109"}); err != nil {
		t.Fatalf("AddPendingItem with a sub_mchid: %v", err)
	}
	if err := s.AddPending(ctx, Order, mchid, "T2", created); err != nil {
		t.Fatal(err)
	}
	items, err := s.Pending(ctx, Order, mchid, day)
	if err != nil {
		t.Fatal(err)
	}
	want := []Item{{ID: "T1", Created: created.Truncate(time.Second), SubMchID: "1900000109"}, {ID: "T2", Created: created.Truncate(time.Second)}}
	for i := range items {
		items[i].Created = items[i].Created.In(china)
		want[i].Created = want[i].Created.In(china)
	}
	if len(items) != 2 || items[0] != want[0] || items[1] != want[1] {
		t.Fatalf("Pending = %+v, want %+v", items, want)
	}

	if err := s.RecordFinal(ctx, mchid, "4200000001", day, Entry{OutTradeNo: "T1", Amount: 100, State: "SUCCESS", EventID: "e1"}); err != nil {
		t.Fatalf("RecordFinal: %v", err)
	}
	if err := s.RemovePending(ctx, Order, mchid, "T2"); err != nil {
		t.Fatalf("RemovePending: %v", err)
	}
	if items, _ := s.Pending(ctx, Order, mchid, day); len(items) != 0 {
		t.Fatalf("still pending: %+v", items)
	}
	if n, _ := rc.HLen(ctx, s.SubMchIDKey(Order, mchid)).Result(); n != 0 {
		t.Fatalf("%d sub_mchid fields left", n)
	}
	got, err := s.LedgerGet(ctx, mchid, day, []string{"4200000001", "nope"})
	if err != nil || got[0] == nil || got[0].Amount != 100 || got[1] != nil {
		t.Fatalf("LedgerGet = %+v, %v", got, err)
	}
	if n, err := s.LedgerLen(ctx, mchid, day); err != nil || n != 1 {
		t.Fatalf("LedgerLen = %d, %v", n, err)
	}
	var seen []string
	if err := s.ScanLedger(ctx, mchid, day, func(id string, e Entry) error { seen = append(seen, id); return nil }); err != nil || len(seen) != 1 {
		t.Fatalf("ScanLedger saw %v, %v", seen, err)
	}
	if ttl, _ := rc.TTL(ctx, s.LedgerKey(mchid, day)).Result(); ttl <= 0 {
		t.Fatalf("ledger TTL %v", ttl)
	}
}
