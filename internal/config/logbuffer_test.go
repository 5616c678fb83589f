package config

import (
	"bufio"
	"bytes"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// lockedBuffer is the destination: what reached it, with a count of writes.
type lockedBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
	err    error
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return 0, l.err
	}
	l.writes++
	return l.b.Write(p)
}

func (l *lockedBuffer) snapshot() (string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String(), l.writes
}

// fakeClock is a LogBuffer's clock under the test's control.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newTestBuffer is a LogBuffer with a 100 ms interval on a fake clock and
// no periodic flush.
func newTestBuffer(dst *lockedBuffer) (*LogBuffer, *fakeClock) {
	clock := &fakeClock{t: time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)}
	lb := newLogBuffer(dst, 100*time.Millisecond, clock.now)
	close(lb.done) // no flushEvery goroutine to wait for at Close
	return lb, clock
}

func TestLogBufferBatchesInfoLines(t *testing.T) {
	dst := &lockedBuffer{}
	lb, _ := newTestBuffer(dst)
	log := zerolog.New(lb)
	for i := range 100 {
		log.Info().Int("i", i).Msg("notification")
	}
	// The first line found the writer quiet and went at once; the other 99
	// came within the interval and wait.
	if got, writes := dst.snapshot(); strings.Count(got, "\n") != 1 || writes != 1 {
		t.Fatalf("before a flush: %d lines in %d writes, want 1 in 1", strings.Count(got, "\n"), writes)
	}
	if err := lb.Close(); err != nil {
		t.Fatal(err)
	}
	got, writes := dst.snapshot()
	if n := strings.Count(got, "\n"); n != 100 {
		t.Fatalf("%d lines after Close, want 100", n)
	}
	if writes != 2 {
		t.Errorf("%d writes for 100 lines, want 2", writes)
	}
	// Lines keep their order and stay whole.
	sc := bufio.NewScanner(strings.NewReader(got))
	for i := 0; sc.Scan(); i++ {
		if want := `{"level":"info","i":` + strconv.Itoa(i) + `,"message":"notification"}`; sc.Text() != want {
			t.Fatalf("line %d = %s, want %s", i, sc.Text(), want)
		}
	}
}

// A quiet service logs as if unbuffered: a line after an interval without
// writes goes out at once, with whatever waited before it.
func TestLogBufferQuietLinesGoAtOnce(t *testing.T) {
	dst := &lockedBuffer{}
	lb, clock := newTestBuffer(dst)
	defer lb.Close()
	log := zerolog.New(lb)
	log.Info().Msg("first") // written: nothing was written before
	log.Info().Msg("second")
	if got, _ := dst.snapshot(); strings.Contains(got, "second") {
		t.Fatalf("a line within the interval was written at once: %q", got)
	}
	clock.add(99 * time.Millisecond)
	log.Info().Msg("third")
	if got, _ := dst.snapshot(); strings.Contains(got, "third") {
		t.Fatalf("a line 99 ms after a write was written at once: %q", got)
	}
	clock.add(time.Millisecond)
	log.Info().Msg("fourth")
	got, _ := dst.snapshot()
	if !strings.Contains(got, "second") || !strings.Contains(got, "third") || !strings.Contains(got, "fourth") {
		t.Fatalf("a line 100 ms after the last write did not go out with those before it: %q", got)
	}
}

func TestLogBufferWritesWarningsThrough(t *testing.T) {
	dst := &lockedBuffer{}
	lb, _ := newTestBuffer(dst)
	defer lb.Close()
	log := zerolog.New(lb)
	log.Info().Msg("quiet") // written at once
	log.Info().Msg("before")
	if got, _ := dst.snapshot(); strings.Contains(got, "before") {
		t.Fatalf("an info line within the interval was written at once: %q", got)
	}
	log.Error().Msg("publish failed")
	got, _ := dst.snapshot()
	if !strings.Contains(got, `"before"`) || !strings.Contains(got, `"publish failed"`) ||
		strings.Index(got, "before") > strings.Index(got, "publish failed") {
		t.Fatalf("after an error line, the destination holds %q; want both lines, in order", got)
	}
	log.Warn().Msg("stale timestamp")
	if got, _ := dst.snapshot(); !strings.Contains(got, "stale timestamp") {
		t.Fatalf("warn line not written through: %q", got)
	}
}

func TestLogBufferFlushesPeriodically(t *testing.T) {
	dst := &lockedBuffer{}
	// The fake clock never moves, so after the first line only the ticker
	// can write.
	clock := &fakeClock{t: time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)}
	lb := newLogBuffer(dst, 10*time.Millisecond, clock.now)
	log := zerolog.New(lb)
	log.Info().Msg("first")
	log.Info().Msg("soon")
	if got, _ := dst.snapshot(); strings.Contains(got, "soon") {
		t.Fatalf("the second line was written before any flush: %q", got)
	}
	go lb.flushEvery(10 * time.Millisecond)
	defer lb.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if got, _ := dst.snapshot(); strings.Contains(got, "soon") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("an info line was not flushed within 5 s at a 10 ms interval")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLogBufferAfterClose(t *testing.T) {
	dst := &lockedBuffer{}
	lb := NewLogBuffer(dst, time.Hour)
	lb.Close()
	l := zerolog.New(lb)
	l.Info().Msg("late")
	if got, _ := dst.snapshot(); !strings.Contains(got, "late") {
		t.Fatalf("a line after Close was not written through: %q", got)
	}
	if err := lb.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestLogBufferReportsWriteError(t *testing.T) {
	dst := &lockedBuffer{err: errors.New("disk full")}
	lb := NewLogBuffer(dst, time.Hour)
	l := zerolog.New(lb)
	l.Info().Msg("x")
	if err := lb.Close(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Close = %v, want the write error", err)
	}
}

func TestLogBufferConcurrent(t *testing.T) {
	dst := &lockedBuffer{}
	lb := NewLogBuffer(dst, time.Millisecond)
	log := zerolog.New(lb)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				if i%50 == 0 {
					log.Warn().Int("g", g).Msg("w")
				} else {
					log.Info().Int("g", g).Msg("i")
				}
			}
		})
	}
	wg.Wait()
	if err := lb.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ := dst.snapshot()
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != 8*500 {
		t.Fatalf("%d lines, want %d", len(lines), 8*500)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, `{"level":`) || !strings.HasSuffix(l, `}`) {
			t.Fatalf("torn line %q", l)
		}
	}
}

// gatedWriter blocks every write while its gate is shut.
type gatedWriter struct {
	lockedBuffer
	gmu  sync.Mutex
	gate chan struct{} // closed when open
}

func (g *gatedWriter) setGate(c chan struct{}) {
	g.gmu.Lock()
	defer g.gmu.Unlock()
	g.gate = c
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	g.gmu.Lock()
	gate := g.gate
	g.gmu.Unlock()
	<-gate
	return g.lockedBuffer.Write(p)
}

// An info line does not wait for a slow destination: while a write hangs
// (a busy disk, a slow pipe reader), lines filling several batches are
// buffered and the calls return; once the destination moves again every
// line arrives, in order.
func TestLogBufferInfoLinesDoNotWaitForTheDestination(t *testing.T) {
	open := make(chan struct{})
	close(open)
	dst := &gatedWriter{gate: open}
	lb, _ := newTestBuffer(&dst.lockedBuffer)
	lb.w = dst // before any line: the writer goroutine reads w only for a batch
	log := zerolog.New(lb)
	log.Info().Msg("first") // written at once: nothing was written before
	shut := make(chan struct{})
	dst.setGate(shut)

	pad := strings.Repeat("x", 1000)
	const lines = 3 * logBufferSize / 1000 // three batches: one written (hanging), two queued
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		for i := range lines {
			log.Info().Int("i", i).Str("pad", pad).Msg("notification")
		}
	}()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		close(shut)
		t.Fatalf("%d info lines waited for a hanging destination", lines)
	}
	close(shut)
	if err := lb.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ := dst.snapshot()
	sc := bufio.NewScanner(strings.NewReader(got))
	sc.Buffer(nil, 1<<20)
	sc.Scan() // "first"
	for i := 0; i < lines; i++ {
		if !sc.Scan() || !strings.Contains(sc.Text(), `"i":`+strconv.Itoa(i)+`,`) {
			t.Fatalf("line %d is %.80q, want notification %d: lines lost or out of order", i+1, sc.Text(), i)
		}
	}
}
