package bufpool

import (
	"bytes"
	"testing"
)

func TestGetIsEmptyAndSized(t *testing.T) {
	p := New(1024, 4096)
	b := p.Get()
	if b.Len() != 0 || b.Cap() < 1024 {
		t.Fatalf("new buffer: len %d cap %d, want 0 and at least 1024", b.Len(), b.Cap())
	}
	b.WriteString("left over")
	p.Put(b)
	for range 10 { // whichever buffer comes back, it is empty
		if got := p.Get(); got.Len() != 0 {
			t.Fatalf("reused buffer holds %q", got.String())
		}
	}
}

func TestLargeBuffersAreDropped(t *testing.T) {
	p := New(16, 64)
	// Twenty tries: the race detector's sync.Pool drops some puts at random.
	for range 20 {
		big := p.Get()
		big.Write(bytes.Repeat([]byte("x"), 1000))
		p.Put(big)
		if p.Get() == big {
			t.Fatal("a buffer grown past maxCap came back from the pool")
		}
	}
}
