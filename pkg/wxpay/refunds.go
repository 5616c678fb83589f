package wxpay

// RefundNotice is the resource of a REFUND.* notification. Note that it
// names the state refund_status; the query-refund API calls it status.
type RefundNotice struct {
	MchID               string       `json:"mchid,omitempty"`
	SpMchID             string       `json:"sp_mchid,omitempty"`
	SubMchID            string       `json:"sub_mchid,omitempty"`
	OutTradeNo          string       `json:"out_trade_no"`
	TransactionID       string       `json:"transaction_id"`
	OutRefundNo         string       `json:"out_refund_no"`
	RefundID            string       `json:"refund_id"`
	RefundStatus        string       `json:"refund_status"`
	SuccessTime         string       `json:"success_time,omitempty"`
	UserReceivedAccount string       `json:"user_received_account,omitempty"`
	Amount              RefundAmount `json:"amount"`
}

// RefundAmount is in fen (分).
type RefundAmount struct {
	Total       int64  `json:"total"`
	Refund      int64  `json:"refund"`
	PayerTotal  int64  `json:"payer_total"`
	PayerRefund int64  `json:"payer_refund"`
	Currency    string `json:"currency,omitempty"`
}

// Refund states.
const (
	RefundStatusSuccess    = "SUCCESS"
	RefundStatusClosed     = "CLOSED"
	RefundStatusProcessing = "PROCESSING"
	RefundStatusAbnormal   = "ABNORMAL"
)

// NormalizeRefundStatus maps the CLOSE spelling some documents use onto
// CLOSED: both name the same state.
func NormalizeRefundStatus(s string) string {
	if s == "CLOSE" {
		return RefundStatusClosed
	}
	return s
}
