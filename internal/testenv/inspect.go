package testenv

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// An Import is one import of a package's source file.
type Import struct {
	File, Path string
}

// SourceImports lists the imports of the non-test Go files in dir (a
// package's tests pass "."); it fails the test when there are none, so
// that a check over them cannot pass by reading nothing.
func SourceImports(t testing.TB, dir string) []Import {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var out []Import
	read := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		read++
		for _, imp := range f.Imports {
			path, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, Import{File: filepath.Base(name), Path: path})
		}
	}
	if read == 0 {
		t.Fatalf("no source files in %s", dir)
	}
	return out
}

// WantStandardImportsOnly fails the test for every import of the non-test
// Go files in dir that is not a standard package (a dot in the first path
// element marks a module path), naming why the package must stay so.
func WantStandardImportsOnly(t testing.TB, dir, why string) {
	t.Helper()
	for _, imp := range SourceImports(t, dir) {
		if first, _, _ := strings.Cut(imp.Path, "/"); strings.Contains(first, ".") {
			t.Errorf("%s imports %s, which is not in the standard library (%s)", imp.File, imp.Path, why)
		}
	}
}

// CounterSum sums the counter name over the series whose label has value.
func CounterSum(t testing.TB, g prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
