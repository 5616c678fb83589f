package jsonscan

import (
	"encoding/json"
	"strings"
	"testing"
)

// values are JSON values of every kind, with the awkward cases of each.
var values = []string{
	`"plain"`, `""`, `"中文 ok"`, `"a\"b"`, `"a\\"`, `"\\\""`, `"\u00e9"`, `"{[,]}"`,
	`0`, `-1.5e+10`, `true`, `false`, `null`,
	`{}`, `[]`, `{"a":1,"b":[1,2,{"c":"}"}]}`, `[ "x" , { } , [ ] ]`, `{"k":"v\"}"}`,
}

func TestValueEnd(t *testing.T) {
	for _, v := range values {
		for _, after := range []string{"", ",1]", "}", " ,", "\n}"} {
			b := []byte(v + after)
			if got := ValueEnd(b, 0); got != len(v) {
				t.Errorf("ValueEnd(%q) = %d, want %d", b, got, len(v))
			}
		}
	}
	for _, b := range []string{`{"a":1`, `[1,2`, `"abc`, `"ab\"`} {
		if got := ValueEnd([]byte(b), 0); got != -1 {
			t.Errorf("ValueEnd(%q) = %d, want -1: the text ends inside the value", b, got)
		}
	}
}

func TestString(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{`"plain",`, "plain", true},
		{`"",`, "", true},
		{`"中文",`, "中文", true},
		{`"a\"b"`, "", false},   // an escape: left to encoding/json
		{`"\u00e9"`, "", false}, // likewise
		{"\"\xff\"", "", false}, // invalid UTF-8, which json.Unmarshal replaces
		{`1`, "", false},        // not a string
		{`"unterminated`, "", false},
	} {
		s, end, ok := String([]byte(tc.in), 0)
		if ok != tc.ok || string(s) != tc.want {
			t.Errorf("String(%q) = %q, %v; want %q, %v", tc.in, s, ok, tc.want, tc.ok)
		}
		if ok && end != len(tc.want)+2 {
			t.Errorf("String(%q): end %d, want %d", tc.in, end, len(tc.want)+2)
		}
	}
}

func TestSpace(t *testing.T) {
	for _, tc := range []struct {
		in      string
		i, want int
	}{{" \t\r\n x", 0, 5}, {"x", 0, 0}, {"  ", 0, 2}, {"a  b", 1, 3}, {"", 0, 0}} {
		if got := Space([]byte(tc.in), tc.i); got != tc.want {
			t.Errorf("Space(%q, %d) = %d, want %d", tc.in, tc.i, got, tc.want)
		}
	}
	// Only JSON's four white space bytes count.
	if got := Space([]byte("\v\f"), 0); got != 0 {
		t.Errorf("Space skipped a byte JSON does not call white space: %d", got)
	}
}

// FuzzScan checks ValueEnd and String against encoding/json on any valid
// JSON value: the value's end is found wherever it stands, and a string
// String accepts decodes to exactly its bytes.
func FuzzScan(f *testing.F) {
	for _, v := range values {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if !json.Valid([]byte(v)) {
			return
		}
		v = strings.Trim(v, " \t\r\n")
		for _, c := range []struct {
			b     []byte
			start int
		}{{[]byte("[" + v + ",1]"), 1}, {[]byte(`{"k":` + v + `}`), len(`{"k":`)}, {[]byte(v), 0}} {
			b, start := c.b, c.start
			if got := ValueEnd(b, start); got != start+len(v) {
				t.Fatalf("ValueEnd(%q, %d) = %d, want %d", b, start, got, start+len(v))
			}
		}
		if s, end, ok := String([]byte(v), 0); ok {
			var want string
			if err := json.Unmarshal([]byte(v), &want); err != nil || want != string(s) || end != len(v) {
				t.Fatalf("String(%q) = %q (end %d); json.Unmarshal gives %q, %v", v, s, end, want, err)
			}
		}
	})
}
