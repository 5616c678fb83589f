package e2e

import (
	"io"
	"net"
	"sync"
	"testing"
)

// tcpProxy stands between one client process and one server, as the
// network between them does: cut closes every connection and refuses new
// ones (accepted and closed at once) until heal.
type tcpProxy struct {
	ln       net.Listener
	upstream string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
	cuts  int
}

// newProxy listens on a loopback port and forwards to upstream; it is
// closed, and its goroutines waited for, at cleanup.
func newProxy(t testing.TB, upstream string) *tcpProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.pipe(c)
	}
}

// pipe dials upstream for c and copies both ways until either side ends.
func (p *tcpProxy) pipe(c net.Conn) {
	defer p.wg.Done()
	up, err := net.Dial("tcp", p.upstream)
	if err != nil {
		p.drop(c)
		return
	}
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		up.Close()
		p.drop(c)
		return
	}
	p.conns[up] = struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
	p.drop(c)
	p.drop(up)
	<-done
}

func (p *tcpProxy) drop(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// cutOff closes every connection through the proxy and refuses new ones.
func (p *tcpProxy) cutOff() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	p.cuts++
	for c := range p.conns {
		c.Close()
	}
}

// heal lets connections through again.
func (p *tcpProxy) heal() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// close stops the proxy and waits until every goroutine it started
// returned.
func (p *tcpProxy) close() {
	p.ln.Close()
	p.cutOff()
	p.wg.Wait()
}
