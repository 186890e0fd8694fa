package function

import (
	"context"
	"sync/atomic"

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
	q := &traceQueue{tracer: t, ch: make(chan tracedInvocation, 4096), done: make(chan struct{})}
	go func() {
		defer close(q.done)
		for ti := range q.ch {
			ctx := context.Background()
			if ti.parent.IsValid() {
				ctx = trace.ContextWithRemoteSpanContext(ctx, ti.parent)
			}
			q.tracer.RecordInvocation(ctx, ti.inv)
		}
	}()
	return q
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
	close(q.ch)
	<-q.done
}
