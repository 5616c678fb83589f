package config

import (
	"io"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// DefaultLogFlushInterval is how long an info line may wait in a LogBuffer.
const DefaultLogFlushInterval = 100 * time.Millisecond

// logBufferSize is the size of one batch of lines; logQueuedBatches how many
// full batches may wait for the writer before a line waits for it.
const (
	logBufferSize    = 64 << 10
	logQueuedBatches = 4
)

// LogBuffer batches log lines into few writes: the ingress and the worker
// log one line per notification or event, and one write system call per
// line costs more than the line itself at a few thousand per second.
//
// A line is written at once when nothing was written for a flush interval
// (a quiet service logs as if unbuffered), and so is every line at warn
// level and above, with what is buffered before it, so faults are never
// delayed: those calls return once the line is written. Under load the rest
// waits for the batch to fill, the next periodic flush, or Close: at most
// one interval. A full batch and a periodic flush are written by a goroutine
// of the buffer's own, so an info line does not wait for the destination (a
// file on a busy disk, a pipe whose reader is slow) unless that many batches
// are waiting already (logQueuedBatches: it then waits, rather than hold
// more). Lines reach the destination in the order they were logged. A crash
// loses at most one interval of info lines (the events themselves are in
// JetStream). Safe for concurrent use; it implements zerolog.LevelWriter.
type LogBuffer struct {
	mu        sync.Mutex
	buf       []byte // lines not yet handed to the writer
	interval  time.Duration
	lastWrite time.Time // when buffered lines were last handed over
	now       func() time.Time
	closed    bool // the writer has stopped: lines are written through

	w       io.Writer
	batches chan *logBatch // to the writer goroutine, in order
	free    chan []byte    // written batches, for reuse
	wrote   chan struct{}  // closed when the writer goroutine returns

	errMu sync.Mutex
	err   error // first write error, reported by Close

	stop     chan struct{} // stops flushEvery
	stopOnce sync.Once
	done     chan struct{} // closed when flushEvery returns
}

// logBatch is lines handed to the writer; done, when set, is closed once
// they are written, with err the write's error.
type logBatch struct {
	p    []byte
	done chan struct{}
	err  error
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
	b := &LogBuffer{buf: make([]byte, 0, logBufferSize), interval: interval, now: now, w: w,
		batches: make(chan *logBatch, logQueuedBatches), free: make(chan []byte, logQueuedBatches+1),
		wrote: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go b.write()
	return b
}

// write writes the batches handed over, in order, until the channel closes.
func (b *LogBuffer) write() {
	defer close(b.wrote)
	for batch := range b.batches {
		_, err := b.w.Write(batch.p)
		b.keep(err)
		if batch.done != nil {
			batch.err = err
			close(batch.done)
		}
		select {
		case b.free <- batch.p[:0]:
		default:
		}
	}
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
			b.mu.Lock()
			if !b.closed {
				b.handOverLocked(b.now(), false)
			}
			b.mu.Unlock()
		}
	}
}

// Write buffers p (one log line).
func (b *LogBuffer) Write(p []byte) (int, error) {
	return b.WriteLevel(zerolog.InfoLevel, p)
}

// WriteLevel buffers p, and writes it (with what came before it) before it
// returns when level is warn or above or nothing was written for an
// interval.
func (b *LogBuffer) WriteLevel(level zerolog.Level, p []byte) (int, error) {
	b.mu.Lock()
	if b.closed {
		// After Close (a late goroutine's line): write through.
		defer b.mu.Unlock()
		n, err := b.w.Write(p)
		b.keep(err)
		return n, err
	}
	b.buf = append(b.buf, p...)
	now := b.now()
	var batch *logBatch
	switch {
	case level >= zerolog.WarnLevel && level != zerolog.NoLevel || now.Sub(b.lastWrite) >= b.interval:
		batch = b.handOverLocked(now, true)
	case len(b.buf) >= logBufferSize:
		b.handOverLocked(now, false)
	}
	b.mu.Unlock()
	if batch == nil {
		return len(p), nil
	}
	<-batch.done
	return len(p), batch.err
}

// Flush writes what is buffered and returns once it is written.
func (b *LogBuffer) Flush() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	batch := b.handOverLocked(b.now(), true)
	b.mu.Unlock()
	if batch == nil {
		return nil
	}
	<-batch.done
	return batch.err
}

// handOverLocked passes the buffered lines to the writer goroutine and
// starts a new batch. With wait, it returns the batch, whose done channel
// closes once it is written; nil when nothing was buffered.
func (b *LogBuffer) handOverLocked(now time.Time, wait bool) *logBatch {
	if len(b.buf) == 0 {
		return nil
	}
	batch := &logBatch{p: b.buf}
	if wait {
		batch.done = make(chan struct{})
	}
	b.batches <- batch // waits only while logQueuedBatches are queued
	select {
	case p := <-b.free:
		b.buf = p
	default:
		b.buf = make([]byte, 0, logBufferSize)
	}
	b.lastWrite = now
	return batch
}

func (b *LogBuffer) keep(err error) {
	if err == nil {
		return
	}
	b.errMu.Lock()
	defer b.errMu.Unlock()
	if b.err == nil {
		b.err = err
	}
}

// Close stops the periodic flush and writes what is buffered; later lines
// are written through. It returns the first write error seen, if any.
func (b *LogBuffer) Close() error {
	b.stopOnce.Do(func() { close(b.stop) })
	<-b.done
	b.mu.Lock()
	if !b.closed {
		b.handOverLocked(b.now(), false)
		close(b.batches)
		<-b.wrote // every batch written; later lines go straight to w
		b.closed = true
	}
	b.mu.Unlock()
	b.errMu.Lock()
	defer b.errMu.Unlock()
	return b.err
}
