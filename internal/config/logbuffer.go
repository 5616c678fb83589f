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
// Lines at warn level and above are written through at once, with what is
// buffered before them, so faults are never delayed; the rest is written
// when the buffer fills, every flush interval, and at Close. A crash loses
// at most one interval of info lines (the events themselves are in
// JetStream). Safe for concurrent use; it implements zerolog.LevelWriter.
type LogBuffer struct {
	mu     sync.Mutex
	w      *bufio.Writer
	err    error // first write error, reported by Close
	stop   chan struct{}
	done   chan struct{}
	closed bool
}

// NewLogBuffer buffers w and flushes it every interval (0:
// DefaultLogFlushInterval). Close it before the process exits.
func NewLogBuffer(w io.Writer, interval time.Duration) *LogBuffer {
	if interval <= 0 {
		interval = DefaultLogFlushInterval
	}
	b := &LogBuffer{w: bufio.NewWriterSize(w, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go b.flushEvery(interval)
	return b
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
	if err == nil && level >= zerolog.WarnLevel && level != zerolog.NoLevel {
		err = b.w.Flush()
	}
	b.keep(err)
	return n, err
}

// Flush writes what is buffered.
func (b *LogBuffer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	err := b.w.Flush()
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
	b.keep(b.w.Flush())
	return b.err
}
