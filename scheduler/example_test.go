package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/scheduler"
)

type sandbox struct{}

func (sandbox) Close(context.Context) error { return nil }

func Example() {
	s := scheduler.New(scheduler.Options{MemoryBudgetMB: 1024, DefaultPolicy: scheduler.Fixed(5 * time.Minute)})
	defer s.Close(context.Background())
	start := func(ctx context.Context) (scheduler.Instance, error) { return sandbox{}, nil }
	if err := s.Register(scheduler.FunctionConfig{Name: "hello", MemoryMB: 128, MaxInstances: 1, QueueSize: -1}, start); err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	for range 2 {
		l, err := s.Acquire(ctx, "hello")
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println("cold start:", l.Cold())
		s.Release(l, true)
	}

	held, _ := s.Acquire(ctx, "hello")
	_, err := s.Acquire(ctx, "hello") // the only instance is busy and there is no queue
	fmt.Println("unavailable:", errors.Is(err, errdefs.ErrUnavailable), "retry after:", errdefs.RetryAfter(err) > 0)
	s.Release(held, true)

	st, _ := s.Stats("hello")
	fmt.Printf("idle %d, busy %d, %d MB\n", st.Idle, st.Busy, st.MemoryMB)
	// Output:
	// cold start: true
	// cold start: false
	// unavailable: true retry after: true
	// idle 1, busy 0, 128 MB
}
