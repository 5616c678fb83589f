package events

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/wxpay-notify/wxpay-notify/pkg/jsonscan"
)

// decodeEnvelope decodes and validates a message body; every error wraps
// ErrMalformedEnvelope.
func decodeEnvelope(data []byte, env *Envelope) error {
	if err := unmarshalEnvelope(data, env); err != nil {
		return fmt.Errorf("%w: body is not a JSON envelope: %v", ErrMalformedEnvelope, err)
	}
	// The body, resource included, was checked to be valid JSON.
	return env.validate(false)
}

// unmarshalEnvelope is json.Unmarshal(data, env) for a zero env, with the
// same result. Envelopes as Publish writes them (the documented field
// names, string values without escapes, no v2 field) take a direct path:
// json.Valid checks the syntax, then one pass picks the fields out, which
// costs about a third of the reflection-driven decoding. Anything else
// (escapes, other spellings of the names, unknown fields, null or
// mistyped values, v2 fields) is left to json.Unmarshal.
func unmarshalEnvelope(data []byte, env *Envelope) error {
	if json.Valid(data) && decodeEnvelopeFast(data, env) {
		return nil
	}
	*env = Envelope{}
	return json.Unmarshal(data, env)
}

// decodeEnvelopeFast decodes data, valid JSON, into env and reports
// whether it could; false leaves env partly set.
func decodeEnvelopeFast(data []byte, env *Envelope) bool {
	i := jsonscan.Space(data, 0)
	if i >= len(data) || data[i] != '{' {
		return false
	}
	// The string fields are parts of one copy of the body: one allocation
	// instead of one per field.
	body := string(data)
	i = jsonscan.Space(data, i+1)
	if i < len(data) && data[i] == '}' {
		return true
	}
	for i < len(data) {
		key, next, ok := jsonscan.String(data, i)
		if !ok {
			return false
		}
		i = jsonscan.Space(data, next)
		i = jsonscan.Space(data, i+1) // the colon
		switch string(key) {
		case "resource":
			end := jsonscan.ValueEnd(data, i)
			if end < 0 || data[i] == 'n' { // null keeps the field: rare, left to json
				return false
			}
			env.Resource = bytes.Clone(data[i:end])
			i = end
		case "received_at":
			_, end, ok := jsonscan.String(data, i)
			if !ok || env.ReceivedAt.UnmarshalJSON(data[i:end]) != nil {
				return false
			}
			i = end
		default:
			field := env.stringField(key)
			if field == nil {
				return false
			}
			_, end, ok := jsonscan.String(data, i)
			if !ok {
				return false
			}
			*field = body[i+1 : end-1]
			i = end
		}
		i = jsonscan.Space(data, i)
		if i >= len(data) {
			return false
		}
		if data[i] == '}' {
			return jsonscan.Space(data, i+1) == len(data)
		}
		i = jsonscan.Space(data, i+1) // the comma
	}
	return false
}

// stringField returns the string field whose JSON name is key, nil for
// any other key.
func (e *Envelope) stringField(key []byte) *string {
	switch string(key) {
	case "id":
		return &e.ID
	case "dedupe_key":
		return &e.DedupeKey
	case "event_type":
		return &e.EventType
	case "mchid":
		return &e.MchID
	case "source":
		return &e.Source
	case "create_time":
		return &e.CreateTime
	case "summary":
		return &e.Summary
	case "resource_type":
		return &e.ResourceType
	case "original_type":
		return &e.OriginalType
	}
	return nil
}
