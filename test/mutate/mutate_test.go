package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const sampleList = `# comment
=== sum ignores its second term
file: calc/calc.go
run: ./calc -run 'TestSum|TestOther'
<<<<
	return a + b
====
	return a
>>>>

=== sum is never tested for zero
file: calc/calc.go
run: ./calc -run TestSum
<<<<
	if a == 0 {
		return b
	}
====
>>>>
`

func TestParseList(t *testing.T) {
	muts, err := parseList("sample.txt", sampleList)
	if err != nil {
		t.Fatal(err)
	}
	if len(muts) != 2 {
		t.Fatalf("got %d mutations, want 2", len(muts))
	}
	m := muts[0]
	if m.Name != "sum ignores its second term" || m.File != "calc/calc.go" || m.Old != "\treturn a + b" || m.New != "\treturn a" {
		t.Errorf("first mutation parsed as %+v", m)
	}
	if want := []string{"./calc", "-run", "TestSum|TestOther"}; !reflect.DeepEqual(m.Run, want) {
		t.Errorf("run = %q, want %q", m.Run, want)
	}
	if m.Where() != "sample.txt:2" {
		t.Errorf("Where = %q", m.Where())
	}
	if muts[1].New != "" || !strings.Contains(muts[1].Old, "return b\n\t}") {
		t.Errorf("second mutation parsed as %+v", muts[1])
	}
}

func TestParseListRejects(t *testing.T) {
	for name, text := range map[string]string{
		"no header":      "file: a.go\n",
		"no run":         "=== x\nfile: a.go\n<<<<\na\n====\nb\n>>>>\n",
		"no file":        "=== x\nrun: ./a\n<<<<\na\n====\nb\n>>>>\n",
		"unknown field":  "=== x\nfile: a.go\nrun: ./a\nwhat: y\n<<<<\na\n====\nb\n>>>>\n",
		"unclosed":       "=== x\nfile: a.go\nrun: ./a\n<<<<\na\n====\nb\n",
		"empty snippet":  "=== x\nfile: a.go\nrun: ./a\n<<<<\n====\nb\n>>>>\n",
		"no change":      "=== x\nfile: a.go\nrun: ./a\n<<<<\na\n====\na\n>>>>\n",
		"unclosed quote": "=== x\nfile: a.go\nrun: ./a -run 'X\n<<<<\na\n====\nb\n>>>>\n",
		"missing ====":   "=== x\nfile: a.go\nrun: ./a\n<<<<\na\n>>>>\n",
	} {
		if _, err := parseList("bad.txt", text); err == nil {
			t.Errorf("%s: parsed without error", name)
		} else if !strings.HasPrefix(err.Error(), "bad.txt:") {
			t.Errorf("%s: error %q does not say where", name, err)
		}
	}
}

func TestApplyNeedsExactlyOneMatch(t *testing.T) {
	m := Mutation{File: "f.go", Old: "x := 1", New: "x := 2"}
	got, err := m.Apply([]byte("a\nx := 1\nb"))
	if err != nil || string(got) != "a\nx := 2\nb" {
		t.Fatalf("Apply = %q, %v", got, err)
	}
	if _, err := m.Apply([]byte("nothing here")); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("missing snippet: %v", err)
	}
	if _, err := m.Apply([]byte("x := 1\nx := 1")); err == nil || !strings.Contains(err.Error(), "2 times") {
		t.Errorf("doubled snippet: %v", err)
	}
}

func TestJudge(t *testing.T) {
	exit := errors.New("exit status 1")
	for _, c := range []struct {
		name     string
		err      error
		output   string
		timedOut bool
		want     string
	}{
		{"tests pass", nil, "ok  \tx/calc\t0.01s\n", false, verdictSurvived},
		{"a test fails", exit, "--- FAIL: TestSum (0.00s)\nFAIL\nFAIL\tx/calc\t0.01s\n", false, verdictKilled},
		{"a test panics", exit, "panic: boom\nFAIL\tx/calc\t0.01s\n", false, verdictKilled},
		{"hangs past the deadline", exit, "", true, verdictKilled},
		{"does not compile", exit, "# x/calc\ncalc.go:3: undefined: y\nFAIL\tx/calc [build failed]\n", false, verdictInvalid},
		{"no test matched", nil, "ok  \tx/calc\t0.01s [no tests to run]\n", false, verdictInvalid},
		{"go itself failed", exit, "go: cannot find main module\n", false, verdictInvalid},
	} {
		if got := judge(c.err, c.output, c.timedOut); got != c.want {
			t.Errorf("%s: judge = %s, want %s", c.name, got, c.want)
		}
	}
}

func TestSplitArgs(t *testing.T) {
	got, err := splitArgs(`./pkg/a ./pkg/b -run 'TestX|TestY' -timeout "2m"`)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"./pkg/a", "./pkg/b", "-run", "TestX|TestY", "-timeout", "2m"}; !reflect.DeepEqual(got, want) {
		t.Errorf("splitArgs = %q, want %q", got, want)
	}
}

// TestRunFailsOnASurvivor runs the tool on a small module of its own: one
// mutation its tests notice, one they do not. The run must name the
// survivor and fail; with the survivor left out it must pass.
func TestRunFailsOnASurvivor(t *testing.T) {
	root := t.TempDir()
	write := func(name, text string) {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/m\n\ngo 1.21\n")
	write("calc/calc.go", "package calc\n\nfunc Sum(a, b int) int {\n\tif a == 0 {\n\t\treturn b\n\t}\n\treturn a + b\n}\n")
	write("calc/calc_test.go", "package calc\n\nimport \"testing\"\n\nfunc TestSum(t *testing.T) {\n\tif Sum(2, 3) != 5 {\n\t\tt.Fatal(\"2+3\")\n\t}\n}\n")
	write("test/mutations/calc.txt", sampleList)

	var out bytes.Buffer
	err := run([]string{"-root", root, "-j", "2"}, &out)
	if err == nil {
		t.Fatalf("run passed with a surviving mutation:\n%s", out.String())
	}
	if !strings.Contains(err.Error(), "SURVIVED sum is never tested for zero") {
		t.Errorf("error does not name the survivor: %v", err)
	}
	if !strings.Contains(out.String(), "killed") || !strings.Contains(out.String(), "1 of 2 mutations killed") {
		t.Errorf("output:\n%s", out.String())
	}

	out.Reset()
	if err := run([]string{"-root", root, "-only", "second term"}, &out); err != nil {
		t.Fatalf("run with only the killed mutation: %v\n%s", err, out.String())
	}
	src, _ := os.ReadFile(filepath.Join(root, "calc/calc.go"))
	if !strings.Contains(string(src), "return a + b") {
		t.Error("the repository itself was changed; mutations must only touch the copy")
	}

	write("calc/calc.go", "package calc\n\nfunc Sum(a, b int) int { return a + b }\n")
	if err := run([]string{"-root", root}, &out); err == nil || !strings.Contains(err.Error(), "snippet not found") {
		t.Errorf("a stale mutation list must fail before running: %v", err)
	}
}

// TestCacheSkipsOnlyWhatDidNotChange: a kill is remembered; a second run
// takes it from the cache; a change to the package's tests (or to any
// file its tests are built from) runs it again, while a change elsewhere
// does not.
func TestCacheSkipsOnlyWhatDidNotChange(t *testing.T) {
	root := t.TempDir()
	write := func(name, text string) {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/m\n\ngo 1.21\n")
	write("calc/calc.go", "package calc\n\nfunc Sum(a, b int) int {\n\tif a == 0 {\n\t\treturn b\n\t}\n\treturn a + b\n}\n")
	write("calc/calc_test.go", "package calc\n\nimport \"testing\"\n\nfunc TestSum(t *testing.T) {\n\tif Sum(2, 3) != 5 {\n\t\tt.Fatal(\"2+3\")\n\t}\n}\n")
	write("other/other.go", "package other\n\nconst X = 1\n")
	write("test/mutations/calc.txt", sampleList)
	cache := t.TempDir()
	runOnce := func() string {
		t.Helper()
		var out bytes.Buffer
		if err := run([]string{"-root", root, "-only", "second term", "-cache", cache}, &out); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		return out.String()
	}
	if out := runOnce(); !strings.Contains(out, "(0 known from the cache)") {
		t.Fatalf("first run:\n%s", out)
	}
	if out := runOnce(); !strings.Contains(out, "(1 known from the cache)") || !strings.Contains(out, "cached") {
		t.Fatalf("second run did not use the cache:\n%s", out)
	}
	write("other/other.go", "package other\n\nconst X = 2\n") // not a dependency of calc's tests
	if out := runOnce(); !strings.Contains(out, "(1 known from the cache)") {
		t.Fatalf("a change outside the tests' packages emptied the cache:\n%s", out)
	}
	write("calc/calc_test.go", "package calc\n\nimport \"testing\"\n\nfunc TestSum(t *testing.T) {\n\tif Sum(2, 3) != 5 || Sum(4, 4) != 8 {\n\t\tt.Fatal(\"sum\")\n\t}\n}\n")
	if out := runOnce(); !strings.Contains(out, "(0 known from the cache)") {
		t.Fatalf("a changed test was not run again:\n%s", out)
	}
	write("calc/testdata.json", "{}") // a non-Go file anywhere also counts
	if out := runOnce(); !strings.Contains(out, "(0 known from the cache)") {
		t.Fatalf("a new data file was not noticed:\n%s", out)
	}
}
