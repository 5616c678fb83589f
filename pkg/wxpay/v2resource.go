package wxpay

import (
	"fmt"
	"strconv"
	"time"
)

// v2PaidDesc is the trade_state_desc of a payment mapped from v2, the
// summary WeChat gives a TRANSACTION.SUCCESS notification.
const v2PaidDesc = "支付成功"

// Transaction maps a v2 pay-result notification onto the resource of the v3
// TRANSACTION.SUCCESS notification of the same payment, for merchant mchid
// (the merchant whose API v2 key verified n).
//
// The result has mchid (mch_id, else the mchid argument), appid,
// out_trade_no, transaction_id, trade_type, trade_state SUCCESS,
// trade_state_desc 支付成功, bank_type, attach, success_time (time_end in
// RFC 3339, +08:00), amount{total = total_fee, payer_total = cash_fee
// (total_fee when absent), currency = fee_type (default CNY),
// payer_currency = cash_fee_type (default CNY)} and payer{openid}. In
// partner mode (sub_mch_id present) it also has sp_mchid = mch_id,
// sub_mchid, sp_appid = appid, sub_appid and payer{sp_openid = openid,
// sub_openid}.
//
// Only the fields Authenticated returns are read. A refund notification, a
// missing transaction_id or total_fee, an amount that is not a non-negative
// integer in fen and a time_end in the wrong form wrap ErrMalformed.
func (n *V2Notification) Transaction(mchid string) (*Transaction, error) {
	if n.Kind != V2KindPay {
		return nil, fmt.Errorf("%w: v2 notification of kind %q is not a pay result", ErrMalformed, n.Kind)
	}
	return v2Transaction(mchid, n.Authenticated())
}

// Refund maps a v2 refund notification onto the resource of the v3
// REFUND.* notification of the same refund state, for merchant mchid (the
// merchant whose API v2 key decrypted req_info).
//
// The result has mchid (always the mchid argument), out_trade_no,
// transaction_id, out_refund_no, refund_id, refund_status (v2 SUCCESS,
// CHANGE and REFUNDCLOSE become SUCCESS, ABNORMAL and CLOSED), success_time
// (RFC 3339, when given), user_received_account = refund_recv_accout and
// amount{total = total_fee, refund = refund_fee, payer_total,
// payer_refund}. v2 does not report the payer's share of a refund:
// payer_total is settlement_total_fee (total minus non-recharge coupons),
// else cash_fee, else total_fee, and payer_refund is settlement_refund_fee,
// else cash_refund_fee, else refund_fee. sp_mchid and sub_mchid are set
// only when req_info itself carries sub_mch_id.
//
// Only the decrypted req_info fields are read (Authenticated): the outer
// fields of a refund notice are not authenticated, so none of them reaches
// the result, not even in partner mode (the outer sub_mch_id is not known
// to be the sub-merchant's). A pay notification, a missing refund_id or
// amount, an unknown refund_status, an amount that is not a non-negative
// integer in fen, a success_time in the wrong form and a req_info mch_id
// other than mchid wrap ErrMalformed.
func (n *V2Notification) Refund(mchid string) (*RefundNotice, error) {
	if n.Kind != V2KindRefund {
		return nil, fmt.Errorf("%w: v2 notification of kind %q is not a refund", ErrMalformed, n.Kind)
	}
	return v2Refund(mchid, n.Authenticated())
}

// v2Transaction maps the fields of a v2 pay result onto a v3 transaction.
func v2Transaction(mchid string, f map[string]string) (*Transaction, error) {
	if f["transaction_id"] == "" {
		return nil, fmt.Errorf("%w: v2 pay notification has no transaction_id", ErrMalformed)
	}
	total, err := v2Amount(f, "total_fee")
	if err != nil {
		return nil, err
	}
	payerTotal, err := v2AmountOr(f, total, "cash_fee")
	if err != nil {
		return nil, err
	}
	t := &Transaction{
		AppID:          f["appid"],
		MchID:          orDefault(f["mch_id"], mchid),
		OutTradeNo:     f["out_trade_no"],
		TransactionID:  f["transaction_id"],
		TradeType:      f["trade_type"],
		TradeState:     TradeStateSuccess,
		TradeStateDesc: v2PaidDesc,
		BankType:       f["bank_type"],
		Attach:         f["attach"],
		Amount: &TransactionAmount{
			Total:         total,
			PayerTotal:    payerTotal,
			Currency:      orDefault(f["fee_type"], "CNY"),
			PayerCurrency: orDefault(f["cash_fee_type"], "CNY"),
		},
		Payer: &Payer{OpenID: f["openid"]},
	}
	if s := f["time_end"]; s != "" {
		at, err := V2TimeEnd(s)
		if err != nil {
			return nil, err
		}
		t.SuccessTime = at.In(chinaTime).Format(time.RFC3339)
	}
	if f["sub_mch_id"] != "" {
		t.SpMchID = t.MchID
		t.SubMchID = f["sub_mch_id"]
		t.SpAppID = t.AppID
		t.SubAppID = f["sub_appid"]
		t.Payer.SpOpenID = f["openid"]
		t.Payer.SubOpenID = f["sub_openid"]
	}
	return t, nil
}

// v2RefundStatus maps a v2 refund_status onto the v3 one. v3 spellings
// are accepted as themselves.
func v2RefundStatus(s string) (string, bool) {
	switch s {
	case "SUCCESS":
		return RefundStatusSuccess, true
	case "CHANGE", "ABNORMAL":
		return RefundStatusAbnormal, true
	case "REFUNDCLOSE", "CLOSE", "CLOSED":
		return RefundStatusClosed, true
	}
	return "", false
}

// v2Refund maps the decrypted req_info fields of a v2 refund notification
// onto a v3 refund notice for merchant mchid.
func v2Refund(mchid string, f map[string]string) (*RefundNotice, error) {
	if id := f["mch_id"]; id != "" && id != mchid {
		return nil, fmt.Errorf("%w: v2 refund req_info names merchant %q, not %s", ErrMalformed, id, mchid)
	}
	if f["refund_id"] == "" {
		return nil, fmt.Errorf("%w: v2 refund notification has no refund_id", ErrMalformed)
	}
	status, ok := v2RefundStatus(f["refund_status"])
	if !ok {
		return nil, fmt.Errorf("%w: v2 refund_status %q is not SUCCESS, CHANGE or REFUNDCLOSE", ErrMalformed, f["refund_status"])
	}
	total, err := v2Amount(f, "total_fee")
	if err != nil {
		return nil, err
	}
	refund, err := v2Amount(f, "refund_fee")
	if err != nil {
		return nil, err
	}
	payerTotal, err := v2AmountOr(f, total, "settlement_total_fee", "cash_fee")
	if err != nil {
		return nil, err
	}
	payerRefund, err := v2AmountOr(f, refund, "settlement_refund_fee", "cash_refund_fee")
	if err != nil {
		return nil, err
	}
	r := &RefundNotice{
		MchID:               mchid,
		OutTradeNo:          f["out_trade_no"],
		TransactionID:       f["transaction_id"],
		OutRefundNo:         f["out_refund_no"],
		RefundID:            f["refund_id"],
		RefundStatus:        status,
		UserReceivedAccount: f["refund_recv_accout"],
		Amount: RefundAmount{
			Total:       total,
			Refund:      refund,
			PayerTotal:  payerTotal,
			PayerRefund: payerRefund,
		},
	}
	if s := f["success_time"]; s != "" {
		at, err := V2RefundSuccessTime(s)
		if err != nil {
			return nil, err
		}
		r.SuccessTime = at.In(chinaTime).Format(time.RFC3339)
	}
	if f["sub_mch_id"] != "" {
		r.SpMchID = r.MchID
		r.SubMchID = f["sub_mch_id"]
	}
	return r, nil
}

// v2Amount parses the required amount field name (fen, a non-negative
// integer).
func v2Amount(f map[string]string, name string) (int64, error) {
	s, ok := f[name]
	if !ok || s == "" {
		return 0, fmt.Errorf("%w: v2 notification has no %s", ErrMalformed, name)
	}
	return parseFen(name, s)
}

// v2AmountOr parses the first of names that is present, or returns def.
func v2AmountOr(f map[string]string, def int64, names ...string) (int64, error) {
	for _, name := range names {
		if s := f[name]; s != "" {
			return parseFen(name, s)
		}
	}
	return def, nil
}

// parseFen parses an amount in fen: decimal digits only.
func parseFen(name, s string) (int64, error) {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%w: v2 %s is not a non-negative integer amount in fen", ErrMalformed, name)
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: v2 %s is out of range", ErrMalformed, name)
	}
	return n, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
