package events

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// testNATSURLEnv selects a real NATS server for the JetStream tests. The
// tests delete and recreate the WXPAY and WXPAY_DLQ streams on it: never
// point it at a server whose streams matter.
const testNATSURLEnv = "WXPAY_TEST_NATS_URL"

// realNATS reports whether the JetStream tests run against a real server.
func realNATS() bool { return os.Getenv(testNATSURLEnv) != "" }

// newJetStream returns a JetStream context with no WXPAY or WXPAY_DLQ
// stream. By default it starts an embedded nats-server of its own and marks
// the test parallel. With WXPAY_TEST_NATS_URL set it connects to that server
// instead; since the stream names are fixed, those tests run one at a time
// (serialized across test processes too, by a lock file) and the streams
// are deleted before and after each test.
func newJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	url := os.Getenv(testNATSURLEnv)
	if url == "" {
		t.Parallel()
		url = startEmbeddedNATS(t).ClientURL()
	} else {
		lockRealNATS(t)
	}
	nc := connectNATS(t, url)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream.New: %v", err)
	}
	if realNATS() {
		deleteStreams(t, js)
		t.Cleanup(func() { deleteStreams(t, js) })
	}
	return js
}

// startEmbeddedNATS starts a JetStream-enabled nats-server on a free port
// of 127.0.0.1, stopped when the test ends.
func startEmbeddedNATS(t *testing.T) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("nats-server not ready within 10s")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// connectNATS connects to url, closed when the test ends.
func connectNATS(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name(t.Name()))
	if err != nil {
		t.Fatalf("connecting to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// deleteStreams removes the streams the tests create.
func deleteStreams(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, name := range []string{StreamName, DLQStreamName, otherStreamName} {
		if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Fatalf("deleting stream %s: %v", name, err)
		}
	}
}

// otherStreamName is a stream a test creates on the real server besides
// the fixed ones.
const otherStreamName = "WXPAY_TEST_OTHER"

// testContext returns a context that ends with the test or after d.
func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
