package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/webhook"
)

// DefaultForwardTimeout bounds one forward call.
const DefaultForwardTimeout = 10 * time.Second

// ForwardConfig configures a Forward handler.
type ForwardConfig struct {
	// URL receives the envelope JSON (FORWARD_URL).
	URL string
	// Secret keys the HMAC signature (FORWARD_SECRET / FORWARD_SECRET_FILE).
	Secret []byte
	// Timeout per call; default DefaultForwardTimeout.
	Timeout time.Duration
	// HTTPClient defaults to a client with a transport of its own (Timeout
	// applies per call). Its redirect policy is replaced: a redirect is never
	// followed.
	HTTPClient *http.Client
	// Now defaults to time.Now.
	Now func() time.Time
}

// forwardIdleConns is how many idle connections to the receiver the default
// client keeps: the worker's default concurrency, so a steady flow reuses
// its connections instead of dialing for each event.
const forwardIdleConns = events.DefaultConcurrency

// Forward POSTs each event to an HTTP endpoint: 2xx is success; 408, 429
// and 5xx (and transport failures) are retried; a redirect (any 3xx) and any
// other 4xx are permanent and dead-letter the event. A redirect is not
// followed: the client would turn the POST into a GET, whose 200 would mark
// an event done that the receiver never got. Error texts show FORWARD_URL
// without its user info and query, which often hold credentials, and say
// what happened, not whether it is retried: the router decides that, and
// the last attempt's text is the dead letter's reason.
type Forward struct {
	cfg ForwardConfig
}

// NewForward checks cfg and returns the handler.
func NewForward(cfg ForwardConfig) (*Forward, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("FORWARD_URL %s is not an http(s) URL", redact(cfg.URL))
	}
	if len(cfg.Secret) < 16 {
		return nil, errors.New("FORWARD_SECRET must be at least 16 bytes (receivers verify the signature with it)")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultForwardTimeout
	}
	// A transport of its own: on http.DefaultTransport, anything else in the
	// process that closes its idle connections (httptest.Server.Close does)
	// breaks a request that is reusing one, and its two idle connections
	// per host would make a worker handling many events at once dial the
	// receiver again for most of them.
	transport := &http.Transport{Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true,
		TLSHandshakeTimeout: 10 * time.Second, IdleConnTimeout: 90 * time.Second}
	if dt, ok := http.DefaultTransport.(*http.Transport); ok { // not replaced by a wrapper
		transport = dt.Clone()
	}
	transport.MaxIdleConnsPerHost = forwardIdleConns
	client := &http.Client{Transport: transport}
	if cfg.HTTPClient != nil {
		c := *cfg.HTTPClient // the caller's client keeps its own policy
		client = &c
	}
	client.CheckRedirect = refuseRedirect
	cfg.HTTPClient = client
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Forward{cfg: cfg}, nil
}

// HandleEvent forwards ev.
func (f *Forward) HandleEvent(ctx context.Context, ev events.Envelope) error {
	body, err := json.Marshal(ev)
	if err != nil {
		return events.Permanent(fmt.Errorf("forward: encoding the envelope: %w", err))
	}
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return events.Permanent(fmt.Errorf("forward: %w", redactErr(err)))
	}
	ts := f.cfg.Now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(webhook.HeaderIdempotencyKey, ev.DedupeKey)
	req.Header.Set(webhook.HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(webhook.HeaderSignature, webhook.Sign(f.cfg.Secret, ts, body))
	resp, err := f.cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("forward: %w", redactErr(err))
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	return classify(resp, snippet, f.cfg.Now())
}

// classify decides retry versus dead letter from the receiver's answer.
func classify(resp *http.Response, snippet []byte, now time.Time) error {
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return nil
	case code >= 300 && code < 400:
		to := "no Location"
		if loc, err := resp.Location(); err == nil {
			to = redactURL(loc)
		}
		return events.Permanent(fmt.Errorf("forward: receiver redirected with %d to %s; the event was not delivered: set FORWARD_URL to the final address", code, to))
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		err := fmt.Errorf("forward: receiver answered %d: %.200q", code, snippet)
		if d, ok := retryAfter(resp.Header.Get("Retry-After"), now); ok {
			return events.RetryAfter(d, err)
		}
		return err
	case code == http.StatusRequestTimeout || code >= 500:
		return fmt.Errorf("forward: receiver answered %d: %.200q", code, snippet)
	default:
		return events.Permanent(fmt.Errorf("forward: receiver refused the event with %d: %.200q", code, snippet))
	}
}

// retryAfter reads a Retry-After header (seconds or an HTTP date), capped
// at one hour.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		d = time.Duration(s) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	} else {
		return 0, false
	}
	return max(0, min(d, time.Hour)), true
}

// refuseRedirect is the forward client's CheckRedirect: the 3xx answer is
// returned as it is, for classify to refuse.
func refuseRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// redact drops the user info, the query and the fragment of a URL for
// messages: receivers often put a token in one of them.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return redactURL(u)
}

func redactURL(u *url.URL) string {
	c := *u
	c.User, c.RawQuery, c.ForceQuery, c.Fragment, c.RawFragment = nil, "", false, "", ""
	return c.String()
}

// redactErr redacts the URL that net/http puts in its errors (a
// *url.Error's text is the method, the full URL and the cause).
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = redact(ue.URL)
	}
	return err
}
