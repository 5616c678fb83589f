package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// A Mutation replaces one snippet of one file, breaking one guarantee, and
// names the tests that must then fail.
type Mutation struct {
	Name string   // the guarantee it breaks, in words
	File string   // slash path relative to the repository root
	Run  []string // go test arguments after "go test -count=1": packages, then flags
	Old  string   // text that must occur exactly once in File
	New  string   // its replacement

	list string // the list file and line, for messages
	line int
}

// Where says where the mutation is written down.
func (m Mutation) Where() string { return fmt.Sprintf("%s:%d", m.list, m.line) }

// Apply returns src with the snippet replaced; the snippet must occur
// exactly once, so that a mutation never silently hits the wrong place.
func (m Mutation) Apply(src []byte) ([]byte, error) {
	switch n := bytes.Count(src, []byte(m.Old)); n {
	case 1:
		return bytes.Replace(src, []byte(m.Old), []byte(m.New), 1), nil
	case 0:
		return nil, fmt.Errorf("snippet not found in %s (the code moved: update the mutation with it)", m.File)
	default:
		return nil, fmt.Errorf("snippet occurs %d times in %s (make it longer so that it names one place)", n, m.File)
	}
}

// loadDir reads every *.txt mutation list in dir, in name order.
func loadDir(dir string) ([]Mutation, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.txt"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no mutation lists (*.txt) in %s", dir)
	}
	sort.Strings(paths)
	var all []Mutation
	names := map[string]string{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		muts, err := parseList(filepath.Base(p), string(data))
		if err != nil {
			return nil, err
		}
		for _, m := range muts {
			if prev, dup := names[m.Name]; dup {
				return nil, fmt.Errorf("%s: mutation %q is also at %s: names must be unique", m.Where(), m.Name, prev)
			}
			names[m.Name] = m.Where()
		}
		all = append(all, muts...)
	}
	return all, nil
}

// parseList reads one mutation list:
//
//	# a comment
//	=== the guarantee this breaks
//	file: pkg/events/router.go
//	run: ./pkg/events -run 'TestA|TestB'
//	<<<<
//	exact text
//	====
//	replacement
//	>>>>
func parseList(name, text string) ([]Mutation, error) {
	lines := strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n")
	var out []Mutation
	fail := func(i int, format string, args ...any) error {
		return fmt.Errorf("%s:%d: %s", name, i+1, fmt.Sprintf(format, args...))
	}
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if !strings.HasPrefix(l, "=== ") {
			return nil, fail(i, "expected \"=== <name>\" to start a mutation, found %q", l)
		}
		m := Mutation{Name: strings.TrimSpace(strings.TrimPrefix(l, "=== ")), list: name, line: i + 1}
		if m.Name == "" {
			return nil, fail(i, "a mutation needs a name")
		}
		start := i
		i++
		for ; i < len(lines) && lines[i] != "<<<<"; i++ {
			key, val, ok := strings.Cut(lines[i], ":")
			val = strings.TrimSpace(val)
			switch {
			case strings.TrimSpace(lines[i]) == "":
			case !ok:
				return nil, fail(i, "expected \"file:\", \"run:\" or \"<<<<\", found %q", lines[i])
			case key == "file":
				m.File = filepath.ToSlash(val)
			case key == "run":
				args, err := splitArgs(val)
				if err != nil {
					return nil, fail(i, "run: %v", err)
				}
				m.Run = args
			default:
				return nil, fail(i, "unknown field %q (want file or run)", key)
			}
		}
		if m.File == "" || len(m.Run) == 0 {
			return nil, fail(start, "mutation %q needs both file: and run:", m.Name)
		}
		old, next, err := block(lines, i, "<<<<", "====")
		if err != nil {
			return nil, fail(i, "mutation %q: %v", m.Name, err)
		}
		repl, next, err := block(lines, next, "====", ">>>>")
		if err != nil {
			return nil, fail(next, "mutation %q: %v", m.Name, err)
		}
		if old == "" {
			return nil, fail(start, "mutation %q has an empty snippet", m.Name)
		}
		if old == repl {
			return nil, fail(start, "mutation %q changes nothing", m.Name)
		}
		m.Old, m.New = old, repl
		out = append(out, m)
		i = next
	}
	return out, nil
}

// block returns the lines after the open marker at lines[i] up to the close
// marker, joined by newlines, and the index of the close marker.
func block(lines []string, i int, open, close string) (string, int, error) {
	if i >= len(lines) || lines[i] != open {
		return "", i, fmt.Errorf("expected %q", open)
	}
	for j := i + 1; j < len(lines); j++ {
		if lines[j] == close {
			return strings.Join(lines[i+1:j], "\n"), j, nil
		}
		if lines[j] == "<<<<" || lines[j] == "====" || lines[j] == ">>>>" || strings.HasPrefix(lines[j], "=== ") {
			return "", j, fmt.Errorf("found %q before %q", lines[j], close)
		}
	}
	return "", len(lines), fmt.Errorf("no %q before the end of the file", close)
}

// splitArgs splits a run: line into arguments as a shell would for plain
// words and '…' or "…" quoting (no escapes, variables or globs).
func splitArgs(s string) ([]string, error) {
	var args []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				args = append(args, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, errors.New("unclosed quote")
	}
	if inWord {
		args = append(args, cur.String())
	}
	if len(args) == 0 {
		return nil, errors.New("no packages")
	}
	return args, nil
}
