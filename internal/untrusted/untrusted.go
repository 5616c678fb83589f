// Package untrusted bounds text that came from outside (a URL path
// segment, a header, a field of an unauthenticated body) before it is
// printed in an answer, an error or a log line, so that a hostile sender
// cannot make the process echo or log megabytes.
package untrusted

import (
	"strconv"
	"unicode/utf8"
)

// MaxBytes is how much of an untrusted value String keeps.
const MaxBytes = 64

// String returns s when it is at most MaxBytes long; otherwise its first
// MaxBytes bytes (cut back to a UTF-8 boundary) followed by "…(N bytes)",
// N being the length of s.
func String(s string) string { return Truncate(s, MaxBytes) }

// Truncate is String with a bound of max bytes.
func Truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max
	// Back off over continuation bytes so a character is not split; a
	// value that is not UTF-8 at all is cut where it is.
	for i := 0; i < utf8.UTFMax && cut > 0 && !utf8.RuneStart(s[cut]); i++ {
		cut--
	}
	if !utf8.RuneStart(s[cut]) {
		cut = max
	}
	return s[:cut] + "…(" + strconv.Itoa(len(s)) + " bytes)"
}
