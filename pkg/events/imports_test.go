package events

import (
	"strings"
	"testing"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
)

// The package is a library teams import: its non-test files import no
// internal package of this module.
func TestImportsNoInternalPackage(t *testing.T) {
	for _, imp := range testenv.SourceImports(t, ".") {
		if strings.HasPrefix(imp.Path, "github.com/wxpay-notify/wxpay-notify/internal/") {
			t.Errorf("%s imports %s", imp.File, imp.Path)
		}
	}
}
