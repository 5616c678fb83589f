package ingress

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"testing"
)

// v2ByDecoder is the oracle of isV2, written with encoding/xml: after an
// optional UTF-8 BOM, the decoder's first start element is <xml> and only
// whitespace, processing instructions and comments come before it. decided
// is false when the decoder fails before it reaches an element: isV2 may
// then answer either way (the XML parser refuses such a body as malformed,
// only the form of the answer differs).
func v2ByDecoder(body []byte) (v2, decided bool) {
	body = bytes.TrimPrefix(body, []byte("\xef\xbb\xbf"))
	d := xml.NewDecoder(bytes.NewReader(body))
	for {
		from := d.InputOffset()
		tok, err := d.RawToken()
		if err != nil {
			// io.EOF: no element at all, so not v2; any other error leaves
			// it open.
			return false, errors.Is(err, io.EOF)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			return t.Name.Space == "" && t.Name.Local == "xml", true
		case xml.ProcInst, xml.Comment:
		case xml.CharData:
			// Judged on the raw bytes: the decoder turns character
			// references and CDATA sections into text too.
			for _, c := range body[from:d.InputOffset()] {
				if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
					return false, true
				}
			}
		default: // a directive (DOCTYPE) or an end element
			return false, true
		}
	}
}

func TestIsV2(t *testing.T) {
	tests := []struct {
		body string
		want bool
	}{
		{`<xml><return_code>SUCCESS</return_code></xml>`, true},
		{"\xef\xbb\xbf<xml></xml>", true},
		{" \r\n\t<xml></xml>", true},
		{`<?xml version="1.0" encoding="UTF-8"?><xml></xml>`, true},
		{"\xef\xbb\xbf<?xml version=\"1.0\"?>\n<!-- pay result -->\n<xml>\n<a>1</a></xml>", true},
		{`<!----><xml/>`, true},
		{`<xml attr="1"></xml>`, true},
		{`{"id":"x"}`, false},
		{``, false},
		{`<xml`, false},
		{`<xmlns></xmlns>`, false},
		{`<xml:a></xml:a>`, false},
		{`<root></root>`, false},
		{`<!-- unterminated <xml>`, false},
		{`<?xml version="1.0" <xml>`, false},
		{`<!DOCTYPE xml><xml></xml>`, false},
		{`x<xml></xml>`, false},
		{`<![CDATA[ ]]><xml></xml>`, false},
	}
	for _, tc := range tests {
		if got := isV2([]byte(tc.body)); got != tc.want {
			t.Errorf("isV2(%q) = %v, want %v", tc.body, got, tc.want)
		}
		if v2, decided := v2ByDecoder([]byte(tc.body)); decided && v2 != tc.want {
			t.Errorf("the oracle says %v for %q, the table %v", v2, tc.body, tc.want)
		}
	}
}

// FuzzIsV2: wherever encoding/xml reads the prolog, it and isV2 agree on
// whether the root element is <xml>.
func FuzzIsV2(f *testing.F) {
	for _, s := range []string{
		`<xml><a>1</a></xml>`, "\xef\xbb\xbf<?xml version=\"1.0\"?>\n<!-- c --><xml>", `{"id":"1"}`,
		`<!-- a --><?pi x?> <xml/>`, `<xmlx>`, `<!DOCTYPE a><xml>`, "\t<xml\n>", `<!--->--><xml>`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got := isV2(body)
		if want, decided := v2ByDecoder(body); decided && got != want {
			t.Fatalf("isV2(%q) = %v, encoding/xml says %v", body, got, want)
		}
	})
}
