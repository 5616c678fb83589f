package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// ConnectNATS connects to NATS_URL the way every command does: named
// name, retrying a failed first connect in the background and reconnecting
// forever (readiness reports the state meanwhile), logging disconnects and
// reconnects. It returns the connection and its JetStream context.
func (c Common) ConnectNATS(name string, log zerolog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(strings.Join(c.NATSServers(), ","),
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: our own Drain or Close at shutdown
				log.Error().Err(err).Msg("NATS disconnected")
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info().Str("server", c.ConnectedUrlRedacted()).Msg("NATS reconnected") }),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("NATS_URL: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}
