package events

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// ErrInvalidAnnouncement is wrapped by every error of AnnounceOrder and
// AnnounceRefund that is about their input (a missing or malformed merchant
// id, order or refund number, sub_mchid or create_time). Nothing was
// published; announcing the same input again fails the same way.
var ErrInvalidAnnouncement = errors.New("events: invalid announcement")

// Announcement is the resource of order.created and refund.created: what a
// business system says when it creates an order or a refund, so that the
// worker's tracker puts it in the pending sets and the reconciler follows it
// until WeChat reports its final state (should the notification be lost).
type Announcement struct {
	// OutTradeNo is the merchant's order number. An order needs it. A
	// refund may leave it empty: the reconciler queries a refund by its
	// out_refund_no alone; when given it is kept for consumers.
	OutTradeNo string `json:"out_trade_no,omitempty"`
	// OutRefundNo is the merchant's refund number; only refunds have one.
	OutRefundNo string `json:"out_refund_no,omitempty"`
	// SubMchID is the sub-merchant of an order or refund made in partner
	// (service provider) mode; the reconciler queries and closes with it,
	// and skips a partner merchant's items that lack it. Empty in direct
	// mode.
	SubMchID string `json:"sub_mchid,omitempty"`
	// CreateTime (RFC 3339) is when the order or refund was created; the
	// reconciler leaves an item alone until it is stale and closes unpaid
	// orders by it. AnnounceOrder and AnnounceRefund set it to the current
	// time in China time when it is empty.
	CreateTime string `json:"create_time,omitempty"`
}

// The kinds of announcement: the middle token of their id.
const (
	announceOrder  = "order"
	announceRefund = "refund"
)

// Longest merchant numbers WeChat accepts.
const (
	maxOutTradeNo  = 32
	maxOutRefundNo = 64
)

// AnnounceOrder tells the tracker that merchant mchid created the order
// a.OutTradeNo (a.OutRefundNo must be empty). It publishes, through p, an
// envelope with event_type EventOrderCreated on
// wxpay.<mchid>.order.created, source SourceBusiness and the Announcement
// as its resource, and returns once JetStream acknowledged it
// (Publisher.Publish). Call it when the order is created, before the payer
// can pay: the reconciler only follows what was announced.
//
// The envelope's id is "biz:order:<mchid>:<out_trade_no>" and its dedupe_key
// (also the Nats-Msg-Id) is "event:" followed by that id: both depend only
// on the merchant and the order number, so announcing the same order again
// (a retry after a timeout, a second caller) is the same event. Inside the
// stream's duplicate window JetStream drops it (Published.Duplicate is
// true); later the workers' dedupe does. The first announcement wins, with
// its create_time and sub_mchid.
//
// create_time defaults to the current time in China time, RFC 3339, and
// is also the envelope's create_time. sub_mchid is needed in partner mode,
// where WeChat answers queries only for the sub-merchant.
//
// Errors: input that breaks these rules wraps ErrInvalidAnnouncement and
// nothing is published: mchid must be a valid subject token (ValidMchID),
// out_trade_no at most 32 of the characters WeChat allows (letters, digits,
// _ - | *), sub_mchid, when given, a valid merchant id, and create_time,
// when given, RFC 3339. Publish failures are Publisher.Publish's
// (ErrPublish); the caller may simply announce again.
func AnnounceOrder(ctx context.Context, p *Publisher, mchid string, a Announcement) (Published, error) {
	return announce(ctx, p, announceOrder, mchid, a, time.Now())
}

// AnnounceRefund tells the tracker that merchant mchid created the refund
// a.OutRefundNo, like AnnounceOrder does for an order: event_type
// EventRefundCreated on wxpay.<mchid>.refund.created, id
// "biz:refund:<mchid>:<out_refund_no>", dedupe_key "event:" followed by that
// id, source SourceBusiness, create_time defaulting to now.
//
// out_refund_no is required: at most 64 of the characters WeChat allows
// (letters, digits, _ - | * @). out_trade_no may be empty, since a refund is
// queried by its out_refund_no; when given it is checked like
// AnnounceOrder's. The other rules and errors are AnnounceOrder's.
func AnnounceRefund(ctx context.Context, p *Publisher, mchid string, a Announcement) (Published, error) {
	return announce(ctx, p, announceRefund, mchid, a, time.Now())
}

// announce validates a, builds its envelope and publishes it.
func announce(ctx context.Context, p *Publisher, kind, mchid string, a Announcement, now time.Time) (Published, error) {
	env, err := announcementEnvelope(kind, mchid, a, now)
	if err != nil {
		return Published{}, err
	}
	if p == nil {
		return Published{}, fmt.Errorf("events: announcing %s: no Publisher (build one with NewPublisher)", env.ID)
	}
	return p.Publish(ctx, env)
}

// announcementEnvelope checks a and returns the envelope announcing it.
func announcementEnvelope(kind, mchid string, a Announcement, now time.Time) (Envelope, error) {
	bad := func(format string, args ...any) (Envelope, error) {
		return Envelope{}, fmt.Errorf("%w: %s announcement: "+format, append([]any{ErrInvalidAnnouncement, kind}, args...)...)
	}
	if !ValidMchID(mchid) {
		return bad("merchant id %q is not a valid subject token (check the mchid passed)", mchid)
	}
	eventType, no := EventOrderCreated, a.OutTradeNo
	switch kind {
	case announceOrder:
		if a.OutTradeNo == "" {
			return bad("no out_trade_no")
		}
		if a.OutRefundNo != "" {
			return bad("out_refund_no %q given: an order has none (announce a refund with AnnounceRefund)", a.OutRefundNo)
		}
	case announceRefund:
		if a.OutRefundNo == "" {
			return bad("no out_refund_no")
		}
		if err := checkMerchantNo("out_refund_no", a.OutRefundNo, maxOutRefundNo, "@"); err != nil {
			return bad("%v", err)
		}
		eventType, no = EventRefundCreated, a.OutRefundNo
	}
	if a.OutTradeNo != "" {
		if err := checkMerchantNo("out_trade_no", a.OutTradeNo, maxOutTradeNo, ""); err != nil {
			return bad("%v", err)
		}
	}
	if a.SubMchID != "" && !ValidMchID(a.SubMchID) {
		return bad("sub_mchid %q is not a valid merchant id", a.SubMchID)
	}
	if a.CreateTime == "" {
		a.CreateTime = now.In(wxpay.ChinaTime()).Format(time.RFC3339)
	} else if _, err := time.Parse(time.RFC3339, a.CreateTime); err != nil {
		return bad("create_time %q is not RFC 3339 (for example 2024-03-01T10:00:00+08:00)", a.CreateTime)
	}
	resource, err := marshalJSON(a)
	if err != nil {
		return bad("encoding: %v", err)
	}
	// The merchant numbers cannot contain ':' (checkMerchantNo), so the id
	// names one (kind, mchid, number) and no other.
	id := "biz:" + kind + ":" + mchid + ":" + no
	return Envelope{
		ID:         id,
		DedupeKey:  EventKey(id),
		EventType:  eventType,
		MchID:      mchid,
		Source:     SourceBusiness,
		CreateTime: a.CreateTime,
		ReceivedAt: now,
		Resource:   resource,
	}, nil
}

// checkMerchantNo checks a merchant order or refund number against what
// WeChat accepts: at most max letters, digits and _ - | *, and the
// characters of extra.
func checkMerchantNo(field, v string, max int, extra string) error {
	if len(v) > max {
		return fmt.Errorf("%s %q is longer than %d characters", field, v, max)
	}
	for _, r := range v {
		switch {
		case r >= '0' && r <= '9', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case strings.ContainsRune("_-|*"+extra, r):
		default:
			allowed := "_ - | *"
			if extra != "" {
				allowed += " " + strings.Join(strings.Split(extra, ""), " ")
			}
			return fmt.Errorf("%s %q contains %q, which WeChat does not allow (letters, digits and %s only)", field, v, r, allowed)
		}
	}
	return nil
}
