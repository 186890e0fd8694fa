package function

import (
	"log/slog"
	"sync"
	"time"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/store"
)

// recordWriter writes invocation records to the store in batches, off the
// invocation's hot path. Records not yet written are served from memory.
type recordWriter struct {
	store   *store.Store
	log     *slog.Logger
	queue   chan api.Invocation
	inQueue sync.Map // id -> api.Invocation
	done    chan struct{}
	flushes int
}

const (
	recordBatch    = 512
	recordInterval = 5 * time.Millisecond
	pruneEvery     = 1000 // batches
)

func newRecordWriter(s *store.Store, log *slog.Logger) *recordWriter {
	w := &recordWriter{store: s, log: log, queue: make(chan api.Invocation, 4096), done: make(chan struct{})}
	go w.loop()
	return w
}

func (w *recordWriter) put(inv api.Invocation) {
	w.inQueue.Store(inv.ID, inv)
	w.queue <- inv
}

func (w *recordWriter) pending(id string) (api.Invocation, bool) {
	v, ok := w.inQueue.Load(id)
	if !ok {
		return api.Invocation{}, false
	}
	return v.(api.Invocation), true
}

func (w *recordWriter) loop() {
	defer close(w.done)
	batch := make([]api.Invocation, 0, recordBatch)
	for inv := range w.queue {
		batch = append(batch[:0], inv)
		timer := time.NewTimer(recordInterval)
	collect:
		for len(batch) < recordBatch {
			select {
			case inv, ok := <-w.queue:
				if !ok {
					break collect
				}
				batch = append(batch, inv)
			case <-timer.C:
				break collect
			}
		}
		timer.Stop()
		w.flush(batch)
	}
}

func (w *recordWriter) flush(batch []api.Invocation) {
	if err := w.store.PutInvocations(batch); err != nil {
		w.log.Error("invocation records not stored", "count", len(batch), "err", err)
	}
	for _, inv := range batch {
		w.inQueue.Delete(inv.ID)
	}
	w.flushes++
	if w.flushes%pruneEvery == 0 {
		if err := w.store.PruneInvocations(keepInvocations); err != nil {
			w.log.Warn("invocation records not pruned", "err", err)
		}
	}
}

// close writes what is queued and stops the writer.
func (w *recordWriter) close() {
	close(w.queue)
	<-w.done
}
