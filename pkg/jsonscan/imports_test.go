package jsonscan

import (
	"strings"
	"testing"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
)

// The fast paths of pkg/events build on this package, which must bring
// them nothing beyond the standard library.
func TestImportsOnlyTheStandardLibrary(t *testing.T) {
	for _, imp := range testenv.SourceImports(t, ".") {
		if first, _, _ := strings.Cut(imp.Path, "/"); strings.Contains(first, ".") {
			t.Errorf("%s imports %s, which is not in the standard library", imp.File, imp.Path)
		}
	}
}
