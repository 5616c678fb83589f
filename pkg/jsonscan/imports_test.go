package jsonscan

import (
	"testing"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
)

// The fast paths of pkg/events build on this package, which must bring
// them nothing beyond the standard library.
func TestImportsOnlyTheStandardLibrary(t *testing.T) {
	testenv.WantStandardImportsOnly(t, ".", "pkg/events, a library teams import, builds on pkg/jsonscan")
}
