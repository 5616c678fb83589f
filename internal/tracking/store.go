package tracking

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// DefaultLedgerTTL keeps a day's ledger past the 3 months bills can be
// downloaded for.
const DefaultLedgerTTL = 100 * 24 * time.Hour

// Kind names a pending set.
type Kind string

// The pending sets: orders by out_trade_no, refunds by out_refund_no.
const (
	Order  Kind = "order"
	Refund Kind = "refund"
)

// Config configures a Store; the zero value works.
type Config struct {
	// KeyPrefix starts every key. Default events.DefaultKeyPrefix
	// ("wxpay:").
	KeyPrefix string
	// LedgerTTL is how long a day's ledger lives after its last write.
	// Default DefaultLedgerTTL.
	LedgerTTL time.Duration
}

// Store reads and writes the pending sets and the ledger. It is safe for
// concurrent use. Errors from Redis are returned as they are; every call
// may be repeated.
type Store struct {
	rdb       redis.UniversalClient
	prefix    string
	ledgerTTL time.Duration
}

// NewStore returns a Store on rdb.
func NewStore(rdb redis.UniversalClient, cfg Config) *Store {
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = events.DefaultKeyPrefix
	}
	if cfg.LedgerTTL <= 0 {
		cfg.LedgerTTL = DefaultLedgerTTL
	}
	return &Store{rdb: rdb, prefix: cfg.KeyPrefix, ledgerTTL: cfg.LedgerTTL}
}

// PendingKey returns <prefix>pending:<kind>:<mchid>, the sorted set of
// mchid's orders or refunds not yet final.
func (s *Store) PendingKey(kind Kind, mchid string) string {
	return s.prefix + "pending:" + string(kind) + ":" + mchid
}

// SubMchIDKey returns PendingKey(kind, mchid) + ":sub", the hash that keeps
// the sub_mchid of the pending set's partner-mode members: field
// out_trade_no or out_refund_no, value sub_mchid. The set itself keeps
// only the number, and a partner query needs the sub-merchant too.
func (s *Store) SubMchIDKey(kind Kind, mchid string) string {
	return s.PendingKey(kind, mchid) + ":sub"
}

// LedgerKey returns <prefix>ledger:<mchid>:<YYYYMMDD>, the hash of mchid's
// final payments and refunds on day's China date.
func (s *Store) LedgerKey(mchid string, day time.Time) string {
	return s.prefix + "ledger:" + mchid + ":" + day.In(wxpay.ChinaTime()).Format("20060102")
}

// Item is a member of a pending set.
type Item struct {
	// ID is the out_trade_no or out_refund_no.
	ID string
	// Created is the creation time, to the second (the member's score).
	Created time.Time
	// SubMchID is the sub-merchant of a partner-mode order or refund, as
	// announced; empty in direct mode.
	SubMchID string
}

// AddPending puts id into mchid's pending set of kind, created at created:
// AddPendingItem without a sub_mchid.
func (s *Store) AddPending(ctx context.Context, kind Kind, mchid, id string, created time.Time) error {
	return s.AddPendingItem(ctx, kind, mchid, Item{ID: id, Created: created})
}

// AddPendingItem puts it into mchid's pending set of kind. If it.ID is
// there already it keeps its first creation time, and its first sub_mchid.
// Without a sub_mchid it touches PendingKey(kind, mchid) only; with one it
// first writes the sub_mchid to SubMchIDKey(kind, mchid), then adds the
// member, so that no reader sees the member without it. The two keys may
// live on different Redis Cluster nodes: no command spans them.
func (s *Store) AddPendingItem(ctx context.Context, kind Kind, mchid string, it Item) error {
	if it.ID == "" {
		return errors.New("tracking: a pending item without its out_trade_no or out_refund_no")
	}
	member := redis.Z{Score: float64(it.Created.Unix()), Member: it.ID}
	if it.SubMchID == "" {
		return s.rdb.ZAddNX(ctx, s.PendingKey(kind, mchid), member).Err()
	}
	if err := s.rdb.HSetNX(ctx, s.SubMchIDKey(kind, mchid), it.ID, it.SubMchID).Err(); err != nil {
		return err
	}
	return s.rdb.ZAddNX(ctx, s.PendingKey(kind, mchid), member).Err()
}

// Pending lists mchid's pending orders or refunds created at or before
// before (to the second), oldest first, each with its sub_mchid if it has
// one. Touches PendingKey(kind, mchid), then SubMchIDKey(kind, mchid).
func (s *Store) Pending(ctx context.Context, kind Kind, mchid string, before time.Time) ([]Item, error) {
	zs, err := s.rdb.ZRangeByScoreWithScores(ctx, s.PendingKey(kind, mchid), &redis.ZRangeBy{
		Min: "-inf",
		Max: strconv.FormatInt(before.Unix(), 10),
	}).Result()
	if err != nil || len(zs) == 0 {
		return nil, err
	}
	items := make([]Item, len(zs))
	ids := make([]string, len(zs))
	for i, z := range zs {
		id, _ := z.Member.(string)
		items[i] = Item{ID: id, Created: time.Unix(int64(z.Score), 0)}
		ids[i] = id
	}
	subs, err := s.rdb.HMGet(ctx, s.SubMchIDKey(kind, mchid), ids...).Result()
	if err != nil {
		return nil, err
	}
	for i, v := range subs {
		items[i].SubMchID, _ = v.(string) // nil: no sub_mchid
	}
	return items, nil
}

// RemovePending takes id out of mchid's pending set of kind, and its
// sub_mchid with it: its final state was published, or it is dropped.
// Removing an absent id is not an error. Touches PendingKey(kind, mchid),
// then SubMchIDKey(kind, mchid) (the member goes first, so no reader sees
// it without its sub_mchid).
func (s *Store) RemovePending(ctx context.Context, kind Kind, mchid, id string) error {
	if err := s.rdb.ZRem(ctx, s.PendingKey(kind, mchid), id).Err(); err != nil {
		return err
	}
	return s.rdb.HDel(ctx, s.SubMchIDKey(kind, mchid), id).Err()
}

// Entry is one final payment or refund in the ledger.
type Entry struct {
	OutTradeNo  string `json:"out_trade_no,omitempty"`
	OutRefundNo string `json:"out_refund_no,omitempty"`
	// Amount in fen: a payment's amount.total, a refund's amount.refund.
	Amount int64 `json:"amount"`
	// State is the final state: SUCCESS for a payment; SUCCESS, CLOSED
	// or ABNORMAL for a refund.
	State string `json:"state"`
	// EventID is the id of the envelope that brought it.
	EventID string `json:"event_id"`
}

// pending returns the set e leaves when it is recorded: a refund's
// (OutRefundNo set) or else an order's.
func (e Entry) pending() (Kind, string) {
	if e.OutRefundNo != "" {
		return Refund, e.OutRefundNo
	}
	return Order, e.OutTradeNo
}

// RecordFinal records e under id (the transaction_id or refund_id) in
// mchid's ledger of when's China date, renews that day's expiry, and takes
// e's out_refund_no (or else its out_trade_no) out of the pending set,
// with its sub_mchid. A repeat writes the same state. Touches
// LedgerKey(mchid, when) (the entry and its expiry in one pipeline), then
// the pending set as RemovePending does. The steps are not one
// transaction (the keys may live on different Redis Cluster nodes): each
// is idempotent, and one that fails makes the handler fail and run again;
// an entry left pending by a crash in between is queried by the
// reconciler, whose event is then a duplicate.
func (s *Store) RecordFinal(ctx context.Context, mchid, id string, when time.Time, e Entry) error {
	kind, member := e.pending()
	if id == "" || member == "" {
		return errors.New("tracking: ledger entry without its id, out_trade_no or out_refund_no")
	}
	value, err := json.Marshal(e)
	if err != nil {
		return err
	}
	ledger := s.LedgerKey(mchid, when)
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, ledger, id, value)
		p.Expire(ctx, ledger, s.ledgerTTL)
		return nil
	})
	if err != nil {
		return err
	}
	return s.RemovePending(ctx, kind, mchid, member)
}

// Ledger returns mchid's ledger of day's China date, by transaction_id or
// refund_id; an empty map when there is none. Touches LedgerKey(mchid, day).
func (s *Store) Ledger(ctx context.Context, mchid string, day time.Time) (map[string]Entry, error) {
	key := s.LedgerKey(mchid, day)
	fields, err := s.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return nil, err
	}
	entries := make(map[string]Entry, len(fields))
	for id, v := range fields {
		var e Entry
		if err := json.Unmarshal([]byte(v), &e); err != nil {
			return nil, fmt.Errorf("tracking: %s field %s: %w", key, id, err)
		}
		entries[id] = e
	}
	return entries, nil
}
