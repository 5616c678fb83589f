package config

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// DefaultRedisLogInterval is how often go-redis may log one kind of line.
const DefaultRedisLogInterval = 10 * time.Second

// maxRedisLogShapes bounds the kinds of lines remembered; more share one
// budget.
const maxRedisLogShapes = 64

// RouteRedisLogs sends go-redis's own log lines (dial failures, pool
// trouble) to log at warn level, with the field component=go-redis, instead
// of plain text on stderr. While Redis is away go-redis logs the same
// failure several times a second: each kind of line (its text with the
// numbers taken out) is written at most once per DefaultRedisLogInterval,
// with the field suppressed counting the lines of that kind left out since
// the last one written. go-redis has one logger per process: the last call
// wins.
func RouteRedisLogs(log zerolog.Logger) {
	redis.SetLogger(newRedisLogger(log, DefaultRedisLogInterval, time.Now))
}

// redisLogger implements go-redis's logging interface.
type redisLogger struct {
	log   zerolog.Logger
	every time.Duration
	now   func() time.Time

	mu     sync.Mutex
	shapes map[string]*redisLogShape
}

type redisLogShape struct {
	last       time.Time // when a line of this shape was last written
	suppressed int       // lines left out since
}

func newRedisLogger(log zerolog.Logger, every time.Duration, now func() time.Time) *redisLogger {
	return &redisLogger{log: log, every: every, now: now, shapes: make(map[string]*redisLogShape)}
}

// Printf writes the line unless one of its shape was written less than an
// interval ago.
func (l *redisLogger) Printf(_ context.Context, format string, v ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	suppressed, ok := l.admit(logShape(msg))
	if !ok {
		return
	}
	e := l.log.Warn().Str("component", "go-redis")
	if suppressed > 0 {
		e.Int("suppressed", suppressed)
	}
	e.Msg(msg)
}

// admit reports whether a line of shape may be written now and how many
// of its shape were left out before it.
func (l *redisLogger) admit(shape string) (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	s := l.shapes[shape]
	if s == nil {
		if len(l.shapes) >= maxRedisLogShapes {
			for k, old := range l.shapes { // forget the quiet ones
				if now.Sub(old.last) >= l.every {
					delete(l.shapes, k)
				}
			}
		}
		if len(l.shapes) >= maxRedisLogShapes {
			shape = "" // every further shape shares one budget
			s = l.shapes[shape]
		}
		if s == nil {
			l.shapes[shape] = &redisLogShape{last: now}
			return 0, true
		}
	}
	if now.Sub(s.last) < l.every {
		s.suppressed++
		return 0, false
	}
	suppressed = s.suppressed
	s.last, s.suppressed = now, 0
	return suppressed, true
}

// logShape is a line with its runs of digits replaced by '#': counts,
// ports and connection numbers change from line to line, the failure does
// not.
func logShape(msg string) string {
	var b strings.Builder
	digits := false
	for _, r := range msg {
		if r >= '0' && r <= '9' {
			if !digits {
				b.WriteByte('#')
			}
			digits = true
			continue
		}
		digits = false
		b.WriteRune(r)
	}
	return b.String()
}
