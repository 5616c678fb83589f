package untrusted

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"short kept", "1230000109", "1230000109"},
		{"exactly the bound", strings.Repeat("a", MaxBytes), strings.Repeat("a", MaxBytes)},
		{"one over", strings.Repeat("a", MaxBytes+1), strings.Repeat("a", MaxBytes) + "…(65 bytes)"},
		{"900 KB", strings.Repeat("9", 900<<10), strings.Repeat("9", MaxBytes) + "…(921600 bytes)"},
		// 63 ASCII bytes then a 3-byte character straddling the bound.
		{"character not split", strings.Repeat("a", MaxBytes-1) + "商户号", strings.Repeat("a", MaxBytes-1) + "…(72 bytes)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := String(tc.in)
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			if utf8.ValidString(tc.in) && !utf8.ValidString(got) {
				t.Fatalf("%q is not valid UTF-8", got)
			}
		})
	}
	// Not UTF-8 at all: cut at the bound all the same.
	if got := String(strings.Repeat("\x80", 100)); got != strings.Repeat("\x80", MaxBytes)+"…(100 bytes)" {
		t.Fatalf("got %q", got)
	}
}
