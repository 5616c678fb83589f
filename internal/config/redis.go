package config

import (
	"fmt"
	"net/url"

	"github.com/redis/go-redis/v9"
)

// Redis deployments REDIS_URL can name, in go-redis's URL conventions.
const (
	// RedisSingle: redis://[user:password@]host:port/db (rediss:// for
	// TLS).
	RedisSingle = "single"
	// RedisSentinel: a master_name parameter names the master the
	// sentinels watch; the host and every addr parameter are sentinels:
	// redis://sentinel1:26379/0?master_name=mymaster&addr=sentinel2:26379.
	RedisSentinel = "sentinel"
	// RedisCluster: addr parameters list further cluster nodes to start
	// from: redis://node1:6379?addr=node2:6379&addr=node3:6379.
	RedisCluster = "cluster"
)

// RedisMode tells which deployment a REDIS_URL names (see RedisSingle,
// RedisSentinel, RedisCluster).
func RedisMode(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return RedisSingle
	}
	q := u.Query()
	switch {
	case q.Get("master_name") != "":
		return RedisSentinel
	case len(q["addr"]) > 0:
		return RedisCluster
	}
	return RedisSingle
}

// ConnectRedis returns a client of REDIS_URL: a single server, a Sentinel
// deployment or a Cluster (RedisMode). go-redis connects lazily, so an
// unreachable Redis is no error here: the first command reports it, and
// commands report it through their readiness. The error is a REDIS_URL that
// does not parse.
func (c Common) ConnectRedis() (redis.UniversalClient, error) {
	switch RedisMode(c.RedisURL) {
	case RedisSentinel:
		opt, err := redis.ParseFailoverURL(c.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL (Sentinel: master_name given): %w", err)
		}
		return redis.NewFailoverClient(opt), nil
	case RedisCluster:
		opt, err := redis.ParseClusterURL(c.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL (Cluster: addr given): %w", err)
		}
		return redis.NewClusterClient(opt), nil
	}
	opt, err := redis.ParseURL(c.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	return redis.NewClient(opt), nil
}
