package wxpay

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ErrBillHashMismatch: the SHA-1 of a downloaded bill (after gzip is
// undone) differs from the hash_value WeChat gave with its download_url.
// Nothing written by DownloadBill may be kept.
var ErrBillHashMismatch = errors.New("wxpay: bill hash mismatch")

// Bill types (bill_type of the trade bill).
const (
	BillTypeAll     = "ALL"
	BillTypeSuccess = "SUCCESS"
	BillTypeRefund  = "REFUND"
)

// Fund-flow account types (account_type).
const (
	AccountTypeBasic     = "BASIC"
	AccountTypeOperation = "OPERATION"
	AccountTypeFees      = "FEES"
)

// TarTypeGzip asks for a gzip-compressed bill (tar_type).
const TarTypeGzip = "GZIP"

// billDateLayout is the layout of bill_date.
const billDateLayout = "2006-01-02"

// TradeBillRequest applies for the trade bill (交易账单) of one day.
type TradeBillRequest struct {
	// Date is the bill's day; only its calendar date in China time counts.
	Date time.Time
	// BillType defaults to BillTypeAll.
	BillType string
	// SubMchID, in partner mode, asks for one sub-merchant's bill; empty
	// means all sub-merchants together. It is refused in direct mode.
	SubMchID string
	// Gzip asks WeChat to compress the bill; DownloadBill undoes it.
	Gzip bool
}

// FundFlowBillRequest applies for the fund-flow bill (资金账单) of one day
// for the merchant's own account (in partner mode, the service provider's).
type FundFlowBillRequest struct {
	// Date is the bill's day; only its calendar date in China time counts.
	Date time.Time
	// AccountType defaults to AccountTypeBasic.
	AccountType string
	// Gzip asks WeChat to compress the bill; DownloadBill undoes it.
	Gzip bool
}

// Bill is WeChat's answer to a bill application: where to download the
// bill and the hash of its (decompressed) content. Download it at once: the
// URL is valid for a short time only, and an expired one answers
// INVALID_REQUEST (apply again).
type Bill struct {
	HashType    string `json:"hash_type"`
	HashValue   string `json:"hash_value"`
	DownloadURL string `json:"download_url"`
}

// ApplyTradeBill applies for a trade bill. A day whose bill is not made yet
// fails with an error matching ErrStatementCreating (try again later; bills
// are ready after 10:00 China time the next day); a day without trades
// fails with ErrNoStatementExist (an empty day, not a failure to retry).
func (c *Client) ApplyTradeBill(ctx context.Context, r TradeBillRequest) (*Bill, error) {
	if r.SubMchID != "" && !c.PartnerMode() {
		return nil, fmt.Errorf("%w: a sub-merchant's trade bill needs partner mode", ErrInvalidConfig)
	}
	q, err := billQuery(r.Date)
	if err != nil {
		return nil, err
	}
	billType := r.BillType
	if billType == "" {
		billType = BillTypeAll
	}
	q.Set("bill_type", billType)
	if r.SubMchID != "" {
		q.Set("sub_mchid", r.SubMchID)
	}
	if r.Gzip {
		q.Set("tar_type", TarTypeGzip)
	}
	return c.applyBill(ctx, "/v3/bill/tradebill?"+q.Encode())
}

// ApplyFundFlowBill applies for a fund-flow bill; errors as ApplyTradeBill.
func (c *Client) ApplyFundFlowBill(ctx context.Context, r FundFlowBillRequest) (*Bill, error) {
	q, err := billQuery(r.Date)
	if err != nil {
		return nil, err
	}
	account := r.AccountType
	if account == "" {
		account = AccountTypeBasic
	}
	q.Set("account_type", account)
	if r.Gzip {
		q.Set("tar_type", TarTypeGzip)
	}
	return c.applyBill(ctx, "/v3/bill/fundflowbill?"+q.Encode())
}

func billQuery(date time.Time) (url.Values, error) {
	if date.IsZero() {
		return nil, fmt.Errorf("%w: the bill date is not set", ErrInvalidConfig)
	}
	return url.Values{"bill_date": {date.In(chinaTime).Format(billDateLayout)}}, nil
}

func (c *Client) applyBill(ctx context.Context, path string) (*Bill, error) {
	var b Bill
	if _, err := c.DoJSON(ctx, http.MethodGet, path, nil, &b); err != nil {
		return nil, err
	}
	if !strings.EqualFold(b.HashType, "SHA1") || len(b.HashValue) != 2*sha1.Size || b.DownloadURL == "" {
		return nil, fmt.Errorf("%w: bill application answered hash_type %s, hash_value %s, download_url of %d bytes",
			ErrMalformed, quoted(b.HashType), quoted(b.HashValue), len(b.DownloadURL))
	}
	if _, err := hex.DecodeString(b.HashValue); err != nil {
		return nil, fmt.Errorf("%w: bill hash_value %s is not hex", ErrMalformed, quoted(b.HashValue))
	}
	return &b, nil
}

// DownloadBill downloads bill with a signed request and streams its
// content, gzip undone, to w. It returns nil only when the SHA-1 of
// everything written matches bill.HashValue; otherwise the error matches
// ErrBillHashMismatch, and what was written must be thrown away. Write to a
// temporary file and rename it only when DownloadBill returns nil. Nothing
// is held in memory beyond a small buffer, whatever the bill's size.
//
// WeChat does not sign the download's answer; the hash is what proves it.
// An expired download_url fails with an error matching ErrInvalidRequest:
// apply for the bill again. The download_url must name the API host (the
// configured BaseURL's host or a mch.weixin.qq.com host over https), so
// that the signed request never goes elsewhere.
//
// Config.HTTPClient's Timeout bounds the whole download, body included;
// give a client with a longer timeout for large bills, or use ctx.
func (c *Client) DownloadBill(ctx context.Context, bill *Bill, w io.Writer) (err error) {
	if bill == nil {
		return fmt.Errorf("%w: no bill to download", ErrInvalidConfig)
	}
	want, err := hex.DecodeString(bill.HashValue)
	if err != nil || len(want) != sha1.Size {
		return fmt.Errorf("%w: bill hash_value %s is not a SHA-1", ErrMalformed, quoted(bill.HashValue))
	}
	if err := c.checkDownloadHost(bill.DownloadURL); err != nil {
		return err
	}
	hr, err := c.openStream(ctx, http.MethodGet, bill.DownloadURL)
	if err != nil {
		return err
	}
	defer hr.Body.Close()
	br := bufio.NewReaderSize(hr.Body, 64<<10)
	var src io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("%w: bill download: %v", ErrMalformed, err)
		}
		defer zr.Close()
		src = zr
	}
	h := sha1.New()
	if _, err := io.Copy(io.MultiWriter(callerWriter{w}, h), src); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("wxpay: bill download: %w", ctx.Err())
		}
		var we *writeError
		if errors.As(err, &we) {
			return fmt.Errorf("wxpay: writing the bill: %w", we.err)
		}
		return fmt.Errorf("%w: bill download: %v", ErrTransport, err)
	}
	if got := h.Sum(nil); !equalHash(got, want) {
		return fmt.Errorf("%w: SHA-1 of the downloaded bill is %x, the application said %s", ErrBillHashMismatch, got, quoted(bill.HashValue))
	}
	return nil
}

func equalHash(a, b []byte) bool { return bytes.Equal(a, b) }

// writeError marks a failure of the caller's writer, so that it is not
// reported as a transport error.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }

type callerWriter struct{ w io.Writer }

func (cw callerWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	if err != nil {
		err = &writeError{err}
	}
	return n, err
}

// checkDownloadHost refuses a download_url that would send a signed
// request somewhere other than the API.
func (c *Client) checkDownloadHost(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%w: bill download_url is not a URL", ErrMalformed)
	}
	base, _ := url.Parse(c.baseURL)
	if base != nil && u.Scheme == base.Scheme && u.Host == base.Host {
		return nil
	}
	if u.Scheme == "https" && (u.Hostname() == "mch.weixin.qq.com" || strings.HasSuffix(u.Hostname(), ".mch.weixin.qq.com")) {
		return nil
	}
	return fmt.Errorf("%w: bill download_url names host %s, not the WeChat Pay API", ErrMalformed, quoted(u.Host))
}

// openStream sends a signed request and returns the answer with its body
// unread, for answers too large to hold (bills). A non-2xx answer is read
// under the usual limit and returned as an *APIError, verified when it
// carries signature headers.
func (c *Client) openStream(ctx context.Context, method, path string) (resp *http.Response, err error) {
	if c.cfg.Signer == nil {
		return nil, fmt.Errorf("%w: API calls need the merchant private key and certificate serial", ErrInvalidConfig)
	}
	start := c.now()
	info := RequestInfo{Method: method}
	defer func() {
		if c.cfg.OnRequest != nil {
			info.Duration = c.now().Sub(start)
			info.Err = err
			c.cfg.OnRequest(info)
		}
	}()
	target, canonical, err := c.resolve(path)
	if err != nil {
		return nil, err
	}
	info.Path = target.Path
	nonce, err := c.Nonce()
	if err != nil {
		return nil, err
	}
	ts := strconv.FormatInt(c.now().Unix(), 10)
	auth, err := Authorization(c.cfg.Signer, c.cfg.MchID, c.cfg.CertSerialNo, method, canonical, ts, nonce, nil)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, target.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: building request: %v", ErrInvalidConfig, err)
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Accept", "*/*")
	req.Header.Set("User-Agent", c.ua)
	if serial := c.requestSerial(""); serial != "" {
		req.Header.Set(HeaderSerial, serial)
	}
	hr, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("wxpay: %s %s: %w", method, target.Path, ctx.Err())
		}
		return nil, fmt.Errorf("%w: %s %s: %v", ErrTransport, method, target.Path, err)
	}
	info.StatusCode = hr.StatusCode
	info.RequestID = hr.Header.Get(HeaderRequestID)
	if hr.StatusCode >= 200 && hr.StatusCode < 300 {
		return hr, nil
	}
	defer hr.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(hr.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("%w: reading answer of %s %s: %v", ErrTransport, method, target.Path, err)
	}
	apiErr := parseAPIError(hr.StatusCode, hr.Header, raw)
	if headerValue(hr.Header, HeaderSignature) != "" {
		if _, verr := c.Verify(ctx, hr.Header, raw); verr != nil {
			return nil, fmt.Errorf("wxpay: %s %s answered HTTP %d with an unverifiable signature: %w", method, target.Path, hr.StatusCode, verr)
		}
		apiErr.Verified = true
	}
	return nil, apiErr
}
