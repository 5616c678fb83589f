package wxpay

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
)

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

// RefundRequest asks for a refund of a paid order, named by TransactionID
// or OutTradeNo. SubMchID is required in partner mode and empty in direct
// mode. Retry a failed or timed-out request with the same OutRefundNo: a
// new number would refund twice.
type RefundRequest struct {
	SubMchID      string
	TransactionID string
	OutTradeNo    string
	OutRefundNo   string
	Reason        string
	NotifyURL     string
	// FundsAccount AVAILABLE refunds from the available balance.
	FundsAccount string
	// Refund and Total (the order's amount) are in fen; Currency defaults
	// to CNY.
	Refund   int64
	Total    int64
	Currency string
}

// Refund is a refund as the create-refund and query-refund APIs return it.
// Status is normalised (CLOSE reads CLOSED).
type Refund struct {
	RefundID            string          `json:"refund_id"`
	OutRefundNo         string          `json:"out_refund_no"`
	TransactionID       string          `json:"transaction_id"`
	OutTradeNo          string          `json:"out_trade_no"`
	Channel             string          `json:"channel,omitempty"`
	UserReceivedAccount string          `json:"user_received_account,omitempty"`
	SuccessTime         string          `json:"success_time,omitempty"`
	CreateTime          string          `json:"create_time,omitempty"`
	Status              string          `json:"status"`
	FundsAccount        string          `json:"funds_account,omitempty"`
	Amount              RefundAmount    `json:"amount"`
	PromotionDetail     json.RawMessage `json:"promotion_detail,omitempty"`
}

// CreateRefund asks for a refund; the answer is usually PROCESSING, and
// QueryRefund or the REFUND.* notification tells the outcome.
func (c *Client) CreateRefund(ctx context.Context, r *RefundRequest) (*Refund, error) {
	if err := c.checkSubMchID(r.SubMchID); err != nil {
		return nil, err
	}
	if (r.TransactionID == "") == (r.OutTradeNo == "") {
		return nil, errorf(ErrInvalidConfig, "a refund names its order by transaction_id or out_trade_no, exactly one")
	}
	if r.OutRefundNo == "" {
		return nil, errorf(ErrInvalidConfig, "empty out_refund_no")
	}
	type amount struct {
		Refund   int64  `json:"refund"`
		Total    int64  `json:"total"`
		Currency string `json:"currency"`
	}
	body := struct {
		SubMchID      string `json:"sub_mchid,omitempty"`
		TransactionID string `json:"transaction_id,omitempty"`
		OutTradeNo    string `json:"out_trade_no,omitempty"`
		OutRefundNo   string `json:"out_refund_no"`
		Reason        string `json:"reason,omitempty"`
		NotifyURL     string `json:"notify_url,omitempty"`
		FundsAccount  string `json:"funds_account,omitempty"`
		Amount        amount `json:"amount"`
	}{r.SubMchID, r.TransactionID, r.OutTradeNo, r.OutRefundNo, r.Reason, r.NotifyURL, r.FundsAccount,
		amount{r.Refund, r.Total, r.Currency}}
	if body.Amount.Currency == "" {
		body.Amount.Currency = "CNY"
	}
	return c.refundAnswer(c.doRefund(ctx, http.MethodPost, "/v3/refund/domestic/refunds", body))
}

// QueryRefund queries a refund by the merchant's refund number. subMchID
// is the sub-merchant in partner mode and empty in direct mode. A refund
// WeChat does not know answers an error matching ErrResourceNotExists.
func (c *Client) QueryRefund(ctx context.Context, subMchID, outRefundNo string) (*Refund, error) {
	if err := c.checkSubMchID(subMchID); err != nil {
		return nil, err
	}
	if outRefundNo == "" {
		return nil, errorf(ErrInvalidConfig, "empty out_refund_no")
	}
	p := "/v3/refund/domestic/refunds/" + url.PathEscape(outRefundNo)
	if c.PartnerMode() {
		p += "?" + url.Values{"sub_mchid": {subMchID}}.Encode()
	}
	return c.refundAnswer(c.doRefund(ctx, http.MethodGet, p, nil))
}

func (c *Client) doRefund(ctx context.Context, method, path string, in any) (*Refund, error) {
	var r Refund
	if _, err := c.DoJSON(ctx, method, path, in, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func (c *Client) refundAnswer(r *Refund, err error) (*Refund, error) {
	if err != nil {
		return nil, err
	}
	if r.Status == "" || r.OutRefundNo == "" {
		return nil, errorf(ErrMalformed, "the refund answer has no status or out_refund_no")
	}
	r.Status = NormalizeRefundStatus(r.Status)
	return r, nil
}
