// Package jsonscan holds what two hand-written JSON fast paths share: the
// envelope decoder of pkg/events and the ingress's merchant check read a
// few fields of a text already known to be valid JSON and leave anything
// unusual to encoding/json. (pkg/wxpay, which imports nothing of this
// module, has its own scanner for notification bodies not yet validated.) These functions find where white space, strings
// and values end; none of them allocates.
//
// Every function takes the text b and an index i into it, and returns an
// index; b must be syntactically valid JSON (json.Valid), so only strings
// and nesting need attention.
package jsonscan

import (
	"bytes"
	"unicode/utf8"
)

// Space returns the index of the first byte at or after i that is not
// JSON white space (len(b) when there is none).
func Space(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// String returns the contents of the JSON string that starts at b[i] and
// the index after its closing quote. ok is false when no string starts
// there, or when the string holds an escape or invalid UTF-8: only then can
// its decoded value differ from its bytes (json.Unmarshal replaces invalid
// UTF-8), and the caller leaves it to encoding/json. s is part of b.
func String(b []byte, i int) (s []byte, end int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	n := bytes.IndexByte(b[i+1:], '"')
	if n < 0 {
		return nil, 0, false
	}
	s = b[i+1 : i+1+n]
	if bytes.IndexByte(s, '\\') >= 0 || !utf8.Valid(s) {
		return nil, 0, false
	}
	return s, i + n + 2, true
}

// ValueEnd returns the index after the JSON value that starts at b[i]: a
// string, a number, a literal, or an object or array with all it holds.
// It returns -1 when b ends inside the value.
func ValueEnd(b []byte, i int) int {
	depth := 0
	for j := i; j < len(b); j++ {
		switch b[j] {
		case '"':
			j++
			for j < len(b) && b[j] != '"' {
				if b[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(b) {
				return -1
			}
			if depth == 0 {
				return j + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return j + 1
			}
			if depth < 0 {
				return j // the end of the object or array around a scalar
			}
		case ',', ' ', '\t', '\r', '\n':
			if depth == 0 {
				return j // the end of a scalar
			}
		}
	}
	if depth == 0 {
		return len(b)
	}
	return -1
}
