package runreport

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultInterval is the shortest time between two redraws of a progress
// line: often enough to look live, rarely enough that drawing costs nothing
// next to the work.
const DefaultInterval = 200 * time.Millisecond

// IsTerminal reports whether w is a terminal: an *os.File that is a
// character device. /dev/null is a character device too but nobody reads
// it, so it is not counted as a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || f == nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	if null, err := os.Stat(os.DevNull); err == nil && os.SameFile(fi, null) {
		return false
	}
	return true
}

// Unit is what a Task counts.
type Unit int

const (
	// Items counts things: orders, rows, requests.
	Items Unit = iota
	// Bytes counts bytes, shown with binary units (KiB, MiB, ...).
	Bytes
)

// ProgressOptions configures a Progress. The zero value draws at most every
// DefaultInterval, only on a terminal, with the real clock.
type ProgressOptions struct {
	// Interval is the shortest time between two redraws; 0 means
	// DefaultInterval.
	Interval time.Duration
	// Force draws even when the writer is not a terminal.
	Force bool
	// Now is the clock; nil means time.Now. Tests set it. Add calls it, so
	// it must be safe for concurrent use when several goroutines Add.
	Now func() time.Time
}

// Progress draws the progress line of one Task at a time on a writer. A
// Progress that does not draw (the writer is not a terminal) still counts,
// so code needs no branch for it.
type Progress struct {
	w        io.Writer
	draws    bool
	interval time.Duration
	now      func() time.Time

	mu sync.Mutex // one line written at a time
}

// NewProgress returns a Progress that draws on w when opts.Force is set or
// w is a terminal, and never writes to w otherwise. A nil w never draws.
func NewProgress(w io.Writer, opts ProgressOptions) *Progress {
	p := &Progress{w: w, interval: opts.Interval, now: opts.Now}
	p.draws = w != nil && (opts.Force || IsTerminal(w))
	if p.interval <= 0 {
		p.interval = DefaultInterval
	}
	if p.now == nil {
		p.now = time.Now
	}
	return p
}

// Draws reports whether p writes anything.
func (p *Progress) Draws() bool { return p.draws }

// Task starts a line of work named label. A total of 0 or less means the
// total is not known (no percent and no ETA are shown); SetTotal can give it
// later, for a download whose length comes with the response. Only one
// Task's line should be live at a time: Done ends it.
func (p *Progress) Task(label string, total int64, unit Unit) *Task {
	t := &Task{p: p, label: label, unit: unit}
	t.total.Store(total)
	if p.draws {
		t.start = p.now()
		t.last.Store(t.start.UnixNano())
		t.draw(false)
	}
	return t
}

// Task is one line of progress. Its methods are safe for concurrent use.
type Task struct {
	p     *Progress
	label string
	unit  Unit
	start time.Time

	done  atomic.Int64
	total atomic.Int64
	last  atomic.Int64 // UnixNano of the last draw, for throttling
	ended bool         // guarded by p.mu: nothing is drawn after Done
}

// Add counts n more units done and redraws the line if the last draw is at
// least the interval old.
func (t *Task) Add(n int64) {
	t.done.Add(n)
	if !t.p.draws {
		return
	}
	now := t.p.now().UnixNano()
	last := t.last.Load()
	if now-last < int64(t.p.interval) {
		return
	}
	// Of several goroutines that find the line stale, one draws.
	if t.last.CompareAndSwap(last, now) {
		t.draw(false)
	}
}

// SetTotal sets the total once it is known; 0 or less means unknown.
func (t *Task) SetTotal(total int64) { t.total.Store(total) }

// Count is the number of units done so far.
func (t *Task) Count() int64 { return t.done.Load() }

// Done draws the final state and ends the line with a newline, so that the
// next output starts on a clean line. Calls after the first do nothing.
func (t *Task) Done() { t.draw(true) }

func (t *Task) draw(final bool) {
	if !t.p.draws {
		return
	}
	p := t.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.ended {
		return
	}
	t.ended = final
	// Carriage return, the line, then erase what a longer previous line
	// left to the right.
	line := "\r" + t.line(p.now(), final) + "\x1b[K"
	if final {
		line += "\n"
	}
	io.WriteString(p.w, line) // a failed redraw is not worth stopping the work for
}

// line renders the task's state at now, for example
//
//	downloading bill  1.5 MiB/4.0 MiB  37%  512.0 KiB/s  elapsed 3s  ETA 5s
func (t *Task) line(now time.Time, final bool) string {
	done, total := t.done.Load(), t.total.Load()
	elapsed := max(now.Sub(t.start), 0)
	parts := []string{t.label}
	if total > 0 {
		parts = append(parts, t.amount(done)+"/"+t.amount(total),
			fmt.Sprintf("%d%%", min(done*100/total, 100)))
	} else {
		parts = append(parts, t.amount(done))
	}
	var rate float64
	if elapsed > 0 {
		rate = float64(done) / elapsed.Seconds()
		parts = append(parts, t.rate(rate))
	}
	parts = append(parts, "elapsed "+roundDuration(elapsed))
	if total > 0 && !final {
		eta := "ETA --"
		if left := total - done; left <= 0 {
			eta = "ETA 0s"
		} else if rate > 0 {
			eta = "ETA " + roundDuration(time.Duration(float64(left)/rate*float64(time.Second)))
		}
		parts = append(parts, eta)
	}
	return strings.Join(parts, "  ")
}

func (t *Task) amount(n int64) string {
	if t.unit == Bytes {
		return FormatBytes(n)
	}
	return fmt.Sprintf("%d", n)
}

func (t *Task) rate(perSecond float64) string {
	if t.unit == Bytes {
		return formatBytesFloat(perSecond) + "/s"
	}
	return fmt.Sprintf("%.1f/s", perSecond)
}

// roundDuration shows whole seconds: fractions only flicker on a line
// redrawn five times a second.
func roundDuration(d time.Duration) string {
	return d.Round(time.Second).String()
}

// FormatBytes renders n bytes with a binary unit: "512 B", "1.5 KiB",
// "4.0 MiB".
func FormatBytes(n int64) string { return formatBytesFloat(float64(n)) }

func formatBytesFloat(n float64) string {
	if n < 1024 && n > -1024 {
		return fmt.Sprintf("%.0f B", n)
	}
	const units = "KMGTPE"
	i := -1
	for (n >= 1024 || n <= -1024) && i < len(units)-1 {
		n /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", n, units[i])
}

// Writer returns w wrapped so that every byte written through it is counted
// into t: for a download written to a file, io.Copy(t.Writer(f), body).
func (t *Task) Writer(w io.Writer) io.Writer { return &countingWriter{w: w, t: t} }

// Reader returns r wrapped so that every byte read through it is counted
// into t: for a body parsed while it arrives.
func (t *Task) Reader(r io.Reader) io.Reader { return &countingReader{r: r, t: t} }

type countingWriter struct {
	w io.Writer
	t *Task
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	if n > 0 {
		c.t.Add(int64(n))
	}
	return n, err
}

type countingReader struct {
	r io.Reader
	t *Task
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	if n > 0 {
		c.t.Add(int64(n))
	}
	return n, err
}
