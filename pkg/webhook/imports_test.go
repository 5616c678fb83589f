package webhook

import (
	"testing"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
)

// A receiver that imports this package must get nothing beyond the
// standard library.
func TestImportsOnlyTheStandardLibrary(t *testing.T) {
	testenv.WantStandardImportsOnly(t, ".", "a receiver that imports pkg/webhook must get nothing else")
}
