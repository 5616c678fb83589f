package runreport

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a clock tests move by hand; safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// lines splits drawn output into the lines a terminal would show one after
// the other: each redraw starts with a carriage return.
func redraws(out string) []string {
	var rs []string
	for _, r := range strings.Split(out, "\r") {
		if r != "" {
			rs = append(rs, r)
		}
	}
	return rs
}

func TestNothingIsWrittenToANonTerminal(t *testing.T) {
	pipeR, pipeW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pipeR.Close()
	defer pipeW.Close()
	file, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	var buf bytes.Buffer

	for name, w := range map[string]io.Writer{"buffer": &buf, "pipe": pipeW, "regular file": file} {
		if IsTerminal(w) {
			t.Errorf("IsTerminal(%s) = true, want false", name)
		}
		clock := newFakeClock()
		p := NewProgress(w, ProgressOptions{Now: clock.Now})
		if p.Draws() {
			t.Errorf("%s: Draws() = true, want false", name)
		}
		task := p.Task("querying", 10, Items)
		for range 10 {
			clock.Advance(time.Second)
			task.Add(1)
		}
		task.Done()
		if task.Count() != 10 {
			t.Errorf("%s: Count() = %d, want 10: a silent progress still counts", name, task.Count())
		}
	}
	if buf.Len() != 0 {
		t.Errorf("buffer got %q, want nothing", buf.String())
	}
	if fi, _ := file.Stat(); fi.Size() != 0 {
		t.Errorf("regular file got %d bytes, want nothing", fi.Size())
	}
	pipeW.Close()
	if got, _ := io.ReadAll(pipeR); len(got) != 0 {
		t.Errorf("pipe got %q, want nothing", got)
	}
}

func TestIsTerminalRecognisesATerminal(t *testing.T) {
	// The master side of a pseudo-terminal is a terminal device.
	f, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal to test with: %v", err)
	}
	defer f.Close()
	if !IsTerminal(f) {
		t.Error("IsTerminal(/dev/ptmx) = false, want true")
	}
	if p := NewProgress(f, ProgressOptions{}); !p.Draws() {
		t.Error("NewProgress on a terminal does not draw")
	}
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	if IsTerminal(null) {
		t.Error("IsTerminal(/dev/null) = true, want false")
	}
}

func TestForcedLineShowsLabelCountsPercentRateAndETA(t *testing.T) {
	var buf bytes.Buffer
	clock := newFakeClock()
	p := NewProgress(&buf, ProgressOptions{Force: true, Now: clock.Now})
	task := p.Task("querying pending orders", 200, Items)
	clock.Advance(10 * time.Second)
	task.Add(50)

	rs := redraws(buf.String())
	if len(rs) != 2 {
		t.Fatalf("got %d redraws %q, want 2 (the start, then after the Add)", len(rs), buf.String())
	}
	if !strings.HasPrefix(buf.String(), "\r") {
		t.Errorf("output %q does not start with a carriage return", buf.String())
	}
	want := "querying pending orders  50/200  25%  5.0/s  elapsed 10s  ETA 30s\x1b[K"
	if rs[1] != want {
		t.Errorf("line = %q\nwant   %q", rs[1], want)
	}
	if strings.Contains(buf.String(), "\n") {
		t.Errorf("a newline before Done: %q", buf.String())
	}

	clock.Advance(30 * time.Second)
	task.Add(150)
	buf.Reset()
	task.Done()
	want = "\rquerying pending orders  200/200  100%  5.0/s  elapsed 40s\x1b[K\n"
	if buf.String() != want {
		t.Errorf("Done wrote %q\nwant       %q", buf.String(), want)
	}
	buf.Reset()
	task.Done()
	task.Add(1)
	clock.Advance(time.Minute)
	task.Add(1)
	if buf.Len() != 0 {
		t.Errorf("after Done, got %q; want nothing more on the ended line", buf.String())
	}
}

func TestUnknownTotalShowsCountWithoutPercentOrETA(t *testing.T) {
	var buf bytes.Buffer
	clock := newFakeClock()
	p := NewProgress(&buf, ProgressOptions{Force: true, Now: clock.Now})
	task := p.Task("parsing rows", 0, Items)
	clock.Advance(2 * time.Second)
	task.Add(1200)
	task.Done()
	want := "\rparsing rows  1200  600.0/s  elapsed 2s\x1b[K\n"
	if rs := redraws(buf.String()); "\r"+rs[len(rs)-1] != want {
		t.Errorf("final line %q, want %q", rs[len(rs)-1], want)
	}
}

func TestManyAddsDrawFewLines(t *testing.T) {
	var buf bytes.Buffer
	clock := newFakeClock()
	p := NewProgress(&buf, ProgressOptions{Force: true, Now: clock.Now, Interval: 200 * time.Millisecond})
	task := p.Task("querying", 10000, Items)
	// 10000 Adds over 10 s of fake time, one every millisecond: at most one
	// redraw every 200 ms, so about 50, never thousands.
	for range 10000 {
		clock.Advance(time.Millisecond)
		task.Add(1)
	}
	n := len(redraws(buf.String()))
	if n < 40 || n > 52 {
		t.Errorf("%d redraws for 10000 Adds over 10s at a 200ms interval, want about 50", n)
	}
	// Without time passing nothing is redrawn at all.
	buf.Reset()
	for range 1000 {
		task.Add(1)
	}
	if buf.Len() != 0 {
		t.Errorf("Adds within the interval redrew: %q", buf.String())
	}
}

func TestConcurrentAddsCountExactly(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex // bytes.Buffer is not safe for concurrent writes; Progress must serialize them
	w := writerFunc(func(b []byte) (int, error) {
		if !mu.TryLock() {
			t.Error("two redraws written at once")
			return len(b), nil
		}
		defer mu.Unlock()
		return buf.Write(b)
	})
	// The real clock, and no interval to speak of, so goroutines race to
	// redraw.
	p := NewProgress(w, ProgressOptions{Force: true, Interval: time.Nanosecond})
	task := p.Task("querying", 0, Items)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 5000 {
				task.Add(1)
			}
		})
	}
	wg.Wait()
	task.Done()
	if got := task.Count(); got != 40000 {
		t.Errorf("Count() = %d after 8×5000 concurrent Adds, want 40000", got)
	}
	if !strings.Contains(buf.String(), "querying  40000  ") || !strings.HasSuffix(buf.String(), "\n") {
		t.Errorf("final line does not show 40000: %q", buf.String()[max(0, buf.Len()-120):])
	}
}

func TestConcurrentAddsCountExactlyWhenNothingIsDrawn(t *testing.T) {
	// Under a CronJob nothing is drawn and Add is only the counter: the
	// hottest path, with nothing else to serialize the goroutines.
	task := NewProgress(io.Discard, ProgressOptions{}).Task("querying", 0, Items)
	start := make(chan struct{}) // all start together, so that they overlap
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			<-start
			for range 100000 {
				task.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if got := task.Count(); got != 800000 {
		t.Errorf("Count() = %d after 8×100000 concurrent Adds, want 800000", got)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func TestByteUnits(t *testing.T) {
	for n, want := range map[int64]string{
		0:               "0 B",
		512:             "512 B",
		1023:            "1023 B",
		1024:            "1.0 KiB",
		1536:            "1.5 KiB",
		4 << 20:         "4.0 MiB",
		5<<30 + 512<<20: "5.5 GiB",
		3 << 40:         "3.0 TiB",
	} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestDownloadThroughReaderAndWriterCountsBytes(t *testing.T) {
	var buf bytes.Buffer
	clock := newFakeClock()
	p := NewProgress(&buf, ProgressOptions{Force: true, Now: clock.Now})
	task := p.Task("downloading bill", -1, Bytes) // length not known yet
	task.SetTotal(4 << 20)
	// 1 MiB arrives in four reads over 2 s.
	r := task.Reader(bytes.NewReader(make([]byte, 1<<20)))
	chunk := make([]byte, 256<<10)
	for range 4 {
		clock.Advance(500 * time.Millisecond)
		if _, err := io.ReadFull(r, chunk); err != nil {
			t.Fatal(err)
		}
	}
	if task.Count() != 1<<20 {
		t.Fatalf("Reader counted %d bytes, want %d", task.Count(), 1<<20)
	}
	want := "downloading bill  1.0 MiB/4.0 MiB  25%  512.0 KiB/s  elapsed 2s  ETA 6s\x1b[K"
	if rs := redraws(buf.String()); rs[len(rs)-1] != want {
		t.Errorf("line = %q\nwant   %q", rs[len(rs)-1], want)
	}

	clock.Advance(6 * time.Second)
	if _, err := io.Copy(task.Writer(io.Discard), bytes.NewReader(make([]byte, 3<<20))); err != nil {
		t.Fatal(err)
	}
	task.Done()
	if task.Count() != 4<<20 {
		t.Fatalf("Writer counted %d bytes in all, want %d", task.Count(), 4<<20)
	}
	if !strings.HasSuffix(buf.String(), "\rdownloading bill  4.0 MiB/4.0 MiB  100%  512.0 KiB/s  elapsed 8s\x1b[K\n") {
		t.Errorf("final line wrong: %q", buf.String())
	}
}
