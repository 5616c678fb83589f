package config

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// Defaults of the settings every command shares.
const (
	DefaultNATSURL    = "nats://127.0.0.1:4222"
	DefaultRedisURL   = "redis://127.0.0.1:6379/0"
	DefaultListenAddr = ":8080"
	DefaultAdminAddr  = ":9090"
	DefaultLogLevel   = "info"
	DefaultLogFormat  = "json"
	DefaultAPIBase    = wxpay.DefaultBaseURL // https://api.mch.weixin.qq.com
)

// Common holds the settings every command shares. RegisterCommon binds its
// fields to flags; after parsing they hold the flag, the environment or
// the default, in that order.
type Common struct {
	// NATSURL is NATS_URL: one or more NATS server URLs, comma separated.
	NATSURL string
	// RedisURL is REDIS_URL: redis:// or rediss://.
	RedisURL string
	// AdminAddr is ADMIN_ADDR, the listener of /healthz, /readyz and
	// /metrics.
	AdminAddr string
	// LogLevel is LOG_LEVEL, a zerolog level name.
	LogLevel string
	// LogFormat is LOG_FORMAT: json or console.
	LogFormat string
}

// RegisterCommon registers --nats-url, --redis-url, --admin-addr,
// --log-level and --log-format on fs, with defaults from NATS_URL,
// REDIS_URL, ADMIN_ADDR, LOG_LEVEL and LOG_FORMAT, else the defaults above.
// Credentials in the URLs are masked in --help.
func RegisterCommon(fs *flag.FlagSet, getenv func(string) string) *Common {
	c := &Common{
		NATSURL:   lookup(getenv, "NATS_URL", DefaultNATSURL),
		RedisURL:  lookup(getenv, "REDIS_URL", DefaultRedisURL),
		AdminAddr: lookup(getenv, "ADMIN_ADDR", DefaultAdminAddr),
		LogLevel:  lookup(getenv, "LOG_LEVEL", DefaultLogLevel),
		LogFormat: lookup(getenv, "LOG_FORMAT", DefaultLogFormat),
	}
	fs.Var((*urlValue)(&c.NATSURL), "nats-url", withEnv("NATS server `urls`, comma separated", "NATS_URL"))
	fs.Var((*urlValue)(&c.RedisURL), "redis-url", withEnv("Redis `url` (redis:// or rediss://)", "REDIS_URL"))
	fs.StringVar(&c.AdminAddr, "admin-addr", c.AdminAddr, withEnv("`address` of /healthz, /readyz and /metrics (never the public listener)", "ADMIN_ADDR"))
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, withEnv("log `level`: trace, debug, info, warn, error", "LOG_LEVEL"))
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, withEnv("log `format`: json or console", "LOG_FORMAT"))
	return c
}

// ListenAddr registers --listen-addr, the public listener of ingress, with
// its default from LISTEN_ADDR, else DefaultListenAddr.
func ListenAddr(fs *flag.FlagSet, getenv func(string) string) *string {
	return String(fs, getenv, "listen-addr", "LISTEN_ADDR", DefaultListenAddr, "public `address` that WeChat Pay notifications reach")
}

// NATSServers returns the NATS URLs as a list.
func (c Common) NATSServers() []string { return SplitList(c.NATSURL) }

// Validate reports every problem at once, each naming its variable.
func (c Common) Validate() error {
	var errs []error
	errs = append(errs, validateNATSURL(c.NATSURL))
	errs = append(errs, validateRedisURL(c.RedisURL))
	errs = append(errs, CheckAddr("ADMIN_ADDR", c.AdminAddr))
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if _, err := parseFormat(c.LogFormat); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// CheckAddr checks a listen address (host:port, host optional) and names
// the variable in its error: CheckAddr("LISTEN_ADDR", addr).
func CheckAddr(variable, addr string) error {
	if addr == "" {
		return fmt.Errorf("%s is empty: set a listen address such as :9090", variable)
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s=%q is not host:port (for example :9090 or 127.0.0.1:9090)", variable, addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%s=%q: port %q is not a number from 0 to 65535", variable, addr, port)
	}
	return nil
}

// String returns the settings with credentials in URLs masked.
func (c Common) String() string {
	return logfmt(
		"nats_url", redactURLs(c.NATSURL),
		"redis_url", RedactURL(c.RedisURL),
		"admin_addr", c.AdminAddr,
		"log_level", c.LogLevel,
		"log_format", c.LogFormat,
	)
}

// MarshalZerologObject logs the settings with credentials in URLs masked.
func (c Common) MarshalZerologObject(e *zerolog.Event) {
	e.Str("nats_url", redactURLs(c.NATSURL)).
		Str("redis_url", RedactURL(c.RedisURL)).
		Str("admin_addr", c.AdminAddr).
		Str("log_level", c.LogLevel).
		Str("log_format", c.LogFormat)
}

var natsSchemes = map[string]bool{"nats": true, "tls": true, "ws": true, "wss": true}

func validateNATSURL(s string) error {
	list := SplitList(s)
	if len(list) == 0 {
		return fmt.Errorf("NATS_URL is empty: set the NATS server URL(s), for example %s", DefaultNATSURL)
	}
	var errs []error
	for i, raw := range list {
		where := "NATS_URL"
		if len(list) > 1 {
			where = fmt.Sprintf("NATS_URL entry #%d", i+1)
		}
		if !strings.Contains(raw, "://") {
			raw = "nats://" + raw // as nats.go does
		}
		u, err := url.Parse(raw)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s is not a URL: %v", where, urlErr(err)))
			continue
		}
		if !natsSchemes[u.Scheme] {
			errs = append(errs, fmt.Errorf("%s %s: scheme %q, want nats://, tls://, ws:// or wss://", where, RedactURL(raw), u.Scheme))
		} else if u.Host == "" {
			errs = append(errs, fmt.Errorf("%s %s: no host", where, RedactURL(raw)))
		}
	}
	return errors.Join(errs...)
}

func validateRedisURL(s string) error {
	if s == "" {
		return fmt.Errorf("REDIS_URL is empty: set it, for example %s", DefaultRedisURL)
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("REDIS_URL is not a URL: %v", urlErr(err))
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return fmt.Errorf("REDIS_URL %s: scheme %q, want redis:// or rediss:// (TLS)", RedactURL(s), u.Scheme)
	}
	if u.Host == "" {
		return fmt.Errorf("REDIS_URL %s: no host", RedactURL(s))
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		if n, err := strconv.Atoi(db); err != nil || n < 0 {
			return fmt.Errorf("REDIS_URL %s: database %q is not a number", RedactURL(s), db)
		}
	}
	return nil
}

// urlErr drops the *url.Error wrapper, whose text repeats the URL and so
// any password in it.
func urlErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// redactURL masks the password of a URL, or the user when there is no
// password (a NATS token).
// RedactURL masks the password of a URL (or the user name, when it is a
// token without a password), for logs, errors and --help.
func RedactURL(s string) string {
	if s == "" {
		return ""
	}
	if !strings.Contains(s, "://") { // host:port, as nats.go allows
		if i := strings.LastIndex(s, "@"); i >= 0 {
			return "xxxxx" + s[i:]
		}
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "(invalid URL)"
	}
	if u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); ok {
		return u.Redacted()
	}
	u.User = url.User("xxxxx")
	return u.String()
}

func redactURLs(s string) string {
	list := SplitList(s)
	for i, e := range list {
		list[i] = RedactURL(e)
	}
	return strings.Join(list, ",")
}

// urlValue is a string flag.Value that masks credentials when shown, so
// that a password in REDIS_URL is not printed as a flag default.
type urlValue string

func (v *urlValue) String() string {
	if v == nil {
		return ""
	}
	return redactURLs(string(*v))
}

func (v *urlValue) Set(s string) error { *v = urlValue(s); return nil }

// logfmt renders key=value pairs, quoting values that need it.
func logfmt(kv ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(kv[i])
		b.WriteByte('=')
		v := kv[i+1]
		if v == "" || strings.ContainsAny(v, " \t\"=\\") || !strconv.CanBackquote(v) {
			v = strconv.Quote(v)
		}
		b.WriteString(v)
	}
	return b.String()
}
