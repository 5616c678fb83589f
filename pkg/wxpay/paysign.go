package wxpay

import (
	"crypto"
	"strconv"
)

// JSAPIPayParams are the parameters a JSAPI page (WeixinJSBridge
// getBrandWCPayRequest) or a mini-program (wx.requestPayment) needs to start
// a payment. JSON tags match the front-end names.
type JSAPIPayParams struct {
	AppID     string `json:"appId"`
	TimeStamp string `json:"timeStamp"`
	NonceStr  string `json:"nonceStr"`
	Package   string `json:"package"`
	SignType  string `json:"signType"`
	PaySign   string `json:"paySign"`
}

// APPPayParams are the parameters the WeChat OpenSDK PayReq needs in an app.
type APPPayParams struct {
	AppID     string `json:"appid"`
	PartnerID string `json:"partnerid"`
	PrepayID  string `json:"prepayid"`
	Package   string `json:"package"`
	NonceStr  string `json:"noncestr"`
	TimeStamp string `json:"timestamp"`
	Sign      string `json:"sign"`
}

// PaySign signs the four-line client payment message (appId, timeStamp,
// nonceStr, and the fourth line: "prepay_id=…" for JSAPI and mini-programs,
// the bare prepay_id for APP) with SHA256withRSA.
func PaySign(signer crypto.Signer, appID, timestamp, nonce, line4 string) (string, error) {
	msg := appID + "\n" + timestamp + "\n" + nonce + "\n" + line4 + "\n"
	return SignMessage(signer, []byte(msg))
}

// JSAPIPayParams signs the parameters to start a JSAPI or mini-program
// payment for prepayID. appID is the official-account or mini-program AppID
// the order was placed with.
func (c *Client) JSAPIPayParams(appID, prepayID string) (*JSAPIPayParams, error) {
	if err := c.canPaySign(appID, prepayID); err != nil {
		return nil, err
	}
	nonce, err := c.Nonce()
	if err != nil {
		return nil, err
	}
	ts := strconv.FormatInt(c.now().Unix(), 10)
	pkg := "prepay_id=" + prepayID
	sig, err := PaySign(c.cfg.Signer, appID, ts, nonce, pkg)
	if err != nil {
		return nil, err
	}
	return &JSAPIPayParams{AppID: appID, TimeStamp: ts, NonceStr: nonce, Package: pkg, SignType: "RSA", PaySign: sig}, nil
}

// APPPayParams signs the parameters to start an APP payment for prepayID.
// In partner mode PartnerID is the sub-merchant that placed the order; pass
// it as partnerID, or leave it empty to use the configured MchID.
func (c *Client) APPPayParams(appID, prepayID, partnerID string) (*APPPayParams, error) {
	if err := c.canPaySign(appID, prepayID); err != nil {
		return nil, err
	}
	nonce, err := c.Nonce()
	if err != nil {
		return nil, err
	}
	ts := strconv.FormatInt(c.now().Unix(), 10)
	sig, err := PaySign(c.cfg.Signer, appID, ts, nonce, prepayID)
	if err != nil {
		return nil, err
	}
	if partnerID == "" {
		partnerID = c.cfg.MchID
	}
	return &APPPayParams{AppID: appID, PartnerID: partnerID, PrepayID: prepayID, Package: "Sign=WXPay", NonceStr: nonce, TimeStamp: ts, Sign: sig}, nil
}

func (c *Client) canPaySign(appID, prepayID string) error {
	switch {
	case c.cfg.Signer == nil:
		return errorf(ErrInvalidConfig, "pay signing needs the merchant private key")
	case appID == "" || prepayID == "":
		return errorf(ErrMalformed, "pay signing needs both appid and prepay_id")
	}
	return nil
}
