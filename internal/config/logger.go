package config

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// NewLogger builds the process logger from LOG_LEVEL and LOG_FORMAT: JSON
// lines by default, zerolog.ConsoleWriter for "console" (colored only when w
// is a terminal). Every line carries a timestamp and the fields service and
// version. A nil w means os.Stderr. It changes no zerolog globals; it does
// route go-redis's log lines (a process-wide setting) into the new logger
// with RouteRedisLogs, so that a Redis outage is logged as rate-limited JSON
// warnings rather than plain text on stderr several times a second.
func NewLogger(c Common, service, version string, w io.Writer) (zerolog.Logger, error) {
	level, err := parseLevel(c.LogLevel)
	if err != nil {
		return zerolog.Nop(), err
	}
	format, err := parseFormat(c.LogFormat)
	if err != nil {
		return zerolog.Nop(), err
	}
	if w == nil {
		w = os.Stderr
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339, NoColor: !isTerminal(w)}
	}
	log := zerolog.New(w).Level(level).With().
		Timestamp().
		Str("service", service).
		Str("version", version).
		Logger()
	RouteRedisLogs(log)
	return log, nil
}

func parseLevel(s string) (zerolog.Level, error) {
	bad := fmt.Errorf("LOG_LEVEL=%q is not a log level: use trace, debug, info, warn, error, fatal, panic or disabled", s)
	if strings.TrimSpace(s) == "" {
		return zerolog.NoLevel, bad
	}
	l, err := zerolog.ParseLevel(s)
	if err != nil || l == zerolog.NoLevel {
		return zerolog.NoLevel, bad
	}
	return l, nil
}

func parseFormat(s string) (string, error) {
	switch f := strings.ToLower(strings.TrimSpace(s)); f {
	case "json", "console":
		return f, nil
	}
	return "", fmt.Errorf("LOG_FORMAT=%q: use json or console", s)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
