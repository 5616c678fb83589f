package testenv

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSCluster is a three-server NATS cluster with JetStream, in process,
// on loopback: what production runs (STREAM_REPLICAS=3), small enough for
// a test to stop one server and start it again on the same store.
type NATSCluster struct {
	// URL lists every server's client URL, comma-separated, as NATS_URL
	// does.
	URL     string
	Servers []*server.Server
	opts    []*server.Options
}

// StartNATSCluster starts three clustered JetStream servers, each with its
// own store, and waits until they have elected a meta leader.
func StartNATSCluster(t testing.TB) *NATSCluster {
	t.Helper()
	dir := t.TempDir()
	routes := make([]int, 3)
	for i := range routes {
		routes[i] = FreePort(t)
	}
	var routeURLs []string
	for _, p := range routes {
		routeURLs = append(routeURLs, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	c := &NATSCluster{}
	for i := range 3 {
		opts := &server.Options{
			ServerName: fmt.Sprintf("wxpay-test-%d", i),
			Host:       "127.0.0.1", Port: FreePort(t),
			JetStream: true, StoreDir: filepath.Join(dir, fmt.Sprint(i)),
			NoLog: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: "wxpay-test", Host: "127.0.0.1", Port: routes[i]},
			Routes:  server.RoutesFromStr(strings.Join(routeURLs, ",")),
		}
		c.opts = append(c.opts, opts)
		c.Servers = append(c.Servers, c.start(t, opts))
	}
	t.Cleanup(func() {
		for _, s := range c.Servers {
			if s != nil {
				s.Shutdown()
			}
		}
	})
	var urls []string
	for _, o := range c.opts {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", o.Port))
	}
	c.URL = strings.Join(urls, ",")
	c.waitMetaLeader(t)
	return c
}

func (c *NATSCluster) start(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("clustered nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("a clustered nats-server did not start")
	}
	return s
}

// Stop shuts server i down (its store stays, as after a crash).
func (c *NATSCluster) Stop(i int) {
	c.Servers[i].Shutdown()
	c.Servers[i].WaitForShutdown()
}

// Restart starts server i again on its store and waits for the cluster
// to have a meta leader.
func (c *NATSCluster) Restart(t testing.TB, i int) {
	t.Helper()
	c.Servers[i] = c.start(t, c.opts[i].Clone())
	c.waitMetaLeader(t)
}

func (c *NATSCluster) waitMetaLeader(t testing.TB) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, s := range c.Servers {
			if s != nil && s.Running() && s.JetStreamIsLeader() {
				return
			}
		}
	}
	t.Fatal("the NATS cluster elected no JetStream meta leader within 20 s")
}
