package config

import (
	"fmt"

	"github.com/redis/go-redis/v9"
)

// ConnectRedis returns a client of REDIS_URL. go-redis connects lazily, so
// an unreachable Redis is no error here: the first command reports it, and
// commands report it through their readiness. The error is a REDIS_URL that
// does not parse.
func (c Common) ConnectRedis() (*redis.Client, error) {
	opt, err := redis.ParseURL(c.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	return redis.NewClient(opt), nil
}
