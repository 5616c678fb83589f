package wxpaytest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// BillRow is one payment or refund as it appears in a trade bill. Amounts
// are in fen; Fee is in 0.00001 yuan, the bill's precision for fees.
type BillRow struct {
	// TradeTime is the payment's success time, or the refund's application
	// time; it decides the bill's day (China time).
	TradeTime time.Time
	AppID     string
	// MchID is the account that applies for the bill: the merchant, or in
	// partner mode the service provider.
	MchID string
	// SubMchID is the sub-merchant in partner mode; empty writes "0", as
	// WeChat does for a direct merchant.
	SubMchID      string
	TransactionID string
	OutTradeNo    string
	OpenID        string
	// TradeType defaults to JSAPI.
	TradeType string
	// TradeState is SUCCESS (a payment), REFUND (a refund) or REVOKED;
	// empty means SUCCESS.
	TradeState string
	// Total is the order amount (应结订单金额 and 订单金额).
	Total int64
	// Refund rows: the refund's ids, amount and status (default SUCCESS).
	RefundID     string
	OutRefundNo  string
	Refund       int64
	RefundStatus string
	Description  string
	Attach       string
	Fee          int64
	// Rate defaults to "0.60%".
	Rate string
}

// FundFlowBillRow is one movement of a fund-flow bill; Amount and Balance
// are in fen.
type FundFlowBillRow struct {
	Time time.Time
	// MchID is the account that applies for the bill.
	MchID string
	// AccountType defaults to BASIC.
	AccountType   string
	TransactionID string
	FlowID        string
	BusinessName  string
	BusinessType  string
	// Income true is 收入, false 支出.
	Income    bool
	Amount    int64
	Balance   int64
	Applicant string
	Note      string
	VoucherNo string
}

// BillOptions configures the bill endpoints; the zero value serves a day's
// bills from midnight China time on the next day, for 5 minutes per
// download_url.
type BillOptions struct {
	// ReadyAfter is the time after midnight (China time) on the next day
	// from which a day's bills are ready; before it, applications answer
	// 400 STATEMENT_CREATING. WeChat's is about 10 hours.
	ReadyAfter time.Duration
	// URLValidity is how long a download_url works; default 5 minutes.
	// Past it the download answers 400 INVALID_REQUEST.
	URLValidity time.Duration
	// CorruptHash makes applications answer a wrong hash_value, so that
	// every download fails its hash check.
	CorruptHash bool
	// TradeRows, when set, supplies further trade-bill rows of mchid for
	// day (China time), listed after those added with AddTradeRows and
	// before the platform's own history.
	TradeRows func(mchid string, day time.Time) []BillRow
	// NoHistory leaves the platform's own payments and refunds out of the
	// trade bills, for a test that wants only the rows it adds.
	NoHistory bool
	// EditHistoryRow, when set, sees every row the history contributes
	// before it is listed: change it to plant a difference (an amount the
	// platform did not charge), or return false to leave it out.
	EditHistoryRow func(row *BillRow) (keep bool)
}

// historyFeeRate is the fee rate of history rows: 0.60%, WeChat's
// standard rate, written as the 费率 column shows it.
const historyFeeRate = "0.60%"

// historyFee is the fee of amount fen at 0.60%, rounded half up to the fen
// as WeChat charges it, in the bill's 0.00001 yuan.
func historyFee(amount int64) int64 { return (amount*6 + 500) / 1000 * 1000 }

// historyRows lists what happened on the platform on day (China time) for
// the account mchid: every payment that succeeded that day, as SUCCESS, and
// every refund applied for that day, as REFUND with the refund's status
// now. A payment stays SUCCESS after a later refund, as in WeChat's bills.
// Payments come first, each part in time order.
func (s *Server) historyRows(mchid string, day time.Time) []BillRow {
	b := s.book()
	b.mu.Lock()
	defer b.mu.Unlock()
	want := chinaDay(day)
	var pays, refunds []BillRow
	for _, o := range b.orders {
		if o.MchID != mchid || o.TransactionID == "" || chinaDay(o.SuccessTime) != want {
			continue
		}
		pays = append(pays, orderBillRow(o, o.SuccessTime))
	}
	for _, r := range b.refunds {
		o := b.orders[r.OutTradeNo]
		if r.MchID != mchid || o == nil || chinaDay(r.CreateTime) != want {
			continue
		}
		row := orderBillRow(o, r.CreateTime)
		row.TradeState, row.RefundID, row.OutRefundNo = "REFUND", r.RefundID, r.OutRefundNo
		row.Refund, row.RefundStatus, row.Fee = r.Amount, r.Status, -historyFee(r.Amount)
		refunds = append(refunds, row)
	}
	byTime := func(a, b BillRow) int {
		if c := a.TradeTime.Compare(b.TradeTime); c != 0 {
			return c
		}
		return strings.Compare(a.OutRefundNo+a.OutTradeNo, b.OutRefundNo+b.OutTradeNo)
	}
	slices.SortFunc(pays, byTime)
	slices.SortFunc(refunds, byTime)
	return append(pays, refunds...)
}

// orderBillRow is the payment row of a paid order at time at.
func orderBillRow(o *Order, at time.Time) BillRow {
	openID := o.Payer.OpenID
	if o.Partner() {
		openID = o.Payer.SpOpenID
	}
	return BillRow{TradeTime: at, AppID: o.AppID, MchID: o.MchID, SubMchID: o.SubMchID,
		TransactionID: o.TransactionID, OutTradeNo: o.OutTradeNo, OpenID: openID, TradeType: o.TradeType,
		TradeState: "SUCCESS", Total: o.Total, Description: o.Description, Attach: o.Attach,
		Fee: historyFee(o.Total), Rate: historyFeeRate}
}

// Bills is the fake platform's bill desk: the trade-bill and fund-flow
// application endpoints and the download endpoint, serving bills in
// WeChat's format. A trade bill lists the rows the test gives and then,
// unless BillOptions.NoHistory, the platform's own payments and refunds of
// the day; a fund-flow bill lists only the rows the test gives.
type Bills struct {
	mu       sync.Mutex
	opts     BillOptions
	trade    []BillRow
	fundFlow []FundFlowBillRow
	files    map[string]*billFile
	next     int
}

// billFile is an applied-for bill, rendered when it was applied for (and
// compressed, when gzip was asked for), as WeChat keeps bills as files.
type billFile struct {
	mchid   string
	expires time.Time
	gzip    bool
	body    []byte
}

// Bills returns the server's bill desk: its endpoints GET
// /v3/bill/tradebill, GET /v3/bill/fundflowbill and the download GET
// /v3/billdownload/file (authenticated, answered unsigned as WeChat does)
// are served from NewServer on.
func (s *Server) Bills() *Bills { return s.bills }

// registerBillRoutes creates the bill desk and its endpoints; NewServer
// calls it.
func (s *Server) registerBillRoutes() {
	b := &Bills{files: map[string]*billFile{}}
	s.bills = b
	s.HandleAPI("GET /v3/bill/tradebill", func(c *Call) (int, any) { return b.applyTrade(s, c) })
	s.HandleAPI("GET /v3/bill/fundflowbill", func(c *Call) (int, any) { return b.applyFundFlow(s, c) })
	s.HandleRaw("GET /v3/billdownload/file", func(w http.ResponseWriter, r *http.Request) { b.download(s, w, r) })
}

// SetOptions replaces the bill options.
func (b *Bills) SetOptions(o BillOptions) {
	b.mu.Lock()
	b.opts = o
	b.mu.Unlock()
}

// AddTradeRows adds payments and refunds to the trade bills.
func (b *Bills) AddTradeRows(rows ...BillRow) {
	b.mu.Lock()
	b.trade = append(b.trade, rows...)
	b.mu.Unlock()
}

// AddFundFlowRows adds movements to the fund-flow bills.
func (b *Bills) AddFundFlowRows(rows ...FundFlowBillRow) {
	b.mu.Lock()
	b.fundFlow = append(b.fundFlow, rows...)
	b.mu.Unlock()
}

func chinaDay(t time.Time) string { return t.In(wxpay.ChinaTime()).Format("2006-01-02") }

// applyCommon checks bill_date and readiness; it returns the day.
func (b *Bills) applyCommon(s *Server, c *Call) (day time.Time, status int, body any) {
	q := c.Request.URL.Query()
	day, err := time.ParseInLocation("2006-01-02", q.Get("bill_date"), wxpay.ChinaTime())
	if err != nil {
		return day, http.StatusBadRequest, ErrorAnswer("PARAM_ERROR", "bill_date格式错误，应为yyyy-MM-dd")
	}
	if tt := q.Get("tar_type"); tt != "" && tt != "GZIP" {
		return day, http.StatusBadRequest, ErrorAnswer("PARAM_ERROR", "tar_type取值错误")
	}
	b.mu.Lock()
	ready := day.AddDate(0, 0, 1).Add(b.opts.ReadyAfter)
	b.mu.Unlock()
	now := s.Now()
	if now.Before(day.AddDate(0, 0, 1)) {
		return day, http.StatusBadRequest, ErrorAnswer("INVALID_REQUEST", "bill_date须早于今天")
	}
	if now.Before(ready) {
		return day, http.StatusBadRequest, ErrorAnswer("STATEMENT_CREATING", "账单生成中")
	}
	return day, 0, nil
}

func (b *Bills) applyTrade(s *Server, c *Call) (int, any) {
	day, status, body := b.applyCommon(s, c)
	if status != 0 {
		return status, body
	}
	q := c.Request.URL.Query()
	billType := q.Get("bill_type")
	if billType == "" {
		billType = "ALL"
	}
	if billType != "ALL" && billType != "SUCCESS" && billType != "REFUND" {
		return http.StatusBadRequest, ErrorAnswer("PARAM_ERROR", "bill_type取值错误")
	}
	sub := q.Get("sub_mchid")
	b.mu.Lock()
	all := append([]BillRow(nil), b.trade...)
	opts := b.opts
	b.mu.Unlock()
	if opts.TradeRows != nil {
		all = append(all, opts.TradeRows(c.Merchant.MchID, day)...)
	}
	if !opts.NoHistory {
		for _, r := range s.historyRows(c.Merchant.MchID, day) {
			if opts.EditHistoryRow == nil || opts.EditHistoryRow(&r) {
				all = append(all, r)
			}
		}
	}
	var rows []BillRow
	for _, r := range all {
		if r.MchID != c.Merchant.MchID || chinaDay(r.TradeTime) != chinaDay(day) || (sub != "" && r.SubMchID != sub) {
			continue
		}
		refund := r.TradeState == "REFUND"
		if (billType == "SUCCESS" && refund) || (billType == "REFUND" && !refund) {
			continue
		}
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		return http.StatusBadRequest, ErrorAnswer("NO_STATEMENT_EXIST", "请求的账单文件不存在")
	}
	return b.register(s, c, func(w io.Writer) error { return WriteTradeBill(w, billType, slices.Values(rows)) })
}

func (b *Bills) applyFundFlow(s *Server, c *Call) (int, any) {
	day, status, body := b.applyCommon(s, c)
	if status != 0 {
		return status, body
	}
	account := c.Request.URL.Query().Get("account_type")
	if account == "" {
		account = "BASIC"
	}
	if account != "BASIC" && account != "OPERATION" && account != "FEES" {
		return http.StatusBadRequest, ErrorAnswer("PARAM_ERROR", "account_type取值错误")
	}
	b.mu.Lock()
	var rows []FundFlowBillRow
	for _, r := range b.fundFlow {
		at := r.AccountType
		if at == "" {
			at = "BASIC"
		}
		if r.MchID == c.Merchant.MchID && at == account && chinaDay(r.Time) == chinaDay(day) {
			rows = append(rows, r)
		}
	}
	b.mu.Unlock()
	if len(rows) == 0 {
		return http.StatusBadRequest, ErrorAnswer("NO_STATEMENT_EXIST", "请求的账单文件不存在")
	}
	return b.register(s, c, func(w io.Writer) error { return WriteFundFlowBill(w, rows) })
}

// register hashes the bill, keeps it under a new token and answers the
// application.
func (b *Bills) register(s *Server, c *Call, write func(io.Writer) error) (int, any) {
	// The bill is rendered once, as WeChat keeps a file: compressed (at
	// the fastest level) when gzip was asked for, and hashed as text.
	h := sha1.New()
	var body bytes.Buffer
	gz := c.Request.URL.Query().Get("tar_type") == "GZIP"
	var err error
	if gz {
		zw, _ := gzip.NewWriterLevel(&body, gzip.BestSpeed)
		if err = write(io.MultiWriter(h, zw)); err == nil {
			err = zw.Close()
		}
	} else {
		err = write(io.MultiWriter(h, &body))
	}
	if err != nil {
		return http.StatusInternalServerError, ErrorAnswer("SYSTEM_ERROR", err.Error())
	}
	sum := hex.EncodeToString(h.Sum(nil))
	b.mu.Lock()
	validity := b.opts.URLValidity
	if validity <= 0 {
		validity = 5 * time.Minute
	}
	if b.opts.CorruptHash {
		sum = strings.Repeat("0", len(sum)-1) + "1"
	}
	b.next++
	token := fmt.Sprintf("wxpaytest-bill-%d-%s", b.next, randomString(16))
	b.files[token] = &billFile{mchid: c.Merchant.MchID, expires: s.Now().Add(validity), gzip: gz, body: body.Bytes()}
	b.mu.Unlock()
	u := s.URL() + "/v3/billdownload/file?token=" + url.QueryEscape(token)
	if gz {
		u += "&tartype=gzip"
	}
	return http.StatusOK, map[string]string{"hash_type": "SHA1", "hash_value": sum, "download_url": u}
}

func (b *Bills) download(s *Server, w http.ResponseWriter, r *http.Request) {
	call := r.Context().Value(callKey{}).(*Call)
	b.mu.Lock()
	f := b.files[r.URL.Query().Get("token")]
	b.mu.Unlock()
	switch {
	case f == nil || !s.Now().Before(f.expires):
		s.answer(w, call.Serial, http.StatusBadRequest, ErrorAnswer("INVALID_REQUEST", "下载链接无效或已过期，请重新申请"))
		return
	case f.mchid != call.Merchant.MchID:
		s.answer(w, call.Serial, http.StatusForbidden, ErrorAnswer("NO_AUTH", "下载账单的商户号与申请的不一致"))
		return
	}
	if f.gzip {
		w.Header().Set("Content-Type", "application/x-gzip")
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(f.body)))
	w.Write(f.body)
}

// yuan writes fen with two decimals, and fee units with five.
func yuan(v int64, places int) string {
	sign := ""
	if v < 0 {
		sign, v = "-", -v
	}
	unit := int64(100)
	if places == 5 {
		unit = 100000
	}
	return fmt.Sprintf("%s%d.%0*d", sign, v/unit, places, v%unit)
}

// billLine writes values each prefixed with a backtick.
func billLine(w *bufio.Writer, vals ...string) {
	for i, v := range vals {
		if i > 0 {
			w.WriteByte(',')
		}
		w.WriteByte('`')
		w.WriteString(v)
	}
	w.WriteByte('\n')
}

// WriteTradeBill writes a trade bill of billType (ALL, SUCCESS or REFUND)
// in WeChat's format: the header line, one line per row with every value
// prefixed by a backtick, the summary header and the summary row, whose
// count and totals the rows add up to. rows may be slices.Values of a
// slice or a generator of any length: nothing of it is kept.
func WriteTradeBill(w io.Writer, billType string, rows iter.Seq[BillRow]) error {
	bw := bufio.NewWriter(w)
	const head = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额"
	switch billType {
	case "SUCCESS":
		bw.WriteString(head + ",商品名称,商户数据包,手续费,费率,订单金额,费率备注\n")
	case "REFUND":
		bw.WriteString(head + ",退款申请时间,退款成功时间,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\n")
	default:
		bw.WriteString(head + ",微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\n")
	}
	var count, settle, refund, fee, order int64
	for r := range rows {
		count++
		state, tradeType, rate, sub := r.TradeState, r.TradeType, r.Rate, r.SubMchID
		if state == "" {
			state = "SUCCESS"
		}
		if tradeType == "" {
			tradeType = "JSAPI"
		}
		if rate == "" {
			rate = "0.60%"
		}
		if sub == "" {
			sub = "0"
		}
		isRefund := state == "REFUND"
		refundID, outRefundNo, refundStatus, refundAmount := "0", "0", "", int64(0)
		if isRefund {
			refundID, outRefundNo, refundStatus, refundAmount = r.RefundID, r.OutRefundNo, r.RefundStatus, r.Refund
			if refundStatus == "" {
				refundStatus = "SUCCESS"
			}
		} else {
			settle += r.Total
			order += r.Total
		}
		refund += refundAmount
		fee += r.Fee
		when := r.TradeTime.In(wxpay.ChinaTime()).Format("2006-01-02 15:04:05")
		vals := []string{when, r.AppID, r.MchID, sub, "", r.TransactionID, r.OutTradeNo, r.OpenID, tradeType, state,
			"OTHERS", "CNY", yuan(r.Total, 2), "0.00"}
		switch billType {
		case "SUCCESS":
			vals = append(vals, r.Description, r.Attach, yuan(r.Fee, 5), rate, yuan(r.Total, 2), "")
		case "REFUND":
			vals = append(vals, when, when, refundID, outRefundNo, yuan(refundAmount, 2), "0.00", "ORIGINAL", refundStatus,
				r.Description, r.Attach, yuan(r.Fee, 5), rate, yuan(r.Total, 2), yuan(refundAmount, 2), "")
		default:
			refundType := ""
			if isRefund {
				refundType = "ORIGINAL"
			}
			vals = append(vals, refundID, outRefundNo, yuan(refundAmount, 2), "0.00", refundType, refundStatus,
				r.Description, r.Attach, yuan(r.Fee, 5), rate, yuan(r.Total, 2), yuan(refundAmount, 2), "")
		}
		billLine(bw, vals...)
	}
	if billType == "SUCCESS" {
		bw.WriteString("总交易单数,应结订单总金额,手续费总金额,订单总金额\n")
		billLine(bw, fmt.Sprint(count), yuan(settle, 2), yuan(fee, 5), yuan(order, 2))
	} else {
		bw.WriteString("总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\n")
		billLine(bw, fmt.Sprint(count), yuan(settle, 2), yuan(refund, 2), "0.00", yuan(fee, 5), yuan(order, 2), yuan(refund, 2))
	}
	return bw.Flush()
}

// WriteFundFlowBill writes a fund-flow bill in WeChat's format, escaping
// spaces in notes as \1 and line ends as \r and \n, as WeChat does.
func WriteFundFlowBill(w io.Writer, rows []FundFlowBillRow) error {
	bw := bufio.NewWriter(w)
	bw.WriteString("记账时间,微信支付业务单号,资金流水单号,业务名称,业务类型,收支类型,收支金额(元),账户结余(元),资金变更提交申请人,备注,业务凭证号\n")
	esc := strings.NewReplacer(" ", `\1`, "\r", `\r`, "\n", `\n`)
	var in, out, inSum, outSum int64
	for _, r := range rows {
		dir := "支出"
		if r.Income {
			dir = "收入"
			in++
			inSum += r.Amount
		} else {
			out++
			outSum += r.Amount
		}
		billLine(bw, r.Time.In(wxpay.ChinaTime()).Format("2006-01-02 15:04:05"), r.TransactionID, r.FlowID,
			r.BusinessName, r.BusinessType, dir, yuan(r.Amount, 2), yuan(r.Balance, 2), r.Applicant,
			esc.Replace(r.Note), esc.Replace(r.VoucherNo))
	}
	bw.WriteString("资金流水总笔数,收入笔数,收入金额,支出笔数,支出金额\n")
	billLine(bw, fmt.Sprint(len(rows)), fmt.Sprint(in), yuan(inSum, 2), fmt.Sprint(out), yuan(outSum, 2))
	return bw.Flush()
}
