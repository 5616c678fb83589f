package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

type runFlags struct {
	url      string
	rate     float64
	duration time.Duration
	corpus   string
	keys     string
	gen      int
	natsURL  string
	stream   string
	workers  int
	timeout  time.Duration
	warmup   int
	purge    bool
	maxP99   time.Duration
	timeline bool
	cpuPIDs  string
	metrics  string
	tsAhead  time.Duration
	profile  string
	client   string
	rampUp   time.Duration
}

func cmdRun(args []string) error {
	var f runFlags
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.StringVar(&f.url, "url", "http://127.0.0.1:8088/notify/{mchid}", "ingress notify URL; {mchid} is replaced by the corpus's merchant")
	fs.Float64Var(&f.rate, "rate", 10000, "notifications per second (open loop: request i is due at start + i/rate)")
	fs.DurationVar(&f.duration, "duration", 30*time.Second, "how long to send at -rate: the measured window")
	fs.DurationVar(&f.rampUp, "ramp-up", 5*time.Second, "before the measured window, raise the rate linearly from 0 to -rate over this long (rate×ramp-up/2 more notifications; their errors count, their latencies are reported apart)")
	fs.StringVar(&f.corpus, "corpus", "", "corpus file from 'gen' (else sign in process from -keys)")
	fs.StringVar(&f.keys, "keys", "", "keys directory from 'keys' (with no -corpus: sign in process)")
	fs.IntVar(&f.gen, "gen", 0, "with no -corpus: notifications to sign first (default rate × duration)")
	fs.DurationVar(&f.tsAhead, "ts-ahead", defaultTSAhead, "with no -corpus: Wechatpay-Timestamp = signing start + this")
	fs.StringVar(&f.natsURL, "nats", "nats://127.0.0.1:4333", "NATS server of the ingress, to count the stream (empty: no check)")
	fs.StringVar(&f.stream, "stream", "WXPAY", "stream to count")
	fs.BoolVar(&f.purge, "purge", false, "purge the stream before sending (else it must be empty)")
	fs.StringVar(&f.client, "client", "raw", "http: net/http's Client and Transport; raw (default): one goroutine per request writing HTTP/1.1 on pooled keep-alive connections (less generator CPU)")
	fs.IntVar(&f.workers, "workers", 1000, "sending goroutines = most requests in flight; a request due while all are busy is an error (generator saturated)")
	fs.DurationVar(&f.timeout, "timeout", 5*time.Second, "per-request timeout (WeChat waits 5 s)")
	fs.IntVar(&f.warmup, "warmup", 32, "keep-alive connections to open before the run (GET, answered 405, stores nothing)")
	fs.DurationVar(&f.maxP99, "max-p99", 0, "goal: exit 3 when p99 (from the scheduled time) is above this; 0: no goal")
	fs.BoolVar(&f.timeline, "timeline", false, "print one line per second of the run")
	fs.StringVar(&f.cpuPIDs, "cpu-pids", "", "name=pid,... processes whose CPU use over the send window to report (Linux /proc)")
	fs.StringVar(&f.metrics, "metrics", "", "ingress admin /metrics URL: print its request counters after the run")
	fs.StringVar(&f.profile, "profile-cmd", "", "command (split on spaces, no shell) started when sending starts and sent SIGINT when it ends, e.g. 'perf record -g -p PID'")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if f.rate <= 0 || f.duration <= 0 || f.workers <= 0 || f.rampUp < 0 {
		return exitError{2, "run: -rate, -duration and -workers must be positive"}
	}
	if (f.corpus == "") == (f.keys == "") {
		return exitError{2, "run: give -corpus FILE or -keys DIR (to sign in process)"}
	}
	if f.client != "http" && f.client != "raw" {
		return exitError{2, "run: -client is http or raw"}
	}
	if f.tsAhead > 5*time.Minute {
		return exitError{2, "run: -ts-ahead over 5m"}
	}
	nRamp := int(math.Round(f.rate * f.rampUp.Seconds() / 2))
	n := nRamp + int(math.Round(f.rate*f.duration.Seconds()))

	// The stream first: a wrong NATS URL should not cost minutes of signing.
	var stream jetstream.Stream
	var before uint64
	if f.natsURL != "" {
		nc, err := nats.Connect(f.natsURL, nats.Name("ingressload"))
		if err != nil {
			return fmt.Errorf("NATS %s: %w", f.natsURL, err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if stream, err = js.Stream(ctx, f.stream); err != nil {
			return fmt.Errorf("stream %s on %s: %w (is the ingress running against this server and ready?)", f.stream, f.natsURL, err)
		}
		if f.purge {
			if err := stream.Purge(ctx); err != nil {
				return fmt.Errorf("purging %s: %w", f.stream, err)
			}
		}
		if before, err = streamMsgs(stream); err != nil {
			return err
		}
		if before != 0 {
			return exitError{1, fmt.Sprintf("stream %s holds %d messages: start the ingress against a fresh NATS server, or pass -purge", f.stream, before)}
		}
	}

	var c *Corpus
	var err error
	if f.corpus != "" {
		if c, err = readCorpus(f.corpus); err != nil {
			return err
		}
		if len(c.Notes) < n {
			return exitError{2, fmt.Sprintf("run: %s holds %d notifications, %g/s for %s after a %s ramp-up needs %d", f.corpus, len(c.Notes), f.rate, f.duration, f.rampUp, n)}
		}
		c.Notes = c.Notes[:n]
	} else {
		k, err := loadKeys(f.keys)
		if err != nil {
			return fmt.Errorf("keys %s: %w (create them with 'ingressload keys -dir %s' and start the ingress with %s/%s)", f.keys, err, f.keys, f.keys, fileEnv)
		}
		if f.gen > 0 {
			if f.gen < n {
				return exitError{2, fmt.Sprintf("run: -gen %d is fewer than the run needs: rate × (duration + ramp-up/2) = %d", f.gen, n)}
			}
		}
		need := n
		n = max(n, f.gen)
		fmt.Fprintf(os.Stderr, "signing %d notifications for merchant %s before the run (timestamps = now + %s)\n", n, k.MchID, f.tsAhead)
		if c, err = generate(k, n, 0, time.Now().Add(f.tsAhead), os.Stderr); err != nil {
			return err
		}
		c.Notes = c.Notes[:need]
	}
	from, to := c.Window()
	if now := time.Now(); now.Before(from.Add(2*time.Second)) || now.Add(f.rampUp+f.duration+f.timeout+5*time.Second).After(to) {
		return exitError{1, fmt.Sprintf("run: the ingress accepts this corpus's timestamps only from %s to %s and the run would not fit: sign a new one",
			from.Format(time.TimeOnly), to.Format(time.TimeOnly))}
	}
	target, err := url.Parse(strings.ReplaceAll(f.url, "{mchid}", c.MchID))
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") {
		return exitError{2, fmt.Sprintf("run: bad -url %q", f.url)}
	}

	r := newRunner(f, target, c, nRamp)
	if err := r.warm(); err != nil {
		return fmt.Errorf("warm-up against %s: %w", target, err)
	}
	runtime.GC() // signing left garbage; don't collect it during the run
	defer debug.SetGCPercent(debug.SetGCPercent(400))

	// CPU use and the profile cover the measured window only.
	var prof *exec.Cmd
	var cpu *cpuSampler
	var profErr error
	r.send(func() {
		if f.profile != "" {
			args := strings.Fields(f.profile)
			prof = exec.Command(args[0], args[1:]...)
			prof.Stdout, prof.Stderr = os.Stderr, os.Stderr
			if profErr = prof.Start(); profErr != nil {
				prof = nil
			}
		}
		cpu = newCPUSampler(f.cpuPIDs)
	})
	cpu.stop()
	if prof != nil {
		prof.Process.Signal(os.Interrupt)
		prof.Wait()
	}
	if profErr != nil {
		fmt.Fprintf(os.Stderr, "-profile-cmd: %v\n", profErr)
	}

	rep := r.report(os.Stdout, cpu)
	if f.metrics != "" {
		printMetrics(os.Stdout, f.metrics)
	}
	if stream != nil {
		after, err := streamMsgs(stream)
		if err != nil {
			return err
		}
		stored := after - before
		if stored == uint64(rep.ok) {
			fmt.Printf("stream %s: %d messages stored (before %d, after %d) = %d notifications answered 200 (all distinct): OK\n", f.stream, stored, before, after, rep.ok)
		} else {
			rep.mismatch = true
			fmt.Printf("stream %s: %d messages stored (before %d, after %d) but %d notifications answered 200 (all distinct): MISMATCH\n", f.stream, stored, before, after, rep.ok)
		}
	} else {
		fmt.Println("stream: not checked (no -nats)")
	}
	switch {
	case rep.errors > 0 || rep.mismatch:
		return exitError{1, fmt.Sprintf("FAILED at %g/s: %d errors, stream mismatch %v", f.rate, rep.errors, rep.mismatch)}
	case f.maxP99 > 0 && rep.p99 >= f.maxP99:
		return exitError{3, fmt.Sprintf("NOT HELD at %g/s: p99 %s is not under %s (no errors)", f.rate, fmtDur(rep.p99), f.maxP99)}
	}
	if f.maxP99 > 0 {
		fmt.Printf("HELD at %g/s: p99 %s < %s, 0 errors, stream exact\n", f.rate, fmtDur(rep.p99), f.maxP99)
	}
	return nil
}

func streamMsgs(s jetstream.Stream) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream info: %w", err)
	}
	return info.State.Msgs, nil
}

// Outcome codes besides HTTP statuses.
const (
	outNotSent   = -1 // generator saturated: no worker free when due
	outTransport = 0  // no answer (timeout, connection error)
)

type runner struct {
	f      runFlags
	target *url.URL
	c      *Corpus
	client *http.Client
	raw    *rawClient // with -client raw
	dials  atomic.Int64

	nRamp    int             // the first nRamp requests are the ramp-up
	start    time.Time       // of the ramp-up; the measured window starts ramp-up later
	interval float64         // ns between sends at -rate
	lat      []time.Duration // from the scheduled time to the end of the answer
	svc      []time.Duration // from the actual send to the end of the answer
	status   []int16
	inFlight atomic.Int64
	maxIn    atomic.Int64
	lastDone atomic.Int64 // unix ns of the last completion
	sendEnd  time.Time    // when the last request was handed to a worker

	mu        sync.Mutex
	errKinds  map[string]int
	errSample map[int]string // a body per non-200 status
}

func newRunner(f runFlags, target *url.URL, c *Corpus, nRamp int) *runner {
	r := &runner{f: f, target: target, c: c, nRamp: nRamp, errKinds: map[string]int{}, errSample: map[int]string{},
		lat: make([]time.Duration, len(c.Notes)), svc: make([]time.Duration, len(c.Notes)), status: make([]int16, len(c.Notes))}
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			r.dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConns:          f.workers,
		MaxIdleConnsPerHost:   f.workers, // one per worker: a finished request parks its connection for reuse
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ResponseHeaderTimeout: f.timeout,
		ForceAttemptHTTP2:     false,
	}
	r.client = &http.Client{Transport: tr, Timeout: f.timeout}
	if f.client == "raw" {
		r.raw = newRawClient(target, f.timeout, &r.dials)
	}
	return r
}

// warm opens keep-alive connections with GETs, which the ingress's mux
// answers 405 without touching the handler.
func (r *runner) warm() error {
	if r.raw != nil {
		return r.raw.warm(min(r.f.warmup, r.f.workers))
	}
	var wg sync.WaitGroup
	errs := make(chan error, r.f.warmup)
	for range min(r.f.warmup, r.f.workers) {
		wg.Go(func() {
			resp, err := r.client.Get(r.target.String())
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// due is when request i is to be sent: during the ramp-up the rate grows
// linearly, r(t) = rate·t/T, so the i-th request is due at √(2iT/rate);
// then one every 1/rate.
func (r *runner) due(i int) time.Time {
	if i < r.nRamp {
		return r.start.Add(time.Duration(math.Sqrt(2 * float64(i) * float64(r.f.rampUp) * r.interval)))
	}
	return r.start.Add(r.f.rampUp + time.Duration(float64(i-r.nRamp)*r.interval))
}

// send runs the open loop: request i is due at start + i/rate whatever
// happened to the earlier ones. A due request goes to an idle worker at
// once; with none idle it is not sent and counts as an error.
func (r *runner) send(window func()) {
	n := len(r.c.Notes)
	r.interval = float64(time.Second) / r.f.rate
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range r.f.workers {
		wg.Go(func() {
			for i := range jobs {
				r.do(i)
			}
		})
	}
	time.Sleep(50 * time.Millisecond) // let the workers park on jobs
	r.start = time.Now().Add(10 * time.Millisecond)
	for i := range n {
		if d := time.Until(r.due(i)); d > 0 {
			time.Sleep(d) // wakes late by up to ~1 ms: the requests then due go out together, their wait counted
		}
		if i == r.nRamp {
			window() // the measured window opens
		}
		select {
		case jobs <- i:
		default:
			r.status[i] = outNotSent
			r.fail("generator saturated: all workers busy when due")
		}
	}
	r.sendEnd = time.Now()
	close(jobs)
	wg.Wait()
}

func (r *runner) do(i int) {
	in := r.inFlight.Add(1)
	for m := r.maxIn.Load(); in > m && !r.maxIn.CompareAndSwap(m, in); m = r.maxIn.Load() {
	}
	var code int
	var body []byte
	var sent time.Time
	var err error
	if r.raw != nil {
		code, body, sent, err = r.raw.post(&r.c.Notes[i])
	} else {
		code, body, sent, err = r.postHTTP(&r.c.Notes[i])
	}
	done := time.Now()
	r.inFlight.Add(-1)
	r.lat[i] = done.Sub(r.due(i))
	r.svc[i] = done.Sub(sent)
	for d, l := done.UnixNano(), r.lastDone.Load(); d > l && !r.lastDone.CompareAndSwap(l, d); l = r.lastDone.Load() {
	}
	if err != nil {
		r.status[i] = outTransport
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		r.fail("transport: " + err.Error())
		return
	}
	r.status[i] = int16(code)
	if code != http.StatusOK {
		r.mu.Lock()
		if _, ok := r.errSample[code]; !ok {
			r.errSample[code] = strings.TrimSpace(string(body))
		}
		r.mu.Unlock()
	}
}

// postHTTP sends one notification with net/http's client; body is the
// answer's start when it is not 200.
func (r *runner) postHTTP(note *Note) (code int, body []byte, sent time.Time, err error) {
	req := &http.Request{
		Method:        http.MethodPost,
		URL:           r.target,
		Host:          r.target.Host,
		Header:        note.header(),
		Body:          io.NopCloser(bytes.NewReader(note.Body)),
		ContentLength: int64(len(note.Body)),
	}
	sent = time.Now()
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, nil, sent, err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ = io.ReadAll(io.LimitReader(resp.Body, 512))
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, body, sent, nil
}

func (r *runner) fail(kind string) {
	r.mu.Lock()
	r.errKinds[kind]++
	r.mu.Unlock()
}

type report struct {
	ok, errors int
	p99        time.Duration
	mismatch   bool
}

// summary is the outcome of the requests in [lo, hi).
type summary struct {
	n, sent, ok int
	counts      map[int]int
	lat, svc    []time.Duration // sorted, requests sent only
}

func (r *runner) summarize(lo, hi int) summary {
	s := summary{n: hi - lo, counts: map[int]int{}}
	for i := lo; i < hi; i++ {
		s.counts[int(r.status[i])]++
		if r.status[i] != outNotSent {
			s.lat = append(s.lat, r.lat[i])
			s.svc = append(s.svc, r.svc[i])
		}
	}
	slices.Sort(s.lat)
	slices.Sort(s.svc)
	s.sent, s.ok = len(s.lat), s.counts[http.StatusOK]
	return s
}

func (s summary) statuses() string {
	var sc []string
	for _, code := range slices.Sorted(mapKeys(s.counts)) {
		name := strconv.Itoa(code)
		switch code {
		case outNotSent:
			name = "not-sent"
		case outTransport:
			name = "no-answer"
		}
		sc = append(sc, fmt.Sprintf("%s=%d", name, s.counts[code]))
	}
	return strings.Join(sc, " ")
}

func (r *runner) report(w io.Writer, cpu *cpuSampler) report {
	all := len(r.c.Notes)
	ramp := r.summarize(0, r.nRamp)
	m := r.summarize(r.nRamp, all)
	rep := report{ok: ramp.ok + m.ok, errors: all - ramp.ok - m.ok}
	mStart := r.start.Add(r.f.rampUp)
	sendWin := r.sendEnd.Sub(mStart)
	doneWin := time.Duration(r.lastDone.Load() - mStart.UnixNano())
	body := 0
	for i := range r.c.Notes {
		body += len(r.c.Notes[i].Body)
	}
	fmt.Fprintf(w, "target %s: %d distinct signed notifications (mean body %d bytes); open loop, %d workers, client %s, %d warm connections\n",
		r.target, all, body/max(all, 1), r.f.workers, r.f.client, r.f.warmup)
	if r.nRamp > 0 {
		fmt.Fprintf(w, "ramp-up, 0 to %g/s over %s (not in the figures below): %d due, %s", r.f.rate, r.f.rampUp, ramp.n, ramp.statuses())
		if ramp.sent > 0 {
			fmt.Fprintf(w, ", p99 %s, max %s", fmtDur(pct(ramp.lat, 0.99)), fmtDur(ramp.lat[ramp.sent-1]))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "measured window, %g/s for %s: sent %d in %.3fs (%.1f/s); answered 200: %d; last answer %.3fs after the window opened: achieved %.1f/s\n",
		r.f.rate, r.f.duration, m.sent, sendWin.Seconds(), float64(m.sent)/sendWin.Seconds(), m.ok, doneWin.Seconds(), float64(m.ok)/doneWin.Seconds())
	fmt.Fprintf(w, "status: %s\n", m.statuses())
	fmt.Fprintf(w, "errors: %d (ramp-up %d, measured window %d)\n", rep.errors, ramp.n-ramp.ok, m.n-m.ok)
	for _, k := range slices.Sorted(mapKeys(r.errKinds)) {
		fmt.Fprintf(w, "  %6d  %s\n", r.errKinds[k], k)
	}
	for _, code := range slices.Sorted(mapKeys(r.errSample)) {
		fmt.Fprintf(w, "  status %d, e.g. %s\n", code, r.errSample[code])
	}
	if m.sent > 0 {
		rep.p99 = pct(m.lat, 0.99)
		fmt.Fprintf(w, "latency from the scheduled send time: p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n",
			fmtDur(pct(m.lat, 0.5)), fmtDur(pct(m.lat, 0.9)), fmtDur(rep.p99), fmtDur(pct(m.lat, 0.999)), fmtDur(m.lat[m.sent-1]))
		fmt.Fprintf(w, "latency from the actual send (service): p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n",
			fmtDur(pct(m.svc, 0.5)), fmtDur(pct(m.svc, 0.9)), fmtDur(pct(m.svc, 0.99)), fmtDur(pct(m.svc, 0.999)), fmtDur(m.svc[m.sent-1]))
	}
	fmt.Fprintf(w, "most in flight: %d; connections opened: %d\n", r.maxIn.Load(), r.dials.Load())
	if cpu != nil {
		cpu.print(w)
	}
	if r.f.timeline {
		r.printTimeline(w)
	}
	return rep
}

// printTimeline prints, per second of scheduled time, the requests due,
// those answered 200, and their p99 and max latency.
func (r *runner) printTimeline(w io.Writer) {
	fmt.Fprintln(w, "second     due    200    p99      max   (by due time; negative: the ramp-up)")
	mStart := r.start.Add(r.f.rampUp)
	sec := func(i int) int { return int(math.Floor(r.due(i).Sub(mStart).Seconds())) }
	for lo := 0; lo < len(r.c.Notes); {
		s := sec(lo)
		hi := lo
		var l []time.Duration
		ok := 0
		for ; hi < len(r.c.Notes) && sec(hi) == s; hi++ {
			if r.status[hi] == http.StatusOK {
				ok++
			}
			if r.status[hi] != outNotSent {
				l = append(l, r.lat[hi])
			}
		}
		slices.Sort(l)
		if len(l) > 0 {
			fmt.Fprintf(w, "%6d %7d %6d %8s %8s\n", s, hi-lo, ok, fmtDur(pct(l, 0.99)), fmtDur(l[len(l)-1]))
		} else {
			fmt.Fprintf(w, "%6d %7d %6d\n", s, hi-lo, ok)
		}
		lo = hi
	}
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// printMetrics prints the ingress's request counters from its admin
// /metrics (a cross-check of the outcomes the ingress itself saw).
func printMetrics(w io.Writer, u string) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		fmt.Fprintf(w, "ingress metrics: %v\n", err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	hist := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "wxpay_ingress_requests_total{") {
			fmt.Fprintf(w, "ingress metric %s\n", line)
		}
		for _, h := range []string{"verify", "publish"} {
			// wxpay_ingress_publish_seconds_bucket{le="0.005"} 1234
			if rest, ok := strings.CutPrefix(line, "wxpay_ingress_"+h+"_seconds_bucket{le=\""); ok {
				le, count, _ := strings.Cut(rest, "\"} ")
				hist[h] = append(hist[h], "≤"+le+"s:"+count)
			}
		}
	}
	for _, h := range []string{"verify", "publish"} {
		if len(hist[h]) > 0 {
			fmt.Fprintf(w, "ingress %s time, cumulative: %s\n", h, strings.Join(hist[h], " "))
		}
	}
}
