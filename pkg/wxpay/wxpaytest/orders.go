package wxpaytest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// Order is an order on the fake platform, as tests see it.
type Order struct {
	// MchID is the merchant that placed the order: the merchant in direct
	// mode, the service provider (sp_mchid) in partner mode.
	MchID string
	// SubMchID and SubAppID are set for partner orders.
	SubMchID      string
	AppID         string
	SubAppID      string
	OutTradeNo    string
	TransactionID string
	TradeType     string
	TradeState    string
	Description   string
	Attach        string
	NotifyURL     string
	Total         int64
	Currency      string
	Payer         wxpay.Payer
	PrepayID      string
	CreateTime    time.Time
	SuccessTime   time.Time
}

// Partner reports whether the order was placed in partner mode.
func (o Order) Partner() bool { return o.SubMchID != "" }

// Transaction is the order as the query API and the TRANSACTION.SUCCESS
// notification show it.
func (o Order) Transaction() wxpay.Transaction {
	tx := wxpay.Transaction{OutTradeNo: o.OutTradeNo, TradeType: o.TradeType, TradeState: o.TradeState,
		TradeStateDesc: tradeStateDesc[o.TradeState], Attach: o.Attach,
		Amount: &wxpay.TransactionAmount{Total: o.Total, Currency: o.Currency}}
	if o.Partner() {
		tx.SpAppID, tx.SpMchID, tx.SubAppID, tx.SubMchID = o.AppID, o.MchID, o.SubAppID, o.SubMchID
	} else {
		tx.AppID, tx.MchID = o.AppID, o.MchID
	}
	if o.TransactionID != "" { // paid at some point
		tx.TransactionID = o.TransactionID
		tx.BankType = "OTHERS"
		p := o.Payer
		tx.Payer = &p
		tx.Amount.PayerTotal, tx.Amount.PayerCurrency = o.Total, o.Currency
	}
	if !o.SuccessTime.IsZero() {
		tx.SuccessTime = o.SuccessTime.In(wxpay.ChinaTime()).Format(time.RFC3339)
	}
	return tx
}

var tradeStateDesc = map[string]string{
	wxpay.TradeStateSuccess:    "支付成功",
	wxpay.TradeStateRefund:     "转入退款",
	wxpay.TradeStateNotPay:     "未支付",
	wxpay.TradeStateClosed:     "已关闭",
	wxpay.TradeStateRevoked:    "已撤销",
	wxpay.TradeStateUserPaying: "用户支付中",
	wxpay.TradeStatePayError:   "支付失败",
}

// RefundRecord is a refund on the fake platform.
type RefundRecord struct {
	MchID         string
	SubMchID      string
	OutTradeNo    string
	TransactionID string
	OutRefundNo   string
	RefundID      string
	Reason        string
	NotifyURL     string
	Status        string
	// Amount is the refund, Total the order's amount (fen).
	Amount      int64
	Total       int64
	Currency    string
	CreateTime  time.Time
	SuccessTime time.Time
}

// Refund is the refund as the refund APIs answer it.
func (r RefundRecord) Refund() wxpay.Refund {
	out := wxpay.Refund{RefundID: r.RefundID, OutRefundNo: r.OutRefundNo, TransactionID: r.TransactionID,
		OutTradeNo: r.OutTradeNo, Channel: "ORIGINAL", UserReceivedAccount: "支付用户零钱",
		CreateTime: r.CreateTime.In(wxpay.ChinaTime()).Format(time.RFC3339), Status: r.Status,
		FundsAccount: "AVAILABLE", Amount: r.wire()}
	if !r.SuccessTime.IsZero() {
		out.SuccessTime = r.SuccessTime.In(wxpay.ChinaTime()).Format(time.RFC3339)
	}
	return out
}

// Notice is the refund as the REFUND.* notification shows it.
func (r RefundRecord) Notice() wxpay.RefundNotice {
	n := wxpay.RefundNotice{OutTradeNo: r.OutTradeNo, TransactionID: r.TransactionID, OutRefundNo: r.OutRefundNo,
		RefundID: r.RefundID, RefundStatus: r.Status, UserReceivedAccount: "支付用户零钱", Amount: r.wire()}
	if r.SubMchID != "" {
		n.SpMchID, n.SubMchID = r.MchID, r.SubMchID
	} else {
		n.MchID = r.MchID
	}
	if !r.SuccessTime.IsZero() {
		n.SuccessTime = r.SuccessTime.In(wxpay.ChinaTime()).Format(time.RFC3339)
	}
	return n
}

func (r RefundRecord) wire() wxpay.RefundAmount {
	return wxpay.RefundAmount{Total: r.Total, Refund: r.Amount, PayerTotal: r.Total, PayerRefund: r.Amount, Currency: r.Currency}
}

// ErrBadTransition: a test asked for a state change WeChat never makes.
var ErrBadTransition = errors.New("wxpaytest: state change not allowed")

// ErrUnknown: no order or refund with that number.
var ErrUnknown = errors.New("wxpaytest: no such order or refund")

// book is the platform's orders and refunds.
type book struct {
	mu       sync.Mutex
	orders   map[string]*Order // by out_trade_no
	byTxID   map[string]*Order
	refunds  map[string]*RefundRecord // by out_refund_no
	prepay   map[string]string        // out_trade_no → the prepay body, to tell a repeat from a reuse
	seq      int
	limitN   int     // the next limitN requests answer 429
	limitQPS float64 // per-merchant token bucket; 0 is off
	burst    float64
	buckets  map[string]*bucket // by mchid
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newBook() *book {
	return &book{orders: map[string]*Order{}, byTxID: map[string]*Order{}, refunds: map[string]*RefundRecord{},
		prepay: map[string]string{}, buckets: map[string]*bucket{}}
}

func (s *Server) book() *book { return s.orders }

// registerOrderRoutes registers the order and refund endpoints (prepay,
// query, close, refund create and query); NewServer calls it.
func (s *Server) registerOrderRoutes() {
	for _, kind := range []string{"jsapi", "app", "native", "h5"} {
		s.orderRoute("POST /v3/pay/transactions/"+kind, s.servePrepay(kind, false))
		s.orderRoute("POST /v3/pay/partner/transactions/"+kind, s.servePrepay(kind, true))
	}
	s.orderRoute("GET /v3/pay/transactions/out-trade-no/{no}", s.serveQuery(false, false))
	s.orderRoute("GET /v3/pay/transactions/id/{no}", s.serveQuery(false, true))
	s.orderRoute("GET /v3/pay/partner/transactions/out-trade-no/{no}", s.serveQuery(true, false))
	s.orderRoute("GET /v3/pay/partner/transactions/id/{no}", s.serveQuery(true, true))
	s.orderRoute("POST /v3/pay/transactions/out-trade-no/{no}/close", s.serveClose(false))
	s.orderRoute("POST /v3/pay/partner/transactions/out-trade-no/{no}/close", s.serveClose(true))
	s.orderRoute("POST /v3/refund/domestic/refunds", s.serveCreateRefund)
	s.orderRoute("GET /v3/refund/domestic/refunds/{no}", s.serveQueryRefund)
}

// orderRoute registers fn behind the rate limit.
func (s *Server) orderRoute(pattern string, fn APIFunc) {
	s.HandleAPI(pattern, func(c *Call) (int, any) {
		if s.book().limited(c.Merchant.MchID, s.now()) {
			return http.StatusTooManyRequests, errorBody{"FREQUENCY_LIMITED", "频率超限"}
		}
		return fn(c)
	})
}

// RateLimitNext makes the next n order and refund requests answer 429
// FREQUENCY_LIMITED.
func (s *Server) RateLimitNext(n int) {
	b := s.book()
	b.mu.Lock()
	b.limitN = n
	b.mu.Unlock()
}

// SetRateLimit limits every merchant to qps order and refund requests per
// second (a token bucket holding burst requests, at least 1, on the
// platform clock); requests over it answer 429 FREQUENCY_LIMITED. qps 0
// lifts the limit.
func (s *Server) SetRateLimit(qps float64, burst int) {
	b := s.book()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.limitQPS, b.burst = qps, float64(max(burst, 1))
	b.buckets = map[string]*bucket{}
}

func (b *book) limited(mchid string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limitN > 0 {
		b.limitN--
		return true
	}
	if b.limitQPS <= 0 {
		return false
	}
	k := b.buckets[mchid]
	if k == nil {
		k = &bucket{tokens: b.burst, at: now}
		b.buckets[mchid] = k
	}
	k.tokens = min(b.burst, k.tokens+now.Sub(k.at).Seconds()*b.limitQPS)
	k.at = now
	if k.tokens < 1 {
		return true
	}
	k.tokens--
	return false
}

// NewOrder is an order a test creates directly, as if the prepay endpoint
// had been called. Zero fields get realistic values.
type NewOrder struct {
	MchID       string
	SubMchID    string
	AppID       string
	SubAppID    string
	OutTradeNo  string
	TradeType   string // default JSAPI
	Description string
	Attach      string
	NotifyURL   string
	Total       int64 // fen; default 1
	Payer       wxpay.Payer
}

// CreateOrder places an unpaid (NOTPAY) order.
func (s *Server) CreateOrder(o NewOrder) (Order, error) {
	b := s.book()
	b.mu.Lock()
	defer b.mu.Unlock()
	if o.OutTradeNo == "" || o.MchID == "" {
		return Order{}, fmt.Errorf("wxpaytest: an order needs MchID and OutTradeNo")
	}
	if b.orders[o.OutTradeNo] != nil {
		return Order{}, fmt.Errorf("wxpaytest: order %s exists already", o.OutTradeNo)
	}
	return *b.addLocked(o, s.tradeNow()), nil
}

func (b *book) addLocked(o NewOrder, now time.Time) *Order {
	if o.TradeType == "" {
		o.TradeType = wxpay.TradeTypeJSAPI
	}
	if o.Total == 0 {
		o.Total = 1
	}
	if o.AppID == "" {
		o.AppID = "wxd678efh567hg6787"
	}
	if o.Description == "" {
		o.Description = "Image形象店-深圳腾大-QQ公仔"
	}
	b.seq++
	ord := &Order{MchID: o.MchID, SubMchID: o.SubMchID, AppID: o.AppID, SubAppID: o.SubAppID, OutTradeNo: o.OutTradeNo,
		TradeType: o.TradeType, TradeState: wxpay.TradeStateNotPay, Description: o.Description, Attach: o.Attach,
		NotifyURL: o.NotifyURL, Total: o.Total, Currency: "CNY", Payer: o.Payer, CreateTime: now,
		PrepayID: fmt.Sprintf("wx%s%010d", now.In(wxpay.ChinaTime()).Format("20060102150405"), b.seq)}
	b.orders[o.OutTradeNo] = ord
	return ord
}

// Order returns the order with outTradeNo.
func (s *Server) Order(outTradeNo string) (Order, bool) {
	b := s.book()
	b.mu.Lock()
	defer b.mu.Unlock()
	o := b.orders[outTradeNo]
	if o == nil {
		return Order{}, false
	}
	return *o, true
}

// Orders returns every order, oldest first.
func (s *Server) Orders() []Order {
	b := s.book()
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Order, 0, len(b.orders))
	for _, o := range b.orders {
		out = append(out, *o)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreateTime.Equal(out[j].CreateTime) {
			return out[i].CreateTime.Before(out[j].CreateTime)
		}
		return out[i].PrepayID < out[j].PrepayID
	})
	return out
}

// Pay makes the payer pay an unpaid (or paying) order: SUCCESS, with a
// transaction_id, the success time on the platform clock and a payer.
// With AutoNotify on, it sends the TRANSACTION.SUCCESS notification.
func (s *Server) Pay(outTradeNo string) (Order, error) {
	o, err := s.settle(outTradeNo, wxpay.TradeStateSuccess)
	if err == nil {
		s.autoNotifyPayment(o)
	}
	return o, err
}

// FailPayment ends an unpaid (or paying) order in PAYERROR.
func (s *Server) FailPayment(outTradeNo string) (Order, error) {
	return s.settle(outTradeNo, wxpay.TradeStatePayError)
}

// Revoke ends an unpaid (or paying) order in REVOKED.
func (s *Server) Revoke(outTradeNo string) (Order, error) {
	return s.settle(outTradeNo, wxpay.TradeStateRevoked)
}

// StartPaying puts an unpaid order in USERPAYING (the payer is entering
// the password).
func (s *Server) StartPaying(outTradeNo string) (Order, error) {
	return s.settle(outTradeNo, wxpay.TradeStateUserPaying)
}

// CloseOrder closes an unpaid (or paying) order, as WeChat does when
// time_expire passes.
func (s *Server) CloseOrder(outTradeNo string) (Order, error) {
	return s.settle(outTradeNo, wxpay.TradeStateClosed)
}

func (s *Server) settle(outTradeNo, state string) (Order, error) {
	b := s.book()
	b.mu.Lock()
	defer b.mu.Unlock()
	o := b.orders[outTradeNo]
	if o == nil {
		return Order{}, fmt.Errorf("%w: order %s", ErrUnknown, outTradeNo)
	}
	if o.TradeState != wxpay.TradeStateNotPay && !(o.TradeState == wxpay.TradeStateUserPaying && state != wxpay.TradeStateUserPaying) {
		return Order{}, fmt.Errorf("%w: order %s is %s, not %s", ErrBadTransition, outTradeNo, o.TradeState, state)
	}
	o.TradeState = state
	if state == wxpay.TradeStateSuccess {
		b.seq++
		now := s.tradeNow()
		o.TransactionID = fmt.Sprintf("42000%s%015d", now.In(wxpay.ChinaTime()).Format("20060102"), b.seq)
		o.SuccessTime = now.Truncate(time.Second)
		if o.Payer == (wxpay.Payer{}) {
			if o.Partner() {
				o.Payer.SpOpenID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
			} else {
				o.Payer.OpenID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
			}
		}
		b.byTxID[o.TransactionID] = o
	}
	return *o, nil
}

// PaymentNotification builds the TRANSACTION.SUCCESS notification of a
// paid order, for the merchant that placed it.
func (s *Server) PaymentNotification(outTradeNo string, opts NotificationOptions) (*Notification, error) {
	o, ok := s.Order(outTradeNo)
	if !ok {
		return nil, fmt.Errorf("%w: order %s", ErrUnknown, outTradeNo)
	}
	if o.TransactionID == "" {
		return nil, fmt.Errorf("%w: order %s is %s, not paid", ErrBadTransition, outTradeNo, o.TradeState)
	}
	m := s.Merchant(o.MchID)
	if m == nil {
		return nil, fmt.Errorf("wxpaytest: no merchant %s", o.MchID)
	}
	tx := o.Transaction()
	tx.TradeState, tx.TradeStateDesc = wxpay.TradeStateSuccess, tradeStateDesc[wxpay.TradeStateSuccess]
	return s.NewNotification(m, wxpay.EventTransactionSuccess, tx, opts)
}

// Refund returns the refund with outRefundNo.
func (s *Server) Refund(outRefundNo string) (RefundRecord, bool) {
	b := s.book()
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.refunds[outRefundNo]
	if r == nil {
		return RefundRecord{}, false
	}
	return *r, true
}

// Refunds returns every refund, oldest first.
func (s *Server) Refunds() []RefundRecord {
	b := s.book()
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]RefundRecord, 0, len(b.refunds))
	for _, r := range b.refunds {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RefundID < out[j].RefundID })
	return out
}

// CompleteRefund moves a PROCESSING refund to SUCCESS, with the success
// time on the platform clock. With AutoNotify on, CompleteRefund,
// FailRefund and CloseRefund send the refund's REFUND.* notification.
func (s *Server) CompleteRefund(outRefundNo string) (RefundRecord, error) {
	return s.finishRefund(outRefundNo, wxpay.RefundStatusSuccess)
}

// FailRefund moves a PROCESSING refund to ABNORMAL (the payer's account
// cannot take it).
func (s *Server) FailRefund(outRefundNo string) (RefundRecord, error) {
	return s.finishRefund(outRefundNo, wxpay.RefundStatusAbnormal)
}

// CloseRefund moves a PROCESSING refund to CLOSED.
func (s *Server) CloseRefund(outRefundNo string) (RefundRecord, error) {
	return s.finishRefund(outRefundNo, wxpay.RefundStatusClosed)
}

func (s *Server) finishRefund(outRefundNo, status string) (RefundRecord, error) {
	r, err := s.setRefundStatus(outRefundNo, status)
	if err == nil {
		s.autoNotifyRefund(r)
	}
	return r, err
}

func (s *Server) setRefundStatus(outRefundNo, status string) (RefundRecord, error) {
	b := s.book()
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.refunds[outRefundNo]
	if r == nil {
		return RefundRecord{}, fmt.Errorf("%w: refund %s", ErrUnknown, outRefundNo)
	}
	if r.Status != wxpay.RefundStatusProcessing {
		return RefundRecord{}, fmt.Errorf("%w: refund %s is %s, not PROCESSING", ErrBadTransition, outRefundNo, r.Status)
	}
	r.Status = status
	if status == wxpay.RefundStatusSuccess {
		r.SuccessTime = s.tradeNow().Truncate(time.Second)
	}
	return *r, nil
}

// RefundNotification builds the REFUND.* notification of a finished
// refund (REFUND.SUCCESS, REFUND.ABNORMAL or REFUND.CLOSED by its status).
func (s *Server) RefundNotification(outRefundNo string, opts NotificationOptions) (*Notification, error) {
	r, ok := s.Refund(outRefundNo)
	if !ok {
		return nil, fmt.Errorf("%w: refund %s", ErrUnknown, outRefundNo)
	}
	event := refundEvents[r.Status]
	if event == "" {
		return nil, fmt.Errorf("%w: refund %s is %s, not finished", ErrBadTransition, outRefundNo, r.Status)
	}
	m := s.Merchant(r.MchID)
	if m == nil {
		return nil, fmt.Errorf("wxpaytest: no merchant %s", r.MchID)
	}
	return s.NewNotification(m, event, r.Notice(), opts)
}

var outTradeNoRE = regexp.MustCompile(`^[0-9A-Za-z_|*-]{6,32}$`)

func paramError(format string, args ...any) (int, any) {
	return http.StatusBadRequest, errorBody{"PARAM_ERROR", fmt.Sprintf(format, args...)}
}

func orderNotExist() (int, any) {
	return http.StatusNotFound, errorBody{"ORDER_NOT_EXIST", "订单不存在"}
}

// merchantOf checks the merchant named in a request against the one that
// signed it and returns the sub-merchant (empty in direct mode).
func merchantOf(c *Call, partner bool, mchid, spMchID, subMchID string) (string, int, any) {
	if partner {
		if spMchID != c.Merchant.MchID {
			status, body := paramError("sp_mchid %q is not the merchant that signed the request", spMchID)
			return "", status, body
		}
		if subMchID == "" {
			status, body := paramError("缺少参数sub_mchid")
			return "", status, body
		}
		return subMchID, 0, nil
	}
	if mchid != c.Merchant.MchID {
		status, body := paramError("mchid %q is not the merchant that signed the request", mchid)
		return "", status, body
	}
	return "", 0, nil
}

// findLocked returns the order the request names, if it belongs to the
// merchant (and sub-merchant) that asks.
func (b *book) findLocked(no string, byTxID bool, mchid, sub string) *Order {
	o := b.orders[no]
	if byTxID {
		o = b.byTxID[no]
	}
	if o == nil || o.MchID != mchid || o.SubMchID != sub {
		return nil
	}
	return o
}

type prepayWire struct {
	AppID       string `json:"appid"`
	MchID       string `json:"mchid"`
	SpAppID     string `json:"sp_appid"`
	SpMchID     string `json:"sp_mchid"`
	SubAppID    string `json:"sub_appid"`
	SubMchID    string `json:"sub_mchid"`
	Description string `json:"description"`
	OutTradeNo  string `json:"out_trade_no"`
	TimeExpire  string `json:"time_expire"`
	Attach      string `json:"attach"`
	NotifyURL   string `json:"notify_url"`
	Amount      *struct {
		Total    int64  `json:"total"`
		Currency string `json:"currency"`
	} `json:"amount"`
	Payer     *wxpay.Payer     `json:"payer"`
	SceneInfo *wxpay.SceneInfo `json:"scene_info"`
}

var tradeTypes = map[string]string{"jsapi": wxpay.TradeTypeJSAPI, "app": wxpay.TradeTypeApp,
	"native": wxpay.TradeTypeNative, "h5": wxpay.TradeTypeMWEB}

func (s *Server) servePrepay(kind string, partner bool) APIFunc {
	return func(c *Call) (int, any) {
		var w prepayWire
		if err := json.Unmarshal(c.Body, &w); err != nil {
			return paramError("请求体不是合法的JSON: %v", err)
		}
		sub, status, body := merchantOf(c, partner, w.MchID, w.SpMchID, w.SubMchID)
		if status != 0 {
			return status, body
		}
		appID := w.AppID
		if partner {
			appID = w.SpAppID
		}
		switch {
		case appID == "":
			return paramError("缺少参数appid")
		case w.Description == "" || len([]rune(w.Description)) > 127:
			return paramError("description为空或超过127个字符")
		case !outTradeNoRE.MatchString(w.OutTradeNo):
			return paramError("out_trade_no须为6-32位数字、大小写字母或_-|*")
		case !strings.HasPrefix(w.NotifyURL, "https://") || strings.Contains(w.NotifyURL, "?"):
			return paramError("notify_url须为https地址且不能携带参数")
		case w.Amount == nil || w.Amount.Total <= 0:
			return paramError("amount.total须大于0")
		case w.Amount.Currency != "" && w.Amount.Currency != "CNY":
			return paramError("amount.currency不支持%s", w.Amount.Currency)
		case w.TimeExpire != "":
			if _, err := time.Parse(time.RFC3339, w.TimeExpire); err != nil {
				return paramError("time_expire不是RFC 3339时间")
			}
		}
		if kind == "jsapi" && (w.Payer == nil || *w.Payer == (wxpay.Payer{})) {
			return paramError("JSAPI下单缺少payer")
		}
		if kind == "h5" && (w.SceneInfo == nil || w.SceneInfo.PayerClientIP == "" || w.SceneInfo.H5Info == nil) {
			return paramError("H5下单缺少scene_info.payer_client_ip或h5_info")
		}
		b := s.book()
		b.mu.Lock()
		defer b.mu.Unlock()
		if o := b.orders[w.OutTradeNo]; o != nil {
			switch {
			case o.TradeState == wxpay.TradeStateSuccess || o.TradeState == wxpay.TradeStateRefund:
				return http.StatusBadRequest, errorBody{"ORDERPAID", "该订单已支付"}
			case b.prepay[w.OutTradeNo] != kind+string(c.Body) && !sameRequest(b.prepay[w.OutTradeNo], kind, c.Body):
				return http.StatusBadRequest, errorBody{"INVALID_REQUEST", "201 商户订单号重复"}
			case o.TradeState == wxpay.TradeStateClosed:
				return http.StatusBadRequest, errorBody{"ORDER_CLOSED", "订单已关闭"}
			}
			return http.StatusOK, prepayAnswer(kind, o)
		}
		var payer wxpay.Payer
		if w.Payer != nil {
			payer = *w.Payer
		}
		o := b.addLocked(NewOrder{MchID: c.Merchant.MchID, SubMchID: sub, AppID: appID, SubAppID: w.SubAppID,
			OutTradeNo: w.OutTradeNo, TradeType: tradeTypes[kind], Description: w.Description, Attach: w.Attach,
			NotifyURL: w.NotifyURL, Total: w.Amount.Total, Payer: payer}, s.tradeNow())
		b.prepay[w.OutTradeNo] = kind + string(c.Body)
		return http.StatusOK, prepayAnswer(kind, o)
	}
}

// sameRequest compares two prepay bodies as JSON values, so that a repeat
// with its members in another order is still the same request.
func sameRequest(stored, kind string, body []byte) bool {
	rest, ok := strings.CutPrefix(stored, kind)
	if !ok {
		return false
	}
	var a, b any
	if json.Unmarshal([]byte(rest), &a) != nil || json.Unmarshal(body, &b) != nil {
		return false
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func prepayAnswer(kind string, o *Order) any {
	switch kind {
	case "native":
		return map[string]string{"code_url": "weixin://wxpay/bizpayurl?pr=" + o.PrepayID[len(o.PrepayID)-10:]}
	case "h5":
		return map[string]string{"h5_url": "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id=" + o.PrepayID + "&package=1037687096"}
	}
	return map[string]string{"prepay_id": o.PrepayID}
}

func (s *Server) serveQuery(partner, byTxID bool) APIFunc {
	return func(c *Call) (int, any) {
		q := c.Request.URL.Query()
		sub, status, body := merchantOf(c, partner, q.Get("mchid"), q.Get("sp_mchid"), q.Get("sub_mchid"))
		if status != 0 {
			return status, body
		}
		b := s.book()
		b.mu.Lock()
		defer b.mu.Unlock()
		o := b.findLocked(c.Request.PathValue("no"), byTxID, c.Merchant.MchID, sub)
		if o == nil {
			return orderNotExist()
		}
		return http.StatusOK, o.Transaction()
	}
}

func (s *Server) serveClose(partner bool) APIFunc {
	return func(c *Call) (int, any) {
		var w struct {
			MchID    string `json:"mchid"`
			SpMchID  string `json:"sp_mchid"`
			SubMchID string `json:"sub_mchid"`
		}
		if err := json.Unmarshal(c.Body, &w); err != nil {
			return paramError("请求体不是合法的JSON: %v", err)
		}
		sub, status, body := merchantOf(c, partner, w.MchID, w.SpMchID, w.SubMchID)
		if status != 0 {
			return status, body
		}
		b := s.book()
		b.mu.Lock()
		defer b.mu.Unlock()
		o := b.findLocked(c.Request.PathValue("no"), false, c.Merchant.MchID, sub)
		if o == nil {
			return orderNotExist()
		}
		switch o.TradeState {
		case wxpay.TradeStateNotPay, wxpay.TradeStateUserPaying, wxpay.TradeStateClosed:
			o.TradeState = wxpay.TradeStateClosed
			return http.StatusNoContent, nil
		case wxpay.TradeStateSuccess, wxpay.TradeStateRefund:
			return http.StatusBadRequest, errorBody{"ORDER_PAID", "订单已支付"}
		}
		return http.StatusBadRequest, errorBody{"INVALID_REQUEST", "订单状态为" + o.TradeState + "，不能关闭"}
	}
}

func (s *Server) serveCreateRefund(c *Call) (int, any) {
	var w struct {
		SubMchID      string `json:"sub_mchid"`
		TransactionID string `json:"transaction_id"`
		OutTradeNo    string `json:"out_trade_no"`
		OutRefundNo   string `json:"out_refund_no"`
		Reason        string `json:"reason"`
		NotifyURL     string `json:"notify_url"`
		Amount        *struct {
			Refund   int64  `json:"refund"`
			Total    int64  `json:"total"`
			Currency string `json:"currency"`
		} `json:"amount"`
	}
	if err := json.Unmarshal(c.Body, &w); err != nil {
		return paramError("请求体不是合法的JSON: %v", err)
	}
	switch {
	case w.OutRefundNo == "" || len(w.OutRefundNo) > 64:
		return paramError("out_refund_no为空或超过64个字符")
	case (w.TransactionID == "") == (w.OutTradeNo == ""):
		return paramError("transaction_id和out_trade_no须且只须填写一个")
	case w.Amount == nil || w.Amount.Refund <= 0 || w.Amount.Total <= 0:
		return paramError("amount.refund和amount.total须大于0")
	case w.Amount.Currency != "CNY":
		return paramError("amount.currency须为CNY")
	}
	b := s.book()
	b.mu.Lock()
	defer b.mu.Unlock()
	if r := b.refunds[w.OutRefundNo]; r != nil { // a retry with the same number
		if r.MchID != c.Merchant.MchID || r.SubMchID != w.SubMchID {
			return http.StatusBadRequest, errorBody{"INVALID_REQUEST", "商户退款单号重复"}
		}
		if r.Amount != w.Amount.Refund {
			return http.StatusBadRequest, errorBody{"INVALID_REQUEST", "同一商户退款单号的退款金额不一致"}
		}
		return http.StatusOK, r.Refund()
	}
	no, byTxID := w.OutTradeNo, false
	if w.TransactionID != "" {
		no, byTxID = w.TransactionID, true
	}
	o := b.findLocked(no, byTxID, c.Merchant.MchID, w.SubMchID)
	if o == nil {
		return http.StatusNotFound, errorBody{"RESOURCE_NOT_EXISTS", "订单不存在"}
	}
	if o.TradeState != wxpay.TradeStateSuccess && o.TradeState != wxpay.TradeStateRefund {
		return http.StatusBadRequest, errorBody{"INVALID_REQUEST", "订单状态为" + o.TradeState + "，不能退款"}
	}
	if w.Amount.Total != o.Total {
		return paramError("amount.total %d 与订单金额 %d 不一致", w.Amount.Total, o.Total)
	}
	var refunded int64
	for _, r := range b.refunds {
		if r.OutTradeNo == o.OutTradeNo && r.Status != wxpay.RefundStatusClosed && r.Status != wxpay.RefundStatusAbnormal {
			refunded += r.Amount
		}
	}
	if refunded+w.Amount.Refund > o.Total {
		return http.StatusBadRequest, errorBody{"INVALID_REQUEST", "申请退款金额超过订单可退金额"}
	}
	b.seq++
	now := s.tradeNow()
	r := &RefundRecord{MchID: o.MchID, SubMchID: o.SubMchID, OutTradeNo: o.OutTradeNo, TransactionID: o.TransactionID,
		OutRefundNo: w.OutRefundNo, RefundID: fmt.Sprintf("50300%s%015d", now.In(wxpay.ChinaTime()).Format("20060102"), b.seq),
		Reason: w.Reason, NotifyURL: w.NotifyURL, Status: wxpay.RefundStatusProcessing, Amount: w.Amount.Refund,
		Total: o.Total, Currency: "CNY", CreateTime: now.Truncate(time.Second)}
	b.refunds[r.OutRefundNo] = r
	o.TradeState = wxpay.TradeStateRefund
	return http.StatusOK, r.Refund()
}

func (s *Server) serveQueryRefund(c *Call) (int, any) {
	sub := c.Request.URL.Query().Get("sub_mchid")
	b := s.book()
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.refunds[c.Request.PathValue("no")]
	if r == nil || r.MchID != c.Merchant.MchID || r.SubMchID != sub {
		return http.StatusNotFound, errorBody{"RESOURCE_NOT_EXISTS", "退款单不存在"}
	}
	return http.StatusOK, r.Refund()
}
