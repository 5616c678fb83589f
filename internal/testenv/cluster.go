package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a Redis Cluster of three masters for one test.
type RedisCluster struct {
	// URL names the cluster in go-redis's convention (the first node as
	// the host, the others as addr parameters), as REDIS_URL does.
	URL   string
	Addrs []string
}

// Client returns a cluster client, closed when the test ends.
func (c *RedisCluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	t.Cleanup(func() { rc.Close() })
	return rc
}

// StartRedisCluster returns a three-master Redis Cluster on loopback:
// WXPAY_TEST_REDIS_CLUSTER_URL's when set (flushed before and after the
// test), or one it starts itself from redis-server and redis-cli on PATH
// (stopped at the end). miniredis has no cluster mode, so on a machine
// without those programs the test is skipped, unless
// WXPAY_TEST_REQUIRE_REDIS_CLUSTER is set (as .ci/run does), where it fails.
func StartRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	if url := os.Getenv("WXPAY_TEST_REDIS_CLUSTER_URL"); url != "" {
		opt, err := redis.ParseClusterURL(url)
		if err != nil {
			t.Fatalf("WXPAY_TEST_REDIS_CLUSTER_URL: %v", err)
		}
		c := &RedisCluster{URL: url, Addrs: opt.Addrs}
		flushCluster(t, c)
		t.Cleanup(func() { flushCluster(t, c) })
		return c
	}
	server, serr := exec.LookPath("redis-server")
	cli, cerr := exec.LookPath("redis-cli")
	if serr != nil || cerr != nil {
		if os.Getenv("WXPAY_TEST_REQUIRE_REDIS_CLUSTER") != "" {
			t.Fatalf("a Redis Cluster test needs redis-server and redis-cli on PATH (WXPAY_TEST_REQUIRE_REDIS_CLUSTER is set)")
		}
		t.Skip("no redis-server / redis-cli on PATH, and miniredis has no cluster mode")
	}
	dir := t.TempDir()
	c := &RedisCluster{}
	for i := range 3 {
		port := FreePort(t)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		nodeDir := filepath.Join(dir, strconv.Itoa(i))
		if err := os.MkdirAll(nodeDir, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(server, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(nodeDir, "nodes.conf"), "--dir", nodeDir,
			"--save", "", "--appendonly", "no", "--protected-mode", "no")
		cmd.Stdout, cmd.Stderr = nil, nil
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting redis-server: %v", err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
		waitListening(t, addr)
		c.Addrs = append(c.Addrs, addr)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	waitClusterOK(t, c.Addrs)
	c.URL = "redis://" + c.Addrs[0] + "?addr=" + c.Addrs[1] + "&addr=" + c.Addrs[2]
	return c
}

func waitListening(t testing.TB, addr string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if conn, err := net.Dial("tcp", addr); err == nil {
			conn.Close()
			return
		}
	}
	t.Fatalf("redis-server did not listen on %s within 10 s", addr)
}

// waitClusterOK waits until every node reports cluster_state:ok, so that
// the test's first command finds every slot served.
func waitClusterOK(t testing.TB, addrs []string) {
	t.Helper()
	ctx := context.Background()
	for _, addr := range addrs {
		c := redis.NewClient(&redis.Options{Addr: addr})
		ok := false
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			info, err := c.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				ok = true
				break
			}
		}
		c.Close()
		if !ok {
			t.Fatalf("the Redis Cluster node %s did not reach cluster_state:ok within 20 s", addr)
		}
	}
}

func flushCluster(t testing.TB, c *RedisCluster) {
	t.Helper()
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	defer rc.Close()
	err := rc.ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error {
		return m.FlushAll(ctx).Err()
	})
	if err != nil {
		t.Fatalf("flushing the test Redis Cluster %s: %v", c.URL, fmt.Sprint(err))
	}
}
