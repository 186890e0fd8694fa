package function

import (
	"context"

	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/scheduler"
)

type recorderKey struct{}

// withRecorder lets an instance start made for a request record its
// phases into that request's recorder.
func withRecorder(ctx context.Context, rec *phase.Recorder) context.Context {
	return context.WithValue(ctx, recorderKey{}, rec)
}

func recorderFrom(ctx context.Context) *phase.Recorder {
	rec, _ := ctx.Value(recorderKey{}).(*phase.Recorder)
	return rec
}

// register tells the scheduler about a deployed version of a function:
// how to start its instances and how to pool them.
func (s *Service) register(e *entry) error {
	var policy scheduler.Policy
	if e.fn.KeepAlive != "" {
		var err error
		if policy, err = scheduler.ParsePolicy(e.fn.KeepAlive); err != nil {
			return err
		}
	}
	singleUse := e.driver == nil || e.driver.Capabilities().SingleUse
	cfg := scheduler.FunctionConfig{
		Name:         e.fn.Name,
		MemoryMB:     e.fn.MemoryMB,
		Concurrency:  e.fn.Concurrency,
		MinInstances: e.fn.MinInstances,
		MaxInstances: e.fn.MaxInstances,
		QueueSize:    e.fn.QueueSize,
		SingleUse:    singleUse,
		Policy:       policy,
	}
	if singleUse {
		cfg.Concurrency = 1
	}
	return s.sched.Register(cfg, func(ctx context.Context) (scheduler.Instance, error) {
		rec := recorderFrom(ctx)
		p, _, err := e.ensurePrepared(ctx, s, rec)
		if err != nil {
			return nil, err
		}
		return p.Start(ctx, rec)
	})
}
