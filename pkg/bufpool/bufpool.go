// Package bufpool reuses byte buffers on hot paths (the ingress's request
// bodies, the publisher's encoded envelopes) without letting a rare large
// one stay pinned in the pool.
package bufpool

import (
	"bytes"
	"sync"
)

// Pool hands out empty buffers; it is safe for concurrent use.
type Pool struct {
	pool   sync.Pool
	maxCap int
}

// New returns a pool of buffers that start with initialCap bytes of
// capacity; a buffer that grew past maxCap is dropped rather than kept.
func New(initialCap, maxCap int) *Pool {
	p := &Pool{maxCap: maxCap}
	p.pool.New = func() any { return bytes.NewBuffer(make([]byte, 0, initialCap)) }
	return p
}

// Get returns an empty buffer.
func (p *Pool) Get() *bytes.Buffer {
	b := p.pool.Get().(*bytes.Buffer)
	b.Reset()
	return b
}

// Put gives b back; nothing may use b, or a slice of its bytes, afterwards.
func (p *Pool) Put(b *bytes.Buffer) {
	if b.Cap() <= p.maxCap {
		p.pool.Put(b)
	}
}
