package wxpay_test

import (
	"errors"
	"fmt"
	"io"
	"iter"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

func TestParseYuan(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"0.10", 10}, {"-1.05", -105}, {"0.00", 0}, {"0.01", 1}, {"123.45", 12345}, {"-0.01", -1},
		{"9999999999999.99", 999999999999999},
	} {
		got, err := wxpay.ParseYuan(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseYuan(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
		if back := wxpay.FormatYuan(tc.want); back != tc.in {
			t.Errorf("FormatYuan(%d) = %q, want %q", tc.want, back, tc.in)
		}
	}
	for _, in := range []string{"1.234", "1e3", "", " 1.00", "1.00 ", "+1.00", "1", "1.", ".10", "1.0", "-0.00", "01.00",
		"1,00", "１.00", "--1.00", "0x1.00", "10000000000000.00", "NaN", "-"} {
		if got, err := wxpay.ParseYuan(in); err == nil {
			t.Errorf("ParseYuan(%q) = %d, want an error", in, got)
		}
	}
}

const billHeaderAll = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"

const billSummaryAll = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"

// sampleRow is the data row of WeChat's own documentation.
const sampleRow = "`2022-03-21 13:51:31,`wxfdc955f7104ad557,`180023671,`176531292,`,`420000612032130748613220688,`2021WERUN1647840687637,`oZWaCKXip5njeEiloC4oeOV1TTsk,`JSAPI,`SUCCESS,`OTHERS,`CNY,`0.01,`0.00,`0,`0,`0.00,`0.00,`,`,`微信云托管支付测试,`,`0.00000,`0.90%,`0.01,`0.00,`"

func readTrade(bill string) ([]wxpay.TradeBillRow, wxpay.TradeBillSummary, error) {
	r := wxpay.NewTradeBillReader(strings.NewReader(bill))
	var rows []wxpay.TradeBillRow
	for {
		row, err := r.Next()
		if err == io.EOF {
			return rows, r.Summary(), nil
		}
		if err != nil {
			return rows, wxpay.TradeBillSummary{}, err
		}
		rows = append(rows, row)
	}
}

func TestTradeBillReaderSample(t *testing.T) {
	t.Parallel()
	for name, bill := range map[string]string{
		"lf":               billHeaderAll + "\n" + sampleRow + "\n" + billSummaryAll + "\n`1,`0.01,`0.00,`0.00,`0.00000,`0.01,`0.00\n",
		"crlf":             "\uFEFF" + billHeaderAll + "\r\n" + sampleRow + "\r\n" + billSummaryAll + "\r\n`1,`0.01,`0.00,`0.00,`0.00000,`0.01,`0.00\r\n\r\n",
		"no final newline": billHeaderAll + "\n" + sampleRow + "\n" + billSummaryAll + "\n`1,`0.01,`0.00,`0.00,`0.00000,`0.01,`0.00",
	} {
		rows, sum, err := readTrade(bill)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r := rows[0]
		want := time.Date(2022, 3, 21, 13, 51, 31, 0, wxpay.ChinaTime())
		if len(rows) != 1 || !r.TradeTime.Equal(want) || r.AppID != "wxfdc955f7104ad557" || r.MchID != "180023671" ||
			r.SubMchID != "176531292" || r.TransactionID != "420000612032130748613220688" || r.OutTradeNo != "2021WERUN1647840687637" ||
			r.TradeState != "SUCCESS" || r.SettlementTotal != 1 || r.OrderTotal != 1 || r.Rate != "0.90%" || r.Description != "微信云托管支付测试" || r.RateNote != "" {
			t.Errorf("%s: row = %+v", name, r)
		}
		if sum != (wxpay.TradeBillSummary{Count: 1, SettlementTotal: 1, OrderTotal: 1}) {
			t.Errorf("%s: summary = %+v", name, sum)
		}
	}
}

// TestTradeBillReaderLegacyHeader: merchants on the old format have 总金额
// and 企业红包金额; columns are found by name.
func TestTradeBillReaderLegacyHeader(t *testing.T) {
	t.Parallel()
	bill := "商户订单号,交易状态,微信订单号,总金额,交易时间\n`A,`SUCCESS,`42,`2.50,`2026-11-29 10:00:00\n总交易单数,应结订单总金额\n`1,`2.50\n"
	rows, sum, err := readTrade(bill)
	if err != nil || len(rows) != 1 || rows[0].SettlementTotal != 250 || rows[0].OutTradeNo != "A" || sum.SettlementTotal != 250 {
		t.Fatalf("rows %+v, summary %+v, err %v", rows, sum, err)
	}
}

func TestTradeBillReaderRejects(t *testing.T) {
	t.Parallel()
	row := func(edit func([]string)) string {
		v := strings.Split(sampleRow[1:], ",`")
		edit(v)
		return "`" + strings.Join(v, ",`")
	}
	okSum := billSummaryAll + "\n`1,`0.01,`0.00,`0.00,`0.00000,`0.01,`0.00\n"
	for _, tc := range []struct {
		name, bill string
		sentinel   error
		mentions   []string
	}{
		{"float amount", billHeaderAll + "\n" + row(func(v []string) { v[12] = "1e3" }) + "\n" + okSum, wxpay.ErrMalformed, []string{"line 2", "应结订单金额", `"1e3"`}},
		{"three decimals", billHeaderAll + "\n" + row(func(v []string) { v[24] = "0.010" }) + "\n" + okSum, wxpay.ErrMalformed, []string{"line 2", "订单金额"}},
		{"empty amount", billHeaderAll + "\n" + row(func(v []string) { v[16] = "" }) + "\n" + okSum, wxpay.ErrMalformed, []string{"line 2", "退款金额"}},
		{"space", billHeaderAll + "\n" + row(func(v []string) { v[12] = " 1.00" }) + "\n" + okSum, wxpay.ErrMalformed, []string{"line 2", "应结订单金额"}},
		{"bad time", billHeaderAll + "\n" + row(func(v []string) { v[0] = "2022/03/21 13:51:31" }) + "\n" + okSum, wxpay.ErrMalformed, []string{"line 2", "交易时间"}},
		{"count", billHeaderAll + "\n" + sampleRow + "\n" + billSummaryAll + "\n`2,`0.01,`0.00,`0.00,`0.00000,`0.01,`0.00\n", wxpay.ErrBillTotals, []string{"总交易单数"}},
		{"total", billHeaderAll + "\n" + sampleRow + "\n" + billSummaryAll + "\n`1,`0.02,`0.00,`0.00,`0.00000,`0.01,`0.00\n", wxpay.ErrBillTotals, []string{"应结订单总金额", "0.02", "0.01"}},
		{"fee total", billHeaderAll + "\n" + sampleRow + "\n" + billSummaryAll + "\n`1,`0.01,`0.00,`0.00,`0.00001,`0.01,`0.00\n", wxpay.ErrBillTotals, []string{"手续费总金额"}},
		{"no summary", billHeaderAll + "\n" + sampleRow + "\n", wxpay.ErrMalformed, []string{"without a summary"}},
		{"summary header only", billHeaderAll + "\n" + sampleRow + "\n" + billSummaryAll + "\n", wxpay.ErrMalformed, []string{"line 3"}},
		{"line after summary", billHeaderAll + "\n" + sampleRow + "\n" + okSum + sampleRow + "\n", wxpay.ErrMalformed, []string{"line 5"}},
		{"short row", billHeaderAll + "\n`2022-03-21 13:51:31,`x\n" + okSum, wxpay.ErrMalformed, []string{"line 2", "2 values"}},
		{"empty", "", wxpay.ErrMalformed, []string{"empty"}},
		{"missing column", strings.Replace(billHeaderAll, "微信订单号", "微信单号", 1) + "\n" + sampleRow + "\n" + okSum, wxpay.ErrMalformed, []string{"微信订单号"}},
		{"long line", billHeaderAll + "\n`" + strings.Repeat("x", 70000) + "\n", wxpay.ErrMalformed, []string{"line 2", "longer"}},
	} {
		_, _, err := readTrade(tc.bill)
		if !errors.Is(err, tc.sentinel) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.sentinel)
			continue
		}
		for _, m := range tc.mentions {
			if !strings.Contains(err.Error(), m) {
				t.Errorf("%s: %q does not mention %s", tc.name, err, m)
			}
		}
	}
}

// TestTradeBillReaderStreamsLargeBill: a 200,000-row bill (some 50 MB)
// goes through the reader with the heap staying small: nothing holds it.
func TestTradeBillReaderStreamsLargeBill(t *testing.T) {
	if testing.Short() {
		t.Skip("large bill")
	}
	const n = 200_000
	start := time.Date(2026, 11, 29, 0, 0, 0, 0, wxpay.ChinaTime())
	gen := iter.Seq[wxpaytest.BillRow](func(yield func(wxpaytest.BillRow) bool) {
		for i := range n {
			r := wxpaytest.BillRow{TradeTime: start.Add(time.Duration(i) * 400 * time.Millisecond), AppID: "wxd678efh567hg6787",
				MchID: "1230000109", TransactionID: fmt.Sprintf("4200001234%018d", i), OutTradeNo: fmt.Sprintf("ORDER-%012d", i),
				OpenID: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", Total: int64(i%100000 + 1), Description: "一件商品", Fee: int64(i%100000+1) * 600}
			if i%10 == 9 {
				r.TradeState, r.RefundID, r.OutRefundNo, r.Refund, r.Fee = "REFUND", fmt.Sprintf("50300%020d", i), fmt.Sprintf("R%d", i), 1, -600
			}
			if !yield(r) {
				return
			}
		}
	})
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(wxpaytest.WriteTradeBill(pw, "ALL", gen)) }()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak uint64
	var bytesRead countingReader
	bytesRead.r = pr
	br := wxpay.NewTradeBillReader(&bytesRead)
	rows := 0
	for {
		_, err := br.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if rows++; rows%25_000 == 0 {
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
	}
	if rows != n || br.Summary().Count != n {
		t.Fatalf("read %d rows, summary %d; want %d", rows, br.Summary().Count, n)
	}
	grew := int64(peak) - int64(base)
	t.Logf("%d rows, %d MB of bill, heap grew by %d KB at most", rows, bytesRead.n>>20, grew>>10)
	if bytesRead.n < 40<<20 {
		t.Fatalf("the bill is only %d bytes; the test proves nothing", bytesRead.n)
	}
	if grew > 8<<20 {
		t.Errorf("heap grew by %d MB while streaming a %d MB bill, want under 8 MB", grew>>20, bytesRead.n>>20)
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// FuzzTradeBillReader: no input panics or loops; every failure is a
// malformed bill or one that does not add up.
func FuzzTradeBillReader(f *testing.F) {
	f.Add(billHeaderAll + "\n" + sampleRow + "\n" + billSummaryAll + "\n`1,`0.01,`0.00,`0.00,`0.00000,`0.01,`0.00\n")
	f.Add("商户订单号,交易状态,微信订单号,总金额,交易时间\n`A,`SUCCESS,`42,`2.50,`2026-11-29 10:00:00\n总交易单数,应结订单总金额\n`1,`2.50\n")
	f.Add(billHeaderAll + "\n" + billSummaryAll + "\n`0,`0.00,`0.00,`0.00,`0.00000,`0.00,`0.00")
	f.Add("\uFEFF\r\n`\r\n`")
	f.Fuzz(func(t *testing.T, bill string) {
		r := wxpay.NewTradeBillReader(strings.NewReader(bill))
		for i := 0; ; i++ {
			row, err := r.Next()
			if err == io.EOF {
				if r.Summary().Count != int64(i) {
					t.Fatalf("summary count %d after %d rows", r.Summary().Count, i)
				}
				return
			}
			if err != nil {
				if !errors.Is(err, wxpay.ErrMalformed) && !errors.Is(err, wxpay.ErrBillTotals) {
					t.Fatalf("error without a sentinel: %v", err)
				}
				if _, again := r.Next(); again != err {
					t.Fatalf("Next after an error returned %v, want the same error", again)
				}
				return
			}
			if got := wxpay.FormatYuan(row.SettlementTotal); !strings.Contains(bill, got) {
				t.Fatalf("amount %s is not in the bill", got)
			}
			if i > len(bill) {
				t.Fatal("more rows than bytes")
			}
		}
	})
}

// FuzzParseYuan: an accepted amount writes back exactly as it was read,
// and every amount in range reads back as written.
func FuzzParseYuan(f *testing.F) {
	for _, s := range []string{"0.10", "-1.05", "1.234", "1e3", "", " 1.00", "-0.00", "9999999999999.99"} {
		f.Add(s, int64(0))
	}
	f.Add("0.00", int64(math.MaxInt64))
	f.Add("0.00", int64(-105))
	f.Fuzz(func(t *testing.T, s string, fen int64) {
		if v, err := wxpay.ParseYuan(s); err == nil {
			if back := wxpay.FormatYuan(v); back != s {
				t.Fatalf("ParseYuan(%q) = %d, which formats as %q", s, v, back)
			}
		}
		fen %= 1_000_000_000_000_000 // thirteen digits of yuan
		v, err := wxpay.ParseYuan(wxpay.FormatYuan(fen))
		if err != nil || v != fen {
			t.Fatalf("ParseYuan(FormatYuan(%d)) = %d, %v", fen, v, err)
		}
	})
}
