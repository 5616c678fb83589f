package config

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestRegisterCommon(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want Common
	}{
		{
			name: "defaults",
			want: Common{NATSURL: "nats://127.0.0.1:4222", RedisURL: "redis://127.0.0.1:6379/0", AdminAddr: ":9090", LogLevel: "info", LogFormat: "json"},
		},
		{
			name: "environment",
			env: map[string]string{
				"NATS_URL": "nats://a:4222,nats://b:4222", "REDIS_URL": "rediss://redis:6380/2",
				"ADMIN_ADDR": "127.0.0.1:9191", "LOG_LEVEL": "debug", "LOG_FORMAT": "console",
			},
			want: Common{NATSURL: "nats://a:4222,nats://b:4222", RedisURL: "rediss://redis:6380/2", AdminAddr: "127.0.0.1:9191", LogLevel: "debug", LogFormat: "console"},
		},
		{
			name: "flags win",
			env: map[string]string{
				"NATS_URL": "nats://a:4222", "REDIS_URL": "redis://env:6379/0",
				"ADMIN_ADDR": ":1", "LOG_LEVEL": "debug", "LOG_FORMAT": "console",
			},
			args: []string{"--nats-url=nats://flag:4222", "--redis-url", "redis://flag:6379/1", "--admin-addr=:2", "--log-level=warn", "--log-format=json"},
			want: Common{NATSURL: "nats://flag:4222", RedisURL: "redis://flag:6379/1", AdminAddr: ":2", LogLevel: "warn", LogFormat: "json"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := newFlagSet()
			c := RegisterCommon(fs, env(tt.env))
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if *c != tt.want {
				t.Errorf("got %+v, want %+v", *c, tt.want)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate: got %v, want nil", err)
			}
		})
	}
}

func TestListenAddr(t *testing.T) {
	t.Parallel()
	fs := newFlagSet()
	a := ListenAddr(fs, env(nil))
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if *a != ":8080" {
		t.Errorf("got %q, want %q", *a, ":8080")
	}
	fs = newFlagSet()
	a = ListenAddr(fs, env(map[string]string{"LISTEN_ADDR": ":8443"}))
	if err := fs.Parse([]string{"--listen-addr=:9000"}); err != nil {
		t.Fatal(err)
	}
	if *a != ":9000" {
		t.Errorf("got %q, want %q", *a, ":9000")
	}
}

func TestCommonValidate(t *testing.T) {
	t.Parallel()
	valid := Common{NATSURL: DefaultNATSURL, RedisURL: DefaultRedisURL, AdminAddr: DefaultAdminAddr, LogLevel: "info", LogFormat: "json"}
	tests := []struct {
		name   string
		modify func(*Common)
		want   []string // each must appear in the error
	}{
		{"valid", func(*Common) {}, nil},
		{"nats host:port without scheme", func(c *Common) { c.NATSURL = "127.0.0.1:4222, tls://nats:4222" }, nil},
		{"upper-case log settings", func(c *Common) { c.LogLevel = "DEBUG"; c.LogFormat = "Console" }, nil},
		{"empty NATS_URL", func(c *Common) { c.NATSURL = " , " }, []string{"NATS_URL is empty"}},
		{"bad NATS scheme", func(c *Common) { c.NATSURL = "nats://a:4222,http://b:4222" }, []string{"NATS_URL entry #2", `scheme "http"`}},
		{"http REDIS_URL", func(c *Common) { c.RedisURL = "http://redis:6379" }, []string{"REDIS_URL", "redis:// or rediss://"}},
		{"REDIS_URL without host", func(c *Common) { c.RedisURL = "redis://" }, []string{"REDIS_URL", "no host"}},
		{"REDIS_URL bad database", func(c *Common) { c.RedisURL = "redis://r:6379/x" }, []string{"REDIS_URL", `database "x"`}},
		{"REDIS_URL not a URL, password not echoed", func(c *Common) { c.RedisURL = "redis://:s3cr3tpass@r:port/0" }, []string{"REDIS_URL is not a URL"}},
		{"empty REDIS_URL", func(c *Common) { c.RedisURL = "" }, []string{"REDIS_URL is empty"}},
		{"ADMIN_ADDR", func(c *Common) { c.AdminAddr = "9090" }, []string{"ADMIN_ADDR", "host:port"}},
		{"ADMIN_ADDR port", func(c *Common) { c.AdminAddr = ":99999" }, []string{"ADMIN_ADDR", "port"}},
		{"LOG_LEVEL", func(c *Common) { c.LogLevel = "verbose" }, []string{"LOG_LEVEL", "verbose"}},
		{"empty LOG_LEVEL", func(c *Common) { c.LogLevel = "" }, []string{"LOG_LEVEL"}},
		{"LOG_FORMAT", func(c *Common) { c.LogFormat = "xml" }, []string{"LOG_FORMAT", "json or console"}},
		{
			"all at once",
			func(c *Common) {
				*c = Common{NATSURL: "x://y", RedisURL: "http://r", AdminAddr: "x", LogLevel: "x", LogFormat: "x"}
			},
			[]string{"NATS_URL", "REDIS_URL", "ADMIN_ADDR", "LOG_LEVEL", "LOG_FORMAT"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := valid
			tt.modify(&c)
			err := c.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			wantErrContains(t, err, tt.want...)
			noSecrets(t, "error", err.Error())
		})
	}
}

func TestCommonMasksCredentials(t *testing.T) {
	t.Parallel()
	c := Common{
		NATSURL:   "nats://natstoken@n1:4222, nats://user:s3cr3tpass@n2:4222,n3:4222",
		RedisURL:  "rediss://default:s3cr3tpass@redis:6380/0",
		AdminAddr: ":9090", LogLevel: "info", LogFormat: "json",
	}
	s := c.String()
	noSecrets(t, "String", s)
	want := "nats_url=nats://xxxxx@n1:4222,nats://user:xxxxx@n2:4222,n3:4222 redis_url=rediss://default:xxxxx@redis:6380/0 admin_addr=:9090 log_level=info log_format=json"
	if s != want {
		t.Errorf("String:\ngot  %s\nwant %s", s, want)
	}

	var buf bytes.Buffer
	logger := zerolog.New(&buf)
	logger.Info().Object("config", c).Send()
	noSecrets(t, "log", buf.String())
	var line struct {
		Config map[string]string `json:"config"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if got, want := line.Config["redis_url"], "rediss://default:xxxxx@redis:6380/0"; got != want {
		t.Errorf("logged redis_url: got %q, want %q", got, want)
	}
	if got, want := c.NATSServers(), []string{"nats://natstoken@n1:4222", "nats://user:s3cr3tpass@n2:4222", "n3:4222"}; !reflect.DeepEqual(got, want) {
		t.Errorf("NATSServers: got %q, want %q", got, want)
	}
}

func TestNewLogger(t *testing.T) {
	t.Parallel()
	c := Common{LogLevel: "info", LogFormat: "json"}
	var buf bytes.Buffer
	log, err := NewLogger(c, "ingress", "v1.2.3", &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug().Msg("hidden")
	log.Info().Str("mchid", testMchID).Msg("started")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("got %q, want one JSON line: %v", buf.String(), err)
	}
	for k, want := range map[string]any{"service": "ingress", "version": "v1.2.3", "level": "info", "message": "started", "mchid": testMchID} {
		if line[k] != want {
			t.Errorf("field %s: got %v, want %v", k, line[k], want)
		}
	}
	if _, ok := line["time"]; !ok {
		t.Errorf("no time field in %s", buf.String())
	}

	buf.Reset()
	log, err = NewLogger(Common{LogLevel: "debug", LogFormat: "console"}, "worker", "dev", &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug().Msg("shown")
	out := buf.String()
	if !strings.Contains(out, "shown") || !strings.Contains(out, "service=worker") || strings.HasPrefix(out, "{") {
		t.Errorf("console output: got %q, want a console line with service=worker", out)
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("console output to a buffer has colors: %q", out)
	}

	for _, bad := range []Common{{LogLevel: "loud", LogFormat: "json"}, {LogLevel: "info", LogFormat: "xml"}} {
		if _, err := NewLogger(bad, "x", "y", &buf); err == nil {
			t.Errorf("NewLogger(%+v): got nil error, want one", bad)
		}
	}
}
