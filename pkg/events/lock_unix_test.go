//go:build unix

package events

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// lockRealNATS holds an exclusive lock on a file shared by every test
// process on this machine until the test ends, so that packages tested in
// parallel (go test ./...) do not delete each other's streams. Packages
// that test against WXPAY_TEST_NATS_URL should take the same lock.
func lockRealNATS(t *testing.T) {
	t.Helper()
	path := filepath.Join(os.TempDir(), "wxpay-notify-test-nats.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatalf("opening lock file: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("locking %s: %v", path, err)
	}
	t.Cleanup(func() { f.Close() }) // closing releases the lock
}
