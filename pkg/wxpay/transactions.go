package wxpay

import "encoding/json"

// Transaction is a payment as notifications and the query-order API return
// it. Partner fields are set in service-provider mode instead of AppID and
// MchID.
type Transaction struct {
	AppID           string             `json:"appid,omitempty"`
	MchID           string             `json:"mchid,omitempty"`
	SpAppID         string             `json:"sp_appid,omitempty"`
	SpMchID         string             `json:"sp_mchid,omitempty"`
	SubAppID        string             `json:"sub_appid,omitempty"`
	SubMchID        string             `json:"sub_mchid,omitempty"`
	OutTradeNo      string             `json:"out_trade_no"`
	TransactionID   string             `json:"transaction_id,omitempty"`
	TradeType       string             `json:"trade_type,omitempty"`
	TradeState      string             `json:"trade_state"`
	TradeStateDesc  string             `json:"trade_state_desc,omitempty"`
	BankType        string             `json:"bank_type,omitempty"`
	Attach          string             `json:"attach,omitempty"`
	SuccessTime     string             `json:"success_time,omitempty"`
	Payer           *Payer             `json:"payer,omitempty"`
	Amount          *TransactionAmount `json:"amount,omitempty"`
	SceneInfo       json.RawMessage    `json:"scene_info,omitempty"`
	PromotionDetail json.RawMessage    `json:"promotion_detail,omitempty"`
}

// Payer identifies who paid.
type Payer struct {
	OpenID    string `json:"openid,omitempty"`
	SpOpenID  string `json:"sp_openid,omitempty"`
	SubOpenID string `json:"sub_openid,omitempty"`
}

// TransactionAmount is in fen (分).
type TransactionAmount struct {
	Total         int64  `json:"total"`
	PayerTotal    int64  `json:"payer_total,omitempty"`
	Currency      string `json:"currency,omitempty"`
	PayerCurrency string `json:"payer_currency,omitempty"`
}

// Trade states (trade_state).
const (
	TradeStateSuccess    = "SUCCESS"
	TradeStateRefund     = "REFUND"
	TradeStateNotPay     = "NOTPAY"
	TradeStateClosed     = "CLOSED"
	TradeStateRevoked    = "REVOKED"
	TradeStateUserPaying = "USERPAYING"
	TradeStatePayError   = "PAYERROR"
)
