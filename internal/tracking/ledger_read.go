package tracking

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// LedgerGet returns the entries of ids in mchid's ledger of day's China
// date, in the order of ids, nil where the ledger has none; one round trip.
// Touches LedgerKey(mchid, day).
func (s *Store) LedgerGet(ctx context.Context, mchid string, day time.Time, ids []string) ([]*Entry, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	key := s.LedgerKey(mchid, day)
	vals, err := s.rdb.HMGet(ctx, key, ids...).Result()
	if err != nil {
		return nil, err
	}
	out := make([]*Entry, len(ids))
	for i, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue
		}
		e := new(Entry)
		if err := json.Unmarshal([]byte(str), e); err != nil {
			return nil, fmt.Errorf("tracking: %s field %s: %w", key, ids[i], err)
		}
		out[i] = e
	}
	return out, nil
}

// LedgerLen returns how many entries mchid's ledger of day holds.
// Touches LedgerKey(mchid, day).
func (s *Store) LedgerLen(ctx context.Context, mchid string, day time.Time) (int64, error) {
	return s.rdb.HLen(ctx, s.LedgerKey(mchid, day)).Result()
}

// ScanLedger calls fn for every entry of mchid's ledger of day, a page at a
// time (HSCAN), so that a ledger of any size is never held whole. An entry
// written during the scan may be missed or seen twice, as HSCAN allows;
// fn's error stops the scan and is returned. Touches LedgerKey(mchid, day).
func (s *Store) ScanLedger(ctx context.Context, mchid string, day time.Time, fn func(id string, e Entry) error) error {
	key := s.LedgerKey(mchid, day)
	var cursor uint64
	for {
		kvs, next, err := s.rdb.HScan(ctx, key, cursor, "", 1000).Result()
		if err != nil {
			return err
		}
		for i := 0; i+1 < len(kvs); i += 2 {
			var e Entry
			if err := json.Unmarshal([]byte(kvs[i+1]), &e); err != nil {
				return fmt.Errorf("tracking: %s field %s: %w", key, kvs[i], err)
			}
			if err := fn(kvs[i], e); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}
