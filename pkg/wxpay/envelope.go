package wxpay

import (
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// decodeEnvelope fills n from a notification body. WeChat's bodies are
// flat: an object of strings plus the resource object of strings, with
// UTF-8 text and no escapes. That shape is decoded here in one pass with a
// single allocation (one copy of the body, which every field slices);
// anything else (an escape, a number, a
// key that differs from a known one only in case, invalid UTF-8, …) is left
// to encoding/json, so the result is always what json.Unmarshal would give
// (FuzzDecodeEnvelope checks exactly that).
func decodeEnvelope(body []byte, n *Notification) error {
	if ok := fastEnvelope(body, n); ok {
		return nil
	}
	*n = Notification{KeyID: n.KeyID}
	return json.Unmarshal(body, n)
}

// envelopeScanner walks a body; any surprise makes it give up (ok=false).
type envelopeScanner struct {
	b   []byte
	src string // one copy of b; every string decoded is a substring of it
	i   int
}

func (s *envelopeScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *envelopeScanner) consume(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *envelopeScanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// str reads a string with no escapes, no control characters and valid
// UTF-8; it returns ok=false for anything else.
func (s *envelopeScanner) str() (string, bool) {
	if !s.consume('"') {
		return "", false
	}
	start := s.i
	ascii := true
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			raw := s.src[start:s.i]
			s.i++
			if !ascii && !utf8.ValidString(raw) {
				return "", false
			}
			return raw, true
		case c == '\\' || c < 0x20:
			return "", false
		case c >= 0x80:
			ascii = false
		}
		s.i++
	}
	return "", false
}

var (
	envelopeKeys = []string{"id", "create_time", "event_type", "resource_type", "summary", "resource"}
	resourceKeys = []string{"original_type", "algorithm", "ciphertext", "associated_data", "nonce"}
)

// unknownKeyOK accepts a key that no field takes; one that matches a field
// only case-insensitively (encoding/json would take it) is not fast-path.
func unknownKeyOK(key string, known []string) bool {
	for _, k := range known {
		if strings.EqualFold(k, key) {
			return false
		}
	}
	return true
}

// envelopeDecoder holds the state of one fast decode.
type envelopeDecoder struct {
	envelopeScanner
	n            *Notification
	resourceSeen bool
}

// members walks the members of an object up to its closing brace; after
// each key and colon, top or resource (as inResource says) reads the value.
func (d *envelopeDecoder) members(inResource bool) bool {
	if !d.consume('{') {
		return false
	}
	if d.consume('}') {
		return true
	}
	for {
		key, ok := d.str()
		if !ok || !d.consume(':') {
			return false
		}
		if inResource {
			ok = d.resource(key)
		} else {
			ok = d.top(key)
		}
		if !ok {
			return false
		}
		if d.consume(',') {
			continue
		}
		return d.consume('}')
	}
}

func (d *envelopeDecoder) top(key string) bool {
	if key == "resource" {
		if d.resourceSeen || d.peek() != '{' {
			return false // a repeated or non-object resource: encoding/json decides
		}
		d.resourceSeen = true
		return d.members(true)
	}
	val, ok := d.str()
	if !ok {
		return false
	}
	switch key {
	case "id":
		d.n.ID = val
	case "create_time":
		d.n.CreateTime = val
	case "event_type":
		d.n.EventType = val
	case "resource_type":
		d.n.ResourceType = val
	case "summary":
		d.n.Summary = val
	default:
		return unknownKeyOK(key, envelopeKeys)
	}
	return true
}

func (d *envelopeDecoder) resource(key string) bool {
	val, ok := d.str()
	if !ok {
		return false
	}
	r := &d.n.Resource
	switch key {
	case "original_type":
		r.OriginalType = val
	case "algorithm":
		r.Algorithm = val
	case "ciphertext":
		r.Ciphertext = val
	case "associated_data":
		r.AssociatedData = val
	case "nonce":
		r.Nonce = val
	default:
		return unknownKeyOK(key, resourceKeys)
	}
	return true
}

func fastEnvelope(body []byte, n *Notification) bool {
	d := envelopeDecoder{envelopeScanner: envelopeScanner{b: body, src: string(body)}, n: n}
	if !d.members(false) {
		return false
	}
	d.ws()
	return d.i == len(d.b)
}
