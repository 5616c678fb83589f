//go:build !unix

package events

import "testing"

// lockRealNATS does nothing where flock is missing: run the packages that
// test against WXPAY_TEST_NATS_URL one at a time (go test -p 1).
func lockRealNATS(t *testing.T) {}
