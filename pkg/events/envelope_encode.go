package events

import (
	"bytes"
	"encoding/json"
	"slices"
	"time"
	"unicode/utf8"
)

// encodeEnvelope writes env into buf (which must be empty) exactly as
// encodeJSON does, byte for byte, without reflection: the ingress and the
// reconciler encode one envelope per event. The resource is compacted with
// json.Compact, which also checks its syntax, as encoding/json does for a
// json.RawMessage. Whatever the direct path does not cover (a string that
// needs escaping, an empty resource, a time encoding/json refuses) goes to
// encodeJSON, so the result and the errors are always encoding/json's.
// The result aliases buf.
func encodeEnvelope(buf *bytes.Buffer, env *Envelope) ([]byte, error) {
	if !directEnvelope(env) {
		return encodeJSON(buf, env)
	}
	b := buf.AvailableBuffer()
	b = append(b, `{"id":"`...)
	b = append(b, env.ID...)
	b = append(b, `","dedupe_key":"`...)
	b = append(b, env.DedupeKey...)
	b = append(b, `","event_type":"`...)
	b = append(b, env.EventType...)
	b = append(b, `","mchid":"`...)
	b = append(b, env.MchID...)
	b = append(b, `","source":"`...)
	b = append(b, env.Source...)
	b = append(b, `","create_time":"`...)
	b = append(b, env.CreateTime...)
	b = append(b, `","received_at":"`...)
	b = env.ReceivedAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","summary":"`...)
	b = append(b, env.Summary...)
	b = append(b, `","resource_type":"`...)
	b = append(b, env.ResourceType...)
	b = append(b, `","original_type":"`...)
	b = append(b, env.OriginalType...)
	b = append(b, `","resource":`...)
	buf.Write(b)
	if err := json.Compact(buf, env.Resource); err != nil {
		buf.Reset()
		return encodeJSON(buf, env)
	}
	if len(env.V2) == 0 {
		buf.WriteByte('}')
		return buf.Bytes(), nil
	}
	b = buf.AvailableBuffer()
	b = append(b, `,"v2":{`...)
	keys := make([]string, 0, len(env.V2))
	for k := range env.V2 {
		keys = append(keys, k)
	}
	slices.Sort(keys) // encoding/json sorts a map's keys
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, k...)
		b = append(b, `":"`...)
		b = append(b, env.V2[k]...)
		b = append(b, '"')
	}
	b = append(b, "}}"...)
	buf.Write(b)
	return buf.Bytes(), nil
}

// directEnvelope reports whether encodeEnvelope's direct path encodes env
// as encoding/json would: every string (and V2 key and value) appears in
// JSON as it is, the resource is not empty (encoding/json writes null for
// a nil one and fails on an empty one), and ReceivedAt is a time
// encoding/json encodes (a year from 0 to 9999, a zone offset under 24
// hours).
func directEnvelope(env *Envelope) bool {
	if len(env.Resource) == 0 {
		return false
	}
	for _, s := range [...]string{env.ID, env.DedupeKey, env.EventType, env.MchID, env.Source, env.CreateTime,
		env.Summary, env.ResourceType, env.OriginalType} {
		if !plainJSONString(s) {
			return false
		}
	}
	for k, v := range env.V2 {
		if !plainJSONString(k) || !plainJSONString(v) {
			return false
		}
	}
	t := env.ReceivedAt
	if y := t.Year(); y < 0 || y > 9999 {
		return false
	}
	_, offset := t.Zone()
	return -24*3600 < offset && offset < 24*3600
}

// plainJSONString reports whether encoding/json, HTML escaping off, writes
// s between quotes unchanged: valid UTF-8 without control characters,
// quotes, backslashes, U+2028 or U+2029 (which it escapes).
func plainJSONString(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == '"' || c == '\\' {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			return false
		}
		i += size
	}
	return true
}
