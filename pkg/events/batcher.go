package events

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// batcher joins the Redis commands of concurrent deliveries into one
// pipeline (one write and one read for the lot), the way a busy worker
// keeps its Redis round trips from dominating its CPU. Under light load a
// batch holds a single delivery's commands and adds no wait.
type batcher struct {
	rdb  redis.UniversalClient
	ops  chan *batchOp
	stop chan struct{}
	done chan struct{}
}

type batchOp struct {
	ctx   context.Context
	queue func(p redis.Pipeliner)
	sent  chan error
}

// maxBatch bounds the deliveries in one pipeline.
const maxBatch = 256

func newBatcher(rdb redis.UniversalClient) *batcher {
	b := &batcher{rdb: rdb, ops: make(chan *batchOp), stop: make(chan struct{}), done: make(chan struct{})}
	go b.loop()
	return b
}

// close stops the loop once no operation is waiting.
func (b *batcher) close() {
	close(b.stop)
	<-b.done
}

// opPool recycles batchOps and their channels: two per delivery.
var opPool = sync.Pool{New: func() any { return &batchOp{sent: make(chan error, 1)} }}

func (b *batcher) do(ctx context.Context, queue func(p redis.Pipeliner)) error {
	op := opPool.Get().(*batchOp)
	op.ctx, op.queue = ctx, queue
	defer func() {
		// The loop is done with op once it answered, or never had it.
		op.ctx, op.queue = nil, nil
		opPool.Put(op)
	}()
	select {
	case b.ops <- op:
	case <-ctx.Done():
		return ctx.Err()
	case <-b.stop:
		// Stopped: run alone.
		_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error { queue(p); return nil })
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		return nil
	}
	// Once taken, the batch runs to its end, so the commands' results are
	// set when this returns.
	return <-op.sent
}

func (b *batcher) loop() {
	defer close(b.done)
	ops := make([]*batchOp, 0, maxBatch)
	for {
		select {
		case op := <-b.ops:
			ops = append(ops[:0], op)
		case <-b.stop:
			return
		}
		// One yield lets the deliveries that are ready to queue their
		// commands do so: under load it doubles the commands per pipeline
		// (fewer system calls and wake-ups), idle it costs microseconds.
		runtime.Gosched()
	more:
		for len(ops) < maxBatch {
			select {
			case op := <-b.ops:
				ops = append(ops, op)
			default:
				break more
			}
		}
		p := b.rdb.Pipeline()
		var live []*batchOp
		deadline := time.Time{}
		now := time.Now()
		for _, op := range ops {
			if err := op.ctx.Err(); err != nil {
				op.sent <- err
				continue
			}
			dl, ok := op.ctx.Deadline()
			if ok && !dl.After(now) {
				// Its time is up, whether or not its context says so
				// (see deadlineCtx).
				op.sent <- context.DeadlineExceeded
				continue
			}
			if ok && (deadline.IsZero() || dl.After(deadline)) {
				deadline = dl
			}
			op.queue(p)
			live = append(live, op)
		}
		if len(live) == 0 {
			continue
		}
		ctx := context.Background()
		var cancel context.CancelFunc = func() {}
		if !deadline.IsZero() {
			ctx, cancel = context.WithDeadline(ctx, deadline)
		}
		_, _ = p.Exec(ctx) // every command keeps its own error
		cancel()
		for _, op := range live {
			op.sent <- nil
		}
	}
}
