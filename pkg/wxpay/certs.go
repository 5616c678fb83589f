package wxpay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// CertificatesPath is the platform certificate download endpoint.
const CertificatesPath = "/v3/certificates"

// certManager downloads platform certificates, one download at a time.
// Its mutex is never held during a download: a caller that finds a
// download running waits for it on a channel, so it can give up when its
// own context ends.
type certManager struct {
	c *Client

	mu          sync.Mutex    // guards the fields below
	running     chan struct{} // non-nil while a download runs; closed when it ends
	lastAttempt time.Time     // start of the last download that counted
	lastErr     error         // its result

	// waitHook, when set (by tests), is called each time a caller starts
	// waiting for a running download.
	waitHook func()
}

func newCertManager(c *Client) *certManager { return &certManager{c: c} }

// certificatesAnswer is the /v3/certificates body.
type certificatesAnswer struct {
	Data []struct {
		SerialNo           string `json:"serial_no"`
		EffectiveTime      string `json:"effective_time"`
		ExpireTime         string `json:"expire_time"`
		EncryptCertificate struct {
			Algorithm      string `json:"algorithm"`
			Nonce          string `json:"nonce"`
			AssociatedData string `json:"associated_data"`
			Ciphertext     string `json:"ciphertext"`
		} `json:"encrypt_certificate"`
	} `json:"data"`
}

// RefreshCertificates downloads the platform certificates now, verifies the
// download and keeps the unexpired certificates (in memory and, if
// configured, in the cache directory). Certificates that have expired are
// dropped. A merchant without platform certificates gets an error wrapping
// ErrNoPlatformCertificate. If a download is already running, it waits for
// that one to end (or for ctx) before it starts its own.
func (c *Client) RefreshCertificates(ctx context.Context) error {
	if c.certs == nil {
		return fmt.Errorf("%w: certificate download is off (Config.DownloadCertificates)", ErrInvalidConfig)
	}
	return c.certs.refresh(ctx, true)
}

// RunCertificateRefresh refreshes the platform certificates every
// CertificateRefreshInterval until ctx ends. A failed refresh keeps the
// certificates already held; the error goes to onError (may be nil) and the
// next attempt follows after MinRefreshInterval.
func (c *Client) RunCertificateRefresh(ctx context.Context, onError func(error)) {
	if c.certs == nil {
		return
	}
	every := c.cfg.CertificateRefreshInterval
	if every == 0 {
		every = DefaultCertificateRefreshInterval
	}
	retry := c.minRefresh()
	// A refresh that just succeeded (the caller's at start) counts as the
	// first one.
	c.certs.mu.Lock()
	first := c.certs.lastAttempt.IsZero() || c.certs.lastErr != nil
	c.certs.mu.Unlock()
	if !first && !sleepCtx(ctx, every) {
		return
	}
	for {
		wait := every
		if err := c.RefreshCertificates(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			if onError != nil {
				onError(err)
			}
			wait = min(retry, every)
		}
		if !sleepCtx(ctx, wait) {
			return
		}
	}
}

// sleepCtx waits d; it reports false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (c *Client) minRefresh() time.Duration {
	if c.cfg.MinRefreshInterval > 0 {
		return c.cfg.MinRefreshInterval
	}
	return DefaultMinRefreshInterval
}

// refreshForUnknown refreshes at most once per MinRefreshInterval; callers
// arriving while a download runs wait for it and share its result. The wait
// ends with ctx: an unknown serial never holds a caller past its deadline.
func (m *certManager) refreshForUnknown(ctx context.Context) error {
	return m.refresh(ctx, false)
}

// refresh runs one download at a time. A caller that finds one running
// waits for it or for ctx, whichever ends first. Then, unless force is set,
// a download that counted within MinRefreshInterval answers for it;
// otherwise the caller downloads itself, with its own ctx.
//
// A download that failed because its caller's ctx ended does not count: it
// says nothing about WeChat, and the next caller tries again at once rather
// than inherit a context error for a whole MinRefreshInterval.
func (m *certManager) refresh(ctx context.Context, force bool) error {
	m.mu.Lock()
	for m.running != nil {
		running, hook := m.running, m.waitHook
		m.mu.Unlock()
		if hook != nil {
			hook()
		}
		select {
		case <-running:
		case <-ctx.Done():
			return ctx.Err()
		}
		m.mu.Lock()
	}
	if !force && !m.lastAttempt.IsZero() && m.c.now().Sub(m.lastAttempt) < m.c.minRefresh() {
		err := m.lastErr
		m.mu.Unlock()
		return err
	}
	done := make(chan struct{})
	m.running = done
	start := m.c.now()
	m.mu.Unlock()

	defer func() {
		m.mu.Lock()
		m.running = nil
		close(done)
		m.mu.Unlock()
	}()
	err := m.download(ctx)
	if err == nil || ctx.Err() == nil {
		m.mu.Lock()
		m.lastAttempt, m.lastErr = start, err
		m.mu.Unlock()
	}
	return err
}

func (m *certManager) download(ctx context.Context) error {
	c := m.c
	// The answer is verified below with the certificates it carries, so
	// Do's own verification is skipped here.
	resp, err := c.Do(ctx, Request{Method: "GET", Path: CertificatesPath, Unsigned: true})
	if err != nil {
		var apiErr *APIError
		if errors.As(err, &apiErr) && (apiErr.StatusCode == 404 || errors.Is(apiErr, ErrNotFound) || errors.Is(apiErr, ErrSystemError)) {
			return fmt.Errorf("%w (the certificates endpoint answered %v)", ErrNoPlatformCertificate, apiErr)
		}
		return fmt.Errorf("downloading platform certificates: %w", err)
	}
	var ans certificatesAnswer
	if err := json.Unmarshal(resp.Body, &ans); err != nil {
		return fmt.Errorf("%w: certificates answer is not JSON", ErrMalformed)
	}
	if len(ans.Data) == 0 {
		return fmt.Errorf("%w (the certificates endpoint returned an empty list)", ErrNoPlatformCertificate)
	}
	fresh := make(map[string]*platformKey, len(ans.Data))
	pems := make(map[string][]byte, len(ans.Data))
	now := c.now()
	for _, d := range ans.Data {
		ec := d.EncryptCertificate
		if ec.Algorithm != AlgorithmAEADAES256GCM {
			return fmt.Errorf("%w: certificate %s uses algorithm %q", ErrMalformed, d.SerialNo, ec.Algorithm)
		}
		plain, err := openGCM(c.aeads, ec.Nonce, ec.AssociatedData, ec.Ciphertext)
		if err != nil {
			return fmt.Errorf("certificate %s: %w", d.SerialNo, err)
		}
		cert, err := LoadCertificate(plain)
		if err != nil {
			return fmt.Errorf("%w: certificate %s does not parse", ErrMalformed, d.SerialNo)
		}
		serial := CertificateSerial(cert)
		if normalizeSerial(d.SerialNo) != normalizeSerial(serial) {
			return fmt.Errorf("%w: listed serial %s differs from the certificate's own %s", ErrMalformed, d.SerialNo, serial)
		}
		if now.After(cert.NotAfter) {
			continue // expired: WeChat never signs with it
		}
		fresh[normalizeSerial(serial)] = certKey(serial, cert)
		pems[serial] = plain
	}
	// The download's own signature must verify with a certificate it
	// carries (or one we already trust).
	h, err := ReadSignedHeaders(resp.Header)
	if err != nil {
		return fmt.Errorf("certificates answer: %w", err)
	}
	if err := checkTimestamp(h.Timestamp, now, c.window); err != nil {
		return fmt.Errorf("certificates answer: %w", err)
	}
	signer := fresh[normalizeSerial(h.Serial)]
	if signer == nil {
		if k := c.keys.get(h.Serial); k != nil && k.validAt(now) {
			signer = k
		}
	}
	if signer == nil {
		return fmt.Errorf("certificates answer: %w: signed with %s, which it does not carry", ErrUnknownSerial, h.Serial)
	}
	if err := verifyWithKey(signer.key, h, resp.Body); err != nil {
		return fmt.Errorf("certificates answer: %w", err)
	}
	for _, k := range fresh {
		c.keys.put(k)
	}
	c.keys.dropExpired(now)
	if dir := c.cfg.CertificateCacheDir; dir != "" {
		for serial, p := range pems {
			if err := writeFileAtomic(filepath.Join(dir, serial+".pem"), p); err != nil {
				return fmt.Errorf("caching platform certificate %s in %s: %w", serial, dir, err)
			}
		}
	}
	return nil
}

// loadCache reads unexpired certificates from the cache directory. A
// missing directory is created; unreadable files are errors (check the
// directory's contents), expired ones are skipped.
func (m *certManager) loadCache() error {
	dir := m.c.cfg.CertificateCacheDir
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("%w: certificate cache dir: %v", ErrInvalidConfig, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("%w: certificate cache dir: %v", ErrInvalidConfig, err)
	}
	now := m.c.now()
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".pem") {
			continue
		}
		p, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return fmt.Errorf("%w: certificate cache: %v", ErrInvalidConfig, err)
		}
		cert, err := LoadCertificate(p)
		if err != nil {
			return fmt.Errorf("certificate cache file %s: %w", e.Name(), err)
		}
		if now.After(cert.NotAfter) || now.Before(cert.NotBefore) {
			continue
		}
		m.c.keys.put(certKey(CertificateSerial(cert), cert))
	}
	return nil
}

// writeFileAtomic writes through a temporary file and a rename, so a reader
// never sees half a certificate.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		os.Remove(tmp)
	}
	return werr
}
