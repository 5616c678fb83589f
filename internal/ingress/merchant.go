package ingress

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/wxpay-notify/wxpay-notify/internal/untrusted"
	"github.com/wxpay-notify/wxpay-notify/pkg/jsonscan"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// resourceMerchants are the fields of a v3 resource that name its merchant.
type resourceMerchants struct {
	MchID        string `json:"mchid"`
	SpMchID      string `json:"sp_mchid"`
	CombineMchID string `json:"combine_mchid"`
}

// merchantKeys are the JSON names of resourceMerchants's fields, by field
// index, read from its tags: scanMerchants and json.Unmarshal go by the
// same names.
var merchantKeys = func() []string {
	t := reflect.TypeFor[resourceMerchants]()
	keys := make([]string, t.NumField())
	for i := range keys {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "-" {
			keys[i] = name
		}
	}
	return keys
}()

// field returns the field named key; exact is false when key names no
// field exactly but one when case is ignored, as json.Unmarshal matches.
func (rm *resourceMerchants) field(key []byte) (dst *string, exact bool) {
	exact = true
	for i, name := range merchantKeys {
		switch {
		case name == "" || len(name) != len(key):
		case name == string(key):
			return rm.ptr(i), true
		case asciiEqualFold(name, key):
			exact = false
		}
	}
	return nil, exact
}

// asciiEqualFold is strings.EqualFold for ASCII, without converting key.
func asciiEqualFold(name string, key []byte) bool {
	for i := range len(name) {
		a, b := name[i], key[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}

// ptr returns the field of index i.
func (rm *resourceMerchants) ptr(i int) *string {
	switch i {
	case 0:
		return &rm.MchID
	case 1:
		return &rm.SpMchID
	}
	return &rm.CombineMchID
}

// checkResourceMerchant refuses a v3 resource that names another merchant
// than m. Merchants of a group often share their keys, so a notification
// for one that reaches another's URL verifies all the same; stored on the
// wrong subject, it would also make the genuine delivery a duplicate.
//
// The merchant a resource belongs to is, in partner mode, sp_mchid (the
// service provider: any sub_mchid is accepted) and otherwise mchid; failing
// that field, the first present of combine_mchid (combined payments) and
// the other mode's field. A resource without any of them (event types that
// carry no merchant) is accepted: its signature proves WeChat sent it for a
// merchant holding these keys, nothing in it says which other merchant it
// could be, and refusing it would lose every such event after WeChat's
// retries.
//
// valid says plaintext is already known to be syntactically valid JSON (the
// envelope was built from it): the fields are then read by scanMerchants,
// without a second json.Unmarshal of the resource on every notification.
func checkResourceMerchant(m *Merchant, plaintext []byte, valid bool) error {
	var rm resourceMerchants
	ok := valid && scanMerchants(plaintext, &rm)
	if !ok {
		rm = resourceMerchants{}
		if err := json.Unmarshal(plaintext, &rm); err != nil {
			var typeErr *json.UnmarshalTypeError
			if errors.As(err, &typeErr) {
				return fmt.Errorf("%w: resource field %s is not a string", wxpay.ErrMalformed, typeErr.Field)
			}
			return nil // not JSON: events.FromNotification says so
		}
	}
	type field struct{ name, value string }
	order := [3]field{{"mchid", rm.MchID}, {"combine_mchid", rm.CombineMchID}, {"sp_mchid", rm.SpMchID}}
	if m.Client.PartnerMode() {
		order = [3]field{{"sp_mchid", rm.SpMchID}, {"combine_mchid", rm.CombineMchID}, {"mchid", rm.MchID}}
	}
	for _, f := range order {
		if f.value == "" {
			continue
		}
		if f.value != m.MchID {
			return fmt.Errorf("%w: resource %s is %s but it was posted to the endpoint of merchant %s (check the notify_url of merchant %s)",
				errMerchantMismatch, f.name, untrusted.String(f.value), m.MchID, untrusted.String(f.value))
		}
		return nil
	}
	return nil
}

// scanMerchants reads the merchant fields of b, a syntactically valid JSON
// text, into rm, as json.Unmarshal would. It reports false, leaving the
// work to json.Unmarshal, on anything it does not decode exactly alike: b
// not an object, a key with an escape or a non-ASCII byte (json.Unmarshal
// folds case by Unicode's rules: "ſp_mchid" is sp_mchid to it), a key
// equal to a merchant field's name only when case is ignored (json.Unmarshal
// matches those too), a merchant value that is not a string or has an
// escape.
func scanMerchants(b []byte, rm *resourceMerchants) bool {
	i := jsonscan.Space(b, 0)
	if i == len(b) || b[i] != '{' {
		return false
	}
	i = jsonscan.Space(b, i+1)
	if i < len(b) && b[i] == '}' {
		return jsonscan.Space(b, i+1) == len(b)
	}
	for {
		key, end, ok := jsonscan.String(b, i)
		if !ok || !isASCII(key) {
			return false
		}
		i = jsonscan.Space(b, end)
		if i == len(b) || b[i] != ':' {
			return false
		}
		i = jsonscan.Space(b, i+1)
		dst, exact := rm.field(key)
		if dst == nil && !exact {
			return false // a merchant field's name in another case
		}
		if dst != nil {
			v, end, ok := jsonscan.String(b, i)
			if !ok {
				return false
			}
			*dst = string(v)
			i = end
		} else if i = jsonscan.ValueEnd(b, i); i < 0 {
			return false
		}
		i = jsonscan.Space(b, i)
		switch {
		case i == len(b):
			return false
		case b[i] == ',':
			i = jsonscan.Space(b, i+1)
		case b[i] == '}':
			return jsonscan.Space(b, i+1) == len(b)
		default:
			return false
		}
	}
}

// isASCII reports whether b is all ASCII.
func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}
