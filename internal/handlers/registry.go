package handlers

import (
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/pkg/events"
)

// Deps is what the built-in handlers are built from; each takes the part
// it needs.
type Deps struct {
	// Logger receives the log handler's lines.
	Logger zerolog.Logger
	// Redis and KeyPrefix hold the tracker's state.
	Redis     redis.UniversalClient
	KeyPrefix string
	// Forward configures the forward handler. ForwardSecret, when not
	// nil, supplies Forward.Secret when that handler is built, so a secret
	// file is read only when the handler is named.
	Forward       ForwardConfig
	ForwardSecret func() ([]byte, error)
}

// builtin lists the built-in handlers, by name, in the order Names gives:
// adding a handler is its file plus one line here.
var builtin = []struct {
	name  string
	build func(Deps) (events.Handler, error)
}{
	{"log", func(d Deps) (events.Handler, error) { return events.HandlerFunc(Log(d.Logger)), nil }},
	{"tracker", func(d Deps) (events.Handler, error) {
		return NewTracker(d.Redis, TrackerConfig{KeyPrefix: d.KeyPrefix}), nil
	}},
	{"forward", func(d Deps) (events.Handler, error) {
		cfg := d.Forward
		if d.ForwardSecret != nil {
			secret, err := d.ForwardSecret()
			if err != nil {
				return nil, err
			}
			cfg.Secret = secret
		}
		return NewForward(cfg)
	}},
}

// ErrUnknownHandler is the error of a name that is no built-in handler.
var ErrUnknownHandler = errors.New("unknown handler")

// Names lists the built-in handlers.
func Names() []string {
	names := make([]string, len(builtin))
	for i, b := range builtin {
		names[i] = b.name
	}
	return names
}

// CheckNames reports the first name that is no built-in handler, with the
// names there are.
func CheckNames(names []string) error {
	for _, name := range names {
		if _, err := lookup(name); err != nil {
			return err
		}
	}
	return nil
}

// Chain builds the named handlers, in the order given (the order they run
// in). An unknown name is ErrUnknownHandler; a handler's own error (a bad
// FORWARD_URL) comes back as it is.
func Chain(names []string, deps Deps) ([]events.Handler, error) {
	chain := make([]events.Handler, 0, len(names))
	for _, name := range names {
		build, err := lookup(name)
		if err != nil {
			return nil, err
		}
		h, err := build(deps)
		if err != nil {
			return nil, err
		}
		chain = append(chain, h)
	}
	return chain, nil
}

// lookup returns the constructor of the built-in handler name.
func lookup(name string) (func(Deps) (events.Handler, error), error) {
	for _, b := range builtin {
		if b.name == name {
			return b.build, nil
		}
	}
	names := Names()
	want := strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
	return nil, fmt.Errorf("%w %q (want %s)", ErrUnknownHandler, name, want)
}
