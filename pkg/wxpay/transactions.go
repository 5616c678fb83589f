package wxpay

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"
)

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

// PrepayRequest is an order to place (下单). In direct mode AppID is the
// appid and the order belongs to the configured merchant; in partner mode
// AppID is the sp_appid, the configured merchant is the sp_mchid, and
// SubMchID (required) and SubAppID name the sub-merchant.
type PrepayRequest struct {
	AppID    string
	SubAppID string
	SubMchID string

	Description string
	OutTradeNo  string
	// TimeExpire is sent when not zero.
	TimeExpire time.Time
	Attach     string
	NotifyURL  string
	GoodsTag   string
	// Total is in fen (分); Currency defaults to CNY.
	Total    int64
	Currency string
	// Payer is required for JSAPI and mini-program orders: OpenID in
	// direct mode, SpOpenID or SubOpenID in partner mode.
	Payer *Payer
	// SceneInfo is required for H5 orders (PayerClientIP and H5Info).
	SceneInfo *SceneInfo
	// ProfitSharing marks the order for profit sharing (settle_info).
	ProfitSharing bool
}

// SceneInfo describes where the payment is made.
type SceneInfo struct {
	PayerClientIP string  `json:"payer_client_ip,omitempty"`
	DeviceID      string  `json:"device_id,omitempty"`
	H5Info        *H5Info `json:"h5_info,omitempty"`
}

// H5Info is the scene of an H5 payment; Type is Wap, iOS or Android.
type H5Info struct {
	Type        string `json:"type"`
	AppName     string `json:"app_name,omitempty"`
	AppURL      string `json:"app_url,omitempty"`
	BundleID    string `json:"bundle_id,omitempty"`
	PackageName string `json:"package_name,omitempty"`
}

// Trade types (trade_type) and the prepay endpoint of each.
const (
	TradeTypeJSAPI  = "JSAPI"
	TradeTypeApp    = "APP"
	TradeTypeNative = "NATIVE"
	TradeTypeMWEB   = "MWEB" // H5
)

type prepayBody struct {
	AppID       string `json:"appid,omitempty"`
	MchID       string `json:"mchid,omitempty"`
	SpAppID     string `json:"sp_appid,omitempty"`
	SpMchID     string `json:"sp_mchid,omitempty"`
	SubAppID    string `json:"sub_appid,omitempty"`
	SubMchID    string `json:"sub_mchid,omitempty"`
	Description string `json:"description"`
	OutTradeNo  string `json:"out_trade_no"`
	TimeExpire  string `json:"time_expire,omitempty"`
	Attach      string `json:"attach,omitempty"`
	NotifyURL   string `json:"notify_url"`
	GoodsTag    string `json:"goods_tag,omitempty"`
	Amount      struct {
		Total    int64  `json:"total"`
		Currency string `json:"currency"`
	} `json:"amount"`
	Payer      *Payer     `json:"payer,omitempty"`
	SceneInfo  *SceneInfo `json:"scene_info,omitempty"`
	SettleInfo *struct {
		ProfitSharing bool `json:"profit_sharing"`
	} `json:"settle_info,omitempty"`
}

// PrepayJSAPI places a JSAPI or mini-program order and returns its
// prepay_id (valid 2 hours); JSAPIPayParams signs what the page needs.
func (c *Client) PrepayJSAPI(ctx context.Context, r *PrepayRequest) (prepayID string, err error) {
	if r.Payer == nil || (r.Payer.OpenID == "" && r.Payer.SpOpenID == "" && r.Payer.SubOpenID == "") {
		return "", errorf(ErrInvalidConfig, "a JSAPI order needs the payer's openid")
	}
	return c.prepay(ctx, "jsapi", r, "prepay_id")
}

// PrepayApp places an APP order and returns its prepay_id; APPPayParams
// signs what the app needs.
func (c *Client) PrepayApp(ctx context.Context, r *PrepayRequest) (prepayID string, err error) {
	return c.prepay(ctx, "app", r, "prepay_id")
}

// PrepayNative places a Native order and returns the code_url to show as a
// QR code.
func (c *Client) PrepayNative(ctx context.Context, r *PrepayRequest) (codeURL string, err error) {
	return c.prepay(ctx, "native", r, "code_url")
}

// PrepayH5 places an H5 order and returns the h5_url to send the mobile
// browser to. SceneInfo with PayerClientIP and H5Info is required.
func (c *Client) PrepayH5(ctx context.Context, r *PrepayRequest) (h5URL string, err error) {
	if r.SceneInfo == nil || r.SceneInfo.PayerClientIP == "" || r.SceneInfo.H5Info == nil {
		return "", errorf(ErrInvalidConfig, "an H5 order needs scene_info with payer_client_ip and h5_info")
	}
	return c.prepay(ctx, "h5", r, "h5_url")
}

// prepay places an order of kind and returns the answer's field (the
// prepay_id, code_url or h5_url the front end needs), which must be there.
func (c *Client) prepay(ctx context.Context, kind string, r *PrepayRequest, field string) (string, error) {
	if err := c.checkSubMchID(r.SubMchID); err != nil {
		return "", err
	}
	b := prepayBody{Description: r.Description, OutTradeNo: r.OutTradeNo, Attach: r.Attach,
		NotifyURL: r.NotifyURL, GoodsTag: r.GoodsTag, Payer: r.Payer, SceneInfo: r.SceneInfo}
	if c.PartnerMode() {
		b.SpAppID, b.SpMchID, b.SubAppID, b.SubMchID = r.AppID, c.cfg.MchID, r.SubAppID, r.SubMchID
	} else {
		b.AppID, b.MchID = r.AppID, c.cfg.MchID
	}
	if !r.TimeExpire.IsZero() {
		b.TimeExpire = r.TimeExpire.In(chinaTime).Format(time.RFC3339)
	}
	b.Amount.Total, b.Amount.Currency = r.Total, r.Currency
	if b.Amount.Currency == "" {
		b.Amount.Currency = "CNY"
	}
	if r.ProfitSharing {
		b.SettleInfo = &struct {
			ProfitSharing bool `json:"profit_sharing"`
		}{true}
	}
	var out map[string]any
	if _, err := c.DoJSON(ctx, http.MethodPost, c.transactionsPath()+"/"+kind, b, &out); err != nil {
		return "", err
	}
	v, _ := out[field].(string)
	if v == "" {
		return "", errorf(ErrMalformed, "the answer has no %s", field)
	}
	return v, nil
}

func (c *Client) transactionsPath() string {
	if c.PartnerMode() {
		return "/v3/pay/partner/transactions"
	}
	return "/v3/pay/transactions"
}

// checkSubMchID: partner mode needs a sub-merchant, direct mode has none.
func (c *Client) checkSubMchID(sub string) error {
	switch {
	case c.PartnerMode() && sub == "":
		return errorf(ErrInvalidConfig, "partner mode needs the sub_mchid")
	case !c.PartnerMode() && sub != "":
		return errorf(ErrInvalidConfig, "sub_mchid %q given to a client that is not in partner mode", sub)
	}
	return nil
}

// merchantQuery is the query naming the merchant: mchid, or sp_mchid and
// sub_mchid in partner mode.
func (c *Client) merchantQuery(sub string) string {
	v := url.Values{}
	if c.PartnerMode() {
		v.Set("sp_mchid", c.cfg.MchID)
		v.Set("sub_mchid", sub)
	} else {
		v.Set("mchid", c.cfg.MchID)
	}
	return v.Encode()
}

// QueryOrderByOutTradeNo queries an order by the merchant's order number;
// only this form finds unpaid orders. subMchID is the sub-merchant in
// partner mode and empty in direct mode. An order WeChat does not know
// answers an error matching ErrOrderNotExist.
func (c *Client) QueryOrderByOutTradeNo(ctx context.Context, subMchID, outTradeNo string) (*Transaction, error) {
	return c.queryOrder(ctx, subMchID, "out-trade-no", outTradeNo)
}

// QueryOrderByTransactionID queries a paid order by WeChat's transaction_id.
func (c *Client) QueryOrderByTransactionID(ctx context.Context, subMchID, transactionID string) (*Transaction, error) {
	return c.queryOrder(ctx, subMchID, "id", transactionID)
}

func (c *Client) queryOrder(ctx context.Context, sub, by, id string) (*Transaction, error) {
	if err := c.checkSubMchID(sub); err != nil {
		return nil, err
	}
	if id == "" {
		return nil, errorf(ErrInvalidConfig, "empty order number")
	}
	var tx Transaction
	p := c.transactionsPath() + "/" + by + "/" + url.PathEscape(id) + "?" + c.merchantQuery(sub)
	if _, err := c.DoJSON(ctx, http.MethodGet, p, nil, &tx); err != nil {
		return nil, err
	}
	if tx.TradeState == "" {
		return nil, errorf(ErrMalformed, "the order answer has no trade_state")
	}
	return &tx, nil
}

// CloseOrder closes an unpaid order (WeChat answers 204). Closing a closed
// order succeeds again; closing a paid one fails with ErrOrderPaid.
func (c *Client) CloseOrder(ctx context.Context, subMchID, outTradeNo string) error {
	if err := c.checkSubMchID(subMchID); err != nil {
		return err
	}
	if outTradeNo == "" {
		return errorf(ErrInvalidConfig, "empty out_trade_no")
	}
	body := map[string]string{"mchid": c.cfg.MchID}
	if c.PartnerMode() {
		body = map[string]string{"sp_mchid": c.cfg.MchID, "sub_mchid": subMchID}
	}
	_, err := c.DoJSON(ctx, http.MethodPost, c.transactionsPath()+"/out-trade-no/"+url.PathEscape(outTradeNo)+"/close", body, nil)
	return err
}
