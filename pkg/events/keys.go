package events

// DefaultKeyPrefix starts every Redis key of the project: the router's
// done, lock and attempts keys, and the tracker's pending sets and ledger.
const DefaultKeyPrefix = "wxpay:"
