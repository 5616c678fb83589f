// Package tracking is the tracker's state in Redis: what the reconciler
// still has to look at, and what reached a final state, per merchant. The
// tracker handler (internal/handlers) writes it from events; the reconciler
// reads it and removes what it settled. Both go through one Store, so the
// keys and values below are built in one place.
//
// # Pending sets
//
// <prefix>pending:order:<mchid> and <prefix>pending:refund:<mchid> are
// sorted sets of the orders and refunds announced (order.created,
// refund.created) but not yet final: member out_trade_no or out_refund_no,
// score the creation time in unix seconds. A repeated announcement keeps the
// first score. A member leaves its set when its final state is recorded or
// published, or when it is dropped; nothing else removes it.
//
// A partner-mode (service provider) order or refund is announced with its
// sub_mchid, which the reconciler's queries need. The set's members stay
// the plain numbers; the sub_mchid is kept next to the set, in the hash
// <prefix>pending:order:<mchid>:sub (or refund): field out_trade_no or
// out_refund_no, value sub_mchid. It is written just before the member
// and removed just after it, so a reader never sees a member without it.
//
// # Ledger
//
// <prefix>ledger:<mchid>:<YYYYMMDD> is a hash of the final payments and
// refunds of one China date (the date of the success time): field
// transaction_id or refund_id, value an Entry as JSON
// {"out_trade_no" or "out_refund_no", "amount", "state", "event_id"}. Each
// write renews the day's expiry (Config.LedgerTTL, default 100 days, past
// the 3 months bills can be downloaded for). Bill reconciliation matches a
// day's bill against Ledger.
//
// # Keys and Redis Cluster
//
// The prefix is Config.KeyPrefix, default "wxpay:" (the worker's
// REDIS_KEY_PREFIX). PendingKey, SubMchIDKey and LedgerKey name the keys.
// No command and no transaction spans two keys, so every key may live on
// a different Redis Cluster node and keeps the name above (no hash tags).
// Calls that write several keys (RecordFinal, RemovePending,
// AddPendingItem with a sub_mchid) write them one after the other, in an
// order that no reader can misread; each step is idempotent, and a caller
// that fails half-way simply runs again.
//
// Redis must not evict these keys: run it with noeviction (or volatile-*
// with room to spare).
package tracking
