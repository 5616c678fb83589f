package wxpay

import (
	"bytes"
	"crypto/aes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// V2SignType is the signature algorithm of an API v2 message, as named in
// its sign_type field.
type V2SignType string

// The API v2 signature algorithms.
const (
	// V2SignMD5 is upper-case hex of MD5 over the signed string (the v2
	// default when sign_type is absent).
	V2SignMD5 V2SignType = "MD5"
	// V2SignHMACSHA256 is upper-case hex of HMAC-SHA256 keyed with the API
	// v2 key over the same signed string.
	V2SignHMACSHA256 V2SignType = "HMAC-SHA256"
)

// V2Kind tells an API v2 pay-result notification from a refund notification.
type V2Kind string

// The kinds of API v2 notification.
const (
	// V2KindPay is a pay-result notification: signed <xml> fields.
	V2KindPay V2Kind = "pay"
	// V2KindRefund is a refund notification: its fields are in the
	// encrypted req_info.
	V2KindRefund V2Kind = "refund"
)

// V2Sign returns the API v2 signature of params: the parameters other than
// sign with a non-empty value, sorted by name in byte order and joined as
// k1=v1&k2=v2, followed by &key=<apiV2Key>; then upper-case hex of MD5 of
// that string, or, for V2SignHMACSHA256, of HMAC-SHA256 keyed with apiV2Key
// over it. Any signType other than V2SignHMACSHA256, including "", means MD5.
func V2Sign(params map[string]string, apiV2Key string, signType V2SignType) string {
	keys := make([]string, 0, len(params))
	for k, v := range params {
		if k == "sign" || v == "" {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(params[k])
		b.WriteByte('&')
	}
	b.WriteString("key=")
	b.WriteString(apiV2Key)
	msg := []byte(b.String())

	var sum []byte
	if signType == V2SignHMACSHA256 {
		mac := hmac.New(sha256.New, []byte(apiV2Key))
		mac.Write(msg)
		sum = mac.Sum(nil)
	} else {
		s := md5.Sum(msg)
		sum = s[:]
	}
	return strings.ToUpper(hex.EncodeToString(sum))
}

// ParseV2XML parses a flat API v2 document, <xml><name>value</name>…</xml>,
// into a map from element name to text (CDATA sections and character data
// are concatenated; values are not trimmed). Whitespace, comments and an XML
// declaration may surround the elements. It fails with ErrMalformed on an
// empty body, a root element other than xml, an element nested inside a
// field, text outside the fields, a repeated field, anything after the root
// element, or invalid XML.
func ParseV2XML(body []byte) (map[string]string, error) {
	return parseFlatXML(body, "xml")
}

// parseFlatXML is ParseV2XML with the root element name as a parameter: the
// decrypted req_info of a refund uses <root>.
func parseFlatXML(body []byte, rootName string) (map[string]string, error) {
	body = bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")) // UTF-8 BOM
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, fmt.Errorf("%w: empty XML body", ErrMalformed)
	}
	d := xml.NewDecoder(bytes.NewReader(body))
	fields := make(map[string]string)
	var (
		depth    int    // 0 outside the root, 1 inside it, 2 inside a field
		seenRoot bool   // the root element has been closed
		name     string // current field
		value    strings.Builder
	)
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, v2XMLError(err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if t.Name.Space != "" {
				return nil, fmt.Errorf("%w: namespaced XML element", ErrMalformed)
			}
			switch depth {
			case 0:
				if seenRoot {
					return nil, fmt.Errorf("%w: content after the root element", ErrMalformed)
				}
				if t.Name.Local != rootName {
					return nil, fmt.Errorf("%w: root element is %q, want %q", ErrMalformed, t.Name.Local, rootName)
				}
			case 1:
				if _, dup := fields[t.Name.Local]; dup {
					return nil, fmt.Errorf("%w: duplicate field %q", ErrMalformed, t.Name.Local)
				}
				name = t.Name.Local
				value.Reset()
			default:
				return nil, fmt.Errorf("%w: nested element inside field %q", ErrMalformed, name)
			}
			depth++
		case xml.EndElement:
			// The decoder has already checked that start and end match.
			depth--
			switch depth {
			case 0:
				seenRoot = true
			case 1:
				fields[name] = value.String()
			}
		case xml.CharData:
			if depth == 2 {
				value.Write(t)
			} else if len(bytes.TrimSpace(t)) != 0 {
				if seenRoot {
					return nil, fmt.Errorf("%w: content after the root element", ErrMalformed)
				}
				return nil, fmt.Errorf("%w: text outside the XML fields", ErrMalformed)
			}
		case xml.Comment:
			// Ignored wherever it appears.
		case xml.ProcInst:
			if depth != 0 || seenRoot {
				return nil, fmt.Errorf("%w: unexpected processing instruction", ErrMalformed)
			}
		case xml.Directive:
			return nil, fmt.Errorf("%w: XML directives (DOCTYPE) are not accepted", ErrMalformed)
		}
	}
	if !seenRoot {
		return nil, fmt.Errorf("%w: no <%s> root element", ErrMalformed, rootName)
	}
	return fields, nil
}

// v2XMLError turns a decoder error into ErrMalformed without quoting any of
// the input (encoding/xml's messages may contain body bytes).
func v2XMLError(err error) error {
	var se *xml.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("%w: invalid XML at line %d", ErrMalformed, se.Line)
	}
	return fmt.Errorf("%w: invalid XML", ErrMalformed)
}

// V2Notification is a parsed and authenticated API v2 notification. Not
// every field it holds is authenticated: Authenticated returns the ones
// that are, the data of the event.
type V2Notification struct {
	// Kind is V2KindPay or V2KindRefund.
	Kind V2Kind
	// Fields holds the outer <xml> fields as received (for a refund it
	// includes the encrypted req_info; for a pay notification, sign). For a
	// refund they are not authenticated: anyone on the way can change them
	// without breaking req_info. Use them to find the merchant, not as data.
	Fields map[string]string
	// ReqInfo holds the decrypted req_info fields of a refund notification
	// (refund_id, out_refund_no, refund_status, …); nil for a pay
	// notification.
	ReqInfo map[string]string
	// SignType is the algorithm that verified a pay notification; empty for
	// a refund.
	SignType V2SignType
}

// MchID returns the outer mch_id. For a refund it is not authenticated
// (when req_info carries mch_id too, ParseV2Notification has checked that
// the two agree): use it to pick the merchant whose key must decrypt the
// notification.
func (n *V2Notification) MchID() string { return n.Fields["mch_id"] }

// AppID returns the outer appid; for a refund, as unauthenticated as MchID.
func (n *V2Notification) AppID() string { return n.Fields["appid"] }

// Authenticated returns, in a new map, the fields the notification's
// authentication covers and nothing else. For a pay notification those are
// the fields its sign covers: every field but sign whose value is not empty
// (empty fields are outside the signed string, and so is sign itself, which
// is compared without regard to case). For a refund notification, which has
// no sign, they are the decrypted req_info fields: req_info decrypting under
// the API v2 key is the only proof of origin, so the outer fields (appid,
// mch_id, sub_mch_id, nonce_str, and anything added on the way) are left
// out.
func (n *V2Notification) Authenticated() map[string]string {
	if n.Kind == V2KindRefund {
		out := make(map[string]string, len(n.ReqInfo))
		for k, v := range n.ReqInfo {
			out[k] = v
		}
		return out
	}
	out := make(map[string]string, len(n.Fields))
	for k, v := range n.Fields {
		if k == "sign" || v == "" {
			continue
		}
		out[k] = v
	}
	return out
}

// v2RefundIdentity are the outer fields of a refund notification that
// req_info may carry too; when it does, the two must agree.
var v2RefundIdentity = []string{"mch_id", "appid", "sub_mch_id", "sub_appid"}

// RefundStatus returns refund_status (SUCCESS, CHANGE or REFUNDCLOSE) of a
// refund notification, or "" for a pay notification.
func (n *V2Notification) RefundStatus() string { return n.ReqInfo["refund_status"] }

// ParseV2Notification parses and authenticates an API v2 XML notification
// with the merchant's API v2 key.
//
// The notification must report return_code SUCCESS. A document with
// req_info is a refund notification: it carries no signature, and req_info
// is decrypted with DecryptV2ReqInfo (its integrity comes from the
// encryption); an outer mch_id, appid, sub_mch_id or sub_appid that req_info
// carries too must equal req_info's (else ErrBadSignature). Any other
// document is a pay-result notification: its sign is
// checked in constant time with the algorithm the length of sign implies
// (64 hex characters for HMAC-SHA256, MD5 otherwise; sign_type, if present,
// must name one of the two), and result_code must be SUCCESS.
//
// Errors wrap ErrInvalidConfig (empty key), ErrMalformed (bad XML, missing
// fields, a failure report), ErrBadSignature (a wrong sign, outer fields
// that contradict req_info) or ErrDecrypt (req_info does not decrypt: check
// the API v2 key).
func ParseV2Notification(body []byte, apiV2Key string) (*V2Notification, error) {
	if apiV2Key == "" {
		return nil, fmt.Errorf("%w: API v2 key not configured", ErrInvalidConfig)
	}
	fields, err := ParseV2XML(body)
	if err != nil {
		return nil, err
	}
	switch rc := fields["return_code"]; rc {
	case "SUCCESS":
	case "":
		return nil, fmt.Errorf("%w: notification has no return_code", ErrMalformed)
	case "FAIL":
		return nil, fmt.Errorf("%w: notification reports failure (return_code FAIL)", ErrMalformed)
	default:
		return nil, fmt.Errorf("%w: notification reports failure (return_code is not SUCCESS)", ErrMalformed)
	}

	if reqInfo, ok := fields["req_info"]; ok {
		plain, err := DecryptV2ReqInfo(reqInfo, apiV2Key)
		if err != nil {
			return nil, err
		}
		refund, err := parseFlatXML(plain, "root")
		if err != nil {
			// The ciphertext is not authenticated: a wrong key that happens
			// to leave valid padding shows up here as garbage.
			return nil, fmt.Errorf("%w: decrypted req_info is not a <root> document (check the API v2 key)", ErrDecrypt)
		}
		for _, name := range v2RefundIdentity {
			inner, inReqInfo := refund[name]
			if outer, isOuter := fields[name]; inReqInfo && isOuter && outer != inner {
				return nil, fmt.Errorf("%w: outer %s differs from the one req_info authenticates", ErrBadSignature, name)
			}
		}
		return &V2Notification{Kind: V2KindRefund, Fields: fields, ReqInfo: refund}, nil
	}

	sign := fields["sign"]
	if sign == "" {
		return nil, fmt.Errorf("%w: missing sign field", ErrMalformed)
	}
	// The length of sign decides the algorithm: WeChat has been seen to sign
	// with MD5 although sign_type said HMAC-SHA256, so
	// sign_type is only checked for a known value.
	switch fields["sign_type"] {
	case "", string(V2SignMD5), string(V2SignHMACSHA256):
	default:
		return nil, fmt.Errorf("%w: unknown sign_type (want MD5 or HMAC-SHA256)", ErrMalformed)
	}
	signType := V2SignMD5
	if len(sign) == 2*sha256.Size {
		signType = V2SignHMACSHA256
	}
	want := V2Sign(fields, apiV2Key, signType)
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToUpper(sign))) != 1 {
		return nil, fmt.Errorf("%w: API v2 %s sign does not match (check the API v2 key)", ErrBadSignature, signType)
	}
	if fields["result_code"] != "SUCCESS" {
		return nil, fmt.Errorf("%w: pay notification result_code is not SUCCESS", ErrMalformed)
	}
	return &V2Notification{Kind: V2KindPay, Fields: fields, SignType: signType}, nil
}

// v2AESKey derives the req_info AES-256 key: the lower-case hex of
// MD5(apiV2Key), used as 32 ASCII bytes.
func v2AESKey(apiV2Key string) []byte {
	sum := md5.Sum([]byte(apiV2Key))
	return []byte(hex.EncodeToString(sum[:]))
}

// DecryptV2ReqInfo decrypts the req_info of an API v2 refund notification:
// standard base64, then AES-256-ECB with PKCS#7 padding under the key
// lower-case hex(MD5(apiV2Key)). The result is a <root> XML document.
// Undecodable base64 or a ciphertext length that is not a positive multiple
// of 16 wraps ErrMalformed; invalid padding, which is how a wrong API v2 key
// shows, wraps ErrDecrypt.
func DecryptV2ReqInfo(reqInfo string, apiV2Key string) ([]byte, error) {
	if apiV2Key == "" {
		return nil, fmt.Errorf("%w: API v2 key not configured", ErrInvalidConfig)
	}
	ciphertext, err := base64.StdEncoding.DecodeString(reqInfo)
	if err != nil {
		return nil, fmt.Errorf("%w: req_info is not valid base64", ErrMalformed)
	}
	if len(ciphertext) == 0 || len(ciphertext)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%w: req_info ciphertext length %d is not a positive multiple of %d", ErrMalformed, len(ciphertext), aes.BlockSize)
	}
	return aesECBDecrypt(v2AESKey(apiV2Key), ciphertext)
}

// aesECBDecrypt decrypts ciphertext (a positive multiple of the block size)
// block by block and removes the PKCS#7 padding, checking every pad byte.
func aesECBDecrypt(key, ciphertext []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: AES key of %d bytes is not usable", ErrInvalidConfig, len(key))
	}
	if len(ciphertext) == 0 || len(ciphertext)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%w: ciphertext length %d is not a positive multiple of %d", ErrMalformed, len(ciphertext), aes.BlockSize)
	}
	buf := make([]byte, len(ciphertext))
	for i := 0; i < len(buf); i += aes.BlockSize {
		block.Decrypt(buf[i:i+aes.BlockSize], ciphertext[i:i+aes.BlockSize])
	}
	pad := int(buf[len(buf)-1])
	if pad < 1 || pad > aes.BlockSize {
		return nil, fmt.Errorf("%w: AES-256-ECB padding is invalid (check the API v2 key)", ErrDecrypt)
	}
	for _, b := range buf[len(buf)-pad:] {
		if int(b) != pad {
			return nil, fmt.Errorf("%w: AES-256-ECB padding is invalid (check the API v2 key)", ErrDecrypt)
		}
	}
	return buf[:len(buf)-pad], nil
}

// V2Answer returns the XML body that answers an API v2 notification:
// return_code SUCCESS (msg defaults to "OK") or FAIL (msg defaults to
// "FAIL"), with msg in a CDATA section and no whitespace between tags, e.g.
// <xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>.
// Control characters in msg become spaces, invalid UTF-8 becomes U+FFFD and
// a "]]>" is split across two CDATA sections.
func V2Answer(success bool, msg string) []byte {
	code := "FAIL"
	if success {
		code = "SUCCESS"
		if msg == "" {
			msg = "OK"
		}
	} else if msg == "" {
		msg = "FAIL"
	}
	var b bytes.Buffer
	b.WriteString("<xml><return_code>")
	b.WriteString(v2CDATA(code))
	b.WriteString("</return_code><return_msg>")
	b.WriteString(v2CDATA(msg))
	b.WriteString("</return_msg></xml>")
	return b.Bytes()
}

// v2CDATA wraps s in a CDATA section that XML parsers read back as s (after
// replacing characters XML cannot carry).
func v2CDATA(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		switch {
		case r < 0x20, r == 0x7f:
			return ' '
		case r == 0xFFFE, r == 0xFFFF:
			return utf8.RuneError
		}
		return r
	}, s)
	return "<![CDATA[" + strings.ReplaceAll(s, "]]>", "]]]]><![CDATA[>") + "]]>"
}

// V2TimeEnd parses a v2 time_end value, yyyyMMddHHmmss in Beijing time
// (UTC+8). Anything else wraps ErrMalformed.
func V2TimeEnd(s string) (time.Time, error) {
	return parseV2Time(s, "20060102150405", "time_end", "yyyyMMddHHmmss")
}

// V2RefundSuccessTime parses a v2 refund success_time value,
// yyyy-MM-dd HH:mm:ss in Beijing time (UTC+8). Anything else wraps
// ErrMalformed.
func V2RefundSuccessTime(s string) (time.Time, error) {
	return parseV2Time(s, "2006-01-02 15:04:05", "success_time", "yyyy-MM-dd HH:mm:ss")
}

// parseV2Time parses s with layout in Beijing time, insisting on exactly
// the layout's width with digits wherever the layout has them (time.Parse
// alone accepts one-digit hours).
func parseV2Time(s, layout, field, form string) (time.Time, error) {
	bad := fmt.Errorf("%w: %s is not a valid %s time", ErrMalformed, field, form)
	if len(s) != len(layout) {
		return time.Time{}, bad
	}
	for i := 0; i < len(layout); i++ {
		isDigit := s[i] >= '0' && s[i] <= '9'
		if wantDigit := layout[i] >= '0' && layout[i] <= '9'; wantDigit != isDigit {
			return time.Time{}, bad
		}
	}
	t, err := time.ParseInLocation(layout, s, chinaTime)
	if err != nil {
		return time.Time{}, bad
	}
	return t, nil
}
