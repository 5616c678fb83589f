package main

import (
	"sync/atomic"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// clock is the one clock of the platform, the merchant clients (so that
// request signatures, answer signatures and notification timestamps
// agree), the ingress and the reconciler.
//
// WeChat makes a day's bill only once the day is over (the fake refuses
// today's bill with INVALID_REQUEST). So while the traffic runs the clock
// reads yesterday, China time, starting at noon: every payment succeeds,
// every refund is applied for and finishes on that day, which is therefore
// the ledger day (the tracker files entries by the China date of their
// success time), the day of the trade bill (payments by success time,
// refunds by application time) and the day the reconciler checks. Noon
// leaves twelve hours before midnight, so no run crosses into the next
// day. For the bill check the clock catches up with the present, the
// morning after as far as the platform is concerned, and that day's bill
// is ready.
type clock struct {
	offset atomic.Int64 // added to time.Now, in nanoseconds
	ledger time.Time    // midnight China time of the ledger day
}

// newClock returns a clock reading noon of the China day before now.
func newClock(now time.Time) *clock {
	c := &clock{ledger: chinaMidnight(now).AddDate(0, 0, -1)}
	c.offset.Store(int64(c.ledger.Add(12 * time.Hour).Sub(now)))
	return c
}

// Now reads the clock.
func (c *clock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// day is the ledger day: midnight China time.
func (c *clock) day() time.Time { return c.ledger }

// catchUp sets the clock to the present, the day after the ledger day.
func (c *clock) catchUp() { c.offset.Store(0) }

// chinaMidnight is midnight, China time, of t's China date.
func chinaMidnight(t time.Time) time.Time {
	y, m, d := t.In(wxpay.ChinaTime()).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, wxpay.ChinaTime())
}
