package function

import (
	"context"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/tracing"
)

// traceQueue hands finished invocations to a background goroutine that
// turns them into spans, so tracing adds a channel send, not span
// creation, to an invocation's latency. When the queue is full the
// invocation's trace is dropped (and counted), never the invocation.
type traceQueue struct {
	tracer  *tracing.Tracer
	ch      chan tracedInvocation
	stop    chan struct{} // closed by close: drain once more and end
	done    chan struct{}
	dropped atomic.Uint64
}

type tracedInvocation struct {
	parent trace.SpanContext
	inv    api.Invocation
}

func newTraceQueue(t *tracing.Tracer) *traceQueue {
	if !t.Enabled() {
		return nil
	}
	q := &traceQueue{tracer: t, ch: make(chan tracedInvocation, traceQueueSize), stop: make(chan struct{}), done: make(chan struct{})}
	go q.loop()
	return q
}

// traceQueueSize bounds the invocations waiting for their spans; at one
// drain every traceFlushEvery it holds over 400,000 invocations a second.
const (
	traceQueueSize  = 4096
	traceFlushEvery = 10 * time.Millisecond
)

// loop drains the queue on a timer, not as each invocation arrives: a
// receiver blocked on the channel would have every invocation's send wake
// it, and waking a goroutine (another OS thread, often) cost the request
// more than the send.
func (q *traceQueue) loop() {
	defer close(q.done)
	tick := time.NewTicker(traceFlushEvery)
	defer tick.Stop()
	for {
		stopping := false
		select {
		case <-tick.C:
		case <-q.stop:
			stopping = true
		}
		for drained := false; !drained; {
			select {
			case ti := <-q.ch:
				ctx := context.Background()
				if ti.parent.IsValid() {
					ctx = trace.ContextWithRemoteSpanContext(ctx, ti.parent)
				}
				q.tracer.RecordInvocation(ctx, ti.inv)
			default:
				drained = true
			}
		}
		if stopping {
			return
		}
	}
}

// record queues inv; ctx carries the caller's trace context, if any.
func (q *traceQueue) record(ctx context.Context, inv api.Invocation) {
	if q == nil {
		return
	}
	select {
	case q.ch <- tracedInvocation{parent: trace.SpanContextFromContext(ctx), inv: inv}:
	default:
		q.dropped.Add(1)
	}
}

// close records what is queued and stops.
func (q *traceQueue) close() {
	if q == nil {
		return
	}
	close(q.stop)
	<-q.done
}
