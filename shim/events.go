package shim

import (
	"context"
	"sync"
	"time"

	"github.com/containerd/containerd/events"
	"github.com/containerd/log"
)

// eventQueue publishes a shim's task events to containerd in the order
// they happen, off the request path: a task's TaskCreate, TaskStart,
// TaskExit and TaskDelete reach containerd in that order even when the
// guest exits before Start has returned.
type eventQueue struct {
	ctx  context.Context // carries the namespace the publisher needs
	pub  events.Publisher
	ch   chan queuedEvent
	done chan struct{}

	mu     sync.Mutex
	closed bool
}

type queuedEvent struct {
	topic string
	event events.Event
}

func newEventQueue(ctx context.Context, pub events.Publisher) *eventQueue {
	q := &eventQueue{ctx: ctx, pub: pub, ch: make(chan queuedEvent, 128), done: make(chan struct{})}
	go q.forward()
	return q
}

// publish queues an event; events published after close are dropped.
func (q *eventQueue) publish(topic string, ev events.Event) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		log.G(q.ctx).WithField("topic", topic).Warn("event published after shutdown; dropped")
		return
	}
	q.ch <- queuedEvent{topic: topic, event: ev}
}

func (q *eventQueue) forward() {
	defer close(q.done)
	for e := range q.ch {
		if err := q.pub.Publish(q.ctx, e.topic, e.event); err != nil {
			// The publisher queues failed events for retry itself.
			log.G(q.ctx).WithError(err).WithField("topic", e.topic).Error("publish event")
		}
	}
}

// close stops accepting events and waits (up to timeout) until every
// queued event has been handed to the publisher.
func (q *eventQueue) close(timeout time.Duration) {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.ch)
	}
	q.mu.Unlock()
	select {
	case <-q.done:
	case <-time.After(timeout):
		log.G(q.ctx).Warn("timed out flushing task events")
	}
}
