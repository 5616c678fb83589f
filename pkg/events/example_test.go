package events_test

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

func ExampleSubject() {
	fmt.Println(events.Subject("1230000109", wxpay.EventTransactionSuccess))
	fmt.Println(events.Subject("1230000109", events.EventBillReady))
	fmt.Println(events.Pattern(events.AnyMerchant, wxpay.EventRefundSuccess))
	fmt.Println(events.DLQSubject("billing", "1230000109", wxpay.EventRefundClosed))
	// Output:
	// wxpay.1230000109.transaction.success
	// wxpay.1230000109.bill.ready
	// wxpay.*.refund.success
	// wxpaydlq.billing.1230000109.refund.closed
}

func ExampleTransactionKey() {
	fmt.Println(events.TransactionKey("4200000000000000000000000001"))
	fmt.Println(events.RefundKey("50000000382019052709732678859", "CLOSE"))
	fmt.Println(events.OrderKey("1230000109", "T20240101001", wxpay.TradeStateClosed))
	fmt.Println(events.EventKey("rc-bill-trade-20240101"))
	// Output:
	// transaction:4200000000000000000000000001:SUCCESS
	// refund:50000000382019052709732678859:CLOSED
	// order:1230000109:T20240101001:CLOSED
	// event:rc-bill-trade-20240101
}

func ExampleFromV2() {
	// A v2 refund notification made in the merchant console, after
	// wxpay.ParseV2Notification decrypted req_info.
	v := &wxpay.V2Notification{
		Kind:   wxpay.V2KindRefund,
		Fields: map[string]string{"return_code": "SUCCESS", "mch_id": "1230000109", "req_info": "…"},
		ReqInfo: map[string]string{
			"refund_id": "50000000382019052709732678859", "out_refund_no": "R1001",
			"transaction_id": "4200000000000000000000000001", "out_trade_no": "T1001",
			"refund_status": "REFUNDCLOSE", "total_fee": "100", "refund_fee": "100",
		},
	}
	env, err := events.FromV2("1230000109", v, time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(env.EventType, env.DedupeKey, env.Source)
	var r wxpay.RefundNotice
	_ = json.Unmarshal(env.Resource, &r)
	fmt.Println(r.RefundStatus, r.Amount.Refund)
	// Output:
	// REFUND.CLOSED refund:50000000382019052709732678859:CLOSED callback-v2
	// CLOSED 100
}
