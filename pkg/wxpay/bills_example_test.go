package wxpay_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// Apply for a day's trade bill, download it into a file that is kept only
// when its hash checks, and read it row by row: the reader checks that the
// rows add up to the summary.
func ExampleClient_DownloadBill() {
	day := time.Date(2026, 11, 29, 0, 0, 0, 0, wxpay.ChinaTime())
	now := day.Add(35 * time.Hour) // 11:00 the next day
	platform := wxpaytest.NewServer(nil, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, Now: func() time.Time { return now }})
	defer platform.Close()
	m := platform.AddMerchant(wxpaytest.MerchantOptions{MchID: "1230000109"})
	platform.Bills().AddTradeRows(
		wxpaytest.BillRow{TradeTime: day.Add(9 * time.Hour), MchID: m.MchID, TransactionID: "4200000001", OutTradeNo: "ORDER-1", Total: 1999},
		wxpaytest.BillRow{TradeTime: day.Add(10 * time.Hour), MchID: m.MchID, TransactionID: "4200000001", OutTradeNo: "ORDER-1",
			TradeState: "REFUND", RefundID: "5030000001", OutRefundNo: "REFUND-1", Refund: 500, Total: 1999},
	)
	client, err := wxpay.NewClient(platform.ClientConfig(m))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()

	bill, err := client.ApplyTradeBill(ctx, wxpay.TradeBillRequest{Date: day, Gzip: true})
	if err != nil {
		panic(err) // errors.Is(err, wxpay.ErrStatementCreating): not ready yet; ErrNoStatementExist: an empty day
	}
	dir, _ := os.MkdirTemp("", "bills")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "trade-2026-11-29.csv")
	tmp, _ := os.CreateTemp(dir, "download-*")
	if err := client.DownloadBill(ctx, bill, tmp); err != nil {
		tmp.Close()
		os.Remove(tmp.Name()) // a bill whose hash does not match is never kept
		panic(err)
	}
	tmp.Close()
	os.Rename(tmp.Name(), path)

	f, _ := os.Open(path)
	defer f.Close()
	r := wxpay.NewTradeBillReader(f)
	for {
		row, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			panic(err) // wxpay.ErrMalformed or wxpay.ErrBillTotals
		}
		fmt.Println(row.TradeTime.Format("15:04"), row.OutTradeNo, row.TradeState, row.SettlementTotal, row.Refund)
	}
	s := r.Summary()
	fmt.Printf("%d rows, settled %s yuan, refunded %s yuan\n", s.Count, wxpay.FormatYuan(s.SettlementTotal), wxpay.FormatYuan(s.Refund))
	// Output:
	// 09:00 ORDER-1 SUCCESS 1999 0
	// 10:00 ORDER-1 REFUND 1999 500
	// 2 rows, settled 19.99 yuan, refunded 5.00 yuan
}
