package wxpay

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// ErrBillTotals: a bill's rows do not add up to its summary row (count or
// a total). The bill is incomplete or altered; do not reconcile with it.
var ErrBillTotals = errors.New("wxpay: bill rows do not add up to the summary")

// maxBillLine bounds one line of a bill.
const maxBillLine = 64 << 10

// maxAmountDigits bounds the integer part of a bill amount, so that every
// accepted amount fits an int64 even with five decimals.
const maxAmountDigits = 13

// ParseYuan converts a bill amount in yuan with exactly two decimals
// ("0.10", "-1.05") to fen, exactly, without floating point. It accepts
// only the canonical form FormatYuan writes: an optional minus sign, an
// integer part without leading zeros, a dot and two digits; "-0.00" is
// refused, as are "1.234", "1e3", "", " 1.00" and "+1.00".
func ParseYuan(s string) (int64, error) { return parseDecimal(s, 2) }

// FormatYuan writes fen as yuan with two decimals, the inverse of ParseYuan.
func FormatYuan(fen int64) string { return formatDecimal(fen, 2) }

// parseDecimal parses a decimal with exactly places decimals into an
// integer count of its last digit's unit.
func parseDecimal(s string, places int) (int64, error) {
	neg := strings.HasPrefix(s, "-")
	digits := s
	if neg {
		digits = s[1:]
	}
	whole, frac, ok := strings.Cut(digits, ".")
	switch {
	case !ok || len(frac) != places:
		return 0, fmt.Errorf("want a number with exactly %d decimals", places)
	case whole == "" || len(whole) > maxAmountDigits:
		return 0, fmt.Errorf("want 1 to %d digits before the dot", maxAmountDigits)
	case len(whole) > 1 && whole[0] == '0':
		return 0, errors.New("leading zero")
	}
	var v int64
	for _, part := range []string{whole, frac} {
		for i := 0; i < len(part); i++ {
			ch := part[i]
			if ch < '0' || ch > '9' {
				return 0, fmt.Errorf("%q is not a digit", ch)
			}
			v = v*10 + int64(ch-'0')
		}
	}
	if neg {
		if v == 0 {
			return 0, errors.New("negative zero")
		}
		v = -v
	}
	return v, nil
}

func formatDecimal(v int64, places int) string {
	neg := v < 0
	u := uint64(v)
	if neg {
		u = -u
	}
	s := strconv.FormatUint(u, 10)
	if len(s) <= places {
		s = strings.Repeat("0", places+1-len(s)) + s
	}
	s = s[:len(s)-places] + "." + s[len(s)-places:]
	if neg {
		s = "-" + s
	}
	return s
}

// billTimeLayout is the layout of times in bills (China time).
const billTimeLayout = "2006-01-02 15:04:05"

// billReader reads the common layout of WeChat bills: a header line, detail
// rows whose values each start with a backtick, a summary header, and one
// summary row. Columns are found by name, not position.
type billReader struct {
	br      *bufio.Reader
	line    int
	cols    map[string]int
	names   []string
	summary map[string]string
	state   int // 0 header to read, 1 detail rows, 2 done
}

func newBillReader(r io.Reader) *billReader {
	return &billReader{br: bufio.NewReaderSize(r, 64<<10)}
}

// readLine returns the next line without its line end; io.EOF at the end.
func (b *billReader) readLine() (string, error) {
	raw, err := b.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull || len(raw) > maxBillLine {
		return "", fmt.Errorf("%w: bill line %d is longer than %d bytes", ErrMalformed, b.line+1, maxBillLine)
	}
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("%w: reading bill line %d: %v", ErrTransport, b.line+1, err)
	}
	if len(raw) == 0 && err == io.EOF {
		return "", io.EOF
	}
	b.line++
	raw = bytes.TrimSuffix(bytes.TrimSuffix(raw, []byte("\n")), []byte("\r"))
	if b.line == 1 {
		raw = bytes.TrimPrefix(raw, []byte("\uFEFF"))
	}
	return string(raw), nil
}

// next returns the values of the next detail row, or io.EOF once the
// summary row has been read (then b.summary is set).
func (b *billReader) next() ([]string, error) {
	if b.state == 0 {
		h, err := b.readLine()
		if err == io.EOF {
			return nil, fmt.Errorf("%w: the bill is empty", ErrMalformed)
		}
		if err != nil {
			return nil, err
		}
		b.names, b.cols = splitHeader(h)
		b.state = 1
	}
	if b.state == 2 {
		return nil, io.EOF
	}
	l, err := b.readLine()
	if err == io.EOF {
		return nil, fmt.Errorf("%w: the bill ends after line %d without a summary", ErrMalformed, b.line)
	}
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(l, "`") {
		vals := strings.Split(l[1:], ",`")
		if len(vals) != len(b.names) {
			return nil, fmt.Errorf("%w: bill line %d has %d values, the header names %d", ErrMalformed, b.line, len(vals), len(b.names))
		}
		return vals, nil
	}
	// The summary header, then its one row, then nothing but blank lines.
	names, _ := splitHeader(l)
	headerLine := b.line
	row, err := b.readLine()
	if err == io.EOF || (err == nil && !strings.HasPrefix(row, "`")) {
		return nil, fmt.Errorf("%w: bill line %d: a summary header without a summary row after it (or a detail row without backticks)", ErrMalformed, headerLine)
	}
	if err != nil {
		return nil, err
	}
	vals := strings.Split(row[1:], ",`")
	if len(vals) != len(names) {
		return nil, fmt.Errorf("%w: bill summary line %d has %d values, its header names %d", ErrMalformed, b.line, len(vals), len(names))
	}
	b.summary = make(map[string]string, len(names))
	for i, n := range names {
		b.summary[n] = vals[i]
	}
	for {
		extra, err := b.readLine()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if strings.TrimSpace(extra) != "" {
			return nil, fmt.Errorf("%w: bill line %d follows the summary row", ErrMalformed, b.line)
		}
	}
	b.state = 2
	return nil, io.EOF
}

func splitHeader(h string) ([]string, map[string]int) {
	names := strings.Split(h, ",")
	cols := make(map[string]int, len(names))
	for i, n := range names {
		n = strings.TrimSpace(n)
		names[i] = n
		if _, dup := cols[n]; !dup {
			cols[n] = i
		}
	}
	return names, cols
}

// col returns the index of the first of names the header has, or -1.
func (b *billReader) col(names ...string) int {
	for _, n := range names {
		if i, ok := b.cols[n]; ok {
			return i
		}
	}
	return -1
}

// fieldError names the line and column of a bad value.
func (b *billReader) fieldError(col string, v string, err error) error {
	return fmt.Errorf("%w: bill line %d, column %s: value %s: %v", ErrMalformed, b.line, col, quoted(v), err)
}

// billColumn is one column a typed row reads.
type billColumn struct {
	names []string // the name, then older names
	idx   int
}

func (b *billReader) bind(required bool, names ...string) (billColumn, error) {
	c := billColumn{names: names, idx: b.col(names...)}
	if c.idx < 0 && required {
		return c, fmt.Errorf("%w: the bill header has no column %s", ErrMalformed, names[0])
	}
	return c, nil
}

func (b *billReader) str(vals []string, c billColumn) string {
	if c.idx < 0 {
		return ""
	}
	return vals[c.idx]
}

func (b *billReader) amount(vals []string, c billColumn, places int) (int64, error) {
	if c.idx < 0 {
		return 0, nil
	}
	v, err := parseDecimal(vals[c.idx], places)
	if err != nil {
		return 0, b.fieldError(c.names[0], vals[c.idx], err)
	}
	return v, nil
}

func (b *billReader) time(vals []string, c billColumn) (time.Time, error) {
	t, err := time.ParseInLocation(billTimeLayout, vals[c.idx], chinaTime)
	if err != nil {
		return time.Time{}, b.fieldError(c.names[0], vals[c.idx], errors.New("want yyyy-MM-dd HH:mm:ss"))
	}
	return t, nil
}

// summaryAmount reads a summary value; ok is false when the summary has no
// such column.
func (b *billReader) summaryAmount(name string, places int) (v int64, ok bool, err error) {
	s, ok := b.summary[name]
	if !ok {
		return 0, false, nil
	}
	v, err = parseDecimal(s, places)
	if err != nil {
		return 0, true, fmt.Errorf("%w: bill summary, column %s: value %s: %v", ErrMalformed, name, quoted(s), err)
	}
	return v, true, nil
}

func (b *billReader) summaryCount(name string) (int64, error) {
	s, ok := b.summary[name]
	if !ok {
		return 0, fmt.Errorf("%w: the bill summary has no column %s", ErrMalformed, name)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != s {
		return 0, fmt.Errorf("%w: bill summary, column %s: value %s is not a count", ErrMalformed, name, quoted(s))
	}
	return n, nil
}

// checkTotal compares a summary total with the sum of the rows.
func (b *billReader) checkTotal(name string, places int, sum int64) error {
	v, ok, err := b.summaryAmount(name, places)
	if err != nil || !ok {
		return err
	}
	if v != sum {
		return fmt.Errorf("%w: %s is %s in the summary, the rows add up to %s", ErrBillTotals, name,
			formatDecimal(v, places), formatDecimal(sum, places))
	}
	return nil
}

// TradeBillRow is one detail row of a trade bill (交易账单). Amounts are in
// fen; Fee is in units of 0.00001 yuan, the precision the bill gives it.
// Columns a bill type does not have are left empty or zero.
type TradeBillRow struct {
	Line          int       // line number in the bill, from 1
	TradeTime     time.Time // 交易时间: payment success, or refund application
	AppID         string    // 公众账号ID
	MchID         string    // 商户号
	SubMchID      string    // 特约商户号 ("0" for a direct merchant)
	DeviceInfo    string    // 设备号
	TransactionID string    // 微信订单号
	OutTradeNo    string    // 商户订单号
	OpenID        string    // 用户标识
	TradeType     string    // 交易类型
	TradeState    string    // 交易状态: SUCCESS, REFUND or REVOKED
	BankType      string    // 付款银行
	Currency      string    // 货币种类
	// SettlementTotal is 应结订单金额 (总金额 in the legacy format).
	SettlementTotal int64
	// Coupon is 代金券金额 (企业红包金额 in the legacy format).
	Coupon            int64
	RefundApplyTime   string // 退款申请时间 (refund bills)
	RefundSuccessTime string // 退款成功时间 (refund bills)
	RefundID          string // 微信退款单号
	OutRefundNo       string // 商户退款单号
	Refund            int64  // 退款金额
	CouponRefund      int64  // 充值券退款金额
	RefundType        string // 退款类型
	RefundStatus      string // 退款状态
	Description       string // 商品名称
	Attach            string // 商户数据包
	Fee               int64  // 手续费, in 0.00001 yuan
	Rate              string // 费率, such as "0.60%"
	OrderTotal        int64  // 订单金额
	RequestedRefund   int64  // 申请退款金额
	RateNote          string // 费率备注
}

// TradeBillSummary is the summary row of a trade bill. Totals a bill type
// does not have are zero.
type TradeBillSummary struct {
	Count           int64 // 总交易单数
	SettlementTotal int64 // 应结订单总金额
	Refund          int64 // 退款总金额
	CouponRefund    int64 // 充值券退款总金额
	Fee             int64 // 手续费总金额, in 0.00001 yuan
	OrderTotal      int64 // 订单总金额
	RequestedRefund int64 // 申请退款总金额
}

// TradeBillReader reads a trade bill row by row, holding one row at a
// time, so that a bill of any size streams through it.
type TradeBillReader struct {
	b       *billReader
	err     error
	bound   bool
	c       tradeColumns
	rows    int64
	sum     TradeBillSummary
	summary TradeBillSummary
}

type tradeColumns struct {
	time, appID, mchID, subMchID, device, txID, outTradeNo, openID, tradeType, state, bank, currency,
	settlement, coupon, refundApply, refundSuccess, refundID, outRefundNo, refund, couponRefund,
	refundType, refundStatus, desc, attach, fee, rate, orderTotal, requestedRefund, rateNote billColumn
}

// NewTradeBillReader reads a decompressed trade bill from r.
func NewTradeBillReader(r io.Reader) *TradeBillReader {
	return &TradeBillReader{b: newBillReader(r)}
}

// Next returns the next row. After the last row it reads the summary,
// checks that the rows add up to it (count and every total; payment totals
// count the rows that are not refunds) and returns io.EOF; a bill that does
// not add up fails with ErrBillTotals, a malformed one with ErrMalformed
// naming the line and column. After an error, Next returns it again.
func (r *TradeBillReader) Next() (TradeBillRow, error) {
	if r.err != nil {
		return TradeBillRow{}, r.err
	}
	row, err := r.next()
	if err != nil {
		r.err = err
	}
	return row, err
}

// Summary returns the summary row once Next has returned io.EOF.
func (r *TradeBillReader) Summary() TradeBillSummary { return r.summary }

func (r *TradeBillReader) next() (TradeBillRow, error) {
	b := r.b
	vals, err := b.next()
	if !r.bound && b.cols != nil {
		if err := r.bind(); err != nil {
			return TradeBillRow{}, err
		}
	}
	if err == io.EOF {
		return TradeBillRow{}, r.finish()
	}
	if err != nil {
		return TradeBillRow{}, err
	}
	c := &r.c
	row := TradeBillRow{
		Line: b.line, AppID: b.str(vals, c.appID), MchID: b.str(vals, c.mchID), SubMchID: b.str(vals, c.subMchID),
		DeviceInfo: b.str(vals, c.device), TransactionID: b.str(vals, c.txID), OutTradeNo: b.str(vals, c.outTradeNo),
		OpenID: b.str(vals, c.openID), TradeType: b.str(vals, c.tradeType), TradeState: b.str(vals, c.state),
		BankType: b.str(vals, c.bank), Currency: b.str(vals, c.currency),
		RefundApplyTime: b.str(vals, c.refundApply), RefundSuccessTime: b.str(vals, c.refundSuccess),
		RefundID: b.str(vals, c.refundID), OutRefundNo: b.str(vals, c.outRefundNo),
		RefundType: b.str(vals, c.refundType), RefundStatus: b.str(vals, c.refundStatus),
		Description: b.str(vals, c.desc), Attach: b.str(vals, c.attach), Rate: b.str(vals, c.rate),
		RateNote: b.str(vals, c.rateNote),
	}
	if row.TradeTime, err = b.time(vals, c.time); err != nil {
		return TradeBillRow{}, err
	}
	for _, a := range []struct {
		dst    *int64
		col    billColumn
		places int
	}{
		{&row.SettlementTotal, c.settlement, 2}, {&row.Coupon, c.coupon, 2}, {&row.Refund, c.refund, 2},
		{&row.CouponRefund, c.couponRefund, 2}, {&row.Fee, c.fee, 5}, {&row.OrderTotal, c.orderTotal, 2},
		{&row.RequestedRefund, c.requestedRefund, 2},
	} {
		if *a.dst, err = b.amount(vals, a.col, a.places); err != nil {
			return TradeBillRow{}, err
		}
	}
	r.rows++
	if row.TradeState != TradeStateRefund {
		r.sum.SettlementTotal += row.SettlementTotal
		r.sum.OrderTotal += row.OrderTotal
	}
	r.sum.Refund += row.Refund
	r.sum.CouponRefund += row.CouponRefund
	r.sum.Fee += row.Fee
	r.sum.RequestedRefund += row.RequestedRefund
	return row, nil
}

func (r *TradeBillReader) bind() error {
	r.bound = true
	b := r.b
	var errs []error
	must := func(names ...string) billColumn {
		c, err := b.bind(true, names...)
		if err != nil {
			errs = append(errs, err)
		}
		return c
	}
	opt := func(names ...string) billColumn {
		c, _ := b.bind(false, names...)
		return c
	}
	r.c = tradeColumns{
		time: must("交易时间"), appID: opt("公众账号ID"), mchID: opt("商户号"), subMchID: opt("特约商户号", "子商户号"),
		device: opt("设备号"), txID: must("微信订单号"), outTradeNo: must("商户订单号"), openID: opt("用户标识"),
		tradeType: opt("交易类型"), state: must("交易状态"), bank: opt("付款银行"), currency: opt("货币种类"),
		settlement: must("应结订单金额", "总金额"), coupon: opt("代金券金额", "企业红包金额"),
		refundApply: opt("退款申请时间"), refundSuccess: opt("退款成功时间"), refundID: opt("微信退款单号"),
		outRefundNo: opt("商户退款单号"), refund: opt("退款金额"), couponRefund: opt("充值券退款金额", "企业红包退款金额"),
		refundType: opt("退款类型"), refundStatus: opt("退款状态"), desc: opt("商品名称"), attach: opt("商户数据包"),
		fee: opt("手续费"), rate: opt("费率"), orderTotal: opt("订单金额"), requestedRefund: opt("申请退款金额"),
		rateNote: opt("费率备注"),
	}
	return errors.Join(errs...)
}

func (r *TradeBillReader) finish() error {
	b := r.b
	var s TradeBillSummary
	var err error
	if s.Count, err = b.summaryCount("总交易单数"); err != nil {
		return err
	}
	if s.Count != r.rows {
		return fmt.Errorf("%w: 总交易单数 is %d in the summary, the bill has %d rows", ErrBillTotals, s.Count, r.rows)
	}
	for _, t := range []struct {
		name   string
		places int
		sum    int64
		dst    *int64
	}{
		{"应结订单总金额", 2, r.sum.SettlementTotal, &s.SettlementTotal},
		{"退款总金额", 2, r.sum.Refund, &s.Refund},
		{"充值券退款总金额", 2, r.sum.CouponRefund, &s.CouponRefund},
		{"手续费总金额", 5, r.sum.Fee, &s.Fee},
		{"订单总金额", 2, r.sum.OrderTotal, &s.OrderTotal},
		{"申请退款总金额", 2, r.sum.RequestedRefund, &s.RequestedRefund},
	} {
		if err := b.checkTotal(t.name, t.places, t.sum); err != nil {
			return err
		}
		*t.dst, _, _ = b.summaryAmount(t.name, t.places)
	}
	r.summary = s
	return io.EOF
}

// FundFlowRow is one detail row of a fund-flow bill (资金账单). Amounts are
// in fen.
type FundFlowRow struct {
	Line          int       // line number in the bill, from 1
	Time          time.Time // 记账时间
	TransactionID string    // 微信支付业务单号
	FlowID        string    // 资金流水单号
	BusinessName  string    // 业务名称
	BusinessType  string    // 业务类型
	Direction     string    // 收支类型: FundFlowIncome or FundFlowExpense
	Amount        int64     // 收支金额(元)
	Balance       int64     // 账户结余(元)
	Applicant     string    // 资金变更提交申请人
	Note          string    // 备注
	VoucherNo     string    // 业务凭证号
}

// Fund-flow directions (收支类型).
const (
	FundFlowIncome  = "收入"
	FundFlowExpense = "支出"
)

// FundFlowSummary is the summary row of a fund-flow bill.
type FundFlowSummary struct {
	Count        int64 // 资金流水总笔数
	IncomeCount  int64 // 收入笔数
	Income       int64 // 收入金额
	ExpenseCount int64 // 支出笔数
	Expense      int64 // 支出金额
}

// FundFlowReader reads a fund-flow bill row by row, as TradeBillReader
// does a trade bill.
type FundFlowReader struct {
	b                                                                        *billReader
	err                                                                      error
	bound                                                                    bool
	cTime, cTx, cFlow, cName, cType, cDir, cAmt, cBal, cApp, cNote, cVoucher billColumn
	sum                                                                      FundFlowSummary
	summary                                                                  FundFlowSummary
}

// NewFundFlowReader reads a decompressed fund-flow bill from r.
func NewFundFlowReader(r io.Reader) *FundFlowReader {
	return &FundFlowReader{b: newBillReader(r)}
}

// Summary returns the summary row once Next has returned io.EOF.
func (r *FundFlowReader) Summary() FundFlowSummary { return r.summary }

// Next returns the next row; after the last it checks the summary (counts
// and the income and expense totals) and returns io.EOF. Errors as
// TradeBillReader.Next.
func (r *FundFlowReader) Next() (FundFlowRow, error) {
	if r.err != nil {
		return FundFlowRow{}, r.err
	}
	row, err := r.next()
	if err != nil {
		r.err = err
	}
	return row, err
}

func (r *FundFlowReader) next() (FundFlowRow, error) {
	b := r.b
	vals, err := b.next()
	if !r.bound && b.cols != nil {
		r.bound = true
		var errs []error
		must := func(name string) billColumn {
			c, err := b.bind(true, name)
			if err != nil {
				errs = append(errs, err)
			}
			return c
		}
		r.cTime, r.cTx, r.cFlow = must("记账时间"), must("微信支付业务单号"), must("资金流水单号")
		r.cName, r.cType, r.cDir = must("业务名称"), must("业务类型"), must("收支类型")
		r.cAmt, r.cBal, r.cApp = must("收支金额(元)"), must("账户结余(元)"), must("资金变更提交申请人")
		r.cNote, r.cVoucher = must("备注"), must("业务凭证号")
		if err := errors.Join(errs...); err != nil {
			return FundFlowRow{}, err
		}
	}
	if err == io.EOF {
		return FundFlowRow{}, r.finish()
	}
	if err != nil {
		return FundFlowRow{}, err
	}
	row := FundFlowRow{Line: b.line, TransactionID: vals[r.cTx.idx], FlowID: vals[r.cFlow.idx],
		BusinessName: vals[r.cName.idx], BusinessType: vals[r.cType.idx], Direction: vals[r.cDir.idx],
		Applicant: vals[r.cApp.idx], Note: unescapeFundFlow(vals[r.cNote.idx]), VoucherNo: unescapeFundFlow(vals[r.cVoucher.idx])}
	if row.Time, err = b.time(vals, r.cTime); err != nil {
		return FundFlowRow{}, err
	}
	if row.Amount, err = b.amount(vals, r.cAmt, 2); err != nil {
		return FundFlowRow{}, err
	}
	if row.Balance, err = b.amount(vals, r.cBal, 2); err != nil {
		return FundFlowRow{}, err
	}
	r.sum.Count++
	switch row.Direction {
	case FundFlowIncome:
		r.sum.IncomeCount++
		r.sum.Income += row.Amount
	case FundFlowExpense:
		r.sum.ExpenseCount++
		r.sum.Expense += row.Amount
	default:
		return FundFlowRow{}, b.fieldError("收支类型", row.Direction, errors.New("want 收入 or 支出"))
	}
	return row, nil
}

// unescapeFundFlow undoes the fund-flow bill's escapes: \1 for a space,
// \r and \n for line ends.
func unescapeFundFlow(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	return strings.NewReplacer(`\1`, " ", `\r`, "\r", `\n`, "\n").Replace(s)
}

func (r *FundFlowReader) finish() error {
	b := r.b
	var s FundFlowSummary
	for _, c := range []struct {
		name string
		sum  int64
		dst  *int64
	}{
		{"资金流水总笔数", r.sum.Count, &s.Count},
		{"收入笔数", r.sum.IncomeCount, &s.IncomeCount},
		{"支出笔数", r.sum.ExpenseCount, &s.ExpenseCount},
	} {
		n, err := b.summaryCount(c.name)
		if err != nil {
			return err
		}
		if n != c.sum {
			return fmt.Errorf("%w: %s is %d in the summary, the rows count %d", ErrBillTotals, c.name, n, c.sum)
		}
		*c.dst = n
	}
	for _, t := range []struct {
		name string
		sum  int64
		dst  *int64
	}{{"收入金额", r.sum.Income, &s.Income}, {"支出金额", r.sum.Expense, &s.Expense}} {
		if _, ok := b.summary[t.name]; !ok {
			return fmt.Errorf("%w: the bill summary has no column %s", ErrMalformed, t.name)
		}
		if err := b.checkTotal(t.name, 2, t.sum); err != nil {
			return err
		}
		*t.dst = t.sum
	}
	r.summary = s
	return io.EOF
}
