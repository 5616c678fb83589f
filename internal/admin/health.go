package admin

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/wxpay-notify/wxpay-notify/internal/config"
)

// maxProbeBody bounds what is read of the admin listener's answer.
const maxProbeBody = 4 << 10

// RunHealth is the "health" subcommand of the long-running commands: it
// asks the command's own admin listener (ADMIN_ADDR, as the command reads
// it) for /readyz, or /healthz with --live, and returns nil only on 200.
// It exists for container health checks: the images hold no shell and no
// HTTP client, so `ingress health` is what a Docker HEALTHCHECK runs.
// The command name is used in the usage text; a bad command line is
// reported wrapping errUsage, the command's own usage error.
func RunHealth(ctx context.Context, command string, errUsage error, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet(command+" health", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "usage: %s health [flags]\n\n"+
			"Asks the admin listener of a running %s for /readyz (or /healthz with --live)\n"+
			"and exits 0 when it answers 200, 1 otherwise (the answer says what is not ready).\n\n", command, command)
		fs.PrintDefaults()
	}
	addr := config.String(fs, getenv, "admin-addr", "ADMIN_ADDR", config.DefaultAdminAddr, "`address` the command's admin listener was given (a host of 0.0.0.0, :: or none is reached on loopback)")
	live := fs.Bool("live", false, "ask /healthz (the process is alive) instead of /readyz (its dependencies answer)")
	timeout := fs.Duration("timeout", 3*time.Second, "longest wait for the answer")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if err := config.CheckAddr("ADMIN_ADDR", *addr); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *timeout <= 0 {
		return fmt.Errorf("%w: --timeout must be positive, got %s", errUsage, *timeout)
	}
	path := "/readyz"
	if *live {
		path = "/healthz"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	body, err := Probe(ctx, *addr, path)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, body)
	return nil
}

// Probe GETs path from the admin listener bound to listenAddr and returns
// the body when the answer is 200. A listen address without a host, or
// with an unspecified one (0.0.0.0, ::), is reached on loopback.
func Probe(ctx context.Context, listenAddr, path string) (string, error) {
	host, port, err := net.SplitHostPort(listenAddr)
	if err != nil {
		return "", fmt.Errorf("ADMIN_ADDR=%q is not host:port", listenAddr)
	}
	switch ip := net.ParseIP(host); {
	case host == "" || (ip != nil && ip.IsUnspecified() && ip.To4() != nil):
		host = "127.0.0.1"
	case ip != nil && ip.IsUnspecified():
		host = "::1"
	}
	url := "http://" + net.JoinHostPort(host, port) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("%s: %w (is the command running, and is ADMIN_ADDR the address it was given?)", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxProbeBody))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s answered %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}
