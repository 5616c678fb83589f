package ingress

import "bytes"

var (
	utf8BOM      = []byte("\xef\xbb\xbf")
	piStart      = []byte("<?")
	piEnd        = []byte("?>")
	commentStart = []byte("<!--")
	commentEnd   = []byte("-->")
	v2Root       = []byte("<xml")
)

// isV2 tells a legacy v2 XML notification from v3 JSON: its root element
// is <xml>, after an optional UTF-8 byte order mark and a prolog of XML
// whitespace, processing instructions (the XML declaration) and comments.
// It only picks the parser (and the form of the answer); the XML parser
// then checks the document.
func isV2(body []byte) bool {
	b := bytes.TrimPrefix(body, utf8BOM)
	for {
		b = trimXMLSpace(b)
		switch {
		case bytes.HasPrefix(b, piStart):
			end := bytes.Index(b[len(piStart):], piEnd)
			if end < 0 {
				return false
			}
			b = b[len(piStart)+end+len(piEnd):]
		case bytes.HasPrefix(b, commentStart):
			end := bytes.Index(b[len(commentStart):], commentEnd)
			if end < 0 {
				return false
			}
			b = b[len(commentStart)+end+len(commentEnd):]
		default:
			rest, ok := bytes.CutPrefix(b, v2Root)
			if !ok || len(rest) == 0 {
				return false
			}
			// The name ends here: <xml>, <xml/>, <xml attr…>; not <xmlns>
			// or <xml:x>.
			switch rest[0] {
			case '>', '/', ' ', '\t', '\r', '\n':
				return true
			}
			return false
		}
	}
}

// trimXMLSpace drops leading XML whitespace (space, tab, CR, LF).
func trimXMLSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	return b
}
