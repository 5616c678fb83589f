package ingress

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/wxpay-notify/wxpay-notify/internal/untrusted"
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
// not an object, a key or a merchant value with an escape or a non-ASCII
// byte, a key equal to a merchant field's name only when case is ignored
// (json.Unmarshal matches those too), a merchant value that is not a
// string.
func scanMerchants(b []byte, rm *resourceMerchants) bool {
	s := jsonScanner{b: b}
	if !s.consume('{') {
		return false
	}
	if s.consume('}') {
		return s.end()
	}
	for {
		key, ok := s.plainString()
		if !ok || !s.consume(':') {
			return false
		}
		dst, exact := rm.field(key)
		if dst == nil && !exact {
			return false // a merchant field's name in another case
		}
		if dst != nil {
			v, ok := s.plainString()
			if !ok {
				return false
			}
			*dst = string(v)
		} else if !s.skipValue() {
			return false
		}
		switch {
		case s.consume(','):
		case s.consume('}'):
			return s.end()
		default:
			return false
		}
	}
}

// jsonScanner walks a JSON text that is known to be valid; it only has to
// find where things end, and gives up (false) on any surprise.
type jsonScanner struct {
	b []byte
	i int
}

func (s *jsonScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// consume skips white space and then c, if c is next.
func (s *jsonScanner) consume(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// end reports whether only white space is left.
func (s *jsonScanner) end() bool {
	s.ws()
	return s.i == len(s.b)
}

// plainString reads a string of printable ASCII without escapes; what it
// returns is part of b.
func (s *jsonScanner) plainString() ([]byte, bool) {
	if !s.consume('"') {
		return nil, false
	}
	start := s.i
	for ; s.i < len(s.b); s.i++ {
		switch c := s.b[s.i]; {
		case c == '"':
			v := s.b[start:s.i]
			s.i++
			return v, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, false
		}
	}
	return nil, false
}

// skipValue skips one value: a string, a number, a literal, or an object
// or array with everything inside it.
func (s *jsonScanner) skipValue() bool {
	s.ws()
	depth := 0
	for s.i < len(s.b) {
		switch c := s.b[s.i]; c {
		case '"':
			if !s.skipString() {
				return false
			}
		case '{', '[':
			depth++
			s.i++
		case '}', ']':
			if depth == 0 {
				return true // the end of the enclosing object
			}
			depth--
			s.i++
		case ',':
			if depth == 0 {
				return true
			}
			s.i++
		default:
			s.i++
		}
		if depth == 0 && s.i < len(s.b) {
			// A string, a container or a scalar may have ended; a
			// scalar goes on to the next ',', '}' or white space.
			s.ws()
			if s.i < len(s.b) && (s.b[s.i] == ',' || s.b[s.i] == '}') {
				return true
			}
		}
	}
	return false
}

// skipString skips a string, escapes included.
func (s *jsonScanner) skipString() bool {
	s.i++ // the opening quote
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '\\':
			s.i += 2
		case '"':
			s.i++
			return true
		default:
			s.i++
		}
	}
	return false
}
