package config

import (
	"bufio"
	"io"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// DefaultLogFlushInterval is how long an info line may wait in a LogBuffer.
const DefaultLogFlushInterval = 100 * time.Millisecond

// LogBuffer batches log lines into few writes: the ingress and the worker
// log one line per notification or event, and one write system call per
// line costs more than the line itself at a few thousand per second.
//
// A line is written at once when nothing was written for a flush interval
// (a quiet service logs as if unbuffered), and so is every line at warn
// level and above, with what is buffered before it, so faults are never
// delayed. Under load the rest waits for the buffer to fill, the next
// periodic flush, or Close: at most one interval. A crash loses at most one
// interval of info lines (the events themselves are in JetStream). Safe for
// concurrent use; it implements zerolog.LevelWriter.
type LogBuffer struct {
	mu        sync.Mutex
	w         *bufio.Writer
	interval  time.Duration
	lastWrite time.Time // when buffered lines last reached w
	now       func() time.Time
	err       error // first write error, reported by Close
	stop      chan struct{}
	done      chan struct{}
	closed    bool
}

// NewLogBuffer buffers w and flushes it every interval (0:
// DefaultLogFlushInterval). Close it before the process exits.
func NewLogBuffer(w io.Writer, interval time.Duration) *LogBuffer {
	if interval <= 0 {
		interval = DefaultLogFlushInterval
	}
	b := newLogBuffer(w, interval, time.Now)
	go b.flushEvery(interval)
	return b
}

// newLogBuffer is NewLogBuffer without the periodic flush (tests flush on
// their own clock); its done channel is closed once flushEvery returns.
func newLogBuffer(w io.Writer, interval time.Duration, now func() time.Time) *LogBuffer {
	return &LogBuffer{w: bufio.NewWriterSize(w, 64<<10), interval: interval, now: now, stop: make(chan struct{}), done: make(chan struct{})}
}

func (b *LogBuffer) flushEvery(interval time.Duration) {
	defer close(b.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.Flush()
		}
	}
}

// Write buffers p (one log line).
func (b *LogBuffer) Write(p []byte) (int, error) {
	return b.WriteLevel(zerolog.InfoLevel, p)
}

// WriteLevel buffers p, and writes it through at once (with what came
// before it) when level is warn or above.
func (b *LogBuffer) WriteLevel(level zerolog.Level, p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		// After Close (a late goroutine's line): write through.
		n, err := b.w.Write(p)
		if err == nil {
			err = b.w.Flush()
		}
		return n, err
	}
	n, err := b.w.Write(p)
	if err == nil {
		now := b.now()
		if level >= zerolog.WarnLevel && level != zerolog.NoLevel || now.Sub(b.lastWrite) >= b.interval {
			err = b.flushLocked(now)
		}
	}
	b.keep(err)
	return n, err
}

// Flush writes what is buffered.
func (b *LogBuffer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked(b.now())
}

func (b *LogBuffer) flushLocked(now time.Time) error {
	if b.w.Buffered() == 0 {
		return nil
	}
	err := b.w.Flush()
	b.lastWrite = now
	b.keep(err)
	return err
}

func (b *LogBuffer) keep(err error) {
	if err != nil && b.err == nil {
		b.err = err
	}
}

// Close stops the periodic flush and writes what is buffered; later lines
// are written through. It returns the first write error seen, if any.
func (b *LogBuffer) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return b.err
	}
	b.closed = true
	b.mu.Unlock()
	close(b.stop)
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked(b.now())
	return b.err
}
