package webhook

import (
	"strings"
	"testing"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
)

// A receiver that imports this package must get nothing beyond the
// standard library: every import of its non-test files is a standard
// package (no dot in the first path element).
func TestImportsOnlyTheStandardLibrary(t *testing.T) {
	for _, imp := range testenv.SourceImports(t, ".") {
		if first, _, _ := strings.Cut(imp.Path, "/"); strings.Contains(first, ".") {
			t.Errorf("%s imports %s, which is not in the standard library", imp.File, imp.Path)
		}
	}
}
