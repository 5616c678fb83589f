// Package ingress is the public notification endpoint: it verifies and
// decrypts WeChat Pay notifications (v3 JSON and legacy v2 XML), publishes
// each as one envelope to JetStream, and answers WeChat success only after
// the publish was acknowledged. Everything it cannot make durable is
// answered with a failure status, so WeChat sends it again.
//
// NewHandler builds the endpoint; NewServer puts it behind the public
// listener's limits, and Server.Run serves until its context ends, then
// shuts down in order: Server.Ready fails (for /readyz), the listener
// closes, the notifications in flight get their answers. Draining the NATS
// connection is the caller's, after Run.
//
// Each outcome of a notification (ok, duplicate, bad_signature,
// publish_failed, …) has one row in outcome.go: the label of the metric
// wxpay_ingress_requests_total and of the log line, the status, the log
// level and what to check. The status of the SDK's own error classes is
// wxpay.NotificationStatus's, so the SDK's NotifyHandler and this endpoint
// answer alike.
package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/internal/untrusted"
	"github.com/wxpay-notify/wxpay-notify/pkg/bufpool"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// Defaults of Config. The publish timeout's is events.DefaultPublishTimeout.
const (
	DefaultAnswerDeadline = 2500 * time.Millisecond
	// DefaultMaxBodyBytes is the SDK's limit of a notification (64 KiB).
	DefaultMaxBodyBytes = wxpay.MaxNotificationBytes
	DefaultMaxInFlight  = 1024
)

// Merchant is one merchant the ingress accepts notifications for.
type Merchant struct {
	MchID  string
	Client *wxpay.Client
	// APIv2Key verifies legacy v2 XML notifications; empty when the
	// merchant has none (v2 notifications are then answered 500, counted as
	// v2_not_configured and logged as a warning).
	APIv2Key string
}

// Publisher makes an envelope durable; *events.Publisher is one.
type Publisher interface {
	Publish(ctx context.Context, env events.Envelope) (events.Published, error)
}

// Config holds the optional settings; the zero value works.
type Config struct {
	// PublishTimeout bounds the wait for the JetStream acknowledgement.
	// Default events.DefaultPublishTimeout.
	PublishTimeout time.Duration
	// AnswerDeadline bounds all work on one notification once its body has
	// been read, a certificate refresh included, so the answer stays inside
	// WeChat's limit (3 s by one official article). Reading the body is
	// bounded by the server's read timeout instead (ServerConfig), so a
	// slow upload is answered 408 and never eats the publish's budget.
	// Default DefaultAnswerDeadline.
	AnswerDeadline time.Duration
	// MaxBodyBytes defaults to DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxInFlight bounds the notifications handled at once once their body
	// is read (verification, decryption, the publish); one more is answered
	// 503 at once (WeChat retries) instead of holding memory. Reading bodies
	// takes no slot: the connection limit and the read timeout bound it.
	// Default DefaultMaxInFlight.
	MaxInFlight int
	// Logger receives one line per request; default none.
	Logger zerolog.Logger
	// Registerer receives the metrics; default a private registry.
	Registerer prometheus.Registerer
	// Now defaults to time.Now.
	Now func() time.Time
}

// Handler serves POST /notify/{mchid} and, with exactly one merchant,
// POST /notify.
type Handler struct {
	mux       *http.ServeMux
	merchants map[string]*Merchant
	only      *Merchant // set when exactly one merchant is configured
	pub       Publisher
	cfg       Config
	log       zerolog.Logger
	metrics   *Metrics
	slots     chan struct{} // one per notification being handled
}

// NewHandler builds the notification endpoint.
func NewHandler(merchants []Merchant, pub Publisher, cfg Config) (*Handler, error) {
	if len(merchants) == 0 {
		return nil, errors.New("ingress: no merchant configured")
	}
	if pub == nil {
		return nil, errors.New("ingress: no publisher")
	}
	positiveOr(&cfg.PublishTimeout, events.DefaultPublishTimeout)
	positiveOr(&cfg.AnswerDeadline, DefaultAnswerDeadline)
	positiveOr(&cfg.MaxBodyBytes, DefaultMaxBodyBytes)
	positiveOr(&cfg.MaxInFlight, DefaultMaxInFlight)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	h := &Handler{
		mux:       http.NewServeMux(),
		merchants: make(map[string]*Merchant, len(merchants)),
		pub:       pub,
		cfg:       cfg,
		log:       cfg.Logger,
		metrics:   NewMetrics(cfg.Registerer),
		slots:     make(chan struct{}, cfg.MaxInFlight),
	}
	for i := range merchants {
		m := &merchants[i]
		if m.MchID == "" || m.Client == nil {
			return nil, fmt.Errorf("ingress: merchant #%d has no mchid or client", i+1)
		}
		if !validMchID(m.MchID) {
			return nil, fmt.Errorf("ingress: merchant #%d: mchid %q is not 1-%d digits", i+1, untrusted.String(m.MchID), maxMchIDDigits)
		}
		if _, dup := h.merchants[m.MchID]; dup {
			return nil, fmt.Errorf("ingress: merchant %s configured twice", m.MchID)
		}
		h.merchants[m.MchID] = m
	}
	if len(merchants) == 1 {
		h.only = &merchants[0]
	}
	h.mux.HandleFunc("POST /notify/{mchid}", h.serveNotify)
	h.mux.HandleFunc("POST /notify", h.serveNotify)
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// result is what one request came to, for the answer, the log and metrics.
type result struct {
	status    int
	outcome   *outcome
	message   string
	err       error
	format    string // v3 or v2
	mchid     string
	eventID   string
	eventType string
	dedupeKey string
	keyID     string
	duplicate bool
	seq       uint64
	bodyRead  time.Duration // time the body took to arrive
}

// errUnknownMerchant: the URL names no merchant configured here (or none,
// while several are).
var errUnknownMerchant = errors.New("unknown merchant")

// errMerchantMismatch: an authentic notification names another merchant
// than the one of the URL it was posted to.
var errMerchantMismatch = errors.New("notification is for another merchant")

// errV2NotConfigured: a v2 XML notification for a merchant without an API
// v2 key.
var errV2NotConfigured = fmt.Errorf("%w: no API v2 key", wxpay.ErrInvalidConfig)

// maxMchIDDigits bounds a merchant id (WeChat's are 10 digits).
const maxMchIDDigits = 32

// maxMessageBytes bounds an error message in an answer or a log line: the
// messages of this package and pkg/wxpay are far shorter, but some quote a
// header (the serial), which is bounded here once more.
const maxMessageBytes = 512

// validMchID reports whether s is 1-32 ASCII digits.
func validMchID(s string) bool {
	if len(s) == 0 || len(s) > maxMchIDDigits {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func (h *Handler) serveNotify(w http.ResponseWriter, r *http.Request) {
	start := h.cfg.Now()
	res := h.handle(w, r)
	writeAnswer(w, res)
	eventType := res.eventType
	if eventType == "" {
		eventType = "unknown"
	}
	h.metrics.requests.WithLabelValues(res.outcome.label, eventType, res.format).Inc()
	h.logResult(r, res, h.cfg.Now().Sub(start))
}

var (
	contentTypeXML  = []string{"text/xml; charset=utf-8"}
	contentTypeJSON = []string{"application/json; charset=utf-8"}
	successAnswer   = []byte(`{"code":"SUCCESS","message":"成功"}`)
)

// writeAnswer writes res's answer in its format, the message bounded.
func writeAnswer(w http.ResponseWriter, res result) {
	message := untrusted.Truncate(res.message, maxMessageBytes)
	// The header values are shared, never modified: no allocation per answer.
	if res.format == "v2" {
		w.Header()["Content-Type"] = contentTypeXML
		w.WriteHeader(res.status)
		w.Write(wxpay.V2Answer(res.status == http.StatusOK, message))
	} else {
		w.Header()["Content-Type"] = contentTypeJSON
		w.WriteHeader(res.status)
		if res.status == http.StatusOK {
			w.Write(successAnswer)
		} else {
			b, _ := json.Marshal(struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			}{"FAIL", message})
			w.Write(b)
		}
	}
}

func (h *Handler) handle(w http.ResponseWriter, r *http.Request) result {
	res := result{format: "v3", mchid: r.PathValue("mchid")}
	if r.ContentLength > h.cfg.MaxBodyBytes {
		// Answered before the body is read: no need to wait for it.
		return res.fail(outTooLarge, fmt.Errorf("body over %d bytes (Content-Length %d)", h.cfg.MaxBodyBytes, r.ContentLength))
	}
	buf := bodies.Get()
	defer bodies.Put(buf)
	readStart := h.cfg.Now()
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	res.bodyRead = h.cfg.Now().Sub(readStart)
	// Nothing keeps body past this call: the parsers copy what they return.
	body := buf.Bytes()
	if isV2(body) {
		res.format = "v2" // answered in the v2 XML form from here on
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		var netErr net.Error
		switch {
		case errors.As(err, &tooBig):
			return res.fail(outTooLarge, fmt.Errorf("body over %d bytes", h.cfg.MaxBodyBytes))
		case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
			return res.fail(outSlowUpload, fmt.Errorf("the body (%d bytes so far) did not arrive within the server's read timeout", len(body)))
		}
		return res.failErr(fmt.Errorf("%w: reading the body: %v", wxpay.ErrMalformed, err))
	}
	// The slot is taken once the body is in: a slow upload holds none
	// (MAX_CONNECTIONS and the server's read timeout bound the readers),
	// and MAX_IN_FLIGHT bounds the work that follows.
	select {
	case h.slots <- struct{}{}:
	default:
		return res.fail(outBusy, fmt.Errorf("%d notifications in flight already (MAX_IN_FLIGHT): answer WeChat to retry", h.cfg.MaxInFlight))
	}
	h.metrics.inFlight.Inc()
	defer func() {
		h.metrics.inFlight.Dec()
		<-h.slots
	}()
	return h.process(r, body, res)
}

// process verifies, decrypts and publishes the body read by handle, in the
// slot it took.
func (h *Handler) process(r *http.Request, body []byte, res result) result {
	// The deadline starts once the body is in, and ignores the client's
	// hang-up: an event being published when WeChat gives up is better
	// stored (its retry is then answered as a duplicate) than abandoned
	// half way.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), h.cfg.AnswerDeadline)
	defer cancel()
	var m *Merchant
	switch {
	case res.mchid == "":
		m = h.only
		if m == nil {
			return res.failErr(fmt.Errorf("%w: several merchants are configured: post to /notify/{mchid}", errUnknownMerchant))
		}
		res.mchid = m.MchID
	case !validMchID(res.mchid):
		return res.failErr(fmt.Errorf("%w: mchid %q is not 1-%d digits", errUnknownMerchant, untrusted.String(res.mchid), maxMchIDDigits))
	default:
		if m = h.merchants[res.mchid]; m == nil {
			return res.failErr(fmt.Errorf("%w: mchid %s is not configured here", errUnknownMerchant, res.mchid))
		}
	}
	var env events.Envelope
	var err error
	if res.format == "v2" {
		env, err = h.parseV2(ctx, m, body, &res)
	} else {
		env, err = h.parseV3(ctx, m, r.Header, body, &res)
	}
	if err != nil {
		return res.failErr(err)
	}
	res.dedupeKey = env.DedupeKey
	pctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	pstart := h.cfg.Now()
	p, err := h.pub.Publish(pctx, env)
	h.metrics.observe(h.metrics.publish, pstart, h.cfg.Now())
	if err != nil {
		return res.fail(outPublishFailed, fmt.Errorf("event not stored, answer WeChat to retry (check NATS JetStream and stream %s): %w", events.StreamName, err))
	}
	res.outcome, res.status, res.message, res.duplicate, res.seq = outOK, http.StatusOK, "OK", p.Duplicate, p.Sequence
	if p.Duplicate {
		res.outcome = outDuplicate
	}
	return res
}

func (h *Handler) parseV3(ctx context.Context, m *Merchant, header http.Header, body []byte, res *result) (events.Envelope, error) {
	vstart := h.cfg.Now()
	n, err := m.Client.ParseNotification(ctx, header, body)
	receivedAt := h.cfg.Now()
	h.metrics.observe(h.metrics.verify, vstart, receivedAt)
	res.keyID = header.Get(wxpay.HeaderSerial)
	if err != nil {
		if errors.Is(err, wxpay.ErrSignatureProbe) {
			h.metrics.probes.WithLabelValues(m.MchID).Inc()
		}
		return events.Envelope{}, err
	}
	res.eventID, res.eventType, res.keyID = n.ID, n.EventType, n.KeyID
	kind := "certificate"
	if wxpay.IsPublicKeyID(n.KeyID) {
		kind = "public_key"
	}
	h.metrics.verifiedBy.WithLabelValues(m.MchID, kind, n.KeyID).Inc()
	// The envelope first: once it is built, the resource is known to be
	// valid JSON and the merchant check reads it without decoding it again.
	// Should the envelope fail, the merchant check still comes first.
	env, err := events.FromNotification(m.MchID, n, receivedAt)
	if err := checkResourceMerchant(m, n.Plaintext, err == nil); err != nil {
		return events.Envelope{}, err
	}
	return env, err
}

func (h *Handler) parseV2(_ context.Context, m *Merchant, body []byte, res *result) (events.Envelope, error) {
	if m.APIv2Key == "" {
		return events.Envelope{}, fmt.Errorf("%w: a v2 XML notification arrived but none is configured for merchant %s (set WXPAY_APIV2_KEY)", errV2NotConfigured, m.MchID)
	}
	vstart := h.cfg.Now()
	v, err := wxpay.ParseV2Notification(body, m.APIv2Key)
	h.metrics.observe(h.metrics.verify, vstart, h.cfg.Now())
	if err != nil {
		return events.Envelope{}, err
	}
	// mch_id is the merchant, or the service provider in partner mode
	// (sub_mch_id is then the sub-merchant, whichever it is).
	if got := v.MchID(); got != m.MchID {
		return events.Envelope{}, fmt.Errorf("%w: v2 mch_id %q but it was posted to the endpoint of merchant %s (check the notify_url of merchant %s)",
			errMerchantMismatch, untrusted.String(got), m.MchID, untrusted.String(got))
	}
	env, err := events.FromV2(m.MchID, v, h.cfg.Now())
	if err != nil {
		return env, err
	}
	res.eventType = env.EventType
	h.metrics.verifiedBy.WithLabelValues(m.MchID, "apiv2_key", "").Inc()
	return env, nil
}

// bodies holds the request body buffers: a v3 notification is about 1 KB,
// and reading it into a fresh slice was the largest allocation per request.
var bodies = bufpool.New(4<<10, 16<<10)

func (res result) fail(o *outcome, err error) result {
	res.outcome, res.status, res.err = o, o.statusOf(err), err
	res.message = o.messageOf(res.status, err)
	return res
}

// failErr answers an error of verification, decryption or mapping by its
// class (see classify).
func (res result) failErr(err error) result { return res.fail(classify(err), err) }

func (h *Handler) logResult(r *http.Request, res result, d time.Duration) {
	ev := h.log.WithLevel(res.outcome.level)
	if res.outcome.check != "" {
		ev.Str("check", res.outcome.check)
	}
	ev.Str("event_id", res.eventID).
		Str("mchid", untrusted.String(res.mchid)).
		Str("event_type", res.eventType).
		Str("format", res.format).
		Str("outcome", res.outcome.label).
		Int("http_status", res.status).
		Str("wechatpay_serial", untrusted.String(res.keyID)).
		Str("request_id", untrusted.String(r.Header.Get(wxpay.HeaderRequestID))).
		Float64("duration", float64(d.Microseconds())/1000).
		Float64("body_read", float64(res.bodyRead.Microseconds())/1000)
	if res.dedupeKey != "" {
		ev.Str("dedupe_key", res.dedupeKey)
	}
	if res.seq != 0 {
		ev.Uint64("stream_seq", res.seq)
	}
	if res.err != nil {
		ev.Str(zerolog.ErrorFieldName, untrusted.Truncate(res.err.Error(), maxMessageBytes))
	}
	ev.Msg("notification")
}

// CanVerify is a readiness check for the admin listener: it fails, naming
// each merchant, while a merchant has no key to verify notifications with
// (no WeChat Pay public key configured and no valid platform certificate
// held), since every notification for it would then be refused.
func (h *Handler) CanVerify(context.Context) error {
	var errs []error
	for _, id := range h.MerchantIDs() {
		if len(h.merchants[id].Client.KeyIDs()) == 0 {
			errs = append(errs, fmt.Errorf("merchant %s has no key to verify notifications with: no WeChat Pay public key configured and no valid platform certificate held "+
				"(check the platform certificate download: outbound HTTPS to the WeChat Pay API, WXPAY_PRIVATE_KEY_FILE and WXPAY_CERT_SERIAL_NO; or configure WXPAY_PUBLIC_KEY_FILE and WXPAY_PUBLIC_KEY_ID)", id))
		}
	}
	return errors.Join(errs...)
}

// MerchantIDs lists the configured merchants, sorted.
func (h *Handler) MerchantIDs() []string {
	out := make([]string, 0, len(h.merchants))
	for id := range h.merchants {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}
