package events

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
)

// checkPattern reports why p is not a subject pattern of the WXPAY stream,
// or nil: dot-separated tokens, the first "wxpay", at least one more; "*"
// matches one token and ">" the rest (only as the last token); other
// tokens are literal (no white space or control characters), and event
// type tokens (the third token on) are lower case, as Subject and Pattern
// build them.
func checkPattern(p string) error {
	if p == "" {
		return fmt.Errorf("empty pattern")
	}
	toks := strings.Split(p, ".")
	if toks[0] != "wxpay" || len(toks) < 2 {
		return fmt.Errorf("pattern %q is not under %s", p, SubjectAll)
	}
	for i, tok := range toks[1:] {
		pos := i + 1
		switch {
		case tok == "*":
		case tok == ">":
			if pos != len(toks)-1 {
				return fmt.Errorf("pattern %q: \">\" must be the last token", p)
			}
		case !validToken(tok):
			return fmt.Errorf("pattern %q: token %q is not a subject token", p, tok)
		case pos >= 2 && strings.ContainsFunc(tok, unicode.IsUpper):
			return fmt.Errorf("pattern %q: event types are lower case in subjects (build patterns with events.Pattern)", p)
		}
	}
	return nil
}

// matchSubject reports whether the literal subject matches pattern.
func matchSubject(pattern, subject string) bool {
	pt := strings.Split(pattern, ".")
	st := strings.Split(subject, ".")
	for i, p := range pt {
		if p == ">" {
			return len(st) > i
		}
		if i >= len(st) || (p != "*" && p != st[i]) {
			return false
		}
	}
	return len(pt) == len(st)
}

// subsetOf reports whether every subject that p matches is matched by f.
func subsetOf(p, f string) bool {
	pt := strings.Split(p, ".")
	ft := strings.Split(f, ".")
	for i, ftok := range ft {
		if ftok == ">" {
			return len(pt) > i
		}
		if i >= len(pt) {
			return false
		}
		switch ptok := pt[i]; {
		case ptok == ">":
			return false
		case ftok == "*":
		case ptok != ftok: // includes ptok "*" against a literal
			return false
		}
	}
	return len(pt) == len(ft)
}

// filterSubjects reduces patterns to the consumer's filter subjects: every
// pattern covered by another one is dropped (JetStream refuses filters of
// which one contains another), and the rest is sorted.
func filterSubjects(patterns []string) []string {
	var out []string
	for i, p := range patterns {
		covered := false
		for j, q := range patterns {
			if i == j {
				continue
			}
			// Of two equal patterns keep the first.
			if subsetOf(p, q) && (!subsetOf(q, p) || j < i) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}
