package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/internal/config"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
)

// CheckNATS connects to NATS_URL as the commands do and checks that
// JetStream answers and that the streams WXPAY and WXPAY_DLQ exist
// (missing streams are a warning: the commands create them at start).
func CheckNATS(ctx context.Context, c config.Common, timeout time.Duration) Result {
	r := Result{Name: "nats", Status: Fail}
	where := "NATS_URL " + config.RedactURL(c.NATSURL)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nc, js, err := c.ConnectNATS("wxpay-doctor", zerolog.Nop())
	if err != nil {
		r.Message = fmt.Sprintf("cannot connect to %s: %v", where, err)
		r.Fix = "correct NATS_URL"
		return r
	}
	defer nc.Close()
	// ConnectNATS keeps retrying in the background; wait for the first
	// connection, at most until the timeout.
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			r.Message = fmt.Sprintf("cannot connect to %s within %s", where, timeout)
			if le := nc.LastError(); le != nil {
				r.Message += ": " + le.Error()
			}
			r.Fix = "start NATS (with JetStream) or correct NATS_URL, and check that this server may connect to it; until then the ingress answers WeChat Pay 503 and notifications wait at WeChat"
			return r
		case <-time.After(20 * time.Millisecond):
		}
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			r.Message = "connected to " + where + ", but JetStream is not enabled there"
			r.Fix = "run nats-server with JetStream (-js, or a jetstream {} block in its configuration) and give this account JetStream limits"
		} else {
			r.Message = fmt.Sprintf("connected to %s, but JetStream does not answer: %v", where, err)
			r.Fix = "check that JetStream is enabled and healthy on the NATS server (nats account info)"
		}
		return r
	}
	var missing []string
	for _, name := range []string{events.StreamName, events.DLQStreamName} {
		_, err := js.Stream(ctx, name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			missing = append(missing, name)
		case err != nil:
			r.Message = fmt.Sprintf("connected to %s with JetStream, but reading stream %s failed: %v", where, name, err)
			r.Fix = "check this NATS user's permissions on the JetStream API ($JS.API.>)"
			return r
		}
	}
	if len(missing) > 0 {
		r.Status = Warn
		r.Message = fmt.Sprintf("connected to %s with JetStream; stream %s does not exist yet", where, strings.Join(missing, " and "))
		r.Fix = "nothing to do if the ingress may create streams: every command creates " + events.StreamName + " and " + events.DLQStreamName + " at start; otherwise have them created with the STREAM_* settings"
		return r
	}
	r.Status = OK
	r.Message = fmt.Sprintf("connected to %s with JetStream; streams %s and %s exist", where, events.StreamName, events.DLQStreamName)
	return r
}

// CheckRedis pings REDIS_URL and reads its maxmemory-policy: anything
// but noeviction or volatile-* may evict the keys the worker and the
// reconciler rely on (a warning).
func CheckRedis(ctx context.Context, c config.Common, timeout time.Duration) Result {
	r := Result{Name: "redis", Status: Fail}
	where := "REDIS_URL " + config.RedactURL(c.RedisURL)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rc, err := c.ConnectRedis()
	if err != nil {
		r.Message = err.Error()
		r.Fix = "correct REDIS_URL (redis://host:port/db or rediss:// for TLS)"
		return r
	}
	defer rc.Close()
	if err := rc.Ping(ctx).Err(); err != nil {
		// go-redis retries a failed dial until the deadline and then says
		// only that; one more dial tells why.
		if addr := firstRedisAddr(c.RedisURL); errors.Is(err, context.DeadlineExceeded) && addr != "" {
			var d net.Dialer
			dctx, cancel := context.WithTimeout(context.Background(), time.Second)
			conn, derr := d.DialContext(dctx, "tcp", addr)
			cancel()
			if derr != nil {
				err = derr
			} else {
				conn.Close()
			}
		}
		r.Message = fmt.Sprintf("%s does not answer PING: %v", where, err)
		r.Fix = "start Redis or correct REDIS_URL (host, port, password), and check that this server may connect to it"
		return r
	}
	policy, err := rc.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil || policy["maxmemory-policy"] == "" {
		why := "no answer"
		if err != nil {
			why = err.Error()
		}
		r.Status = Warn
		r.Message = fmt.Sprintf("%s answers PING, but its maxmemory-policy could not be read (CONFIG GET: %s)", where, why)
		r.Fix = "check it in your Redis service's settings: it must be noeviction (or volatile-* with room to spare), or Redis may evict the keys that stop an event from being handled twice"
		return r
	}
	p := policy["maxmemory-policy"]
	if p != "noeviction" && !strings.HasPrefix(p, "volatile-") {
		r.Status = Warn
		r.Message = fmt.Sprintf("%s answers PING, but its maxmemory-policy is %s: when memory runs out Redis may evict the keys that stop an event from being handled twice", where, p)
		r.Fix = "set maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, and in redis.conf or your service's settings so that it stays)"
		return r
	}
	r.Status = OK
	r.Message = fmt.Sprintf("%s answers PING; maxmemory-policy is %s", where, p)
	return r
}

// firstRedisAddr is the host:port REDIS_URL names first (the server, the
// first sentinel or the first cluster node); empty when it has none.
func firstRedisAddr(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return ""
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "6379")
	}
	return u.Host
}
