package wxpaytest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// NotifyKind says what a notification of the platform reports.
type NotifyKind string

const (
	// NotifyPayment is TRANSACTION.SUCCESS, sent by Pay.
	NotifyPayment NotifyKind = "payment"
	// NotifyRefund is REFUND.SUCCESS, REFUND.ABNORMAL or REFUND.CLOSED,
	// sent by CompleteRefund, FailRefund and CloseRefund.
	NotifyRefund NotifyKind = "refund"
)

// AutoNotification is a notification the platform is about to send, as
// the fault policy sees it.
type AutoNotification struct {
	Kind NotifyKind
	// EventType is the v3 event (TRANSACTION.SUCCESS, REFUND.SUCCESS, …),
	// also for a notification sent in the v2 form.
	EventType string
	// ID is the v3 notification id every copy carries (a v2 body has
	// none).
	ID string
	// Seq numbers the platform's notifications from 1, in the order of
	// the state changes.
	Seq int
	// MchID is the merchant, or the service provider (sp_mchid) in partner
	// mode; SubMchID is the sub-merchant in partner mode.
	MchID       string
	SubMchID    string
	OutTradeNo  string
	OutRefundNo string // refunds only
	// URL is where the notification goes: the notify_url of the order (or
	// of the refund), else AutoNotifyConfig.URL.
	URL string
}

// NotifyFault is what the fault policy decides for one notification. The
// zero value sends it normally: at once, once, in v3 JSON.
type NotifyFault struct {
	// Drop never sends the notification (WeChat lost it); the other
	// fields are then ignored.
	Drop bool
	// Delay holds back the first attempt by this much platform time,
	// scaled by the time scale like the retry schedule.
	Delay time.Duration
	// Duplicates sends that many extra copies, each with the same body
	// (the same notification id) and each delivered with the full retry
	// schedule. They follow the first delivery once it has ended, unless
	// Concurrent is set.
	Duplicates int
	// Concurrent sends the duplicates at the same time as the first
	// delivery, so that they race each other at the receiver.
	Concurrent bool
	// V2 sends the legacy API v2 XML form, signed or encrypted with the
	// merchant's API v2 key, instead of v3 JSON: what arrives for a refund
	// made in the merchant console, or for merchants still on API v2.
	V2 bool
	// TimestampSkew signs the first attempt of each copy with a
	// Wechatpay-Timestamp this far from the platform's clock (negative: in
	// the past), as a platform or receiver with a wrong clock sees it. The
	// re-sends of the retry schedule are signed when they are sent, as
	// WeChat signs every attempt. Ignored for V2 (a v2 body has no
	// timestamp header).
	TimestampSkew time.Duration
}

// AutoNotifyConfig configures the notifications the platform sends by
// itself.
type AutoNotifyConfig struct {
	// URL receives the notifications of orders and refunds that carry no
	// notify_url (CreateOrder without NotifyURL, a refund created without
	// notify_url): the address configured on the merchant platform.
	URL string
	// Fault, when set, decides the fault of each notification; it runs in
	// the goroutine that changed the state, before anything is sent.
	Fault func(n AutoNotification) NotifyFault
	// TimeScale multiplies the retry schedule and the delays; 0 means
	// Options.TimeScale.
	TimeScale float64
	// Client posts the notifications (a TLS receiver's client, say); its
	// Timeout defaults to DeliveryTimeout. Default: a client of the
	// server's own, whose connections Close shuts.
	Client *http.Client
}

// NotifyCounts counts the notifications of one kind. Every delivery (a
// notification that is not dropped, and each of its duplicates) ends in
// exactly one of Acknowledged, GaveUp and Canceled, so Sent minus those
// three is what is still in flight.
type NotifyCounts struct {
	// Notifications counts the state changes that called for one.
	Notifications int
	// Dropped counts those the policy dropped: never sent.
	Dropped int
	// Delayed counts those sent with a delay.
	Delayed int
	// Duplicated counts the extra copies.
	Duplicated int
	// V2 counts those sent in the v2 XML form.
	V2 int
	// Sent counts the deliveries handed to the background: each
	// notification that is not dropped, and each duplicate.
	Sent int
	// Attempts counts the HTTP posts, re-sends included.
	Attempts int
	// Acknowledged counts the deliveries the receiver acknowledged.
	Acknowledged int
	// GaveUp counts the deliveries whose retry schedule ran out.
	GaveUp int
	// Canceled counts the deliveries Close stopped, or that came after it.
	Canceled int
	// Errors counts the notifications that could not be sent at all (no
	// URL, no merchant, no API v2 key); WaitNotifications reports them.
	Errors int
}

// NotifyStats are the counters of the platform's own notifications.
type NotifyStats struct {
	Payment NotifyCounts
	Refund  NotifyCounts
}

// Total adds up the counters of both kinds.
func (s NotifyStats) Total() NotifyCounts {
	p, r := s.Payment, s.Refund
	return NotifyCounts{
		Notifications: p.Notifications + r.Notifications, Dropped: p.Dropped + r.Dropped,
		Delayed: p.Delayed + r.Delayed, Duplicated: p.Duplicated + r.Duplicated, V2: p.V2 + r.V2,
		Sent: p.Sent + r.Sent, Attempts: p.Attempts + r.Attempts, Acknowledged: p.Acknowledged + r.Acknowledged,
		GaveUp: p.GaveUp + r.GaveUp, Canceled: p.Canceled + r.Canceled, Errors: p.Errors + r.Errors,
	}
}

// notifier runs the platform's own notifications in the background.
type notifier struct {
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	on     bool
	cfg    AutoNotifyConfig
	client *http.Client
	// own is the transport of the default client, closed by Close so that
	// no kept-alive connection outlives the server.
	own    *http.Transport
	closed bool
	seq    int
	// active counts the background goroutines; idle is closed whenever it
	// is zero.
	active int
	idle   chan struct{}
	stats  NotifyStats
	errs   []error
}

func newNotifier() *notifier {
	ctx, cancel := context.WithCancel(context.Background())
	idle := make(chan struct{})
	close(idle)
	return &notifier{ctx: ctx, cancel: cancel, idle: idle}
}

// AutoNotify makes the platform send the notification of every state
// change it makes from now on, the way WeChat does: Pay sends
// TRANSACTION.SUCCESS, CompleteRefund, FailRefund and CloseRefund send
// REFUND.SUCCESS, REFUND.ABNORMAL and REFUND.CLOSED, each in the
// background with WeChat's retry schedule (as Deliver), to the notify_url
// of the order or refund, else cfg.URL. Partner orders notify in the
// partner's shape (sp_mchid and sub_mchid). cfg.Fault puts faults in on
// purpose. Calling it again replaces the configuration for the
// notifications that follow; those under way keep theirs.
func (s *Server) AutoNotify(cfg AutoNotifyConfig) {
	nt := s.notify
	nt.mu.Lock()
	defer nt.mu.Unlock()
	nt.on, nt.cfg = true, cfg
	if cfg.TimeScale <= 0 {
		nt.cfg.TimeScale = s.opts.TimeScale
	}
	if cfg.Client != nil {
		c := *cfg.Client
		if c.Timeout == 0 {
			c.Timeout = DeliveryTimeout
		}
		nt.client = &c
		return
	}
	if nt.own == nil {
		nt.own = http.DefaultTransport.(*http.Transport).Clone()
	}
	nt.client = &http.Client{Transport: nt.own, Timeout: DeliveryTimeout}
}

// NotifyStats returns the counters of the platform's own notifications.
func (s *Server) NotifyStats() NotifyStats {
	nt := s.notify
	nt.mu.Lock()
	defer nt.mu.Unlock()
	return nt.stats
}

// WaitNotifications waits until every notification the platform has
// started sending is delivered, given up or canceled (a delayed one is
// waited for too). It returns ctx's error if ctx ends first; otherwise the
// errors of the notifications that could not be sent at all, joined, or
// nil.
func (s *Server) WaitNotifications(ctx context.Context) error {
	nt := s.notify
	nt.mu.Lock()
	idle := nt.idle
	nt.mu.Unlock()
	select {
	case <-idle:
	case <-ctx.Done():
		return ctx.Err()
	}
	nt.mu.Lock()
	defer nt.mu.Unlock()
	return errors.Join(nt.errs...)
}

// stop cancels every delivery and waits for the goroutines to return.
func (nt *notifier) stop() {
	nt.mu.Lock()
	nt.closed = true
	nt.cancel()
	idle := nt.idle
	nt.mu.Unlock()
	<-idle
	nt.mu.Lock()
	own := nt.own
	nt.mu.Unlock()
	if own != nil {
		own.CloseIdleConnections()
	}
}

// startLocked counts a goroutine about to start.
func (nt *notifier) startLocked() {
	if nt.active == 0 {
		nt.idle = make(chan struct{})
	}
	nt.active++
}

func (nt *notifier) finish() {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	nt.active--
	if nt.active == 0 {
		close(nt.idle)
	}
}

// count changes the counters of kind under the lock.
func (nt *notifier) count(kind NotifyKind, f func(c *NotifyCounts)) {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	nt.countLocked(kind, f)
}

func (nt *notifier) countLocked(kind NotifyKind, f func(c *NotifyCounts)) {
	if kind == NotifyRefund {
		f(&nt.stats.Refund)
	} else {
		f(&nt.stats.Payment)
	}
}

func (nt *notifier) fail(kind NotifyKind, err error) {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	nt.countLocked(kind, func(c *NotifyCounts) { c.Errors++ })
	nt.errs = append(nt.errs, err)
}

// autoNotifyPayment sends the TRANSACTION.SUCCESS notification of a
// just-paid order, when AutoNotify is on.
func (s *Server) autoNotifyPayment(o Order) {
	n := AutoNotification{Kind: NotifyPayment, EventType: wxpay.EventTransactionSuccess, MchID: o.MchID,
		SubMchID: o.SubMchID, OutTradeNo: o.OutTradeNo, URL: o.NotifyURL}
	s.autoNotify(n, func(id string, v2 bool) (*Notification, error) {
		if v2 {
			return s.v2PaymentNotification(o)
		}
		return s.PaymentNotification(o.OutTradeNo, NotificationOptions{ID: id})
	})
}

// autoNotifyRefund sends the REFUND.* notification of a just-finished
// refund, when AutoNotify is on.
func (s *Server) autoNotifyRefund(r RefundRecord) {
	n := AutoNotification{Kind: NotifyRefund, EventType: refundEvents[r.Status], MchID: r.MchID,
		SubMchID: r.SubMchID, OutTradeNo: r.OutTradeNo, OutRefundNo: r.OutRefundNo, URL: r.NotifyURL}
	s.autoNotify(n, func(id string, v2 bool) (*Notification, error) {
		if v2 {
			return s.v2RefundNotification(r)
		}
		return s.RefundNotification(r.OutRefundNo, NotificationOptions{ID: id})
	})
}

// autoNotify asks the policy, builds the notification and hands its
// deliveries to the background.
func (s *Server) autoNotify(an AutoNotification, build func(id string, v2 bool) (*Notification, error)) {
	nt := s.notify
	nt.mu.Lock()
	if !nt.on {
		nt.mu.Unlock()
		return
	}
	cfg, client := nt.cfg, nt.client
	nt.seq++
	an.Seq = nt.seq
	nt.countLocked(an.Kind, func(c *NotifyCounts) { c.Notifications++ })
	nt.mu.Unlock()

	if an.URL == "" {
		an.URL = cfg.URL
	}
	an.ID = uuidLike()
	var f NotifyFault
	if cfg.Fault != nil {
		f = cfg.Fault(an)
	}
	if f.Drop {
		nt.count(an.Kind, func(c *NotifyCounts) { c.Dropped++ })
		return
	}
	what := "order " + an.OutTradeNo
	if an.Kind == NotifyRefund {
		what = "refund " + an.OutRefundNo
	}
	if an.URL == "" {
		nt.fail(an.Kind, fmt.Errorf("wxpaytest: the %s notification of %s has nowhere to go: give a notify_url or set AutoNotifyConfig.URL", an.EventType, what))
		return
	}
	n, err := build(an.ID, f.V2)
	if err != nil {
		nt.fail(an.Kind, fmt.Errorf("wxpaytest: the %s notification of %s could not be built: %w", an.EventType, what, err))
		return
	}
	copies := 1 + max(f.Duplicates, 0)

	nt.mu.Lock()
	defer nt.mu.Unlock()
	nt.countLocked(an.Kind, func(c *NotifyCounts) {
		c.Sent += copies
		c.Duplicated += copies - 1
		if f.Delay > 0 {
			c.Delayed++
		}
		if f.V2 {
			c.V2++
		}
		if nt.closed {
			c.Canceled += copies
		}
	})
	if nt.closed {
		return
	}
	nt.startLocked()
	go func() {
		defer nt.finish()
		s.sendCopies(nt, client, cfg.TimeScale, an, n, f, copies)
	}()
}

// sendCopies waits out the delay, then delivers the copies of n: all at
// once when the fault says Concurrent, else one after the other.
func (s *Server) sendCopies(nt *notifier, client *http.Client, scale float64, an AutoNotification, n *Notification, f NotifyFault, copies int) {
	if f.Delay > 0 {
		t := time.NewTimer(time.Duration(float64(f.Delay) * scale))
		select {
		case <-nt.ctx.Done():
			t.Stop()
			nt.count(an.Kind, func(c *NotifyCounts) { c.Canceled += copies })
			return
		case <-t.C:
		}
	}
	if f.Concurrent && copies > 1 {
		var wg sync.WaitGroup
		for range copies {
			wg.Go(func() { s.deliverCopy(nt, client, scale, an, n, f.TimestampSkew) })
		}
		wg.Wait()
		return
	}
	for i := range copies {
		if nt.ctx.Err() != nil {
			nt.count(an.Kind, func(c *NotifyCounts) { c.Canceled += copies - i })
			return
		}
		s.deliverCopy(nt, client, scale, an, n, f.TimestampSkew)
	}
}

// deliverCopy delivers one copy of n, signed anew (the first attempt with
// its timestamp skew off the platform's clock), and counts the outcome.
func (s *Server) deliverCopy(nt *notifier, client *http.Client, scale float64, an AutoNotification, n *Notification, skew time.Duration) {
	c := *n
	c.Header = s.notificationHeaders(&c)
	if skew != 0 && !c.v2 {
		c.Header = s.notificationHeadersAt(&c, s.now().Add(skew))
	}
	_, err := s.deliver(nt.ctx, client, an.URL, &c, scale, func(Attempt) {
		nt.count(an.Kind, func(c *NotifyCounts) { c.Attempts++ })
	})
	nt.count(an.Kind, func(c *NotifyCounts) {
		switch {
		case err == nil:
			c.Acknowledged++
		case errors.Is(err, ErrNotDelivered):
			c.GaveUp++
		default:
			c.Canceled++
		}
	})
}

var refundEvents = map[string]string{
	wxpay.RefundStatusSuccess:  wxpay.EventRefundSuccess,
	wxpay.RefundStatusAbnormal: wxpay.EventRefundAbnormal,
	wxpay.RefundStatusClosed:   wxpay.EventRefundClosed,
}

// v2RefundStatuses are the v2 spellings of the final refund states.
var v2RefundStatuses = map[string]string{
	wxpay.RefundStatusSuccess:  "SUCCESS",
	wxpay.RefundStatusAbnormal: "CHANGE",
	wxpay.RefundStatusClosed:   "REFUNDCLOSE",
}

// v2PaymentNotification builds the API v2 pay-result notification of a
// paid order, MD5-signed with the merchant's API v2 key as v2 merchants
// receive it.
func (s *Server) v2PaymentNotification(o Order) (*Notification, error) {
	m := s.Merchant(o.MchID)
	if m == nil {
		return nil, fmt.Errorf("wxpaytest: no merchant %s", o.MchID)
	}
	if m.APIv2Key == "" {
		return nil, fmt.Errorf("wxpaytest: merchant %s has no API v2 key to sign a v2 notification", m.MchID)
	}
	total := strconv.FormatInt(o.Total, 10)
	f := map[string]string{
		"appid": o.AppID, "mch_id": o.MchID, "openid": o.Payer.OpenID, "is_subscribe": "N",
		"trade_type": o.TradeType, "bank_type": "OTHERS", "total_fee": total, "cash_fee": total, "fee_type": "CNY",
		"transaction_id": o.TransactionID, "out_trade_no": o.OutTradeNo,
		"time_end": o.SuccessTime.In(wxpay.ChinaTime()).Format("20060102150405"),
	}
	if o.Partner() {
		f["sub_mch_id"], f["openid"] = o.SubMchID, o.Payer.SpOpenID
		setIf(f, "sub_appid", o.SubAppID)
		setIf(f, "sub_openid", o.Payer.SubOpenID)
	}
	setIf(f, "attach", o.Attach)
	body := V2PayNotification(f, m.APIv2Key, wxpay.V2SignMD5)
	return s.v2Notification(wxpay.EventTransactionSuccess, body), nil
}

// v2RefundNotification builds the API v2 refund notification of a
// finished refund, its req_info encrypted with the merchant's API v2 key,
// as a refund made in the merchant console arrives.
func (s *Server) v2RefundNotification(r RefundRecord) (*Notification, error) {
	m := s.Merchant(r.MchID)
	if m == nil {
		return nil, fmt.Errorf("wxpaytest: no merchant %s", r.MchID)
	}
	if m.APIv2Key == "" {
		return nil, fmt.Errorf("wxpaytest: merchant %s has no API v2 key to encrypt a v2 refund notification", m.MchID)
	}
	o, _ := s.Order(r.OutTradeNo)
	outer := map[string]string{"appid": o.AppID, "mch_id": r.MchID, "nonce_str": v2Nonce()}
	if r.SubMchID != "" {
		outer["sub_mch_id"] = r.SubMchID
		setIf(outer, "sub_appid", o.SubAppID)
	}
	total, refund := strconv.FormatInt(r.Total, 10), strconv.FormatInt(r.Amount, 10)
	info := map[string]string{
		"transaction_id": r.TransactionID, "out_trade_no": r.OutTradeNo, "refund_id": r.RefundID,
		"out_refund_no": r.OutRefundNo, "total_fee": total, "settlement_total_fee": total, "refund_fee": refund,
		"settlement_refund_fee": refund, "refund_status": v2RefundStatuses[r.Status], "refund_recv_accout": "支付用户零钱",
		"refund_account": "REFUND_SOURCE_UNSETTLED_FUNDS", "refund_request_source": "VENDOR_PLATFORM",
	}
	if !r.SuccessTime.IsZero() {
		info["success_time"] = r.SuccessTime.In(wxpay.ChinaTime()).Format("2006-01-02 15:04:05")
	}
	body := V2RefundNotification(outer, info, m.APIv2Key)
	return s.v2Notification(refundEvents[r.Status], body), nil
}

func (s *Server) v2Notification(eventType string, body []byte) *Notification {
	n := &Notification{Body: body, EventType: eventType, v2: true}
	n.Header = s.notificationHeaders(n)
	return n
}

func setIf(m map[string]string, k, v string) {
	if v != "" {
		m[k] = v
	}
}
