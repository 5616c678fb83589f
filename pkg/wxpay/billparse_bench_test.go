package wxpay_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"iter"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// benchBill is a 100,000-row trade bill (ALL), one refund in twenty rows.
func benchBill(b *testing.B) []byte {
	b.Helper()
	const n = 100_000
	day := time.Date(2026, 11, 30, 0, 0, 0, 0, wxpay.ChinaTime())
	rows := func(yield func(wxpaytest.BillRow) bool) {
		for i := range n {
			total := int64(100 + i%9900)
			r := wxpaytest.BillRow{TradeTime: day.Add(time.Duration(i) * 800 * time.Millisecond), MchID: "1230000109",
				TransactionID: fmt.Sprintf("42%018d", i), OutTradeNo: fmt.Sprintf("T%d", i), OpenID: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
				Total: total, Fee: total * 6, Description: "bench", Attach: "a"}
			if i%20 == 19 {
				r.TradeState, r.RefundID, r.OutRefundNo, r.Refund = "REFUND", fmt.Sprintf("50%018d", i), fmt.Sprintf("R%d", i), total/2
			}
			if !yield(r) {
				return
			}
		}
	}
	var buf bytes.Buffer
	if err := wxpaytest.WriteTradeBill(&buf, wxpay.BillTypeAll, iter.Seq[wxpaytest.BillRow](rows)); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkTradeBillReader parses a trade bill into typed rows with exact
// amounts and checks the summary; rows/s is the figure to read.
func BenchmarkTradeBillReader(b *testing.B) {
	bill := benchBill(b)
	b.SetBytes(int64(len(bill)))
	b.ResetTimer()
	var rows int
	for b.Loop() {
		r := wxpay.NewTradeBillReader(bytes.NewReader(bill))
		for {
			_, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			rows++
		}
	}
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkTradeBillFloor is the least a parser must do: read the bill line
// by line and split each detail row into its values, with no conversion and
// no check. TradeBillReader is read against it.
func BenchmarkTradeBillFloor(b *testing.B) {
	bill := benchBill(b)
	b.SetBytes(int64(len(bill)))
	b.ResetTimer()
	var rows, vals int
	for b.Loop() {
		sc := bufio.NewScanner(bytes.NewReader(bill))
		sc.Buffer(make([]byte, 64<<10), 64<<10)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "`") {
				vals += len(strings.Split(line[1:], ",`"))
				rows++
			}
		}
	}
	if vals == 0 {
		b.Fatal("no rows")
	}
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
}
