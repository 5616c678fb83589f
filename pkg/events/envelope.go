package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/wxpay-notify/wxpay-notify/pkg/bufpool"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// ErrMalformedEnvelope is wrapped by every error that says an envelope
// (or the merchant id it is built for) breaks the event contract: a missing dedupe_key, a merchant id that is not a
// subject token, an unknown source, a resource that is not a JSON object.
// It is a permanent fault: publishing or handling the same envelope again
// fails the same way.
var ErrMalformedEnvelope = errors.New("events: malformed envelope")

// The sources of an envelope (its source field).
const (
	// SourceCallback: a verified v3 JSON notification.
	SourceCallback = "callback"
	// SourceCallbackV2: a verified v2 XML notification (pay result, or a
	// refund with req_info). Only these envelopes carry the v2 field, and
	// their id is empty.
	SourceCallbackV2 = "callback-v2"
	// SourceReconciler: a state the reconciler found by querying WeChat.
	SourceReconciler = "reconciler"
	// SourceBusiness marks an announcement by the merchant's own systems
	// (order.created, refund.created: AnnounceOrder, AnnounceRefund), not
	// something WeChat said.
	SourceBusiness = "business"
)

// Resource types and original types this package writes.
const (
	// ResourceTypeV2XML is the resource_type of an envelope mapped from a
	// v2 XML notification (v3 notifications say "encrypt-resource",
	// wxpay.ResourceTypeEncrypted). The resource itself is v3-shaped; the
	// authenticated fields as received are in the envelope's v2 field.
	ResourceTypeV2XML = "v2-xml"
	// OriginalTypeTransaction is the original_type of a payment resource.
	OriginalTypeTransaction = "transaction"
	// OriginalTypeRefund is the original_type of a refund resource.
	OriginalTypeRefund = "refund"
)

// Envelope is the one JSON message body of every event on the WXPAY
// stream, with exactly the documented fields. Build it with FromNotification or
// FromV2 (ingress) or by hand with the key builders (reconciler, business
// systems), and check it with Validate.
type Envelope struct {
	// ID is WeChat's notification id, "rc-…" for reconciler events,
	// "biz:…" for announcements (AnnounceOrder), and empty for v2
	// notifications (which have none).
	ID string `json:"id"`
	// DedupeKey is the business identity and state of the event, built only
	// by TransactionKey, RefundKey, OrderKey and EventKey. It is also the
	// Nats-Msg-Id header of the message.
	DedupeKey string `json:"dedupe_key"`
	// EventType is WeChat's event type (TRANSACTION.SUCCESS) or one of the
	// project's own (EventTransactionClosed, EventBillReady, ...).
	EventType string `json:"event_type"`
	// MchID is the merchant (the service provider in partner mode): the
	// merchant whose keys verified the notification.
	MchID string `json:"mchid"`
	// Source is SourceCallback, SourceCallbackV2, SourceReconciler or
	// SourceBusiness.
	Source string `json:"source"`
	// CreateTime is WeChat's create_time, as received. v2 notifications have
	// none; for them it is ReceivedAt in China time, RFC 3339.
	CreateTime string `json:"create_time"`
	// ReceivedAt is when we received (or, for the reconciler, found) the
	// event; it is encoded in RFC 3339.
	ReceivedAt time.Time `json:"received_at"`
	// Summary is WeChat's summary (支付成功, 退款成功, ...).
	Summary string `json:"summary"`
	// ResourceType is WeChat's resource_type ("encrypt-resource"), or
	// ResourceTypeV2XML for v2 notifications.
	ResourceType string `json:"resource_type"`
	// OriginalType is WeChat's resource.original_type ("transaction",
	// "refund").
	OriginalType string `json:"original_type"`
	// Resource is the decrypted resource: a JSON object in the v3
	// notification's shape (wxpay.Transaction, wxpay.RefundNotice), also for
	// v2 notifications and reconciler findings.
	Resource json.RawMessage `json:"resource"`
	// V2 holds the authenticated fields of a v2 notification as received,
	// and only those (wxpay.V2Notification.Authenticated): for a pay result
	// the fields its sign covers (all but sign, empty ones left out); for a
	// refund the decrypted req_info fields, without any outer field (the
	// outer appid, mch_id, sub_mch_id, ... of a refund notice are not
	// authenticated). It is set only for SourceCallbackV2.
	V2 map[string]string `json:"v2,omitempty"`
}

// TransactionKey returns the dedupe key of a payment that happened:
// transaction:<transaction_id>:SUCCESS. It is the same when a query says
// REFUND (the payment happened, and was refunded later).
func TransactionKey(transactionID string) string {
	return "transaction:" + transactionID + ":" + wxpay.TradeStateSuccess
}

// RefundKey returns the dedupe key of a refund state:
// refund:<refund_id>:<STATUS>. The status is upper-cased and CLOSE is
// normalised to CLOSED (wxpay.NormalizeRefundStatus), so v3 notices, v2
// notices (after mapping CHANGE and REFUNDCLOSE) and query results agree.
func RefundKey(refundID, status string) string {
	return "refund:" + refundID + ":" + wxpay.NormalizeRefundStatus(strings.ToUpper(status))
}

// OrderKey returns the dedupe key of the end of an unpaid order:
// order:<mchid>:<out_trade_no>:<STATE>, with STATE upper-cased (CLOSED,
// REVOKED, PAYERROR).
func OrderKey(mchid, outTradeNo, state string) string {
	return "order:" + mchid + ":" + outTradeNo + ":" + strings.ToUpper(state)
}

// EventKey returns the dedupe key of an event that has no business key:
// event:<id>, where id is WeChat's notification id or the reconciler's
// "rc-…" id.
func EventKey(id string) string {
	return "event:" + id
}

// resourceIdentity is the part of a v3 resource the dedupe key needs.
type resourceIdentity struct {
	TransactionID string `json:"transaction_id"`
	TradeState    string `json:"trade_state"`
	RefundID      string `json:"refund_id"`
	RefundStatus  string `json:"refund_status"`
}

// FromNotification builds the envelope of a verified, decrypted v3
// notification for merchant mchid (source SourceCallback).
//
// The dedupe key is TransactionKey for a payment resource (event type
// TRANSACTION.* or original_type transaction) whose trade_state is SUCCESS
// or REFUND, RefundKey(refund_id, refund_status) for a refund resource
// (event type REFUND.* or original_type refund), and EventKey(id) for
// anything else, including a payment or refund resource that lacks its
// identity fields. The resource is kept as decrypted.
//
// An invalid mchid wraps ErrMalformedEnvelope; a notification without id
// or event type, or whose resource is not a JSON object, wraps
// wxpay.ErrMalformed.
func FromNotification(mchid string, n *wxpay.Notification, receivedAt time.Time) (Envelope, error) {
	if !ValidMchID(mchid) {
		return Envelope{}, fmt.Errorf("%w: merchant id %q is not a valid subject token", ErrMalformedEnvelope, mchid)
	}
	if n == nil {
		return Envelope{}, fmt.Errorf("%w: no notification", wxpay.ErrMalformed)
	}
	if n.ID == "" || n.EventType == "" {
		return Envelope{}, fmt.Errorf("%w: notification has no id or event_type", wxpay.ErrMalformed)
	}
	if !validEventType(n.EventType) {
		return Envelope{}, fmt.Errorf("%w: notification %s: event_type %q cannot be a subject", wxpay.ErrMalformed, n.ID, n.EventType)
	}
	// One pass: Unmarshal checks the whole resource is valid JSON before it
	// decodes; a leading '{' then makes it an object.
	var idn resourceIdentity
	err := json.Unmarshal(n.Plaintext, &idn)
	var syntax *json.SyntaxError
	if !startsObject(n.Plaintext) || errors.As(err, &syntax) {
		return Envelope{}, fmt.Errorf("%w: notification %s: resource is not a JSON object", wxpay.ErrMalformed, n.ID)
	}
	if err != nil {
		// A field of the wrong type (a number for refund_id, say): no
		// business key can be trusted, so dedupe on the notification id.
		idn = resourceIdentity{}
	}
	return Envelope{
		ID:           n.ID,
		DedupeKey:    notificationKey(n, idn),
		EventType:    n.EventType,
		MchID:        mchid,
		Source:       SourceCallback,
		CreateTime:   n.CreateTime,
		ReceivedAt:   receivedAt,
		Summary:      n.Summary,
		ResourceType: n.ResourceType,
		OriginalType: n.Resource.OriginalType,
		Resource:     n.Plaintext,
	}, nil
}

// notificationKey picks the dedupe key of a v3 notification.
func notificationKey(n *wxpay.Notification, idn resourceIdentity) string {
	eventType := strings.ToUpper(n.EventType)
	switch {
	case strings.HasPrefix(eventType, "REFUND."), n.Resource.OriginalType == OriginalTypeRefund:
		if idn.RefundID != "" && idn.RefundStatus != "" {
			return RefundKey(idn.RefundID, idn.RefundStatus)
		}
	case strings.HasPrefix(eventType, "TRANSACTION."), n.Resource.OriginalType == OriginalTypeTransaction:
		paid := idn.TradeState == wxpay.TradeStateSuccess || idn.TradeState == wxpay.TradeStateRefund
		if paid && idn.TransactionID != "" {
			return TransactionKey(idn.TransactionID)
		}
	}
	return EventKey(n.ID)
}

// Summaries of envelopes mapped from v2 notifications (v3 notifications
// carry WeChat's own summary).
const (
	summaryPaid           = "支付成功"
	summaryRefundSuccess  = "退款成功"
	summaryRefundAbnormal = "退款异常"
	summaryRefundClosed   = "退款关闭"
)

// FromV2 maps a verified v2 XML notification for merchant mchid onto the
// envelope v3 handlers already understand (source SourceCallbackV2, id
// empty, resource_type ResourceTypeV2XML, create_time = receivedAt in China
// time, since v2 notifications carry no creation time). The dedupe key is
// the one the v3 form of the same event gets.
//
// A pay result becomes TRANSACTION.SUCCESS with the resource
// wxpay.V2Notification.Transaction returns; a refund becomes REFUND.SUCCESS,
// REFUND.ABNORMAL (v2 CHANGE) or REFUND.CLOSED (v2 REFUNDCLOSE) with the
// resource wxpay.V2Notification.Refund returns. Both are built for mchid
// from the authenticated fields only, and so is the v2 field
// (wxpay.V2Notification.Authenticated): the fields the sign covers for a
// pay result, the decrypted req_info for a refund. A refund notice's outer
// fields are not authenticated, so nothing of them reaches the resource or
// the v2 field.
//
// Errors: an invalid mchid wraps ErrMalformedEnvelope; a notification those
// methods refuse (a missing identity field, an unknown refund status, an
// amount that is not a non-negative integer, a time in the wrong form, a
// req_info mch_id other than mchid) wraps wxpay.ErrMalformed.
func FromV2(mchid string, v *wxpay.V2Notification, receivedAt time.Time) (Envelope, error) {
	if !ValidMchID(mchid) {
		return Envelope{}, fmt.Errorf("%w: merchant id %q is not a valid subject token", ErrMalformedEnvelope, mchid)
	}
	if v == nil {
		return Envelope{}, fmt.Errorf("%w: no v2 notification", wxpay.ErrMalformed)
	}
	env := Envelope{
		MchID:        mchid,
		Source:       SourceCallbackV2,
		CreateTime:   receivedAt.In(wxpay.ChinaTime()).Format(time.RFC3339),
		ReceivedAt:   receivedAt,
		ResourceType: ResourceTypeV2XML,
	}
	var (
		resource any
		err      error
	)
	switch v.Kind {
	case wxpay.V2KindPay:
		env.V2 = v.Authenticated()
		var t *wxpay.Transaction
		t, err = v.Transaction(mchid)
		if err == nil {
			resource = t
			env.DedupeKey = TransactionKey(t.TransactionID)
			env.EventType = wxpay.EventTransactionSuccess
			env.Summary = summaryPaid
			env.OriginalType = OriginalTypeTransaction
		}
	case wxpay.V2KindRefund:
		env.V2 = v.Authenticated()
		var r *wxpay.RefundNotice
		r, err = v.Refund(mchid)
		if err == nil {
			resource = r
			env.DedupeKey = RefundKey(r.RefundID, r.RefundStatus)
			env.OriginalType = OriginalTypeRefund
			switch r.RefundStatus {
			case wxpay.RefundStatusSuccess:
				env.EventType, env.Summary = wxpay.EventRefundSuccess, summaryRefundSuccess
			case wxpay.RefundStatusAbnormal:
				env.EventType, env.Summary = wxpay.EventRefundAbnormal, summaryRefundAbnormal
			default:
				env.EventType, env.Summary = wxpay.EventRefundClosed, summaryRefundClosed
			}
		}
	default:
		err = fmt.Errorf("%w: unknown v2 notification kind %q", wxpay.ErrMalformed, v.Kind)
	}
	if err != nil {
		return Envelope{}, err
	}
	if env.Resource, err = marshalJSON(resource); err != nil {
		return Envelope{}, fmt.Errorf("%w: encoding the v2 resource: %v", wxpay.ErrMalformed, err)
	}
	return env, nil
}

// Validate checks that e keeps the envelope contract, so that consumers
// can rely on it: an id (or, for SourceCallbackV2, the v2 fields and no
// id), a dedupe_key without control characters, an event_type and mchid
// that make a valid subject, a known source, and a resource that is a JSON
// object. Every error wraps ErrMalformedEnvelope.
func (e Envelope) Validate() error { return e.validate(true) }

// errResourceNotObject is Validate's answer for a resource that is not one
// JSON object.
var errResourceNotObject = fmt.Errorf("%w: resource is not a JSON object", ErrMalformedEnvelope)

// validate is Validate; with resourceSyntax false the resource's JSON
// syntax is left to the caller (Publish has the encoder check it while it
// copies it, instead of scanning it twice).
func (e Envelope) validate(resourceSyntax bool) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrMalformedEnvelope}, args...)...)
	}
	switch e.Source {
	case SourceCallbackV2:
		if len(e.V2) == 0 {
			return bad("source %s without v2 fields", e.Source)
		}
	case SourceCallback, SourceReconciler, SourceBusiness:
		if e.ID == "" {
			return bad("no id")
		}
		if e.V2 != nil {
			return bad("v2 fields on a %s envelope", e.Source)
		}
	case "":
		return bad("no source")
	default:
		return bad("unknown source %q", e.Source)
	}
	if e.DedupeKey == "" {
		return bad("no dedupe_key")
	}
	if strings.ContainsFunc(e.DedupeKey, unicode.IsControl) {
		return bad("dedupe_key contains control characters")
	}
	if !ValidMchID(e.MchID) {
		return bad("mchid %q is not a valid subject token", e.MchID)
	}
	if !validEventType(e.EventType) {
		return bad("event_type %q is not a valid subject suffix", e.EventType)
	}
	if !startsObject(e.Resource) || resourceSyntax && !json.Valid(e.Resource) {
		return errResourceNotObject
	}
	return nil
}

// startsObject reports whether the first non-space byte of b opens an
// object: with validity checked elsewhere, b is then a JSON object.
func startsObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// marshalJSON encodes v without escaping <, > and & (attach and product
// descriptions stay readable), and without the Encoder's newline.
func marshalJSON(v any) ([]byte, error) {
	return encodeJSON(new(bytes.Buffer), v)
}

// encodeJSON is marshalJSON into buf, which must be empty; the result
// aliases buf.
func encodeJSON(buf *bytes.Buffer, v any) ([]byte, error) {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// buffers holds Publish's encoding buffers: one envelope is about 1.5 KB.
var buffers = bufpool.New(4<<10, 16<<10)
